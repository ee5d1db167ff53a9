"""The hand-written validator (events.envelope) and the generated JSON Schemas agree.

Hypothesis draws valid events of every type (optional fields, extension attributes and
undeclared payload fields included, times in every offset) and invalid ones (one
mutation each: a missing attribute or field, a wrong JSON type, a number out of range, a
string not allowed, a malformed or impossible time). Every valid event must pass both
the validator and ``schemas/v1/cloudevent.json`` (its data also ``<type>.json``); every
invalid one must fail both. The schema validator asserts formats (``date-time``), as
the schemas ask consumers to.
"""

from __future__ import annotations

import copy
import math
import re
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from events.catalogue import EVENT_TYPES, EventType, FieldSpec
from events.contracts import data_schema, envelope_schema
from events.envelope import DATACONTENTTYPE_PATTERN, validate
from events.errors import InvalidEventError
from events.geography import DISTRICT_CODES
from events.validation import MAX_TEXT_LENGTH, PAYLOAD_VALIDATORS, REQUIRED_WHEN

FORMATS = Draft202012Validator.FORMAT_CHECKER
ENVELOPE = Draft202012Validator(envelope_schema(), format_checker=FORMATS)
DATA = {
    t: Draft202012Validator(data_schema(et), format_checker=FORMATS)
    for t, et in EVENT_TYPES.items()
}
TYPES = sorted(EVENT_TYPES)
ATTRIBUTES = ("specversion", "id", "source", "type", "time", "datacontenttype", "data")

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def validator_accepts(event: dict[str, Any]) -> bool:
    try:
        validate(copy.deepcopy(event))  # it normalises the payload in place
    except InvalidEventError:
        return False
    return True


def payload_accepts(type_name: str, data: dict[str, Any]) -> bool:
    try:
        PAYLOAD_VALIDATORS[type_name](copy.deepcopy(data))
    except InvalidEventError:
        return False
    return True


def test_the_schema_validator_asserts_date_time() -> None:
    # Without rfc3339-validator installed, jsonschema silently skips "date-time" and the
    # impossible-date cases below would test nothing.
    assert "date-time" in FORMATS.checkers
    assert not FORMATS.conforms("2026-02-30T00:00:00Z", "date-time")


# ---- strategies ------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)
offsets = st.just("Z") | st.builds(
    lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
    st.sampled_from("+-"),
    st.integers(0, 23),
    st.integers(0, 59),
)


@st.composite
def times(draw: st.DrawFn, first: date = date(1970, 1, 1), last: date = date(8999, 12, 31)) -> str:
    """RFC 3339 with an offset: any fraction length, any offset, on a real day."""
    day = draw(st.dates(first, last))
    clock = f"{draw(st.integers(0, 23)):02d}:{draw(st.integers(0, 59)):02d}"
    seconds = f"{draw(st.integers(0, 59)):02d}"
    fraction = draw(
        st.just("") | st.text("0123456789", min_size=1, max_size=9).map(lambda x: "." + x)
    )
    return f"{day.isoformat()}T{clock}:{seconds}{fraction}{draw(offsets)}"


def _replace_at(text: str, index: int, new: str) -> str:
    return text[:index] + new + text[index + 1 :]


bad_times = st.one_of(
    # years outside 1970..8999 (in the text, whatever the offset)
    times(date(1, 1, 1), date(1969, 12, 31)),
    times(date(9000, 1, 1), date(9999, 12, 31)),
    # the right shape, no such day
    st.sampled_from(["2026-02-29", "2024-02-30", "2026-04-31", "2026-06-31", "2026-11-31"]).flatmap(
        lambda d: times().map(lambda t: d + t[10:])
    ),
    # not the RFC 3339 shape that fromisoformat would still take
    times().map(lambda t: t[:-1] if t.endswith("Z") else t[:-6]),  # no offset
    times().map(lambda t: _replace_at(t, 10, " ")),  # space for T
    times().map(lambda t: _replace_at(t, 10, "t")),  # lower-case t
    times().map(lambda t: t.replace("-", "").replace(":", "")),  # basic format
    times().map(lambda t: t[:16] + t[19:]),  # no seconds
    times().map(lambda t: t + "\n"),
    times().map(lambda t: "T24" + t[13:]).map(lambda t: "2026-03-01" + t),  # hour 24
    times().map(lambda t: t[:17] + "60" + t[19:]),  # leap second
    st.text(max_size=30),
)


