"""The push protocol's messages: parsing and validation of client frames, server frames.

Sans-I/O: nothing here touches a socket. Every way a client frame can be wrong maps to one
stable error code (see ``ERROR_CODES`` and docs/ws-protocol.md); the parser raises
:class:`events.errors.ProtocolError` with that code and the session turns it into an error
frame. The connection stays open after an error frame unless the error is about
authentication.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from events.errors import ProtocolError

Channel = Literal["kpi", "alerts"]
CHANNELS: Final[tuple[Channel, ...]] = ("kpi", "alerts")
Role = Literal["viewer", "operator"]

# Error codes of error frames (``{"type": "error", "code": ...}``).
ERROR_CODES: Final[Mapping[str, str]] = {
    "bad_json": "the frame is not valid UTF-8 JSON",
    "not_an_object": "the frame is JSON but not an object",
    "binary_not_supported": "binary frames are not part of the protocol",
    "message_too_big": "the frame exceeds the message size limit",
    "unknown_op": "'op' is missing or not one of the protocol's operations",
    "missing_field": "a required field is absent",
    "bad_field": "a field has the wrong type or value",
    "unauthenticated": "the first message must be 'auth' (or connect with ?token=)",
    "auth_failed": "the token is unknown",
    "already_authenticated": "'auth' was sent twice",
    "forbidden": "the token's role may not do this (ack/clear/assign need 'operator')",
    "unknown_channel": "channel is not 'kpi' or 'alerts'",
    "too_many_subscriptions": "the per-connection subscription limit is reached",
    "duplicate_subscription": "a subscription with this 'sub' id exists",
    "unknown_subscription": "no subscription with this 'sub' id",
    "snapshot_unavailable": "the snapshot could not be read (database down); live updates follow",
    "command_failed": "the command could not be forwarded to the broker",
}

# Close codes (RFC 6455 private range 4000-4999) the server uses on purpose.
CLOSE_AUTH_FAILED: Final = 4001
CLOSE_AUTH_TIMEOUT: Final = 4002
CLOSE_SLOW_CLIENT: Final = 4008
CLOSE_SERVER_SHUTDOWN: Final = 1001

# Ids (sub, kpi and scope of history, epoch, request ids) and filter patterns; public
# because ws/frames.py states them in the AsyncAPI document.
ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
FILTER_RE = re.compile(r"^[A-Za-z0-9_.:\-*]{1,128}$")
MAX_FILTER_ENTRIES: Final = 200
MAX_HISTORY_SERIES: Final = 16
MAX_HISTORY_HOURS: Final = 24.0
MAX_TEXT: Final = 500


@dataclass(frozen=True, slots=True)
class Auth:
    token: str


@dataclass(frozen=True, slots=True)
class Resume:
    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    kpi: str
    scope: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    sub: str
    channel: Channel
    kpis: tuple[str, ...] | None  # None = every KPI (kpi channel) / every alert
    scopes: tuple[str, ...] | None  # patterns with '*'; None = every scope
    history: tuple[HistoryRequest, ...]
    history_hours: float
    resume: Resume | None
    # kpi channel: the snapshot also carries every 60-s window starting at or after this
    # time (epoch ms), not only the newest per (kpi, scope): what a resuming client may
    # have missed while it was away (docs/ws-protocol.md, *Resume*).
    windows_since_ms: int | None = None
    # kpi channel: only windows of this length in seconds (60, 900, 3600); None = every
    # length. The wall's map reads 60-s windows: a third of the records, and of its snapshot.
    window_s: int | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    sub: str


@dataclass(frozen=True, slots=True)
class Command:
    command: Literal["ack", "clear", "assign"]
    alert_id: str
    assignee: str | None
    note: str | None
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Ping:
    request_id: str | None


ClientMessage = Auth | Subscribe | Unsubscribe | Command | Ping


def _str(obj: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise ProtocolError("missing_field", f"'{name}' is required")
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise ProtocolError("bad_field", f"'{name}' must be a non-empty string (≤{MAX_TEXT})")
    return value


def _ident(obj: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = _str(obj, name, required=required)
    if value is not None and not ID_RE.match(value):
        raise ProtocolError("bad_field", f"'{name}' must match {ID_RE.pattern}")
    return value


def _patterns(obj: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not value or len(value) > MAX_FILTER_ENTRIES:
        raise ProtocolError(
            "bad_field", f"'{name}' must be a non-empty list of ≤{MAX_FILTER_ENTRIES} strings"
        )
    for item in value:
        if not isinstance(item, str) or not FILTER_RE.match(item):
            raise ProtocolError("bad_field", f"'{name}' entry {item!r} is not a valid pattern")
    return tuple(value)


def _parse_subscribe(obj: Mapping[str, Any]) -> Subscribe:
    sub = _ident(obj, "sub")
    channel = obj.get("channel")
    if channel is None:
        raise ProtocolError("missing_field", "'channel' is required")
    if channel not in CHANNELS:
        raise ProtocolError("unknown_channel", f"channel {channel!r} is not one of {CHANNELS}")
    history: list[HistoryRequest] = []
    raw_history = obj.get("history")
    if raw_history is not None:
        if not isinstance(raw_history, list) or len(raw_history) > MAX_HISTORY_SERIES:
            raise ProtocolError(
                "bad_field", f"'history' must be a list of ≤{MAX_HISTORY_SERIES} objects"
            )
        for item in raw_history:
            if not isinstance(item, dict):
                raise ProtocolError("bad_field", "'history' entries are {kpi, scope} objects")
            kpi = _ident(item, "kpi")
            scope = _ident(item, "scope")
            assert kpi is not None and scope is not None
            history.append(HistoryRequest(kpi, scope))
    hours = obj.get("history_hours", 3)
    if (
        isinstance(hours, bool)
        or not isinstance(hours, int | float)
        or not 0 < hours <= MAX_HISTORY_HOURS
    ):
        raise ProtocolError("bad_field", f"'history_hours' must be in (0, {MAX_HISTORY_HOURS}]")
    resume: Resume | None = None
    raw_resume = obj.get("resume")
    if raw_resume is not None:
        if not isinstance(raw_resume, dict):
            raise ProtocolError("bad_field", "'resume' must be {epoch, seq}")
        epoch = _ident(raw_resume, "epoch")
        seq = raw_resume.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ProtocolError("bad_field", "'resume.seq' must be a non-negative integer")
        assert epoch is not None
        resume = Resume(epoch, seq)
    since = obj.get("windows_since")
    if since is not None and (
        isinstance(since, bool) or not isinstance(since, int) or not 0 <= since < 2**53
    ):
        raise ProtocolError("bad_field", "'windows_since' must be epoch milliseconds (integer)")
    window_s = obj.get("window_s")
    if window_s is not None and (
        isinstance(window_s, bool) or not isinstance(window_s, int) or not 0 < window_s <= 86_400
    ):
        raise ProtocolError("bad_field", "'window_s' must be a window length in seconds (1-86400)")
    assert sub is not None
    return Subscribe(
        sub=sub,
        channel=channel,
        kpis=_patterns(obj, "kpis"),
        scopes=_patterns(obj, "scopes"),
        history=tuple(history),
        history_hours=float(hours),
        resume=resume,
        windows_since_ms=since,
        window_s=window_s,
    )


def _parse_command(op: Literal["ack", "clear", "assign"], obj: Mapping[str, Any]) -> Command:
    alert_id = _ident(obj, "alert_id")
    assignee = _str(obj, "assignee", required=op == "assign")
    note = _str(obj, "note", required=False)
    assert alert_id is not None
    return Command(op, alert_id, assignee, note, _ident(obj, "id", required=False))


def parse_client_message(raw: str | bytes, max_bytes: int) -> ClientMessage:
    """Decode and validate one client frame; raises ProtocolError(code, detail)."""
    if isinstance(raw, bytes):
        raise ProtocolError("binary_not_supported", "send JSON text frames")
    if len(raw) > max_bytes:
        raise ProtocolError("message_too_big", f"frame of {len(raw)} chars > {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("bad_json", str(exc)) from exc
    if not isinstance(obj, dict):
        raise ProtocolError("not_an_object", "a frame is one JSON object")
    op = obj.get("op")
    if op == "auth":
        token = _str(obj, "token")
        assert token is not None
        return Auth(token)
    if op == "subscribe":
        return _parse_subscribe(obj)
    if op == "unsubscribe":
        sub = _ident(obj, "sub")
        assert sub is not None
        return Unsubscribe(sub)
    if op in ("ack", "clear", "assign"):
        return _parse_command(op, obj)
    if op == "ping":
        return Ping(_ident(obj, "id", required=False))
    raise ProtocolError("unknown_op", f"op {op!r} is not auth/subscribe/unsubscribe/ack/...")


def error_frame(code: str, detail: str = "", request: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code, "detail": detail}
    if request is not None:
        frame["id"] = request
    return frame


def pattern_matches(pattern: str, value: str) -> bool:
    """'*' matches any run of characters (including none); everything else literally."""
    if "*" not in pattern:
        return pattern == value
    parts = pattern.split("*")
    if not value.startswith(parts[0]) or not value.endswith(parts[-1]):
        return False
    pos = len(parts[0])
    end = len(value) - len(parts[-1])
    for part in parts[1:-1]:
        found = value.find(part, pos, end)
        if found < 0:
            return False
        pos = found + len(part)
    return pos <= end


def any_matches(patterns: tuple[str, ...] | None, value: str | None) -> bool:
    if patterns is None:
        return True
    if value is None:
        return False
    return any(pattern_matches(p, value) for p in patterns)


def parse_token_role(spec: str) -> tuple[Role, str]:
    """Token settings map a token to "role" or "role:name"."""
    role, _, name = spec.partition(":")
    if role not in ("viewer", "operator"):
        raise ValueError(f"token role must be viewer or operator, not {role!r}")
    return role, name or role  # type: ignore[return-value]
