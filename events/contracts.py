"""JSON Schemas (draft 2020-12) of everything the system accepts and publishes.

Generated from the declarations that drive validation, never written by hand:

- ``cloudevent.json``: the CloudEvents 1.0 envelope (structured JSON mode) of any event
  type of the catalogue, with the ``data`` of each type by ``type`` (``if``/``then``);
  self-contained (the data schemas are copied into its ``$defs``) so a consumer needs no
  resolver;
- ``<type>.json`` (e.g. ``vn.ioc.air.observed.json``): the ``data`` of one event type,
  from its :class:`~events.schema.FieldSpec` declarations and the cross-field rules of
  :data:`events.validation.REQUIRED_WHEN`;
- ``kpi-window.json``, ``alert.json``, ``alert-command.json``, ``dead-letter.json``: the
  records of ``ioc.kpi``, ``ioc.alerts``, ``ioc.alerts.commands`` and ``ioc.deadletter``,
  from the dataclasses of :mod:`events.records` and their field metadata;
- ``index.json``: the list of the above.

``ioc schemas`` writes them to ``schemas/v1/`` and the ingest gateway serves them at
``/schemas/v1/<name>``; a test compares the committed files with a fresh rendering.

What the schemas cannot state (checked by the validator only): the size of an event
(64 KiB) and how far ahead of the receiver's clock its time may lie (``future_time``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from events.catalogue import EVENT_TYPES, EventType, FieldSpec
from events.envelope import CONTENT_TYPE, DATACONTENTTYPE_PATTERN, SPECVERSION
from events.geography import DISTRICT_CODES
from events.records import (
    SCHEMA_ID_PREFIX,
    SCHEMA_VERSION,
    AlertCommand,
    AlertRecord,
    DeadLetter,
    KpiRecord,
)
from events.schema import TIME_PATTERN
from events.topics import ALERT_COMMANDS, ALERTS, DEADLETTER, KPI
from events.validation import MAX_TEXT_LENGTH, REQUIRED_WHEN

VERSION = SCHEMA_VERSION
DIALECT = "https://json-schema.org/draft/2020-12/schema"
# A URN, not a URL: the schemas are the same wherever a gateway serves them, and a
# consumer can resolve every ``$ref`` inside the file it has (all are local). The
# records name their schema with it (their ``schema`` field).
ID_PREFIX = SCHEMA_ID_PREFIX
ENVELOPE = "cloudevent.json"
INDEX = "index.json"

Schema = dict[str, Any]


def time_schema(description: str) -> Schema:
    """An RFC 3339 time with an offset, as the validator accepts it."""
    return {
        "type": "string",
        "format": "date-time",
        "pattern": TIME_PATTERN,
        "description": description,
    }


def _with_unit(f: FieldSpec) -> str:
    return f"{f.description} ({f.unit})" if f.unit else f.description


def field_schema(f: FieldSpec) -> Schema:
    """The schema of one payload field, the same rule events.validation compiles."""
    if f.kind == "time":
        return time_schema(f.description)
    schema: Schema
    if f.name == "district":
        schema = {"type": "string", "enum": sorted(DISTRICT_CODES)}
    elif f.kind == "enum":
        schema = {"type": "string", "enum": list(f.choices or ())}
    elif f.kind == "str":
        schema = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_LENGTH}
    elif f.kind == "bool":
        schema = {"type": "boolean"}
    else:
        schema = {"type": "number" if f.kind == "float" else "integer"}
        if f.minimum is not None:
            schema["minimum"] = f.minimum
        if f.maximum is not None:
            schema["maximum"] = f.maximum
        if f.unit:
            # An annotation (unknown keywords are allowed in 2020-12): tools can show it.
            schema["x-unit"] = f.unit
    schema["description"] = _with_unit(f)
    return schema


def _required_when(rules: tuple[tuple[str, str, str], ...]) -> list[Schema]:
    return [
        {
            "if": {"properties": {name: {"const": value}}, "required": [name]},
            "then": {"required": [needed]},
        }
        for name, value, needed in rules
    ]


def data_schema(et: EventType) -> Schema:
    """The schema of the ``data`` of one event type."""
    schema: Schema = {
        "$schema": DIALECT,
        "$id": f"{ID_PREFIX}{et.type}",
        "title": f"data of {et.type}",
        "description": f"{et.description} Topic {et.topic}, Kafka key data.{et.key_field}. "
        "Undeclared fields are allowed and kept (forward compatibility).",
        "type": "object",
        "required": [f.name for f in et.fields if f.required],
        "properties": {f.name: field_schema(f) for f in et.fields},
        "examples": [et.example],
    }
    rules = REQUIRED_WHEN.get(et.type, ())
    if rules:
        schema["allOf"] = _required_when(rules)
    return schema


def _embedded(schema: Schema) -> Schema:
    """A schema to place in another's ``$defs``: without its own identity and dialect."""
    return {k: v for k, v in schema.items() if k not in ("$schema", "$id", "examples")}


