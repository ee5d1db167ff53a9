"""Pure parts of storage/ (no services): record → row conversion with dead letters,
scope patterns, downsampling buckets, migration files, CLI time parsing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from events.envelope import encode, new_event
from events.records import AlertRecord, KpiRecord
from ioc.commands.db import parse_since
from storage import rows
from storage.migrate import load_migrations
from storage.queries import bucket_seconds, scope_like
from storage.retention import RetentionPolicy
from storage.sink import PREPARE_SLICE_ROWS, prepare_interleaved

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


@dataclass
class Rec:
    value: bytes | None
    offset: int = 0
    topic: str = "ioc.events.air"
    partition: int = 1
    key: bytes | None = b"k"
    headers: tuple[tuple[str, bytes | None], ...] = ()


def air(i: int, **data: object) -> bytes:
    payload = {"station_id": "HD-AQ-001", "district": "HD", "pm25": 12.0, "pm10": 30.0, **data}
    return encode(
        new_event(
            "vn.ioc.air.observed", "/sensors/air/HD-AQ-001", payload, time=T0, event_id=f"e{i}"
        )
    )


def test_event_rows_keep_valid_events_and_dead_letter_the_rest() -> None:
    records = [
        Rec(air(1), offset=10),
        Rec(b"{broken", offset=11),
        Rec(None, offset=12),
        Rec(air(2, pm25=-5.0), offset=13),  # out of range for the catalogue
        Rec(air(3, station_id="HD\x00X"), offset=14),
        Rec(air(4), offset=15),
    ]
    batch = rows.event_rows(records, rows.event_row_decoder(), "storage.raw")
    assert [r[3] for r in batch.rows] == ["e1", "e4"]
    assert [s.offset for s in batch.sources] == [10, 15]
    assert batch.rows[0][:5] == (T0, "vn.ioc.air.observed", "/sensors/air/HD-AQ-001", "e1", "HD")
    dead = {d.source_offset: d for d in batch.dead}
    assert set(dead) == {11, 12, 13, 14}
    assert dead[11].reason == "undecodable" and dead[11].value == b"{broken"
    assert dead[12].reason == "undecodable"
    # PostgreSQL cannot hold U+0000: rejected here with a reason instead of failing the batch.
    assert (dead[14].reason, dead[14].detail) == ("bad_value", "NUL character (U+0000)")
    assert all(
        d.component == "storage.raw" and d.source_topic == "ioc.events.air" for d in batch.dead
    )


def test_kpi_and_alert_rows() -> None:
    kpi = KpiRecord(
        "air.aqi.vn", "city", T0, T0 + timedelta(minutes=1), 80.0, 5, revision=2, computed_at=T0
    )
    batch = rows.kpi_rows([Rec(kpi.to_json()), Rec(b'{"kpi": "x"}', offset=1)], "storage.kpi")
    assert batch.rows == [rows.kpi_row(kpi)]
    assert [d.reason for d in batch.dead] == ["missing_attribute"]
    alert = AlertRecord(
        "A1", "r", "district:HD", "raised", "warning", 1, "t", None, None, None, T0, T0
    )
    batch = rows.alert_rows(
        [Rec(alert.to_json()), Rec(None, offset=1), Rec(b'{"state": "gone"}', offset=2)],
        "storage.alerts",
    )
    assert batch.rows == [rows.alert_row(alert)]
    assert [(d.source_offset, d.reason) for d in batch.dead] == [(2, "bad_attribute")]
    assert len(rows.KPI_COLUMNS) == len(rows.kpi_row(kpi))
    assert len(rows.ALERT_COLUMNS) == len(rows.alert_row(alert))


@pytest.mark.parametrize(
    ("pattern", "like"),
    [
        ("district:*", "district:%"),
        ("city", "city"),
        ("station:A_1", "station:A\\_1"),
        ("*", "%"),
        ("x%y", "x\\%y"),
    ],
)
def test_scope_patterns(pattern: str, like: str) -> None:
    assert scope_like(pattern) == like


def test_bucket_seconds_caps_points_and_keeps_window_multiples() -> None:
    day = timedelta(days=1)
    assert bucket_seconds(T0, T0 + timedelta(hours=1), 60, 300) == 60
    b = bucket_seconds(T0, T0 + day, 60, 300)
    assert b % 60 == 0 and 86400 / b <= 300 and 86400 / (b - 60) > 300
    assert bucket_seconds(T0, T0, 60, 300) == 60


def test_migrations_are_ordered_and_versioned() -> None:
    migs = load_migrations()
    assert [m.version for m in migs] == list(range(1, len(migs) + 1))
    assert [m.needs_full_edition for m in migs] == [False, False, True, False, False, False, False]
    assert all(len(m.checksum) == 64 for m in migs)


def test_parse_since_and_retention_policy() -> None:
    assert parse_since("1h", now=T0) == T0 - timedelta(hours=1)
    assert parse_since("30m", now=T0) == T0 - timedelta(minutes=30)
    assert parse_since("2026-11-01T00:00:00Z") == datetime(2026, 11, 1, tzinfo=UTC)
    policy = RetentionPolicy.from_days(7, 400, 0)
    assert policy.for_table("events") == timedelta(days=7)
    assert policy.for_table("alerts") is None


async def test_prepare_interleaved_gives_the_same_batch_and_lets_the_writer_run() -> None:
    """Decoding a large batch yields to the loop (so the previous batch's write keeps the
    server busy) and gives exactly what one ``prepare`` call gives, dead letters included."""

    records = [Rec(air(i), offset=i) for i in range(10 * PREPARE_SLICE_ROWS)]
    records[7] = Rec(b"{broken", offset=7)

    def prepare(recs: object) -> rows.PreparedBatch:
        return rows.event_rows(recs, rows.event_row, "test")  # type: ignore[arg-type]

    turns = 0

    async def writer() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    await asyncio.sleep(0)
    started = turns
    got = await prepare_interleaved(prepare, records)
    task.cancel()
    whole = prepare(records)
    assert got.rows == whole.rows and got.sources == whole.sources
    assert [d.source_offset for d in got.dead] == [7]
    assert turns - started >= 9  # the writer ran between the slices
