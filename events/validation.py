"""Payload validators compiled once from the catalogue.

Validation runs for every event in the stream workers and the ingest gateways, so each
event type's schema is turned, at import, into a tuple of plain field rules walked by one
tight loop: no per-event allocation besides the error on the failure path, no reflection,
and one precompiled regular expression only for times (the RFC 3339 shape the JSON
Schemas state as a ``pattern``). Cross-field rules (e.g. a resolved dossier needs ``resolved_at``)
are per-type hooks run after the field rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from events.catalogue import EVENT_TYPES, EventType
from events.dossier import RESOLVED_NEEDS_TIME, complete_dossier
from events.errors import InvalidEventError
from events.geography import DISTRICT_CODES
from events.schema import TIME_PATTERN

MAX_TEXT_LENGTH = 256

# Kind codes of the compiled rules (small ints compare faster than strings).
_FLOAT, _INT, _STR, _BOOL, _TIME, _ENUM, _DISTRICT = range(7)
_KIND_CODES = {"float": _FLOAT, "int": _INT, "str": _STR, "bool": _BOOL, "time": _TIME}
_MISSING = object()
_INF = float("inf")

# name, required, kind code, minimum, maximum, allowed values (enum / district)
Rule = tuple[str, bool, int, float, float, frozenset[str] | None]
PayloadValidator = Callable[[dict[str, Any]], None]

_HOOKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "vn.ioc.services.dossier": complete_dossier,
}
# What the hooks require, as data for the JSON Schemas: event type -> (field, value,
# field required when ``field`` has ``value``) rules.
REQUIRED_WHEN: MappingProxyType[str, tuple[tuple[str, str, str], ...]] = MappingProxyType(
    {"vn.ioc.services.dossier": (RESOLVED_NEEDS_TIME,)}
)


# ``datetime.fromisoformat`` alone accepts far more than RFC 3339 (any separator, basic
# format, week dates, no offset), which the JSON Schemas could not state; the pattern is
# checked first so both accept exactly the same strings.
_time_shape = re.compile(TIME_PATTERN).match


def parse_time(value: str, what: str) -> datetime:
    """An RFC 3339 time with an offset (events.schema.TIME_PATTERN), as an aware UTC
    datetime; else ``bad_time``."""
    if _time_shape(value) is None:
        raise InvalidEventError(
            "bad_time", f"{what}: not an RFC 3339 time with a UTC offset in 1970..8999: {value!r}"
        )
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:  # the right shape, but no such day (30 February)
        raise InvalidEventError("bad_time", f"{what}: not an RFC 3339 time: {value!r}") from None
    tz = ts.tzinfo
    return ts if tz is UTC else ts.astimezone(UTC)


def _rules(et: EventType) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    for f in et.fields:
        if f.name == "district":
            rules.append((f.name, f.required, _DISTRICT, -_INF, _INF, DISTRICT_CODES))
        elif f.kind == "enum":
            rules.append((f.name, f.required, _ENUM, -_INF, _INF, frozenset(f.choices or ())))
        else:
            lo = -_INF if f.minimum is None else float(f.minimum)
            hi = _INF if f.maximum is None else float(f.maximum)
            rules.append((f.name, f.required, _KIND_CODES[f.kind], lo, hi, None))
    return tuple(rules)


def _fail(et_type: str, name: str, kind: int, value: Any, rule: Rule) -> InvalidEventError:
    """The error for a value that did not pass ``rule`` (the slow path, off the hot loop)."""
    where = f"{et_type}: data.{name}"
    vt = type(value)
    if kind in (_FLOAT, _INT):
        if vt is int or (vt is float and (kind == _FLOAT or value.is_integer())):
            return InvalidEventError(
                "out_of_range", f"{where}={value!r} outside [{rule[3]:g}, {rule[4]:g}]"
            )
        expected = "a number" if kind == _FLOAT else "an integer"
        return InvalidEventError("wrong_type", f"{where} must be {expected}: {value!r}")
    if kind == _BOOL:
        return InvalidEventError("wrong_type", f"{where} must be true or false: {value!r}")
    if kind == _TIME and isinstance(value, datetime):
        return InvalidEventError("bad_time", f"{where} has no UTC offset: {value!r}")
    if vt is not str:
        return InvalidEventError("wrong_type", f"{where} must be a string: {value!r}")
    if kind in (_ENUM, _DISTRICT):
        allowed = ", ".join(sorted(rule[5] or ()))
        return InvalidEventError("bad_value", f"{where}={value!r} is not one of {allowed}")
    return InvalidEventError(
        "bad_value", f"{where} must be 1..{MAX_TEXT_LENGTH} characters: {value[:40]!r}"
    )


def compile_validator(et: EventType) -> PayloadValidator:
    """A function that checks one payload of ``et`` in place (raises InvalidEventError)."""
    rules = _rules(et)
    et_type = et.type
    hook = _HOOKS.get(et_type)
    missing = _MISSING

    def validate_payload(data: dict[str, Any]) -> None:
        for rule in rules:
            name, required, kind, lo, hi, allowed = rule
            value = data.get(name, missing)
            if value is missing:
                if required:
                    raise InvalidEventError("missing_field", f"{et_type}: data.{name}")
                continue
            vt = type(value)
            if kind == _FLOAT:
                if (vt is float or vt is int) and lo <= value <= hi:
                    continue
            elif kind in (_DISTRICT, _ENUM):
                if vt is str and value in allowed:  # type: ignore[operator]
                    continue
            elif kind == _INT:
                if vt is int and lo <= value <= hi:
                    continue
                # JSON does not tell 3 from 3.0 (JSON Schema's "integer" accepts both), so
                # neither do we; the payload keeps an int for the consumers.
                if vt is float and value.is_integer() and lo <= value <= hi:
                    data[name] = int(value)
                    continue
            elif kind == _STR:
                if vt is str and 0 < len(value) <= MAX_TEXT_LENGTH:
                    continue
            elif kind == _TIME:
                if vt is str:
                    parse_time(value, f"{et_type}: data.{name}")
                    continue
                if isinstance(value, datetime) and value.tzinfo is not None:
                    continue
            elif vt is bool:
                continue
            raise _fail(et_type, name, kind, value, rule)
        if hook is not None:
            hook(data)

    return validate_payload


PAYLOAD_VALIDATORS: MappingProxyType[str, PayloadValidator] = MappingProxyType(
    {t: compile_validator(et) for t, et in EVENT_TYPES.items()}
)
