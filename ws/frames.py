"""JSON Schemas (draft 2020-12) of the push protocol's frames (docs/ws-protocol.md).

Built from the constants the parser and the server use (:mod:`ws.protocol`: the
operations' limits and patterns, the channels, the error codes), so the AsyncAPI
document (``ioc schemas`` → ``docs/asyncapi.yaml``) describes the frames the code accepts
and sends. ``tests/test_asyncapi.py`` checks the client schemas against
:func:`ws.protocol.parse_client_message`, ``tests/test_examples.py`` the server schemas
against the frames of a running push server.

The schemas state what a client should send: the parser also takes ``null`` for an
optional field (as if absent), which they leave out.
"""

from __future__ import annotations

import typing
from typing import Any

from events.contracts import DIALECT, ID_PREFIX, Schema, record_schemas
from ws.protocol import (
    CHANNELS,
    ERROR_CODES,
    FILTER_RE,
    ID_RE,
    MAX_FILTER_ENTRIES,
    MAX_HISTORY_HOURS,
    MAX_HISTORY_SERIES,
    MAX_TEXT,
    Command,
    Role,
)

IDENT: Schema = {"type": "string", "pattern": ID_RE.pattern}
TEXT: Schema = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
SEQ: Schema = {"type": "integer", "minimum": 0}
CHANNEL: Schema = {"enum": list(CHANNELS)}
PATTERNS: Schema = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_FILTER_ENTRIES,
    "items": {"type": "string", "pattern": FILTER_RE.pattern},
}
TIME: Schema = {"type": "string", "format": "date-time"}
COMMANDS: list[str] = list(typing.get_args(typing.get_type_hints(Command)["command"]))


def _frame(key: str, value: str, title: str, properties: Schema, required: list[str]) -> Schema:
    """One frame: an object whose ``op`` (client) or ``type`` (server) is ``value``.
    Other fields are allowed: the server ignores what it does not know, and clients
    should ignore fields added to server frames later."""
    return {
        "$schema": DIALECT,
        "$id": f"{ID_PREFIX}ws-{value}",
        "title": title,
        "type": "object",
        "required": [key, *required],
        "properties": {key: {"const": value}, **properties},
    }


def client_frames() -> dict[str, Schema]:
    """Operation name -> schema of the client frame."""
    command_fields = {"alert_id": IDENT, "note": TEXT, "id": IDENT}
    frames = {
        "auth": _frame("op", "auth", "authenticate", {"token": TEXT}, ["token"]),
        "subscribe": _frame(
            "op",
            "subscribe",
            "subscribe to a channel (snapshot or resume, then updates)",
            {
                "sub": IDENT,
                "channel": CHANNEL,
                "kpis": PATTERNS,
                "scopes": PATTERNS,
                "history": {
                    "type": "array",
                    "maxItems": MAX_HISTORY_SERIES,
                    "items": {
                        "type": "object",
                        "required": ["kpi", "scope"],
                        "properties": {"kpi": IDENT, "scope": IDENT},
                    },
                },
                "history_hours": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": MAX_HISTORY_HOURS,
                    "default": 3,
                },
                "resume": {
                    "type": "object",
                    "description": "the epoch and the last seq received on this channel",
                    "required": ["epoch", "seq"],
                    "properties": {"epoch": IDENT, "seq": SEQ},
                },
                "windows_since": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": 2**53 - 1,
                    "description": "epoch ms: the snapshot also carries every 60-s window "
                    "starting at or after it (kpi channel)",
                },
                "window_s": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 86_400,
                    "description": "only windows of this length in seconds, e.g. 60 (kpi "
                    "channel; default every length)",
                },
            },
            ["sub", "channel"],
        ),
        "unsubscribe": _frame("op", "unsubscribe", "end a subscription", {"sub": IDENT}, ["sub"]),
        "ping": _frame("op", "ping", "application-level ping", {"id": IDENT}, []),
    }
    for command in COMMANDS:
        fields = dict(command_fields)
        required = ["alert_id"]
        if command == "assign":
            fields["assignee"] = TEXT
            required.append("assignee")
        frames[command] = _frame(
            "op", command, f"operator command {command} (role operator)", fields, required
        )
    return frames


def _records() -> Schema:
    """The record schemas the server frames carry, to embed in their ``$defs``."""
    records = record_schemas()
    strip = ("$schema", "$id")
    return {
        name: {k: v for k, v in records[f"{file}.json"].items() if k not in strip}
        for name, file in (("kpi", "kpi-window"), ("alerts", "alert"))
    }


def _items_by_channel() -> list[Schema]:
    """``items`` are KPI windows on the kpi channel and alert states on alerts."""
    return [
        {
            "if": {"properties": {"channel": {"const": channel}}, "required": ["channel"]},
            "then": {"properties": {"items": {"items": {"$ref": f"#/$defs/{channel}"}}}},
        }
        for channel in CHANNELS
    ]


