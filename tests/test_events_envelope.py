"""The CloudEvents envelope: round trips of every type and every rejection reason."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.catalogue import EVENT_TYPES, EventType, event_type, key_for
from events.envelope import MAX_EVENT_BYTES, Event, decode, encode, new_event, validate
from events.errors import InvalidEventError

T0 = datetime(2026, 3, 1, 8, 30, 15, 250_000, tzinfo=UTC)


def _event(et: EventType, **data_changes: Any) -> dict[str, Any]:
    data = {**et.example, **data_changes}
    return new_event(et.type, et.source_for(str(et.example[et.key_field])), data, time=T0)


def _air(**changes: Any) -> dict[str, Any]:
    return _event(EVENT_TYPES["vn.ioc.air.observed"], **changes)


def _reason(obj: Any) -> str:
    raw = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    with pytest.raises(InvalidEventError) as info:
        decode(raw)
    return info.value.reason


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_every_type_round_trips(type_name: str) -> None:
    et = EVENT_TYPES[type_name]
    built = _event(et)
    event = decode(encode(built))
    # the decoder fills the slots itself: every field of Event must be set
    assert all(hasattr(event, f.name) for f in dataclasses.fields(Event))
    assert event.type == type_name
    assert event.id == built["id"]
    assert event.source == built["source"]
    assert event.time == T0
    assert event.time_ms == 1_772_353_815_250
    assert event.district == et.example["district"]
    for name, value in et.example.items():
        assert event.data[name] == value
    assert key_for(event) == str(et.example[et.key_field]).encode()
    assert key_for(built) == key_for(event)
    # and back again: the decoded event re-encodes to an equivalent event
    again = decode(encode(event))
    assert again == event
    assert event_type(type_name).topic == f"ioc.events.{et.domain}"


def test_every_domain_has_types_with_examples_that_use_every_required_field() -> None:
    domains = {et.domain for et in EVENT_TYPES.values()}
    assert domains == {
        "traffic", "air", "water", "energy", "parking",
        "services", "feedback", "emergency", "security", "payments",
    }  # fmt: skip
    for et in EVENT_TYPES.values():
        required = {f.name for f in et.fields if f.required}
        assert required <= set(et.example), et.type


def test_minimum_payloads_of_the_architecture() -> None:
    def required(t: str) -> set[str]:
        return {f.name for f in EVENT_TYPES[t].fields if f.required}

    def declared(t: str) -> set[str]:
        return {f.name for f in EVENT_TYPES[t].fields}

    assert required("vn.ioc.air.observed") == {"station_id", "district", "pm25", "pm10"}
    assert {"no2", "so2", "co", "o3"} <= declared("vn.ioc.air.observed")
    assert required("vn.ioc.traffic.observed") == {
        "segment_id", "district", "vehicle_count", "avg_speed_kmh", "occupancy_pct",
    }  # fmt: skip
    assert required("vn.ioc.water.observed") == {"station_id", "district", "level_m"}
    assert {"dossier_id", "district", "status", "channel", "due", "resolved_at"} <= declared(
        "vn.ioc.services.dossier"
    )
    dossier = EVENT_TYPES["vn.ioc.services.dossier"]
    assert dossier.field("status").choices == ("received", "resolved")  # type: ignore[union-attr]
    assert dossier.field("channel").choices == ("online", "offline")  # type: ignore[union-attr]


def test_time_with_offset_becomes_utc_and_epoch_ms_is_exact() -> None:
    ict = timezone(timedelta(hours=7))
    event = validate({**_air(), "time": "2026-03-01T15:30:15.999+07:00"})
    assert event.time == datetime(2026, 3, 1, 8, 30, 15, 999_000, tzinfo=UTC)
    assert event.time.tzinfo is UTC
    assert event.time_ms == 1_772_353_815_999
    built = new_event("vn.ioc.air.observed", "/x", {}, time=datetime(2026, 3, 1, 15, tzinfo=ict))
    assert built["time"] == "2026-03-01T08:00:00.000Z"


def test_extensions_and_undeclared_fields_are_kept() -> None:
    obj = _air(firmware="2.1.0")
    obj["traceparent"] = "00-abc-def-01"
    obj["subject"] = "HD-AQ-001"
    event = decode(orjson.dumps(obj))
    assert event.data["firmware"] == "2.1.0"
    assert dict(event.extensions) == {"traceparent": "00-abc-def-01", "subject": "HD-AQ-001"}
    assert event.to_dict()["traceparent"] == "00-abc-def-01"
    assert not decode(orjson.dumps(_air())).extensions


def test_dossier_timeliness_is_derived() -> None:
    et = EVENT_TYPES["vn.ioc.services.dossier"]
    on_time = decode(encode(_event(et)))
    assert on_time.data["timeliness"] == "on_time"
    late = decode(encode(_event(et, resolved_at="2026-03-05T17:00:01+07:00")))
    assert late.data["timeliness"] == "overdue"
    received = {k: v for k, v in et.example.items() if k != "resolved_at"}
    received["status"] = "received"
    event = decode(encode(new_event(et.type, "/s", received, time=T0)))
    assert "timeliness" not in event.data
    no_resolution = _event(et)
    del no_resolution["data"]["resolved_at"]
    assert _reason(no_resolution) == "missing_field"


def test_encode_accepts_events_and_datetimes() -> None:
    obj = _air()
    obj["time"] = T0
    assert orjson.loads(encode(obj))["time"] == "2026-03-01T08:30:15.250000Z"
    event = decode(encode(obj))
    assert orjson.loads(encode(event)) == event.to_dict()
    assert isinstance(event, Event)


# ---- rejections ------------------------------------------------------------------------


def _without(obj: dict[str, Any], name: str) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    del out[name]
    return out


def _with_data(obj: dict[str, Any], **data: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["data"].update(data)
    return out


def _without_field(obj: dict[str, Any], name: str) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    del out["data"][name]
    return out


AIR = _air()

REJECTED: list[tuple[str, Any, str]] = [
    ("not json", b"{not json", "undecodable"),
    ("not utf-8", b'{"id": "\xff"}', "undecodable"),
    ("empty", b"", "undecodable"),
    ("array", b"[1, 2]", "not_an_object"),
    ("string", b'"event"', "not_an_object"),
    ("no specversion", _without(AIR, "specversion"), "missing_attribute"),
    ("no id", _without(AIR, "id"), "missing_attribute"),
    ("no source", _without(AIR, "source"), "missing_attribute"),
    ("no type", _without(AIR, "type"), "missing_attribute"),
    ("no time", _without(AIR, "time"), "missing_attribute"),
    ("no data", _without(AIR, "data"), "missing_attribute"),
    ("specversion 0.3", {**AIR, "specversion": "0.3"}, "unsupported_specversion"),
    ("specversion number", {**AIR, "specversion": 1.0}, "unsupported_specversion"),
    ("empty id", {**AIR, "id": ""}, "bad_attribute"),
    ("numeric id", {**AIR, "id": 42}, "bad_attribute"),
    ("data a list", {**AIR, "data": [1]}, "bad_attribute"),
    ("xml content", {**AIR, "datacontenttype": "application/xml"}, "bad_attribute"),
    ("unknown type", {**AIR, "type": "vn.ioc.air.smelled"}, "unknown_type"),
    ("bad time", {**AIR, "time": "yesterday"}, "bad_time"),
    ("time without offset", {**AIR, "time": "2026-03-01T08:30:15"}, "bad_time"),
    ("impossible date", {**AIR, "time": "2026-02-30T08:30:15Z"}, "bad_time"),
    ("numeric time", {**AIR, "time": 1772353815}, "bad_attribute"),
    ("missing pm25", _without_field(AIR, "pm25"), "missing_field"),
    ("missing district", _without_field(AIR, "district"), "missing_field"),
    ("missing key", _without_field(AIR, "station_id"), "missing_field"),
    ("pm25 string", _with_data(AIR, pm25="42"), "wrong_type"),
    ("pm25 bool", _with_data(AIR, pm25=True), "wrong_type"),
    ("pm25 null", _with_data(AIR, pm25=None), "wrong_type"),
    ("optional null", _with_data(AIR, no2=None), "wrong_type"),
    ("station number", _with_data(AIR, station_id=7), "wrong_type"),
    ("negative pm25", _with_data(AIR, pm25=-1.0), "out_of_range"),
    ("absurd pm10", _with_data(AIR, pm10=2000.5), "out_of_range"),
    ("humidity > 100", _with_data(AIR, humidity_pct=101), "out_of_range"),
    ("unknown district", _with_data(AIR, district="HK"), "bad_value"),
    ("empty station", _with_data(AIR, station_id=""), "bad_value"),
    ("huge station id", _with_data(AIR, station_id="x" * 300), "bad_value"),
]


@pytest.mark.parametrize(("sample", "reason"), [(s, r) for _, s, r in REJECTED],
                         ids=[name for name, _, _ in REJECTED])  # fmt: skip
def test_invalid_samples_are_rejected_with_the_right_reason(sample: Any, reason: str) -> None:
    assert _reason(sample) == reason


def test_oversize_is_rejected_before_parsing() -> None:
    raw = encode(_air(note="x" * MAX_EVENT_BYTES))
    assert len(raw) > MAX_EVENT_BYTES
    assert _reason(raw) == "oversize"
    assert _reason(b" " * (MAX_EVENT_BYTES + 1)) == "oversize"


def test_type_specific_rules_of_other_domains() -> None:
    traffic = EVENT_TYPES["vn.ioc.traffic.observed"]
    assert _reason(_event(traffic, vehicle_count=12.5)) == "wrong_type"  # an int field
    assert _reason(_event(traffic, occupancy_pct=100.1)) == "out_of_range"
    dossier = EVENT_TYPES["vn.ioc.services.dossier"]
    assert _reason(_event(dossier, channel="fax")) == "bad_value"
    assert _reason(_event(dossier, due="next week")) == "bad_time"
    assert _reason(_event(dossier, due=20260305)) == "wrong_type"
    cyber = EVENT_TYPES["vn.ioc.security.cyber"]
    assert _reason(_event(cyber, blocked="yes")) == "wrong_type"


def test_errors_say_which_field() -> None:
    with pytest.raises(InvalidEventError) as info:
        decode(encode(_with_data(AIR, pm25=-3.0)))
    assert "pm25" in info.value.detail
    assert "vn.ioc.air.observed" in str(info.value)


def test_key_for_unknown_type_and_missing_key() -> None:
    with pytest.raises(InvalidEventError) as info:
        key_for({"type": "nope", "data": {}})
    assert info.value.reason == "unknown_type"
    with pytest.raises(InvalidEventError) as info:
        key_for({"type": "vn.ioc.air.observed", "data": {"district": "HD"}})
    assert info.value.reason == "missing_field"


def test_new_event_requires_an_aware_time() -> None:
    with pytest.raises(InvalidEventError) as info:
        new_event("vn.ioc.air.observed", "/x", {}, time=datetime(2026, 3, 1))
    assert info.value.reason == "bad_time"
    first = new_event("vn.ioc.air.observed", "/x", {}, time=T0)
    second = new_event("vn.ioc.air.observed", "/x", {}, time=T0)
    assert first["id"] != second["id"]
    assert new_event("vn.ioc.air.observed", "/x", {}, time=T0, event_id="e1")["id"] == "e1"


# ---- robustness: bad input never crashes the decoder -------------------------------------

REASONS = {
    "undecodable", "oversize", "not_an_object", "missing_attribute", "bad_attribute",
    "unsupported_specversion", "unknown_type", "bad_time", "missing_field", "wrong_type",
    "out_of_range", "bad_value",
}  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _outcome(raw: bytes) -> str:
    """ "ok" or the rejection reason; any other exception fails the test."""
    try:
        decode(raw)
    except InvalidEventError as exc:
        return exc.reason
    return "ok"


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_invalid_event(raw: bytes) -> None:
    assert _outcome(raw) in REASONS


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.sampled_from(sorted(EVENT_TYPES)),
    st.sampled_from(["specversion", "id", "source", "type", "time", "datacontenttype", "data"]),
    st.text(max_size=12),
    json_values,
)
def test_mutated_events_decode_or_raise_invalid_event(
    type_name: str, attribute: str, field: str, value: Any
) -> None:
    et = EVENT_TYPES[type_name]
    obj = _event(et)
    obj["data"][field or next(iter(et.example))] = value  # any payload field gets any value
    if not field:
        obj[attribute] = value  # and sometimes an attribute too
    assert _outcome(encode(obj)) in REASONS | {"ok"}
