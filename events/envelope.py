"""The CloudEvents 1.0 envelope (structured JSON mode): build, encode, decode, validate.

This is the one place that turns bytes into a trusted :class:`Event`. ``decode`` checks,
in order, and stops at the first problem with a stable reason code (it becomes the
dead-letter reason or the 4xx answer):

====================== ==================================================================
reason                 meaning
====================== ==================================================================
oversize               more than ``MAX_EVENT_BYTES`` bytes
undecodable            not JSON (or not UTF-8)
not_an_object          JSON, but not an object
missing_attribute      a required CloudEvents attribute (or ``data``) is absent
bad_attribute          an attribute has the wrong type, is empty, or ``datacontenttype``
                       is not ``application/json`` (parameters such as
                       ``; charset=utf-8`` allowed)
unsupported_specversion ``specversion`` is not ``"1.0"``
unknown_type           ``type`` is not in the catalogue
bad_time               ``time`` (or a payload time) is not RFC 3339 with an offset
                       (``events.schema.TIME_PATTERN``), or its written year lies
                       outside what the windows can represent (before 1970, from 9000)
future_time            ``time`` lies further ahead of the receiver's clock than the
                       allowed skew (only when the caller passes ``latest_ms``)
missing_field          a required payload field is absent
wrong_type             a payload field has the wrong JSON type
out_of_range           a number outside the field's declared range
bad_value              a string not among the allowed values (enum, district code) or
                       empty/too long
====================== ==================================================================

Every other attribute (the optional ``subject`` and ``dataschema``, extensions such as
``traceparent``, ``tracestate``, ``partitionkey``) is allowed, not checked, and kept in
:attr:`Event.extensions`: re-encoding an event loses nothing of it. Undeclared payload
fields are kept (forward compatibility).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import orjson

from events.errors import InvalidEventError
from events.validation import PAYLOAD_VALIDATORS, parse_time

MAX_EVENT_BYTES = 64 * 1024
SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
# ``datacontenttype`` values accepted: application/json, media type in any case, with
# parameters (``application/json; charset=utf-8``, as the CloudEvents SDKs and HTTP
# clients write it). An ECMA-262 pattern, so that the JSON Schemas state the same rule.
DATACONTENTTYPE_PATTERN = (
    "^"
    + "".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in CONTENT_TYPE)
    + "[ \\t]*(;.*)?$"
)
# fullmatch: Python's "$" also matches before a final newline, ECMA-262's does not.
_json_media = re.compile(DATACONTENTTYPE_PATTERN).fullmatch
# The attributes an Event has fields for; every other one is an "extension" here.
CORE_ATTRIBUTES = frozenset(
    ("specversion", "id", "source", "type", "time", "datacontenttype", "data")
)
# How far an event's time may lie ahead of the receiver's clock (IOC_MAX_FUTURE_SKEW_S):
# a sensor whose clock runs ahead by more is rejected with ``future_time``, because one
# such event would otherwise move its partition's event-time front into the future.
DEFAULT_MAX_FUTURE_SKEW_S = 300.0

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Event times must leave room for the longest window (and then some) before
# ``datetime.max``: a window end past year 9999 cannot be represented. The bound is on
# the written year (events.schema.TIME_PATTERN, 1970..8999), which the JSON Schemas can
# state; with its offset an accepted time may lie up to a day past this instant.
MAX_EVENT_TIME = datetime(9000, 1, 1, tzinfo=UTC)


def latest_event_ms(now_s: float, skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S) -> int:
    """The newest event time (epoch ms) a receiver accepts at wall time ``now_s``."""
    return int((now_s + skew_s) * 1000)


_ENCODE_OPTIONS = orjson.OPT_UTC_Z
_REQUIRED_ATTRIBUTES = ("id", "source", "type", "time")


def rfc3339(ts: datetime) -> str:
    """RFC 3339 in UTC with ``Z``; microseconds only when present."""
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def epoch_ms(ts: datetime) -> int:
    """Milliseconds since the epoch, exactly (no float rounding) for an aware datetime."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


# Shared by every event without extensions: read-only, so no event can change another's.
_NO_EXTENSIONS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Event:
    """A validated CloudEvent: the attributes the pipeline needs plus the payload."""

    id: str
    source: str
    type: str
    time: datetime  # aware, UTC
    time_ms: int  # epoch milliseconds of ``time``; the windows use it
    district: str  # data["district"]
    data: dict[str, Any]  # the validated payload
    # Every attribute not above (subject, dataschema, traceparent, partitionkey, …), as
    # received: they travel on with the event and are stored with the raw event.
    extensions: Mapping[str, Any] = field(default_factory=lambda: _NO_EXTENSIONS)

    def to_dict(self) -> dict[str, Any]:
        """The CloudEvent as a JSON-ready dict (structured mode), extensions included."""
        d: dict[str, Any] = {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": rfc3339(self.time),
            "datacontenttype": CONTENT_TYPE,
        }
        if self.extensions:
            d.update(self.extensions)
        d["data"] = self.data
        return d

    @property
    def domain(self) -> str:
        """The domain from ``vn.ioc.<domain>.<name>``."""
        return self.type.split(".", 3)[2]


_new_object = object.__new__
(
    _set_id,
    _set_source,
    _set_type,
    _set_time,
    _set_time_ms,
    _set_district,
    _set_data,
    _set_extensions,
) = (
    Event.__dict__[name].__set__
    for name in ("id", "source", "type", "time", "time_ms", "district", "data", "extensions")
)


