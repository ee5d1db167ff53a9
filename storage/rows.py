"""Kafka records → table rows (pure, no I/O): the sans-I/O half of the sinks.

Each ``*_rows`` function turns one batch of consumed records into the rows to COPY and
the dead letters of the records that break the contract, so nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

from events.binding import is_binary, structured_from_kafka
from events.envelope import DEFAULT_MAX_FUTURE_SKEW_S, decode, latest_event_ms
from events.errors import InvalidEventError
from events.errors import describe_exception as _describe
from events.records import AlertRecord, DeadLetter, KpiRecord

Row = tuple[Any, ...]

KPI_COLUMNS: tuple[str, ...] = (
    "kpi",
    "scope",
    "window_start",
    "window_end",
    "value",
    "count",
    "min",
    "max",
    "sum",
    "final",
    "revision",
    "computed_at",
)
ALERT_COLUMNS: tuple[str, ...] = (
    "alert_id",
    "rule",
    "subject",
    "state",
    "severity",
    "level",
    "title",
    "kpi",
    "value",
    "threshold",
    "raised_at",
    "updated_at",
    "acknowledged_by",
    "assignee",
    "revision",
    "window_start",
    "on_live_window",
    "title_en",
)
EVENT_COLUMNS: tuple[str, ...] = (
    "time",
    "type",
    "source",
    "id",
    "district",
    "data",
    # the other CloudEvents attributes (subject, traceparent, …) or NULL: nothing is lost
    "extensions",
)


class SourceRecord(Protocol):
    """What the sinks need of a consumed Kafka record (aiokafka's ConsumerRecord)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]] | None: ...


@dataclass(slots=True)
class PreparedBatch:
    """Rows to write (``sources[i]`` produced ``rows[i]``) and the rejected records."""

    rows: list[Row] = field(default_factory=list)
    sources: list[SourceRecord] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)

    def extend(self, other: PreparedBatch) -> None:
        self.rows += other.rows
        self.sources += other.sources
        self.dead += other.dead


def dead_letter(record: SourceRecord, reason: str, detail: str, component: str) -> DeadLetter:
    return DeadLetter.of(record, reason, detail, component)


def kpi_row(rec: KpiRecord) -> Row:
    return (
        rec.kpi,
        rec.scope,
        rec.window_start,
        rec.window_end,
        rec.value,
        rec.count,
        rec.min,
        rec.max,
        rec.sum,
        rec.final,
        rec.revision,
        rec.computed_at,
    )


def alert_row(rec: AlertRecord) -> Row:
    return (
        rec.alert_id,
        rec.rule,
        rec.subject,
        rec.state,
        rec.severity,
        rec.level,
        rec.title,
        rec.kpi,
        rec.value,
        rec.threshold,
        rec.raised_at,
        rec.updated_at,
        rec.acknowledged_by,
        rec.assignee,
        rec.revision,
        rec.window_start,
        rec.on_live_window,
        rec.title_en,
    )


RowDecoder = Callable[[bytes, int | None], Row]


def event_row(raw: bytes, latest_ms: int | None = None) -> Row:
    """Decode and validate one raw event (full catalogue validation) into a table row;
    an event time after ``latest_ms`` is ``future_time``, as in the stream workers."""
    ev = decode(raw, latest_ms)
    t: datetime = ev.time
    extensions = orjson.dumps(ev.extensions).decode() if ev.extensions else None
    return (t, ev.type, ev.source, ev.id, ev.district, orjson.dumps(ev.data).decode(), extensions)


def event_writer_key(row: Row) -> str:
    """Which writer connection takes a raw-event row: by source, so the copies of one
    event (same time, source, id) never race each other in two transactions."""
    source: str = row[2]
    return source


def event_row_decoder() -> RowDecoder:
    """The row builder of the raw-event sink (a seam for tests and benchmarks)."""
    return event_row


def _rejected(
    rec: SourceRecord, raw: bytes | None, reason: str, detail: str, component: str
) -> DeadLetter:
    """The dead letter of ``rec``; for a binary-mode record converted to the structured
    form, with that form as its value (it holds the attributes of the headers too)."""
    letter = dead_letter(rec, reason, detail, component)
    return letter if raw is None or raw is rec.value else dataclasses.replace(letter, value=raw)


def _holds_nul(row: Row) -> bool:
    return (
        any(type(v) is str and "\x00" in v for v in row[1:5])
        or "\\u0000" in row[5]
        or (row[6] is not None and "\\u0000" in row[6])
    )


def event_rows(
    records: Sequence[SourceRecord],
    decode_row: RowDecoder,
    component: str,
    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
) -> PreparedBatch:
    out = PreparedBatch()
    rows, sources = out.rows, out.sources
    latest = latest_event_ms(time.time(), max_future_skew_s)
    for rec in records:
        raw = rec.value
        headers = rec.headers
        try:
            if headers and is_binary(headers):
                # CloudEvents binary mode: stored as its structured form, every attribute
                # (extensions included) kept; an invalid one is dead-lettered below.
                raw = structured_from_kafka(headers, raw)
            elif raw is None:
                out.dead.append(dead_letter(rec, "undecodable", "empty record value", component))
                continue
            row = decode_row(raw, latest)
        except InvalidEventError as exc:
            out.dead.append(_rejected(rec, raw, exc.reason, exc.detail, component))
            continue
        except Exception as exc:  # a bug the record provokes: dead-letter it, go on
            out.dead.append(_rejected(rec, raw, "processing_error", _describe(exc), component))
            continue
        # PostgreSQL's text and jsonb cannot hold U+0000: say so here instead of letting
        # the batch fail and be bisected. In the raw JSON it can only be the \u0000 escape.
        if b"\\u0000" in raw and _holds_nul(row):
            out.dead.append(_rejected(rec, raw, "bad_value", "NUL character (U+0000)", component))
            continue
        rows.append(row)
        sources.append(rec)
    return out


def kpi_rows(records: Sequence[SourceRecord], component: str) -> PreparedBatch:
    out = PreparedBatch()
    for rec in records:
        try:
            row = kpi_row(KpiRecord.from_json(rec.value or b""))
        except InvalidEventError as exc:
            out.dead.append(dead_letter(rec, exc.reason, exc.detail, component))
            continue
        except Exception as exc:
            out.dead.append(dead_letter(rec, "processing_error", _describe(exc), component))
            continue
        out.rows.append(row)
        out.sources.append(rec)
    return out


def alert_rows(records: Sequence[SourceRecord], component: str) -> PreparedBatch:
    out = PreparedBatch()
    for rec in records:
        if rec.value is None:
            # A tombstone on the compacted alerts topic: nothing to store, history stays.
            continue
        try:
            row = alert_row(AlertRecord.from_json(rec.value))
        except InvalidEventError as exc:
            out.dead.append(dead_letter(rec, exc.reason, exc.detail, component))
            continue
        except Exception as exc:
            out.dead.append(dead_letter(rec, "processing_error", _describe(exc), component))
            continue
        out.rows.append(row)
        out.sources.append(rec)
    return out