def envelope_schema() -> Schema:
    """The CloudEvent of any catalogue type, with its ``data`` checked by ``type``."""
    types_ = list(EVENT_TYPES)
    return {
        "$schema": DIALECT,
        "$id": f"{ID_PREFIX}cloudevent",
        "title": "CloudEvent of the IOC event catalogue",
        "description": "CloudEvents 1.0, structured JSON mode, as the ingest gateways and "
        "the stream workers accept it and as they publish it on ioc.events.<domain>. "
        "Extension attributes are allowed and not checked. Not stated here: an event is "
        "at most 64 KiB, and its time at most IOC_MAX_FUTURE_SKEW_S (300 s) ahead of the "
        "receiver's clock.",
        "type": "object",
        "required": ["specversion", "id", "source", "type", "time", "data"],
        "properties": {
            "specversion": {"const": SPECVERSION},
            "id": {"type": "string", "minLength": 1, "description": "unique per source"},
            "source": {
                "type": "string",
                "minLength": 1,
                "description": "the producer, e.g. /sensors/air/HD-AQ-001",
            },
            "type": {"enum": types_, "description": "vn.ioc.<domain>.<name>"},
            "time": time_schema(
                "event time (when it happened, not when it was sent); the windows use it"
            ),
            # CloudEvents' JSON format lets an optional attribute be null (= absent).
            # application/json, with parameters (`; charset=utf-8`) as SDKs write it.
            "datacontenttype": {
                "anyOf": [{"type": "string", "pattern": DATACONTENTTYPE_PATTERN}, {"type": "null"}],
                "description": f"{CONTENT_TYPE}, optionally with parameters",
            },
            "data": {"type": "object"},
        },
        "allOf": [
            {
                "if": {"properties": {"type": {"const": t}}, "required": ["type"]},
                "then": {"properties": {"data": {"$ref": f"#/$defs/{t}"}}},
            }
            for t in types_
        ],
        "$defs": {t: _embedded(data_schema(et)) for t, et in EVENT_TYPES.items()},
    }


# ---- records ---------------------------------------------------------------------------


def _value_schema(hint: Any) -> Schema:
    """The schema of a record field's type (the types the records use)."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        [inner] = [a for a in args if a is not type(None)]
        schema = _value_schema(inner)
        if "enum" in schema:
            return {**schema, "enum": [*schema["enum"], None]}
        return {**schema, "type": [schema["type"], "null"]}
    if typing.get_origin(hint) is typing.Literal:
        return {"type": "string", "enum": list(args)}
    if hint is datetime:
        return {"type": "string", "format": "date-time", "pattern": TIME_PATTERN}
    if hint is bytes:
        return {"type": "string", "contentEncoding": "base64"}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    return {"type": simple[hint]}


def record_schema(cls: type, name: str, title: str, rules: list[Schema] | None = None) -> Schema:
    """The schema of a record class of events.records, from its fields' metadata."""
    hints = typing.get_type_hints(cls)
    # The record's own constant, so what it writes and what its schema says are one.
    schema_id: str = getattr(cls, "SCHEMA", f"{ID_PREFIX}{name}")
    properties: Schema = {
        "schema": {
            "const": schema_id,
            "description": "the `$id` of this schema: which contract and version the record "
            "follows (absent in records written before v1 named it)",
        }
    }
    required: list[str] = []
    for f in dataclasses.fields(cls):
        meta: Mapping[str, Any] = f.metadata
        wire_name = meta["name"] or f.name
        schema = _value_schema(hints[f.name])
        for bound in ("minimum", "maximum"):
            if meta[bound] is not None:
                schema[bound] = meta[bound]
        schema["description"] = meta["doc"]
        properties[wire_name] = schema
        if not meta["optional"]:
            required.append(wire_name)
    schema = {
        "$schema": DIALECT,
        "$id": schema_id,
        "title": title,
        "description": (cls.__doc__ or "").strip().split("\n\n")[0].replace("``", "`")
        + " Readers ignore fields they do not know.",
        "type": "object",
        "required": required,
        "properties": properties,
    }
    if rules:
        schema["allOf"] = rules
    return schema


def record_schemas() -> dict[str, Schema]:
    """File name -> schema of every record the system publishes."""
    return {
        "kpi-window.json": record_schema(KpiRecord, "kpi-window", f"KPI window ({KPI})"),
        "alert.json": record_schema(AlertRecord, "alert", f"alert state ({ALERTS})"),
        "alert-command.json": record_schema(
            AlertCommand,
            "alert-command",
            f"operator command ({ALERT_COMMANDS})",
            # AlertCommand.from_json: "assign" needs a non-empty assignee.
            [
                {
                    "if": {"properties": {"command": {"const": "assign"}}},
                    "then": {
                        "required": ["assignee"],
                        "properties": {"assignee": {"type": "string", "minLength": 1}},
                    },
                }
            ],
        ),
        "dead-letter.json": record_schema(DeadLetter, "dead-letter", f"dead letter ({DEADLETTER})"),
    }


# ---- the whole set ---------------------------------------------------------------------


def all_schemas() -> dict[str, Schema]:
    """File name (under ``schemas/v1/``) -> schema, the index included."""
    schemas: dict[str, Schema] = {ENVELOPE: envelope_schema()}
    schemas.update({f"{t}.json": data_schema(et) for t, et in EVENT_TYPES.items()})
    schemas.update(record_schemas())
    index = {
        "version": VERSION,
        "schemas": [
            {"name": name, "$id": s["$id"], "title": s["title"]} for name, s in schemas.items()
        ],
    }
    return {INDEX: index, **schemas}


def dumps(document: Any) -> bytes:
    """The committed form: two-space indentation, keys in declaration order, a final
    newline (stable, so the drift test compares bytes)."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


__all__ = [
    "ENVELOPE",
    "ID_PREFIX",
    "INDEX",
    "VERSION",
    "all_schemas",
    "data_schema",
    "dumps",
    "envelope_schema",
    "record_schemas",
]