def new_event(
    event_type: str,
    source: str,
    data: Mapping[str, Any],
    *,
    time: datetime,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A CloudEvent dict (not validated: producers may build invalid events on purpose).

    ``time`` must be aware; it is written with millisecond precision, the precision of
    the windows.
    """
    if time.tzinfo is None:
        raise InvalidEventError("bad_time", "event time must carry a UTC offset")
    return {
        "specversion": SPECVERSION,
        "id": event_id if event_id is not None else str(uuid.uuid4()),
        "source": source,
        "type": event_type,
        "time": time.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "datacontenttype": CONTENT_TYPE,
        "data": dict(data),
    }


def encode(event: Mapping[str, Any] | Event) -> bytes:
    """JSON bytes of a CloudEvent dict (or an :class:`Event`); datetimes become RFC 3339."""
    if isinstance(event, Event):
        event = event.to_dict()
    elif not isinstance(event, dict):
        event = dict(event)
    return orjson.dumps(event, option=_ENCODE_OPTIONS)


def decode(raw: bytes | bytearray | memoryview | str, latest_ms: int | None = None) -> Event:
    """Parse and validate one CloudEvent; raises ``InvalidEventError(reason, detail)``.

    With ``latest_ms`` (see :func:`latest_event_ms`), an event time after it is
    ``future_time``.
    """
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEventError("oversize", f"{len(raw)} bytes > {MAX_EVENT_BYTES}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEventError("undecodable", str(exc)) from None
    return validate(obj, latest_ms)


def _attribute_error(obj: Mapping[str, Any], name: str) -> InvalidEventError:
    value = obj.get(name)
    if value is None:
        return InvalidEventError("missing_attribute", name)
    return InvalidEventError("bad_attribute", f"{name} must be a non-empty string: {value!r}")


def validate(obj: Mapping[str, Any], latest_ms: int | None = None) -> Event:
    """Validate an already-parsed CloudEvent dict; the same checks as :func:`decode`."""
    if type(obj) is not dict:
        if not isinstance(obj, Mapping):
            raise InvalidEventError(
                "not_an_object", f"a CloudEvent is a JSON object, not {obj!r}"[:120]
            )
        obj = dict(obj)
    specversion = obj.get("specversion")
    if specversion != SPECVERSION:
        if specversion is None:
            raise InvalidEventError("missing_attribute", "specversion")
        raise InvalidEventError("unsupported_specversion", f"{specversion!r}, expected '1.0'")
    event_id = obj.get("id")
    source = obj.get("source")
    type_name = obj.get("type")
    time_text = obj.get("time")
    # One combined test on the hot path; the slow path finds which one is wrong.
    if not (
        type(event_id) is str
        and type(source) is str
        and type(type_name) is str
        and type(time_text) is str
        and event_id
        and source
    ):
        for name in _REQUIRED_ATTRIBUTES:
            value = obj.get(name)
            if type(value) is not str or not value:
                raise _attribute_error(obj, name)
    validator = PAYLOAD_VALIDATORS.get(type_name)  # type: ignore[arg-type]
    if validator is None:
        raise InvalidEventError("unknown_type", f"no event type {type_name!r}")
    ts = parse_time(time_text, "time")  # type: ignore[arg-type]
    content_type = obj.get("datacontenttype")
    if (
        content_type is not None
        and content_type != CONTENT_TYPE
        and (type(content_type) is not str or _json_media(content_type) is None)
    ):
        raise InvalidEventError("bad_attribute", f"datacontenttype {content_type!r}")
    data = obj.get("data")
    if type(data) is not dict:
        if data is None:
            raise InvalidEventError("missing_attribute", "data")
        if not isinstance(data, Mapping):
            raise InvalidEventError("bad_attribute", "data must be a JSON object")
        data = dict(data)
    # parse_time has checked the written year (1970..8999): the bound is on the text, as
    # the JSON Schema's pattern states it, so an offset moves the instant by < 24 h at most.
    delta = ts - _EPOCH
    time_ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    if latest_ms is not None and time_ms > latest_ms:
        raise InvalidEventError(
            "future_time",
            f"time {time_text!r} is {(time_ms - latest_ms) / 1000:.0f} s beyond the allowed "
            f"clock skew into the future of the receiver",
        )
    validator(data)
    # Fill the slots directly: a frozen dataclass' __init__ goes through
    # object.__setattr__ field by field, which doubles the cost of this hot path.
    event: Event = _new_object(Event)
    _set_id(event, event_id)
    _set_source(event, source)
    _set_type(event, type_name)
    _set_time(event, ts)
    _set_time_ms(event, time_ms)
    _set_district(event, data["district"])
    _set_data(event, data)
    # Only the key count on the common path: an event with no other attributes has six
    # keys, seven with datacontenttype.
    if len(obj) > (7 if "datacontenttype" in obj else 6):
        _set_extensions(event, {k: v for k, v in obj.items() if k not in CORE_ATTRIBUTES})
    else:
        _set_extensions(event, _NO_EXTENSIONS)
    return event


__all__ = [
    "CONTENT_TYPE",
    "CORE_ATTRIBUTES",
    "DATACONTENTTYPE_PATTERN",
    "DEFAULT_MAX_FUTURE_SKEW_S",
    "MAX_EVENT_BYTES",
    "MAX_EVENT_TIME",
    "SPECVERSION",
    "Event",
    "decode",
    "encode",
    "epoch_ms",
    "latest_event_ms",
    "new_event",
    "rfc3339",
    "validate",
]
