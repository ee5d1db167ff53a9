"""Every event type of the ten domains, declared once, as data.

An :class:`EventType` names its CloudEvents ``type`` (``vn.ioc.<domain>.<name>``), its
payload schema (one :class:`FieldSpec` per field, with unit, range and whether it is
required), its topic (``ioc.events.<domain>``), the payload field that identifies the
source (the Kafka key) and an example payload. The envelope module compiles these
declarations into fast validators; ``python -m events.docs`` renders them as
``docs/events.md``.

Every payload has ``district`` (a code from :mod:`events.geography`), so every KPI can be
scoped by district. Payload fields that are not declared are kept but not checked: a newer
producer may add fields without breaking older consumers.

The declarations live in :mod:`events.event_types` (grouped by domain) and the schema
classes in :mod:`events.schema`; this module is the one place to look them up.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from events.errors import InvalidEventError
from events.event_types import DECLARED_TYPES
from events.schema import (
    FIELD_KINDS,
    NUMERIC_KINDS,
    TYPE_PREFIX,
    EventType,
    FieldKind,
    FieldSpec,
)
from events.topics import DOMAINS

if TYPE_CHECKING:
    from events.envelope import Event

__all__ = [
    "EVENT_TYPES",
    "FIELD_KINDS",
    "NUMERIC_KINDS",
    "TYPE_PREFIX",
    "EventType",
    "FieldKind",
    "FieldSpec",
    "event_type",
    "key_for",
    "types_of_domain",
]


def _build() -> Mapping[str, EventType]:
    by_type: dict[str, EventType] = {}
    for et in DECLARED_TYPES:
        if et.type in by_type:
            raise ValueError(f"event type {et.type} declared twice")
        if et.type != f"{TYPE_PREFIX}{et.domain}.{et.name}" or et.domain not in DOMAINS:
            raise ValueError(f"event type {et.type}: type must be vn.ioc.<domain>.<name>")
        if et.field(et.key_field) is None or et.field("district") is None:
            raise ValueError(f"event type {et.type}: key field and district must be declared")
        by_type[et.type] = et
    return MappingProxyType(by_type)


EVENT_TYPES: Mapping[str, EventType] = _build()
"""CloudEvents type -> declaration, for every type of the ten domains."""


def event_type(type_name: str) -> EventType:
    """The declaration of ``type_name``; ``InvalidEventError("unknown_type")`` if none."""
    try:
        return EVENT_TYPES[type_name]
    except (KeyError, TypeError):
        raise InvalidEventError("unknown_type", f"no event type {type_name!r}") from None


def types_of_domain(domain: str) -> tuple[EventType, ...]:
    return tuple(et for et in EVENT_TYPES.values() if et.domain == domain)


def key_for(event: Event | Mapping[str, Any]) -> bytes:
    """The Kafka key of an event (an :class:`Event` or a CloudEvent dict): its source id."""
    if isinstance(event, Mapping):
        et = event_type(str(event.get("type")))
        data = event.get("data")
    else:
        et = event_type(event.type)
        data = event.data
    if not isinstance(data, Mapping) or et.key_field not in data:
        raise InvalidEventError("missing_field", f"{et.type}: data.{et.key_field} (the key)")
    return str(data[et.key_field]).encode()
