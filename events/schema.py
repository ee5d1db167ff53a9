"""The schema classes of the event catalogue: field and event-type declarations.

Kept apart from :mod:`events.catalogue` so the declarations in :mod:`events.event_types`
can use them without an import cycle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from events.topics import events_topic

FieldKind = Literal["float", "int", "str", "bool", "time", "enum"]
FIELD_KINDS: tuple[FieldKind, ...] = ("float", "int", "str", "bool", "time", "enum")
NUMERIC_KINDS: frozenset[str] = frozenset({"float", "int"})

TYPE_PREFIX = "vn.ioc."

# Every time of an event (the envelope's ``time`` and payload times) is RFC 3339 with
# an upper-case ``T`` and a ``Z`` or ``±hh:mm`` offset, its written year 1970..8999 (the
# windows work in epoch milliseconds, and need room for the longest window before
# year 9999). The validator (events.validation) and the JSON Schemas (events.contracts)
# both use this one pattern, so they accept the same strings; the calendar (no 30
# February) is checked by ``datetime.fromisoformat`` and by the schema's ``date-time``
# format. It is written for both regex dialects, ECMA-262 (JSON Schema) and Python:
# ASCII classes instead of ``\d`` (Unicode digits in Python), and ``(?![\s\S])`` for
# the end of the string because Python's ``$`` also matches before a final newline.
TIME_PATTERN = (
    r"^(?:19[7-9][0-9]|[2-8][0-9]{3})-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])(?![\s\S])"
)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One payload field.

    ``minimum``/``maximum`` bound numbers (inclusive); ``choices`` lists the values of an
    ``enum``; a ``time`` is an RFC 3339 string with an offset.
    """

    name: str
    kind: FieldKind
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    required: bool = True
    choices: tuple[str, ...] | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class EventType:
    type: str  # "vn.ioc.air.observed"
    domain: str  # "air"
    name: str  # "observed"
    description: str
    key_field: str  # payload field holding the source id; the Kafka key
    fields: tuple[FieldSpec, ...]
    example: dict[str, Any]  # an example payload (the CloudEvent ``data``)
    source_prefix: str = ""  # CloudEvent ``source`` is f"{source_prefix}/{key}"
    _by_name: Mapping[str, FieldSpec] = dataclasses.field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", MappingProxyType({f.name: f for f in self.fields}))

    @property
    def topic(self) -> str:
        return events_topic(self.domain)

    def field(self, name: str) -> FieldSpec | None:
        """The declared field called ``name``, or None."""
        return self._by_name.get(name)

    def source_for(self, key: str) -> str:
        """The CloudEvent ``source`` of the producer identified by ``key``."""
        return f"{self.source_prefix}/{key}"


# ---- compact constructors for the declarations in events.event_types ------------------


def number(
    name: str,
    unit: str | None,
    lo: float,
    hi: float,
    description: str,
    *,
    required: bool = True,
) -> FieldSpec:
    return FieldSpec(name, "float", unit, lo, hi, required, None, description)


def integer(
    name: str,
    unit: str | None,
    lo: int,
    hi: int,
    description: str,
    *,
    required: bool = True,
) -> FieldSpec:
    return FieldSpec(name, "int", unit, lo, hi, required, None, description)


def text(name: str, description: str, *, required: bool = True) -> FieldSpec:
    return FieldSpec(name, "str", None, None, None, required, None, description)


def choice(
    name: str, choices: tuple[str, ...], description: str, *, required: bool = True
) -> FieldSpec:
    return FieldSpec(name, "enum", None, None, None, required, choices, description)


def moment(name: str, description: str, *, required: bool = True) -> FieldSpec:
    return FieldSpec(name, "time", None, None, None, required, None, description)


def flag(name: str, description: str, *, required: bool = True) -> FieldSpec:
    return FieldSpec(name, "bool", None, None, None, required, None, description)


DISTRICT_FIELD = text("district", "district code (events.geography), the KPI district scope")
# Where a fixed sensor stands (WGS 84 degrees). Optional: producers without a registry of
# positions leave them out; the wall places a station by its id when they do.
LAT_FIELD = number("lat", "°", -90, 90, "latitude of the sensor (WGS 84)", required=False)
LON_FIELD = number("lon", "°", -180, 180, "longitude of the sensor (WGS 84)", required=False)
