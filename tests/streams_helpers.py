"""Builders shared by the streams tests (events as raw Kafka values, fake-free records)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from events.catalogue import EVENT_TYPES
from events.envelope import encode, new_event

T0 = 1_795_300_000_000 - 1_795_300_000_000 % 3_600_000  # an hour boundary (epoch ms)


@dataclass(frozen=True, slots=True)
class Rec:
    """A consumed record as the aggregator sees it (aiokafka's ConsumerRecord has these)."""

    offset: int
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def raw_event(event_type: str, t_ms: int, event_id: str | None = None, **data: Any) -> bytes:
    et = EVENT_TYPES[event_type]
    payload = {**et.example, **data}
    return encode(
        new_event(
            event_type,
            f"/test/{payload[et.key_field]}",
            payload,
            time=datetime.fromtimestamp(t_ms / 1000, UTC),
            event_id=event_id,
        )
    )


def air(t_ms: int, event_id: str | None = None, **data: Any) -> bytes:
    return raw_event("vn.ioc.air.observed", t_ms, event_id, **data)


def traffic(t_ms: int, event_id: str | None = None, **data: Any) -> bytes:
    return raw_event("vn.ioc.traffic.observed", t_ms, event_id, **data)


def json_log_events(text: str | bytes, event: str) -> list[dict[str, object]]:
    """The JSON log lines (structlog, stderr not a terminal) whose event is ``event``."""
    found: list[dict[str, object]] = []
    for line in text.splitlines():
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and obj.get("event") == event:
            found.append(obj)
    return found
