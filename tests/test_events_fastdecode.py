"""The stream workers' msgspec decoder agrees with ``events.envelope.decode``: the same
events accepted (with the same attributes and payload), the same reasons and details for
the rest."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.catalogue import EVENT_TYPES
from events.envelope import decode
from events.errors import InvalidEventError
from events.fastdecode import decode_fast
from tests.streams_helpers import T0, raw_event

LATEST_MS = T0 + 3_600_000


def _outcome(fn: Any, raw: bytes) -> tuple[Any, ...]:
    try:
        ev = fn(raw, LATEST_MS)
    except InvalidEventError as exc:
        return ("invalid", exc.reason, exc.detail)
    # (an absent optional field is None in decode_fast's payload: same for data.get)
    data = {k: v for k, v in ev.data.items() if v is not None}
    return ("ok", ev.id, ev.source, ev.type, ev.time, ev.time_ms, ev.district, data)


def _same(raw: bytes) -> None:
    assert _outcome(decode_fast, raw) == _outcome(decode, raw)


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_catalogue_example_decodes_alike(event_type: str) -> None:
    _same(raw_event(event_type, T0 + 1234))


_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "HD", "x" * 257, "😀" * 256, "😀" * 257, "reported", "2026-01-01"])
    | st.text(max_size=5)
)
_TIMES = st.sampled_from(
    [
        "2026-11-21T22:05:00.000Z",
        "2026-11-21T22:05:00+07:00",
        "2026-11-21T22:05:00",
        "2026-11-21 22:05:00Z",
        "2026-11-21T22:05:00.123456789Z",
        "1969-12-31T23:59:59Z",
        "9000-01-01T00:00:00Z",
        "2099-01-01T00:00:00Z",
        "yesterday",
    ]
)
_TEXT_EDITS = [
    ("", ""),
    ('"pm25":', '"pm25":1e999,"x":'),
    ('"data":{', '"data":{"extra":1e999,'),
    ('"data":{', '"data":{"extra":"\\ud800",'),
    ('"data":{', '"data":{"extra":123456789012345678901234567890,'),
    ('"specversion"', '"ext":1e999,"specversion"'),
    ('"pm25":', '"pm25":5,"pm25":'),
    ('"datacontenttype":"application/json"', '"datacontenttype":null'),
    ('"datacontenttype":"application/json"', '"datacontenttype":"application/json; charset=utf-8"'),
    ('"datacontenttype":"application/json"', '"datacontenttype":"application/xml"'),
    ("}}", "}} "),
]


@st.composite
def _records(draw: st.DrawFn) -> bytes:
    event_type = draw(st.sampled_from(sorted(EVENT_TYPES)))
    event = orjson.loads(raw_event(event_type, T0 + draw(st.integers(0, 10**6))))
    data = event["data"]
    fields = [f.name for f in EVENT_TYPES[event_type].fields]
    for name in draw(st.lists(st.sampled_from([*fields, "extra"]), max_size=3)):
        if draw(st.booleans()):
            data[name] = draw(_VALUES)
        else:
            data.pop(name, None)
    if draw(st.booleans()):
        event["time"] = draw(_TIMES)
    if draw(st.integers(0, 4)) == 0:
        name = draw(st.sampled_from(["id", "source", "type", "specversion", "data", "x"]))
        event[name] = draw(_VALUES)
    text = orjson.dumps(event).decode()
    old, new = draw(st.sampled_from(_TEXT_EDITS))
    return text.replace(old, new, 1).encode("utf-8", "surrogatepass")


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_records())
def test_generated_records_decode_alike(raw: bytes) -> None:
    _same(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b"\xff",
        b'{"specversion":"1.0"}',
        b"\xef\xbb\xbf" + raw_event("vn.ioc.air.observed", T0),
        raw_event("vn.ioc.air.observed", T0).replace(b'"HD-AQ', b'"\xff'),
        raw_event("vn.ioc.air.observed", T0) + b"x",
        b" " * 70_000,
    ],
)
def test_malformed_records_decode_alike(raw: bytes) -> None:
    _same(raw)


@pytest.mark.parametrize(
    "time",
    [
        "2026-11-21 22:05:00Z",  # fromisoformat accepts these; RFC 3339 does not
        "2026-11-21T22:05Z",
        "20261121T220500Z",
        "2026-11-21T22:05:00",
        "1970-01-01T00:30:00+01:00",  # written year 1970, UTC instant in 1969: accepted
        "2026-11-21T22:05:00.5+07:00",
    ],
)
def test_times_are_judged_alike_without_a_clock_bound(time: str) -> None:
    event = orjson.loads(raw_event("vn.ioc.air.observed", T0))
    event["time"] = time
    raw = orjson.dumps(event)

    def outcome(fn: Any) -> tuple[Any, ...]:
        try:
            ev = fn(raw, None)
        except InvalidEventError as exc:
            return ("invalid", exc.reason)
        return ("ok", ev.time_ms)

    assert outcome(decode_fast) == outcome(decode)
