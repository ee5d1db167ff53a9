"""The stream workers' CloudEvent decoder: the checks of :func:`events.envelope.decode`,
run by msgspec in C, with ``decode`` itself as the slow path.

Why msgspec: ``orjson.loads`` builds a dict of the envelope and of the payload, and then
the compiled Python rules of :mod:`events.validation` walk it; that was ~6 µs of the
~30 µs each event cost the streams worker (docs/benchmarks.md). msgspec parses the
envelope into a struct and the payload into a dict while it checks types, ranges and
allowed values, in one pass in C (~1.6 µs). Hand-written Python cannot get below the
cost of the dict walk it replaces.

Exactness: the msgspec schemas are built from the same catalogue declarations and accept
*at most* what ``decode`` accepts. Whatever they refuse (any error at all) is decoded
again by ``decode``, which either accepts it (a case the schemas are stricter about) or
raises the usual ``InvalidEventError(reason, detail)``: dead-letter reasons and details
stay exactly those of ``decode``. ``tests/test_events_fastdecode.py`` checks the
agreement on generated records.

Records with CloudEvents extension attributes or undeclared payload fields (both allowed)
take the slow path: msgspec would skip them unread, and so accept what orjson refuses
(invalid UTF-8, numbers beyond a double). Event types with payload times or cross-field
hooks (the dossier) have their payload parsed by orjson and checked by their Python
validator, exactly as in ``decode``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
import orjson

from events.catalogue import EVENT_TYPES, EventType
from events.envelope import MAX_EVENT_BYTES, MAX_EVENT_TIME, decode
from events.geography import DISTRICT_CODES
from events.schema import TIME_PATTERN, FieldSpec
from events.validation import _HOOKS, MAX_TEXT_LENGTH, PAYLOAD_VALIDATORS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_EVENT_MS = (MAX_EVENT_TIME - _EPOCH).days * 86_400_000
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class Decoded(NamedTuple):
    """What the stream worker needs of a valid event."""

    # the attributes of :class:`events.envelope.Event`, which the fold reads alike
    id: str
    source: str
    type: str
    time: datetime  # aware, UTC
    time_ms: int  # epoch milliseconds of ``time``
    district: str
    data: dict[str, Any]  # every declared field; None where an optional one is absent


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    # An attribute not declared here (a CloudEvents extension) goes to the slow path:
    # ignoring it unread would accept what orjson refuses (e.g. a number beyond a
    # double). ``data`` is parsed in a second pass by the decoder of its type.
    specversion: Literal["1.0"]
    id: _NonEmpty
    source: _NonEmpty
    type: str
    time: str
    data: msgspec.Raw
    datacontenttype: Literal["application/json"] | None = None


def _field_type(f: FieldSpec) -> Any:
    """The msgspec type accepting exactly the values the rule of ``f`` accepts."""
    if f.name == "district":
        return Literal[tuple(sorted(DISTRICT_CODES))]
    if f.kind == "enum":
        return Literal[tuple(f.choices or ())]
    if f.kind == "str":
        return Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_LENGTH)]
    if f.kind == "bool":
        return bool
    lo, hi = f.minimum, f.maximum
    # An int is within [lo, hi] exactly when it is within [ceil(lo), floor(hi)].
    ilo = None if lo is None else math.ceil(lo)
    ihi = None if hi is None else math.floor(hi)
    as_int = Annotated[int, msgspec.Meta(ge=ilo, le=ihi)]
    if f.kind == "int":
        return as_int
    # "float" accepts JSON integers too, and keeps them as ints (as orjson does).
    flo = None if lo is None else float(lo)
    fhi = None if hi is None else float(hi)
    return as_int | Annotated[float, msgspec.Meta(ge=flo, le=fhi)]


PayloadDecoder = Callable[[bytes], dict[str, Any]]
_asdict = msgspec.structs.asdict


def _payload_struct(et: EventType) -> type[msgspec.Struct] | None:
    """The payload schema of ``et``; None for the types checked by Python rules."""
    if et.type in _HOOKS or any(f.kind == "time" for f in et.fields):
        return None
    # Required fields first (a struct's fields with defaults must come last); an
    # undeclared field is refused (to the slow path) for the same reason as above.
    # An absent optional field is None in the payload dict (JSON null stays refused):
    # every reader of a payload takes ``data.get(name)``, for which both are the same.
    fields = [(f.name, _field_type(f)) for f in et.fields if f.required] + [
        (f.name, _field_type(f), None) for f in et.fields if not f.required
    ]
    return msgspec.defstruct(f"Payload_{et.domain}_{et.name}", fields, forbid_unknown_fields=True)


def _payload_decoder(et: EventType, schema: type[msgspec.Struct] | None) -> PayloadDecoder:
    if schema is None:
        # Payload times and cross-field rules: parsed and checked as ``decode`` does.
        check = PAYLOAD_VALIDATORS[et.type]

        def checked(raw: bytes) -> dict[str, Any]:
            data = orjson.loads(raw)
            if type(data) is not dict:
                raise TypeError("data is not an object")
            check(data)
            return data

        return checked
    parse = msgspec.json.Decoder(schema).decode
    return lambda raw: _asdict(parse(raw))


def _one_pass(et: EventType, schema: type[msgspec.Struct]) -> msgspec.json.Decoder[Any]:
    """Envelope and payload of ``et`` in one parse (what most records are)."""
    envelope = msgspec.defstruct(
        f"Event_{et.domain}_{et.name}",
        [
            ("specversion", Literal["1.0"]),
            ("id", _NonEmpty),
            ("source", _NonEmpty),
            ("type", Literal[et.type]),
            ("time", str),
            ("data", schema),
            ("datacontenttype", Literal["application/json"] | None, None),
        ],
        forbid_unknown_fields=True,
    )
    return msgspec.json.Decoder(envelope)


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_SCHEMAS = {t: _payload_struct(et) for t, et in EVENT_TYPES.items()}
_PAYLOADS: dict[str, PayloadDecoder] = {
    t: _payload_decoder(et, _SCHEMAS[t]) for t, et in EVENT_TYPES.items()
}
_ONE_PASS = {t: _one_pass(et, schema) for t, et in EVENT_TYPES.items() if (schema := _SCHEMAS[t])}
# The one-pass decoder tried first: that of the type decoded last (a source topic
# carries one event type, or mostly one).
_last = [next(iter(_ONE_PASS.values()))]
_fromisoformat = datetime.fromisoformat
_time_shape = re.compile(TIME_PATTERN).match
_new_decoded = tuple.__new__


def _slow(raw: bytes, latest_ms: int | None) -> Decoded:
    ev = decode(raw, latest_ms)  # raises the exact InvalidEventError
    return Decoded(ev.id, ev.source, ev.type, ev.time, ev.time_ms, ev.district, ev.data)


def decode_fast(raw: bytes, latest_ms: int | None = None) -> Decoded:
    """Parse and validate one CloudEvent; raises ``InvalidEventError(reason, detail)``
    exactly as :func:`events.envelope.decode` does."""
    if len(raw) > MAX_EVENT_BYTES:
        return _slow(raw, latest_ms)
    try:
        try:  # (inline, not a helper: this runs once per event)
            env = _last[0].decode(raw)
            data = _asdict(env.data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            # another type, or a bad record: the general path tells
            env = _ENVELOPE.decode(raw)
            one = _ONE_PASS.get(env.type)
            if one is None:
                data = _PAYLOADS[env.type](env.data)
            else:
                env = one.decode(raw)
                _last[0] = one
                data = _asdict(env.data)
        # fromisoformat alone accepts more than RFC 3339 (a space for "T", basic format,
        # no seconds): the contract's pattern first, as events.validation.parse_time does.
        if _time_shape(env.time) is None:
            raise ValueError("not RFC 3339")
        ts = _fromisoformat(env.time)
        tz = ts.tzinfo
        if tz is not UTC:
            if tz is None:
                raise ValueError("no UTC offset")
            ts = ts.astimezone(UTC)
        delta = ts - _EPOCH
        time_ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
        if not 0 <= time_ms < _MAX_EVENT_MS or (latest_ms is not None and time_ms > latest_ms):
            raise ValueError("out of range")
        return _new_decoded(
            Decoded, (env.id, env.source, env.type, ts, time_ms, data["district"], data)
        )
    except Exception:
        # Refused, or not what the fast path handles: the slow path decides, with the
        # reason and detail of ``decode``.
        return _slow(raw, latest_ms)