def valid_value(f: FieldSpec) -> st.SearchStrategy[Any]:
    lo = -math.inf if f.minimum is None else f.minimum
    hi = math.inf if f.maximum is None else f.maximum
    if f.name == "district":
        return st.sampled_from(sorted(DISTRICT_CODES))
    if f.kind == "enum":
        return st.sampled_from(f.choices or ())
    if f.kind == "str":
        return st.text(min_size=1, max_size=MAX_TEXT_LENGTH)
    if f.kind == "bool":
        return st.booleans()
    if f.kind == "time":
        return times()
    ints = st.integers(math.ceil(lo), math.floor(hi))
    if f.kind == "int":
        return ints | ints.map(float)  # 3.0 is an integer in JSON
    return st.floats(lo, hi, allow_nan=False) | ints


def wrong_type(f: FieldSpec) -> st.SearchStrategy[Any]:
    if f.kind == "float":
        return json_values.filter(lambda v: type(v) not in (int, float))
    if f.kind == "int":
        return json_values.filter(
            lambda v: type(v) is not int and not (type(v) is float and v.is_integer())
        )
    if f.kind == "bool":
        return json_values.filter(lambda v: type(v) is not bool)
    return json_values.filter(lambda v: type(v) is not str)


def not_allowed(f: FieldSpec) -> st.SearchStrategy[Any] | None:
    """Values of the right JSON type that the field's rule refuses, or None."""
    if f.kind in ("float", "int"):
        below = above = st.nothing()
        if f.minimum is not None:
            below = st.integers(max_value=math.ceil(f.minimum) - 1) | st.floats(
                max_value=f.minimum, exclude_max=True, allow_infinity=False
            )
        if f.maximum is not None:
            above = st.integers(min_value=math.floor(f.maximum) + 1) | st.floats(
                min_value=f.maximum, exclude_min=True, allow_infinity=False
            )
        wrong = below | above
        if f.kind == "int":  # a fraction in range is also refused
            wrong = wrong | st.floats(f.minimum, f.maximum).filter(lambda v: not v.is_integer())
        return wrong
    if f.name == "district" or f.kind == "enum":
        allowed = DISTRICT_CODES if f.name == "district" else set(f.choices or ())
        return st.text(max_size=12).filter(lambda v: v not in allowed)
    if f.kind == "str":
        return st.just("") | st.text(min_size=MAX_TEXT_LENGTH + 1, max_size=MAX_TEXT_LENGTH + 5)
    if f.kind == "time":
        return bad_times
    return None


@st.composite
def valid_data(draw: st.DrawFn, et: EventType) -> dict[str, Any]:
    data = {f.name: draw(valid_value(f)) for f in et.fields if f.required or draw(st.booleans())}
    for name, value, needed in REQUIRED_WHEN.get(et.type, ()):
        spec = et.field(needed)
        if data.get(name) == value and needed not in data and spec is not None:
            data[needed] = draw(valid_value(spec))
    undeclared = st.text(min_size=1, max_size=8).filter(lambda k: et.field(k) is None)
    return {**draw(st.dictionaries(undeclared, json_values, max_size=2)), **data}


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    et = EVENT_TYPES[draw(st.sampled_from(TYPES))]
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": draw(st.text(min_size=1, max_size=40)),
        "source": draw(st.text(min_size=1, max_size=40)),
        "type": et.type,
        "time": draw(times()),
        "data": draw(valid_data(et)),
    }
    content_type = draw(
        st.sampled_from(
            [
                "absent",
                "application/json",
                None,
                "application/json; charset=utf-8",
                "APPLICATION/Json;x",
            ]
        )
    )
    if content_type != "absent":
        event["datacontenttype"] = content_type
    extensions = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
    extra = draw(st.dictionaries(extensions.filter(lambda k: k not in ATTRIBUTES), json_values))
    return {**extra, **event}