def _with_items(frame: Schema) -> Schema:
    frame["properties"]["items"] = {"type": "array"}
    frame["allOf"] = _items_by_channel()
    frame["$defs"] = _records()
    return frame


def server_frames() -> dict[str, Schema]:
    """Frame type -> schema of the server frame."""
    roles = list(typing.get_args(Role))
    subscription = {"sub": IDENT, "channel": CHANNEL, "epoch": IDENT, "seq": SEQ}
    history = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["kpi", "scope", "points"],
            "properties": {
                "kpi": {"type": "string"},
                "scope": {"type": "string"},
                "points": {
                    "type": "array",
                    "description": "[window_start epoch ms, value] of the 60-s windows",
                    "items": {
                        "type": "array",
                        "prefixItems": [{"type": "integer"}, {"type": ["number", "null"]}],
                        "minItems": 2,
                        "maxItems": 2,
                    },
                },
            },
        },
    }
    return {
        "welcome": _frame(
            "type",
            "welcome",
            "authenticated",
            {
                "role": {"enum": roles},
                "user": {"type": "string"},
                "epoch": {**IDENT, "description": "this server instance"},
                "seq": {
                    "type": "object",
                    "required": list(CHANNELS),
                    "properties": {channel: SEQ for channel in CHANNELS},
                },
            },
            ["role", "user", "epoch", "seq"],
        ),
        "snapshot": _with_items(
            _frame(
                "type",
                "snapshot",
                "the state of a new subscription",
                {
                    **subscription,
                    "history": history,
                    "resync": {"enum": ["too_old", "other_server"]},
                    "omitted": {"type": "integer", "minimum": 1},
                },
                [*subscription, "items"],
            )
        ),
        "resumed": _with_items(
            _frame(
                "type",
                "resumed",
                "what a resumed subscription missed",
                {**subscription, "from_seq": SEQ},
                [*subscription, "from_seq", "items"],
            )
        ),
        "update": _with_items(
            _frame(
                "type",
                "update",
                "records after seq",
                {"channel": CHANNEL, "seq": SEQ},
                ["channel", "seq", "items"],
            )
        ),
        "unsubscribed": _frame(
            "type", "unsubscribed", "subscription ended", {"sub": IDENT}, ["sub"]
        ),
        "pong": _frame("type", "pong", "answer to ping", {"time": TIME, "id": IDENT}, ["time"]),
        "command_accepted": _frame(
            "type",
            "command_accepted",
            "the command reached the broker",
            {
                "command": {"enum": COMMANDS},
                "alert_id": IDENT,
                "command_id": {"type": "string", "format": "uuid"},
                "id": IDENT,
            },
            ["command", "alert_id", "command_id"],
        ),
        "notice": _frame(
            "type",
            "notice",
            "operational notice",
            {
                "kind": {"enum": ["broker_restart"]},
                "reason": {"type": "string"},
                "at": TIME,
                "until": TIME,
                "restarts": {"type": "integer", "minimum": 0},
            },
            ["kind", "reason", "at", "until"],
        ),
        "error": _frame(
            "type",
            "error",
            "a request failed (stable code)",
            {
                "code": {"enum": list(ERROR_CODES)},
                "detail": {"type": "string"},
                "id": {**IDENT, "description": "the request's id, when it had one"},
            },
            ["code", "detail"],
        ),
    }


def examples() -> dict[str, list[dict[str, Any]]]:
    """Client frames from docs/ws-protocol.md, one or more per operation."""
    return {
        "auth": [{"op": "auth", "token": "wall-operator"}],
        "subscribe": [
            {
                "op": "subscribe",
                "sub": "map",
                "channel": "kpi",
                "kpis": ["air.aqi.vn"],
                "scopes": ["district:*"],
            },
            {
                "op": "subscribe",
                "sub": "city",
                "channel": "kpi",
                "scopes": ["city"],
                "resume": {"epoch": "3f9c2a1b7d40", "seq": 1907},
            },
            {"op": "subscribe", "sub": "alerts", "channel": "alerts"},
        ],
        "unsubscribe": [{"op": "unsubscribe", "sub": "map"}],
        "ack": [
            {
                "op": "ack",
                "alert_id": "flood-HD-TV-PL-20261122T0455",
                "note": "đã cử đội",
                "id": "ack-7",
            }
        ],
        "clear": [{"op": "clear", "alert_id": "A1"}],
        "assign": [{"op": "assign", "alert_id": "A1", "assignee": "lan", "id": "r2"}],
        "ping": [{"op": "ping", "id": "p1"}],
    }


__all__ = ["client_frames", "examples", "server_frames"]
