"""The machine-readable contracts: generated, committed, served, and true to the code.

- ``schemas/v1/`` and ``docs/openapi.json`` are what ``ioc schemas`` renders now;
- every schema is a valid draft 2020-12 schema, every catalogue example passes it;
- the records the system publishes validate against their schemas, and the readers
  (``from_json``) need exactly the fields the schemas require;
- the ingest gateway serves the schemas and an OpenAPI 3.1 document whose paths are
  the routes it serves.
(The validator-versus-schema properties of events are in test_contracts_agreement.py.)
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from typer.testing import CliRunner

from events.catalogue import EVENT_TYPES
from events.contracts import all_schemas, record_schemas
from events.docs import example_event
from events.records import (
    AlertCommand,
    AlertRecord,
    AlertSeverity,
    AlertState,
    DeadLetter,
    KpiRecord,
)
from ingest.http import ROUTES, build_app
from ingest.keystore import KeyCache
from ingest.metrics import IngestMetrics
from ingest.openapi import openapi_document
from ingest.publisher import KafkaPublisher
from ingest.settings import IngestSettings
from ioc.cli import build_app as build_cli
from ioc.commands.schemas import OPENAPI_PATH, SCHEMA_DIR, stale_files

ROOT = Path(__file__).resolve().parent.parent
FORMATS = Draft202012Validator.FORMAT_CHECKER
SCHEMAS = all_schemas()


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(SCHEMAS[name], format_checker=FORMATS)


# ---- generated and committed -----------------------------------------------------------


def test_committed_contracts_are_what_the_generator_renders() -> None:
    assert stale_files(ROOT) == [], "contracts are stale; regenerate them: ioc schemas"


def test_the_command_writes_checks_and_removes_leftovers(tmp_path: Path) -> None:
    cli = build_cli("schemas")
    runner = CliRunner()
    assert runner.invoke(cli, ["schemas", "--root", str(tmp_path), "--check"]).exit_code == 1
    assert runner.invoke(cli, ["schemas", "--root", str(tmp_path)]).exit_code == 0
    assert (tmp_path / SCHEMA_DIR / "cloudevent.json").is_file()
    assert (tmp_path / OPENAPI_PATH).is_file()
    assert runner.invoke(cli, ["schemas", "--root", str(tmp_path), "--check"]).exit_code == 0
    # a schema of a type that no longer exists, and a hand edit, are both found
    (tmp_path / SCHEMA_DIR / "vn.ioc.air.teleported.json").write_text("{}")
    edited = tmp_path / SCHEMA_DIR / "alert.json"
    edited.write_text(edited.read_text().replace('"level"', '"lvl"'))
    assert stale_files(tmp_path) == [
        f"{SCHEMA_DIR}/alert.json",
        f"{SCHEMA_DIR}/vn.ioc.air.teleported.json",
    ]
    assert runner.invoke(cli, ["schemas", "--root", str(tmp_path)]).exit_code == 0
    assert stale_files(tmp_path) == []
    assert not (tmp_path / SCHEMA_DIR / "vn.ioc.air.teleported.json").exists()


def test_there_is_a_schema_for_the_envelope_every_type_and_every_record() -> None:
    expected = {"index.json", "cloudevent.json"} | {f"{t}.json" for t in EVENT_TYPES}
    expected |= {"kpi-window.json", "alert.json", "alert-command.json", "dead-letter.json"}
    assert set(SCHEMAS) == expected
    index = SCHEMAS["index.json"]
    assert index["version"] == "v1"
    assert {entry["name"] for entry in index["schemas"]} == expected - {"index.json"}


@pytest.mark.parametrize("name", sorted(set(SCHEMAS) - {"index.json"}))
def test_every_schema_is_a_2020_12_schema(name: str) -> None:
    schema = SCHEMAS[name]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_the_catalogue_examples_pass_their_schemas(type_name: str) -> None:
    event = example_event(EVENT_TYPES[type_name])
    assert list(validator("cloudevent.json").iter_errors(event)) == []
    assert list(validator(f"{type_name}.json").iter_errors(event["data"])) == []
    # and the envelope checks the data by type: the example of another type fails
    other = next(et for t, et in EVENT_TYPES.items() if set(et.example) != set(event["data"]))
    assert not validator("cloudevent.json").is_valid({**event, "data": dict(other.example)})


# ---- records ---------------------------------------------------------------------------

times = st.datetimes(datetime(1970, 1, 2), datetime(8999, 12, 30), timezones=st.just(UTC))
numbers = st.floats(allow_nan=False, allow_infinity=False)
names = st.text(min_size=1, max_size=20)

kpi_records = st.builds(
    KpiRecord,
    kpi=names,
    scope=names,
    window_start=times,
    window_end=times,
    value=st.none() | numbers,
    count=st.integers(0, 2**40),
    min=st.none() | numbers,
    max=st.none() | numbers,
    sum=st.none() | numbers,
    final=st.booleans(),
    revision=st.integers(0, 2**31),
    computed_at=times,
)
alert_records = st.builds(
    AlertRecord,
    alert_id=names,
    rule=names,
    subject=names,
    state=st.sampled_from(typing.get_args(AlertState)),
    severity=st.sampled_from(typing.get_args(AlertSeverity)),
    level=st.integers(1, 3),
    title=st.text(),
    kpi=st.none() | names,
    value=st.none() | numbers,
    threshold=st.none() | numbers,
    raised_at=times,
    updated_at=times,
    acknowledged_by=st.none() | names,
    assignee=st.none() | names,
    revision=st.integers(0, 2**31),
    window_start=st.none() | times,
    on_live_window=st.booleans(),
    title_en=st.none() | st.text(),
)
alert_commands = st.sampled_from(["ack", "clear", "assign"]).flatmap(
    lambda command: st.builds(
        AlertCommand,
        command_id=names,
        alert_id=names,
        command=st.just(command),
        by=names,
        at=times,
        assignee=names if command == "assign" else st.none() | names,
        note=st.none() | st.text(),
    )
)
dead_letters = st.builds(
    DeadLetter,
    reason=names,
    detail=st.text(),
    source_topic=names,
    source_partition=st.integers(0, 1000),
    source_offset=st.integers(0, 2**62),
    value=st.binary(),
    key=st.none() | st.binary(),
    component=st.text(),
    time=times,
)
RECORDS: dict[str, tuple[st.SearchStrategy[Any], Callable[[bytes], object]]] = {
    "kpi-window.json": (kpi_records, KpiRecord.from_json),
    "alert.json": (alert_records, AlertRecord.from_json),
    "alert-command.json": (alert_commands, AlertCommand.from_json),
    "dead-letter.json": (dead_letters, DeadLetter.from_json),
}


def test_every_published_record_has_a_schema() -> None:
    assert set(RECORDS) == set(record_schemas())


def _reads(reader: Callable[[bytes], object], wire: dict[str, Any]) -> bool:
    try:
        reader(orjson.dumps(wire))
    except Exception:  # the readers raise InvalidEventError, DeadLetter.from_json KeyError
        return False
    return True


@pytest.mark.parametrize("name", sorted(RECORDS))
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_published_records_match_their_schema_and_readers_need_what_it_requires(
    name: str, data: st.DataObject
) -> None:
    records, reader = RECORDS[name]
    record = data.draw(records)
    wire = orjson.loads(record.to_json())
    schema = validator(name)
    assert list(schema.iter_errors(wire)) == []
    assert _reads(reader, wire)
    # It names the schema (and so the version) it follows.
    assert wire["schema"] == SCHEMAS[name]["$id"] == f"urn:vn-ioc:schema:v1:{name[:-5]}"
    assert not schema.is_valid({**wire, "schema": "urn:vn-ioc:schema:v2:" + name[:-5]})
    # without any one field: the reader and the schema agree whether it was required
    for field_name in SCHEMAS[name]["properties"]:
        without = {k: v for k, v in wire.items() if k != field_name}
        assert _reads(reader, without) == schema.is_valid(without), field_name


def test_an_assign_command_without_assignee_fails_schema_and_reader() -> None:
    cmd = AlertCommand("c-1", "a-1", "assign", "op", datetime(2026, 3, 1, tzinfo=UTC), "x")
    wire = {**orjson.loads(cmd.to_json()), "assignee": None}
    assert not validator("alert-command.json").is_valid(wire)
    assert not _reads(AlertCommand.from_json, wire)


# ---- the OpenAPI document of the ingest gateway ----------------------------------------
# (tests/test_ingest.py fetches the documents from a running gateway)


def test_the_openapi_paths_are_the_routes_the_gateway_registers() -> None:
    # build_app only stores the publisher and the key cache; routing never touches them.
    app = build_app(
        IngestSettings(), cast(KafkaPublisher, None), IngestMetrics(), cast(KeyCache, None)
    )
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    document = orjson.loads((ROOT / OPENAPI_PATH).read_bytes())
    # The read API's paths name their own server (its own port); the rest are the gateway's.
    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        if "servers" not in item
        for method in item
    }
    assert documented == routes
    assert {("POST", "/events"), ("GET", "/openapi.json"), ("GET", "/schemas/v1/{name}")} <= routes


def _dangling_refs(node: Any, document: Any, resource: Any) -> list[str]:
    """Local $refs that point nowhere (openapi-spec-validator does not look): "#/..."
    resolves in the nearest enclosing schema with an $id, else in the document."""
    if isinstance(node, list):
        return [ref for item in node for ref in _dangling_refs(item, document, resource)]
    if not isinstance(node, dict):
        return []
    if "$id" in node:
        resource = node
    dangling = []
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = resource
        for part in ref.removeprefix("#/").split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        if target is None:
            dangling.append(ref)
    for value in node.values():
        dangling += _dangling_refs(value, document, resource)
    return dangling


def test_the_openapi_document_is_valid_3_1_with_every_reference_resolved() -> None:
    document = orjson.loads((ROOT / OPENAPI_PATH).read_bytes())
    assert document["openapi"] == "3.1.0"
    validate_openapi(document)
    assert _dangling_refs(document, document, document) == []
    # the request body is the generated envelope: an example event passes it
    body = document["paths"]["/events"]["post"]["requestBody"]["content"]
    assert body["application/cloudevents+json"]["schema"] == {
        "$ref": "#/components/schemas/CloudEvent"
    }
    assert document["components"]["schemas"]["CloudEvent"] == SCHEMAS["cloudevent.json"]


def test_the_checks_would_notice_a_broken_document() -> None:
    document = openapi_document((m, p) for m, p, _ in ROUTES)
    schemas = document["components"]["schemas"]
    schemas["Batch"] = {"$ref": "#/components/schemas/Nope"}
    schemas["Accepted"]["properties"]["accepted"]["$ref"] = "#/$defs/nope"
    assert sorted(_dangling_refs(document, document, document)) == [
        "#/$defs/nope",
        "#/components/schemas/Nope",
    ]
    parameter = document["paths"]["/schemas/v1/{name}"]["get"]["parameters"][0]
    parameter["in"] = "nowhere"
    with pytest.raises(OpenAPIValidationError):
        validate_openapi(document)
    # and the next document is whole again
    assert openapi_document((m, p) for m, p, _ in ROUTES) == orjson.loads(
        (ROOT / OPENAPI_PATH).read_bytes()
    )


def test_a_route_without_a_description_cannot_be_generated() -> None:
    with pytest.raises(ValueError, match="DELETE /events"):
        openapi_document([*((m, p) for m, p, _ in ROUTES), ("DELETE", "/events")])