@st.composite
def invalid_data(draw: st.DrawFn, et: EventType) -> dict[str, Any]:
    """A valid payload of ``et`` with one thing wrong."""
    data = draw(valid_data(et))
    f = draw(st.sampled_from(et.fields))
    bad = not_allowed(f)
    how = draw(st.sampled_from(["missing", "wrong_type", "not_allowed", "when"]))
    rules = REQUIRED_WHEN.get(et.type, ())
    if how == "when" and rules:
        name, value, needed = draw(st.sampled_from(rules))
        data[name] = value
        data.pop(needed, None)
    elif how == "missing" and f.required:
        del data[f.name]
    elif how == "not_allowed" and bad is not None:
        data[f.name] = draw(bad)
    else:
        data[f.name] = draw(wrong_type(f))
    return data


@st.composite
def invalid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with one thing wrong, in the envelope or in the payload."""
    event = draw(valid_events())
    where = draw(st.sampled_from(["data", "drop", "wrong_type", "value", "time"]))
    name = draw(st.sampled_from(["specversion", "id", "source", "type", "time", "data"]))
    if where == "data":
        event["data"] = draw(invalid_data(EVENT_TYPES[event["type"]]))
    elif where == "drop":
        del event[name]
    elif where == "wrong_type":
        event[name] = draw(json_values.filter(lambda v: type(v) is not str or name == "data"))
        if name == "data" and isinstance(event["data"], dict):
            event["data"] = [event["data"]]
    elif where == "time":
        event["time"] = draw(bad_times)
    else:
        attribute, wrong = draw(
            st.sampled_from(
                [
                    ("specversion", st.text().filter(lambda v: v != "1.0")),
                    ("id", st.just("")),
                    ("source", st.just("")),
                    ("type", st.text().filter(lambda v: v not in EVENT_TYPES)),
                    (
                        "datacontenttype",
                        st.text().filter(
                            lambda v: re.fullmatch(DATACONTENTTYPE_PATTERN, v) is None
                        ),
                    ),
                ]
            )
        )
        event[attribute] = draw(wrong)
    return event


# ---- the properties --------------------------------------------------------------------


@SETTINGS
@given(valid_events())
def test_valid_events_pass_the_validator_and_the_schemas(event: dict[str, Any]) -> None:
    assert validator_accepts(event)
    assert list(ENVELOPE.iter_errors(event)) == []
    assert list(DATA[event["type"]].iter_errors(event["data"])) == []


@SETTINGS
@given(invalid_events())
def test_invalid_events_fail_the_validator_and_the_schema(event: dict[str, Any]) -> None:
    assert not validator_accepts(event)
    assert not ENVELOPE.is_valid(event)


@pytest.mark.parametrize("type_name", TYPES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_invalid_payloads_fail_the_validator_and_the_data_schema(
    type_name: str, data: st.DataObject
) -> None:
    payload = data.draw(invalid_data(EVENT_TYPES[type_name]))
    assert not payload_accepts(type_name, payload)
    assert not DATA[type_name].is_valid(payload)


@SETTINGS
@given(st.one_of(times(), bad_times))
def test_both_take_exactly_the_same_times(text: str) -> None:
    air = EVENT_TYPES["vn.ioc.air.observed"]
    candidate = {
        "specversion": "1.0",
        "id": "x",
        "source": "/s",
        "type": air.type,
        "time": text,
        "data": dict(air.example),
    }
    assert validator_accepts(candidate) == ENVELOPE.is_valid(candidate)


@SETTINGS
@given(valid_events(), st.dictionaries(st.sampled_from(ATTRIBUTES), json_values, max_size=2))
def test_on_arbitrary_attribute_values_they_give_the_same_verdict(
    event: dict[str, Any], changes: dict[str, Any]
) -> None:
    changed = {**event, **changes}
    assert validator_accepts(changed) == ENVELOPE.is_valid(changed)


@SETTINGS
@given(
    st.sampled_from(TYPES).flatmap(lambda t: st.tuples(st.just(t), valid_data(EVENT_TYPES[t]))),
    st.data(),
)
def test_on_arbitrary_payload_values_they_give_the_same_verdict(
    typed: tuple[str, dict[str, Any]], data: st.DataObject
) -> None:
    type_name, payload = typed
    declared = [f.name for f in EVENT_TYPES[type_name].fields]
    for name in data.draw(st.lists(st.sampled_from(declared), min_size=1, max_size=2)):
        if data.draw(st.booleans()):
            payload.pop(name, None)
        else:
            payload[name] = data.draw(json_values)
    assert payload_accepts(type_name, payload) == DATA[type_name].is_valid(payload)
