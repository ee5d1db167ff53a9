"""Storage against the real TimescaleDB: migrations, merges, queries (with EXPLAIN),
retention and rollups."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import psycopg
import pytest

from events.errors import ConfigurationError
from events.records import AlertRecord, KpiRecord
from ioc.services import timescale
from storage import migrate as migrations
from storage import queries, writers
from storage.retention import RetentionPolicy, run_maintenance
from storage.rows import alert_row, kpi_row

pytestmark = pytest.mark.integration

# Recent enough that retention (7 days) never touches it, whenever the suite runs.
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)


def _admin(database_url: str) -> str:
    return database_url.rsplit("/", 1)[0] + "/postgres"


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    """Another fresh database (extension created, no schema) on the same server."""
    name = f"ioc_test_mig_{uuid.uuid4().hex[:8]}"
    timescale.ensure_database(_admin(database_url), name)
    yield database_url.rsplit("/", 1)[0] + f"/{name}"
    timescale.drop_database(_admin(database_url), name)


@pytest.fixture(scope="module")
async def migrated(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        await migrations.migrate(conn)
    finally:
        await conn.close()
    return database_url


@pytest.fixture
async def db(migrated: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(migrated)
    for merge in (writers.RAW_EVENTS, writers.KPI_WINDOWS, writers.ALERTS):
        await merge.prepare(conn)
    yield conn
    await conn.close()


@pytest.fixture
async def pg(migrated: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    conn = await psycopg.AsyncConnection.connect(migrated, autocommit=True)
    yield conn
    await conn.close()


def kpi(
    name: str, scope: str, minute: int, value: float, revision: int, window_s: int = 60
) -> KpiRecord:
    start = T0 + timedelta(minutes=minute)
    return KpiRecord(
        kpi=name,
        scope=scope,
        window_start=start,
        window_end=start + timedelta(seconds=window_s),
        value=value,
        count=10,
        min=value - 1,
        max=value + 1,
        sum=value * 10,
        final=revision > 0,
        revision=revision,
        computed_at=start + timedelta(seconds=window_s + 1),
    )


async def test_migrations_from_empty_then_rerun_is_a_no_op(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        applied = await migrations.migrate(conn)
        edition, states = await migrations.status(conn)
        again = await migrations.migrate(conn)
        hypertables = {
            r[0]
            for r in await conn.fetch(
                "SELECT hypertable_name FROM timescaledb_information.hypertables"
            )
        }
        recorded = [r[0] for r in await conn.fetch("SELECT version FROM ioc_schema_migrations")]
    finally:
        await conn.close()
    assert edition == "apache"  # what this machine runs
    assert [m.version for m in applied] == [1, 2, 4, 5, 6, 7]  # 0003 needs the full edition
    assert again == []
    assert sorted(recorded) == [1, 2, 4, 5, 6, 7]
    assert {s.version: s.state for s in states} == {
        1: "applied",
        2: "applied",
        3: "skipped (needs full edition)",
        4: "applied",
        5: "applied",
        6: "applied",
        7: "applied",
    }
    assert hypertables == {"kpi_windows", "events"}


async def test_concurrent_migrations_take_turns(empty_database: str) -> None:
    conns = [await asyncpg.connect(empty_database) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrations.migrate(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sorted(len(r) for r in results) == [0, 0, 6]  # 0001, 0002, 0004 to 0007


async def test_plain_postgresql_is_refused(database_url: str) -> None:
    name = f"ioc_test_plain_{uuid.uuid4().hex[:8]}"
    admin = _admin(database_url)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(database_url.rsplit("/", 1)[0] + f"/{name}")
        try:
            with pytest.raises(ConfigurationError, match="plain PostgreSQL"):
                await migrations.detect_edition(conn)
        finally:
            await conn.close()
    finally:
        timescale.drop_database(admin, name)


async def test_kpi_upsert_keeps_the_highest_revision(
    db: asyncpg.Connection, pg: psycopg.AsyncConnection[Any]
) -> None:
    name = f"test.rev.{uuid.uuid4().hex[:6]}"
    await writers.KPI_WINDOWS.write(db, [kpi_row(kpi(name, "city", 0, 10.0, 1))])
    # A newer revision wins; within one batch the highest of the duplicates wins.
    await writers.KPI_WINDOWS.write(
        db, [kpi_row(kpi(name, "city", 0, 30.0, 3)), kpi_row(kpi(name, "city", 0, 20.0, 2))]
    )
    # An older and an equal revision (a replay) never overwrite.
    await writers.KPI_WINDOWS.write(db, [kpi_row(kpi(name, "city", 0, 5.0, 2))])
    await writers.KPI_WINDOWS.write(db, [kpi_row(kpi(name, "city", 0, 99.0, 3))])
    rows = await db.fetch("SELECT value, revision FROM kpi_windows WHERE kpi = $1", name)
    assert [(r["value"], r["revision"]) for r in rows] == [(30.0, 3)]
    latest = await queries.latest_kpis(pg, kpis=[name])
    assert [(k.value, k.revision) for k in latest] == [(30.0, 3)]


async def test_duplicate_raw_events_are_ignored(db: asyncpg.Connection) -> None:
    source = f"/sensors/air/DUP-{uuid.uuid4().hex[:6]}"
    rows = [
        (
            T0 + timedelta(seconds=i),
            "vn.ioc.air.observed",
            source,
            f"e{i}",
            "HK",
            orjson.dumps({"district": "HK", "pm25": i}).decode(),
            None,  # no extension attributes
        )
        for i in range(130)
    ]
    # New rows: the plain insert takes them.
    assert await writers.RAW_EVENTS.write(db, rows[:100]) == 100
    # Only stored rows (a replay), with repeats inside the batch: nothing changes.
    assert await writers.RAW_EVENTS.write(db, rows[50:100] + rows[:10] + rows[:10]) == 0
    # Stored and new rows mixed: the insert is refused whole, the merge keeps the new ones.
    assert await writers.RAW_EVENTS.write(db, rows[90:130]) == 30
    count = await db.fetchval("SELECT count(*) FROM events WHERE source = $1", source)
    assert count == 130


def alert(alert_id: str, state: str, revision: int, minute: int) -> AlertRecord:
    return AlertRecord(
        alert_id=alert_id,
        rule="water.level.alarm",
        subject="station:HN-W-01",
        state=state,  # type: ignore[arg-type]
        severity="critical",
        level=2,
        title="Mực nước vượt BĐ II",
        kpi="water.level.max",
        value=9.5,
        threshold=9.0,
        raised_at=T0,
        updated_at=T0 + timedelta(minutes=minute),
        acknowledged_by="op1" if state == "acknowledged" else None,
        revision=revision,
    )


async def test_alert_state_and_history(
    db: asyncpg.Connection, pg: psycopg.AsyncConnection[Any]
) -> None:
    a, b = f"A-{uuid.uuid4().hex[:6]}", f"B-{uuid.uuid4().hex[:6]}"
    await writers.ALERTS.write(
        db, [alert_row(alert(a, "raised", 0, 0)), alert_row(alert(b, "raised", 0, 1))]
    )
    live = replace(
        alert(a, "acknowledged", 1, 2), window_start=T0, on_live_window=True, title_en="Flood"
    )
    await writers.ALERTS.write(db, [alert_row(live), alert_row(alert(b, "cleared", 1, 3))])
    # Replayed older transition: history unchanged, state unchanged.
    await writers.ALERTS.write(db, [alert_row(alert(a, "raised", 0, 0))])
    active = {x.alert_id: x for x in await queries.active_alerts(pg)}
    assert active[a].state == "acknowledged" and active[a].acknowledged_by == "op1"
    # The window that raised it, and that it was live then (the wall marks it), come back.
    assert (active[a].window_start, active[a].on_live_window) == (T0, True)
    assert (active[a].title_en, active[b].title_en if b in active else None) == ("Flood", None)
    assert b not in active
    history = [
        (h.alert_id, h.revision)
        # Other tests of the session may have written more than the default 200 since T0.
        for h in await queries.alert_history(pg, since=T0, limit=1_000_000)
        if h.alert_id in (a, b)
    ]
    assert history == [(b, 1), (a, 1), (b, 0), (a, 0)]


async def test_query_results(db: asyncpg.Connection, pg: psycopg.AsyncConnection[Any]) -> None:
    name = f"test.q.{uuid.uuid4().hex[:6]}"
    rows = [
        kpi_row(kpi(name, scope, m, float(m), 1))
        for scope in ("city", "district:HK", "district:BD", "station:X_1")
        for m in range(120)
    ]
    rows.append(kpi_row(kpi(name, "city", 0, 500.0, 1, window_s=3600)))
    await writers.KPI_WINDOWS.write(db, rows)
    latest = await queries.latest_kpis(pg, kpis=[name], scopes=["district:*"])
    assert {(k.scope, k.value) for k in latest} == {("district:HK", 119.0), ("district:BD", 119.0)}
    # "_" in a pattern is literal, not LIKE's any-character.
    assert [
        k.scope for k in await queries.latest_kpis(pg, kpis=[name], scopes=["station:X_1"])
    ] == ["station:X_1"]
    assert [
        k.value for k in await queries.latest_kpis(pg, kpis=[name], scopes=["city"], window_s=3600)
    ] == [500.0]
    since = await queries.kpi_windows_since(
        pg, kpis=[name], scopes=["district:*"], since=T0 + timedelta(minutes=118)
    )
    assert [(k.window_start - T0, k.scope) for k in since] == [
        (timedelta(minutes=m), scope)
        for m in (118, 119)
        for scope in ("district:BD", "district:HK")
    ]
    until = T0 + timedelta(minutes=120)
    full = await queries.kpi_history(pg, kpi=name, scope="city", since=T0, until=until)
    assert [k.value for k in full] == [float(m) for m in range(120)]
    down = await queries.kpi_history(
        pg, kpi=name, scope="city", since=T0, until=until, max_points=12
    )
    assert len(down) == 12
    assert down[0].window_start == T0 and down[0].window_end == T0 + timedelta(minutes=10)
    assert down[0].value == pytest.approx(4.5)  # mean of 0..9
    assert (down[0].min, down[0].max, down[0].count) == (-1.0, 10.0, 100)
    assert (
        len(
            await queries.kpi_history(
                pg, kpi=name, scope="city", since=T0, until=until, max_points=7
            )
        )
        <= 7
    )
    source = f"/sensors/air/Q-{uuid.uuid4().hex[:6]}"
    await writers.RAW_EVENTS.write(
        db,
        [
            (
                T0 + timedelta(minutes=i),
                "vn.ioc.air.observed",
                source,
                f"q{i}",
                "HK",
                orjson.dumps({"district": "HK", "pm25": i}).decode(),
                # the extension attributes an event came with, given back by raw_events
                orjson.dumps({"traceparent": f"tp-{i}"}).decode() if i == 3 else None,
            )
            for i in range(10)
        ],
    )
    got = await queries.raw_events(
        pg, source=source, since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=5)
    )
    assert [e["id"] for e in got] == ["q2", "q3", "q4"]
    assert got[0]["data"] == {"district": "HK", "pm25": 2}
    assert "traceparent" not in got[0]
    assert got[1]["traceparent"] == "tp-3"


async def _explain(pg: psycopg.AsyncConnection[Any], sql: str, params: dict[str, Any]) -> str:
    async with pg.cursor() as cur:
        # Tables are small in a test: make the planner show which index CAN serve a query.
        await cur.execute("SET enable_seqscan = off")
        await cur.execute(f"EXPLAIN {sql}".encode(), params)
        plan = "\n".join(r[0] for r in await cur.fetchall())
        await cur.execute("RESET enable_seqscan")
    return plan


async def test_each_query_uses_its_index(
    pg: psycopg.AsyncConnection[Any], db: asyncpg.Connection
) -> None:
    # Capture the SQL each query function sends, then EXPLAIN it with the same parameters.
    sent: list[tuple[str, dict[str, Any]]] = []

    class Recorder(psycopg.AsyncCursor[Any]):
        async def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:  # type: ignore[override]
            text = query.decode() if isinstance(query, bytes) else str(query)
            if not text.startswith(("SET", "RESET", "EXPLAIN")):
                sent.append((text, params or {}))
            return await super().execute(query, params, **kw)

    pg.cursor_factory = Recorder
    since, until = T0, T0 + timedelta(hours=2)
    expectations: list[str] = []
    await queries.latest_kpis(pg, kpis=["air.aqi.vn"], scopes=["district:*"])
    expectations.append("kpi_latest_")  # its primary key or kpi_latest_by_window
    await queries.kpi_history(pg, kpi="air.aqi.vn", scope="city", since=since, until=until)
    expectations.append("kpi_windows_chart")
    await queries.kpi_history(
        pg, kpi="air.aqi.vn", scope="city", since=since, until=until, max_points=10
    )
    expectations.append("kpi_windows_chart")
    await queries.kpi_windows_since(pg, kpis=["air.aqi.vn"], scopes=["station:*"], since=since)
    expectations.append("kpi_windows_")  # kpi_windows_chart or its time index
    await queries.active_alerts(pg)
    expectations.append("alerts_active")
    await queries.alert_history(pg, since=since)
    expectations.append("alert_transitions_by_time")
    await queries.raw_events(pg, source="/sensors/air/X", since=since, until=until)
    expectations.append("events_by_source")
    pg.cursor_factory = psycopg.AsyncCursor
    assert len(sent) == len(expectations)
    for (sql, params), index in zip(sent, expectations, strict=True):
        plan = await _explain(pg, sql, params)
        assert index in plan and "Seq Scan" not in plan, f"{index} not used by:\n{sql}\n{plan}"


async def test_retention_drops_old_chunks_and_rollups_are_right(
    db: asyncpg.Connection,
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    old, recent = now - timedelta(days=30), now - timedelta(hours=1)
    source = f"/sensors/air/RET-{uuid.uuid4().hex[:6]}"
    await writers.RAW_EVENTS.write(
        db,
        [
            (t, "vn.ioc.air.observed", source, f"r{i}", "HK", '{"district": "HK"}', None)
            for i, t in enumerate((old, old + timedelta(minutes=1), recent))
        ],
    )
    name = f"test.roll.{uuid.uuid4().hex[:6]}"
    hour = now.replace(minute=0) - timedelta(hours=3)
    windows = [
        KpiRecord(
            name,
            "city",
            hour + timedelta(minutes=m),
            hour + timedelta(minutes=m + 1),
            float(m),
            2,
            float(m) - 1,
            float(m) + 1,
            2.0 * m,
            True,
            1,
            now,
        )
        for m in range(120)
    ]
    ancient = KpiRecord(
        name,
        "city",
        now - timedelta(days=500),
        now - timedelta(days=500) + timedelta(minutes=1),
        1.0,
        1,
        computed_at=now,
    )
    await writers.KPI_WINDOWS.write(db, [kpi_row(k) for k in [*windows, ancient]])
    chunks_before = await db.fetchval("SELECT count(*) FROM show_chunks('events')")

    report = await run_maintenance(db, RetentionPolicy(), rollup_since=hour)

    assert report.dropped_chunks["events"] >= 1 and report.dropped_chunks["kpi_windows"] >= 1
    assert await db.fetchval("SELECT count(*) FROM show_chunks('events')") < chunks_before
    assert (
        await db.fetchval(
            "SELECT count(*) FROM show_chunks('events', older_than => interval '7 days')"
        )
        == 0
    )
    kept = await db.fetch("SELECT id FROM events WHERE source = $1 ORDER BY time", source)
    assert [r["id"] for r in kept] == ["r2"]
    assert await db.fetchval("SELECT count(*) FROM kpi_windows WHERE kpi = $1", name) == 120
    hourly = await db.fetch(
        "SELECT bucket, value_avg, value_min, value_max, value_last, sum, count, windows "
        "FROM kpi_rollup_hourly WHERE kpi = $1 ORDER BY bucket",
        name,
    )
    assert [tuple(r) for r in hourly] == [
        (hour, 29.5, -1.0, 60.0, 59.0, float(sum(range(60)) * 2), 120, 60),
        (
            hour + timedelta(hours=1),
            89.5,
            59.0,
            120.0,
            119.0,
            float(sum(range(60, 120)) * 2),
            120,
            60,
        ),
    ]
    daily = await db.fetch(
        "SELECT sum(windows), sum(count) FROM kpi_rollup_daily WHERE kpi = $1", name
    )
    assert tuple(daily[0]) == (120, 240)
    # A late revision is folded in by the next run; running again changes nothing else.
    late = replace(windows[0], value=1000.0, revision=2)
    await writers.KPI_WINDOWS.write(db, [kpi_row(late)])
    await run_maintenance(db, RetentionPolicy(), rollup_since=hour)
    first = await db.fetchrow(
        "SELECT value_avg, windows FROM kpi_rollup_hourly WHERE kpi = $1 AND bucket = $2",
        name,
        hour,
    )
    assert tuple(first) == (pytest.approx((sum(range(1, 60)) + 1000.0) / 60), 60)


def _ioc(database_url: str, *args: str, columns: int = 160) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IOC_DATABASE_URL": database_url, "COLUMNS": str(columns)}
    return subprocess.run(
        [sys.executable, "-m", "ioc", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_cli_migrate_status_and_query(migrated: str, db: asyncpg.Connection) -> None:
    name = "feedback.rating.avg"  # a catalogue KPI no other test writes
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    await writers.KPI_WINDOWS.write(
        db,
        [
            kpi_row(
                replace(
                    kpi(name, scope, 0, v, 1),
                    window_start=now - timedelta(minutes=m + 1),
                    window_end=now - timedelta(minutes=m),
                )
            )
            for scope, v in (("district:HD", 80.0), ("district:NS", 40.0), ("city", 60.0))
            for m in range(3)
        ],
    )
    assert "schema up to date" in _ioc(migrated, "db", "migrate").stdout
    status = orjson.loads(_ioc(migrated, "db", "status", "--json").stdout)
    assert status["edition"] == "apache"
    assert [m["state"] for m in status["migrations"]][:2] == ["applied", "applied"]
    out = _ioc(migrated, "query", "kpi", name, "--scope", "district:*", "--since", "1h", "--json")
    assert out.returncode == 0, out.stderr
    got = orjson.loads(out.stdout)
    assert sorted({r["scope"] for r in got}) == ["district:HD", "district:NS"]
    assert len(got) == 6
    table = _ioc(migrated, "query", "kpi", name, "--scope", "district:*")
    assert "district:HD" in table.stdout and "80.00" in table.stdout
    # 80 columns: nothing cut; --wide adds min, max and the revision.
    narrow = _ioc(migrated, "query", "kpi", name, "--scope", "district:*", columns=80)
    assert "…" not in narrow.stdout and "80.00" in narrow.stdout, narrow.stdout
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80
    assert "rev" not in narrow.stdout
    assert "rev" in _ioc(migrated, "query", "kpi", name, "--wide", columns=160).stdout
    for args, hint in (
        (("feedback.ratng.avg",), "did you mean feedback.rating.avg"),
        ((name, "--scope", "district:XX"), "unknown district 'XX'"),
        ((name, "--scope", "station:HD-AQ-001"), "its scopes: city, district:<id>"),
        ((name, "--window", "900"), "it has: 60, 3600"),
    ):
        wrong = _ioc(migrated, "query", "kpi", *args)
        assert wrong.returncode == 2 and hint in " ".join(wrong.stderr.split()), wrong.stderr
    bad = _ioc(migrated.rsplit("/", 1)[0] + "/postgres", "query", "alerts")
    assert bad.returncode == 2 and "ioc db migrate" in bad.stderr
