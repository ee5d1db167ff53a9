"""The storage sinks with the real broker and the real TimescaleDB: end to end (raw,
KPI, alert sinks, dead letters, health and metrics) and a database outage mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from events import health, topics
from events.envelope import decode, encode, new_event
from events.records import AlertRecord, DeadLetter, KpiRecord
from ioc.services import timescale
from ioc.settings import ServiceSettings
from storage.metrics import SinkMetrics
from storage.migrate import migrate
from storage.service import health_app, run_storage, sink_specs
from storage.settings import StorageSettings
from storage.sink import Sink
from streams.state import read_to_end
from tests.waiting import until

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(bootstrap_servers: str, database_url: str) -> StorageSettings:
    tag = uuid.uuid4().hex[:8]
    return StorageSettings(
        bootstrap_servers=bootstrap_servers,
        database_url=database_url,
        raw_group_id=f"test-raw-{tag}",
        kpi_group_id=f"test-kpi-{tag}",
        alerts_group_id=f"test-alerts-{tag}",
        storage_http_port=_free_port(),
        sink_retry_initial_s=0.2,
        sink_retry_max_s=1.0,
    )


def air_event(station: str, i: int, when: datetime) -> bytes:
    return encode(
        new_event(
            "vn.ioc.air.observed",
            f"/sensors/air/{station}",
            {"station_id": station, "district": "HD", "pm25": 10.0 + i % 50, "pm10": 30.0},
            time=when + timedelta(milliseconds=i),
            event_id=f"{station}-{i}",
        )
    )


async def _wait_for(predicate: Callable[[], Awaitable[bool]], within_s: float, what: str) -> None:
    await until(predicate, what, within=within_s, every=0.3)


async def _dead_letters(
    bootstrap_servers: str, component_prefix: str, want: int
) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(
        topics.DEADLETTER, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[DeadLetter] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(found) < want:
            got = await consumer.getmany(timeout_ms=500)
            for recs in got.values():
                for rec in recs:
                    dl = DeadLetter.from_json(rec.value)
                    if dl.key is not None and dl.key.startswith(component_prefix.encode()):
                        found.append(dl)
    finally:
        await consumer.stop()
    return found


async def test_sinks_end_to_end(
    bootstrap_servers: str, database_url: str, producer: AIOKafkaProducer
) -> None:
    settings = _settings(bootstrap_servers, database_url)
    stop = asyncio.Event()
    service = asyncio.create_task(run_storage(settings, stop))
    # The service migrates at start; wait for it before querying the tables.
    conn = await asyncpg.connect(database_url)
    try:

        async def migrated() -> bool:
            return bool(await conn.fetchval("SELECT to_regclass('alert_transitions') IS NOT NULL"))

        await _wait_for(migrated, 30, "the service to migrate the schema")
    finally:
        await conn.close()
    tag = uuid.uuid4().hex[:8]
    station = f"E2E-{tag}"
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        for i in range(1000):
            await producer.send(
                topics.events_topic("air"), air_event(station, i, now), key=station.encode()
            )
        for i in range(100):  # re-deliveries: ignored by the raw sink
            await producer.send(
                topics.events_topic("air"), air_event(station, i, now), key=station.encode()
            )
        # The last one is a valid CloudEvent whose id PostgreSQL refuses (NUL in text): the
        # sink isolates it by splitting the batch and dead-letters it as db_rejected.
        nul_id = encode(
            new_event(
                "vn.ioc.air.observed",
                f"/sensors/air/{station}",
                {"station_id": station, "district": "HD", "pm25": 1.0, "pm10": 2.0},
                time=now,
                event_id="nul\x00id",
            )
        )
        bad = [b"{not json", b'{"specversion": "1.0"}', b"[1, 2]", nul_id]
        for raw in bad:
            await producer.send(topics.events_topic("air"), raw, key=f"bad-{tag}".encode())
        name = f"test.e2e.{tag}"
        start = now.replace(second=0)
        for revision, value in ((1, 10.0), (3, 30.0), (2, 20.0)):
            rec = KpiRecord(
                name, "city", start, start + timedelta(minutes=1), value, 5, revision=revision
            )
            await producer.send(topics.KPI, rec.to_json(), key=rec.key.encode())
        await producer.send(topics.KPI, b'{"kpi": "x"}', key=f"bad-{tag}".encode())
        alert_id = f"AL-{tag}"
        for revision, state in enumerate(("raised", "escalated", "acknowledged")):
            a = AlertRecord(
                alert_id,
                "air.aqi.high",
                "district:HD",
                state,
                "warning",
                1,  # type: ignore[arg-type]
                "AQI cao",
                "air.aqi.vn",
                160.0,
                150.0,
                now,
                now + timedelta(seconds=revision),
                revision=revision,
            )
            await producer.send(topics.ALERTS, a.to_json(), key=alert_id.encode())
        await producer.flush()

        conn = await asyncpg.connect(database_url)
        try:

            async def all_written() -> bool:
                n = await conn.fetchval(
                    "SELECT count(*) FROM events WHERE source = $1", f"/sensors/air/{station}"
                )
                k = await conn.fetchval("SELECT revision FROM kpi_windows WHERE kpi = $1", name)
                s = await conn.fetchval("SELECT state FROM alerts WHERE alert_id = $1", alert_id)
                return bool(n == 1000 and k == 3 and s == "acknowledged")

            await _wait_for(all_written, 60, "all three sinks to write")
            assert await conn.fetchval("SELECT value FROM kpi_windows WHERE kpi = $1", name) == 30.0
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM alert_transitions WHERE alert_id = $1", alert_id
                )
                == 3
            )
        finally:
            await conn.close()
        dead = await _dead_letters(bootstrap_servers, "bad-" + tag, 5)
        assert sorted(d.reason for d in dead) == sorted(
            [
                "undecodable",
                "missing_attribute",
                "not_an_object",
                "bad_value",  # the NUL in the id: PostgreSQL text cannot hold it
                "missing_attribute",
            ]
        )
        assert {d.component for d in dead} == {"storage.raw", "storage.kpi"}
        assert {d.value for d in dead if d.component == "storage.raw"} == set(bad)
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{settings.storage_http_port}"
            async with http.get(f"{base}/readyz") as resp:
                ready = await resp.json()
                health.validate(health.READYZ, resp.status, ready)
            assert resp.status == 200, ready
            assert set(ready["checks"]) == {"database", "sink_raw", "sink_kpi", "sink_alerts"}
            async with http.get(f"{base}/healthz") as resp:
                health.validate(health.HEALTHZ, resp.status, await resp.json())
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
        assert 'ioc_sink_rows_total{sink="raw"}' in text
        # At least ours (the broker may hold earlier sessions' records too: fresh group).
        assert re.search(
            r'ioc_sink_dead_letters_total\{reason="undecodable",sink="raw"\} [1-9]', text
        )
    finally:
        stop.set()
        await asyncio.wait_for(service, 30)


def _timescale_up(settings: ServiceSettings) -> None:
    # Through the CLI (as an operator would), so no Popen object of ours outlives it.
    env = {
        **os.environ,
        "IOC_DB_PORT": str(settings.db_port),
        "IOC_STATE_DIR": str(settings.state_dir),
    }
    subprocess.run(
        [sys.executable, "-m", "ioc", "services", "up", "timescaledb"],
        check=True,
        capture_output=True,
        env=env,
        timeout=120,
    )


@pytest.fixture
def private_timescaledb(
    timescaledb: ServiceSettings, tmp_path: Path
) -> Iterator[tuple[ServiceSettings, str]]:
    """A TimescaleDB cluster of this test alone (own port, own data directory), so stopping
    it never disturbs the server other tests of the session share."""
    if timescaledb.uses_external_database:
        pytest.skip("the outage test stops the server: needs a local TimescaleDB")
    settings = timescaledb.model_copy(update={"db_port": _free_port(), "state_dir": tmp_path})
    _timescale_up(settings)
    try:
        yield settings, settings.effective_database_url
    finally:
        timescale.down(settings)
        data = timescale.rootfs_path(settings) / f"var/lib/ioc/pg-{settings.db_port}"
        shutil.rmtree(data, ignore_errors=True)


async def test_database_outage_pauses_and_resumes_without_loss_or_duplicates(
    bootstrap_servers: str,
    private_timescaledb: tuple[ServiceSettings, str],
    producer: AIOKafkaProducer,
) -> None:
    """TimescaleDB is stopped for 30 s mid-stream while events keep arriving: the sink
    pauses its consumer (nothing more is fetched, so memory stays bounded), retries with
    backoff, reconnects and resumes; every event lands exactly once."""
    service_settings, database_url = private_timescaledb
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    settings = _settings(bootstrap_servers, database_url)
    registry = CollectorRegistry()
    # The production raw sink on a topic of this test's own: a fresh group on the contract
    # topics would first read every earlier test's events from "earliest".
    topic = f"test.outage.{uuid.uuid4().hex[:8]}"
    spec = dataclasses.replace(
        next(s for s in sink_specs(settings) if s.name == "raw"), topics=(topic,)
    )
    sink = Sink(
        spec,
        bootstrap_servers=bootstrap_servers,
        database_url=database_url,
        producer=producer,
        metrics=SinkMetrics.create(registry),
        retry_initial_s=settings.sink_retry_initial_s,
        retry_max_s=settings.sink_retry_max_s,
    )
    health_port = _free_port()
    http_runner = web.AppRunner(health_app([sink], registry, database_url), access_log=None)
    await http_runner.setup()
    await web.TCPSite(http_runner, "127.0.0.1", health_port).start()
    stop = asyncio.Event()
    runner = asyncio.create_task(sink.run(stop))
    station = f"OUT-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    total, chunk = 15_000, 500
    paused_seen = False

    last: dict[TopicPartition, int] = {}

    async def produce() -> None:
        for c in range(total // chunk):
            futures = [
                await producer.send(topic, air_event(station, i, now), key=station.encode())
                for i in range(c * chunk, (c + 1) * chunk)
            ]
            for md in await asyncio.gather(*futures):
                tp = TopicPartition(md.topic, md.partition)
                last[tp] = max(last.get(tp, -1), md.offset)
            await asyncio.sleep(0.5)

    try:
        production = asyncio.create_task(produce())
        conn = await asyncpg.connect(database_url)
        try:

            async def some_written() -> bool:
                return bool(
                    await conn.fetchval(
                        "SELECT count(*) FROM events WHERE source = $1", f"/sensors/air/{station}"
                    )
                )

            await _wait_for(some_written, 30, "the first rows")
        finally:
            await conn.close()
        await asyncio.to_thread(timescale.down, service_settings)
        health_during_outage: list[int] = []
        failing: set[str] = set()  # checks seen failing
        async with aiohttp.ClientSession() as http:
            # The database stays down until the sink has paused and /readyz said why.
            async def outage_seen() -> bool:
                nonlocal paused_seen
                paused_seen = paused_seen or sink.health.paused_since is not None
                async with http.get(f"http://127.0.0.1:{health_port}/readyz") as resp:
                    body = await resp.json()
                    health.validate(health.READYZ, resp.status, body)
                    health_during_outage.append(resp.status)
                    failing.update(n for n, c in body["checks"].items() if not c["ok"])
                async with http.get(f"http://127.0.0.1:{health_port}/healthz") as resp:
                    assert resp.status == 200  # alive throughout
                return paused_seen and {"database", "sink_raw"} <= failing

            await until(outage_seen, "the sink to pause and /readyz to say so", every=0.2)
        await asyncio.to_thread(_timescale_up, service_settings)
        await production
        conn = await asyncpg.connect(database_url)
        try:

            async def all_there() -> bool:
                n = await conn.fetchval(
                    "SELECT count(*) FROM events WHERE source = $1", f"/sensors/air/{station}"
                )
                return bool(n == total)

            await _wait_for(all_there, 60, f"{total} events after the outage")
            distinct = await conn.fetchval(
                "SELECT count(DISTINCT id) FROM events WHERE source = $1", f"/sensors/air/{station}"
            )
        finally:
            await conn.close()
        assert distinct == total
        assert paused_seen, "the sink never paused during the outage"
        assert 503 in health_during_outage
        assert failing == {"database", "sink_raw"}, failing
        assert sink.health.paused_since is None
        assert registry.get_sample_value("ioc_sink_db_errors_total", {"sink": "raw"}) >= 1
        # Offsets were committed up to the last record, once the rows were durable.
        for tp, offset in last.items():

            async def committed_to_end(tp: TopicPartition = tp, offset: int = offset) -> bool:
                return await _committed(bootstrap_servers, spec.group_id, tp) == offset + 1

            await _wait_for(committed_to_end, 20, f"offsets of {tp} committed")
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)
        await http_runner.cleanup()


async def _committed(bootstrap_servers: str, group_id: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        committed: int | None = await consumer.committed(tp)
        return committed
    finally:
        await consumer.stop()


def _raw_sink(
    bootstrap_servers: str,
    database_url: str,
    producer: AIOKafkaProducer,
    registry: CollectorRegistry,
    *,
    topic: str,
    wrap: Callable[[Any], Any] | None = None,
) -> Sink:
    """The raw-event sink on a topic of the test's own (its writer wrapped by ``wrap``)."""
    settings = _settings(bootstrap_servers, database_url)
    raw = next(s for s in sink_specs(settings) if s.name == "raw")
    spec = dataclasses.replace(raw, topics=(topic,))
    if wrap is not None:
        spec = dataclasses.replace(spec, merge=wrap(raw.merge))
    return Sink(
        spec,
        bootstrap_servers=bootstrap_servers,
        database_url=database_url,
        producer=producer,
        metrics=SinkMetrics.create(registry),
        retry_initial_s=settings.sink_retry_initial_s,
        retry_max_s=settings.sink_retry_max_s,
    )


async def test_rejected_rows_become_dead_letters_other_errors_pause(
    bootstrap_servers: str, database_url: str, producer: AIOKafkaProducer
) -> None:
    """Only errors about the rows themselves (SQLSTATE classes 22, 23) are bisected into
    dead letters; any other error (here a refused write, as with a missing grant) pauses
    the sink until it goes away, and no good row is dead-lettered."""
    tag = uuid.uuid4().hex[:8]
    station, topic = f"GATE-{tag}", f"test.gate.{tag}"
    source = f"/sensors/air/{station}"
    conn = await asyncpg.connect(database_url)
    await migrate(conn)
    await conn.execute(f"CREATE TABLE gate_{tag} (closed boolean NOT NULL)")
    await conn.execute(f"INSERT INTO gate_{tag} VALUES (true)")
    await conn.execute(
        f"""CREATE FUNCTION gate_{tag}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.source = '{source}' AND NEW.id = '{station}-7' THEN
                RAISE EXCEPTION 'row refused' USING ERRCODE = 'check_violation';
            END IF;
            IF NEW.source = '{source}' AND (SELECT closed FROM gate_{tag}) THEN
                RAISE EXCEPTION 'writes refused' USING ERRCODE = 'insufficient_privilege';
            END IF;
            RETURN NEW;
        END $$"""
    )
    await conn.execute(
        f"CREATE TRIGGER gate_{tag} BEFORE INSERT ON events "
        f"FOR EACH ROW EXECUTE FUNCTION gate_{tag}()"
    )
    registry = CollectorRegistry()
    sink = _raw_sink(bootstrap_servers, database_url, producer, registry, topic=topic)
    stop = asyncio.Event()
    runner = asyncio.create_task(sink.run(stop))
    now = datetime.now(UTC)
    total = 3000
    try:
        futures = [await producer.send(topic, air_event(station, i, now)) for i in range(total)]
        await asyncio.gather(*futures)

        async def paused() -> bool:
            return sink.health.paused_since is not None

        await _wait_for(paused, 30, "the sink to pause on refused writes")

        async def retried() -> bool:  # a few retries while refused
            errors = registry.get_sample_value("ioc_sink_db_errors_total", {"sink": "raw"})
            return (errors or 0) >= 3

        await _wait_for(retried, 30, "three refused retries")
        stored = "SELECT count(*) FROM events WHERE source = $1"
        assert await conn.fetchval(stored, source) == 0
        assert "writes refused" in (sink.health.last_error or "")
        await conn.execute(f"UPDATE gate_{tag} SET closed = false")

        async def all_but_one() -> bool:
            return bool(await conn.fetchval(stored, source) == total - 1)

        await _wait_for(all_but_one, 60, "every row but the refused one")
        assert sink.health.paused_since is None
        dead = [d for d in await _all_dead_letters(bootstrap_servers) if d.source_topic == topic]
        assert [(d.reason, decode(d.value).id) for d in dead] == [("db_rejected", f"{station}-7")]
        assert "row refused" in dead[0].detail
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)
        await conn.execute(f"DROP TRIGGER gate_{tag} ON events")
        await conn.execute(f"DROP FUNCTION gate_{tag}(); DROP TABLE gate_{tag}")
        await conn.close()


async def _all_dead_letters(bootstrap_servers: str) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    found: list[DeadLetter] = []
    try:
        tps = [
            TopicPartition(topics.DEADLETTER, p)
            for p in sorted(consumer.partitions_for_topic(topics.DEADLETTER) or {0})
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        await read_to_end(
            consumer, tps, lambda _, recs: found.extend(DeadLetter.from_json(r.value) for r in recs)
        )
    finally:
        await consumer.stop()
    return found


async def _spawn_storage(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """`python -m storage` (the `storage` component of `ioc up`), once /readyz says 200."""
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "storage", env={**os.environ, **env}, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{env['IOC_STORAGE_HTTP_PORT']}/readyz"

    async def healthy() -> bool:
        assert proc.returncode is None, _read(log)
        try:
            async with aiohttp.ClientSession() as http, http.get(url) as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    try:
        await _wait_for(healthy, 60, "the storage process to be healthy")
    except BaseException:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        raise
    return proc


def _read(log: Path) -> str:
    return log.read_text(errors="replace")


async def test_batch_in_flight_when_the_process_is_killed_is_replayed_and_lands_once(
    bootstrap_servers: str, database_url: str, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    """The storage process is SIGKILLed while its raw batch waits inside its transaction
    (a lock held by the test): nothing of it was stored or committed. The restarted
    process replays it from the committed offsets and stores every event exactly once."""
    settings = _settings(bootstrap_servers, database_url)
    env = {
        "IOC_BOOTSTRAP_SERVERS": bootstrap_servers,
        "IOC_DATABASE_URL": database_url,
        "IOC_RAW_GROUP_ID": settings.raw_group_id,
        "IOC_KPI_GROUP_ID": settings.kpi_group_id,
        "IOC_ALERTS_GROUP_ID": settings.alerts_group_id,
        "IOC_STORAGE_HTTP_PORT": str(settings.storage_http_port),
    }
    log = tmp_path / "storage.log"
    station = f"KILL-{uuid.uuid4().hex[:8]}"
    source = f"/sensors/air/{station}"
    total = 300
    proc = await _spawn_storage(env, log)
    conn = await asyncpg.connect(database_url)
    stack = contextlib.AsyncExitStack()
    try:
        # Writes into `events` now wait for this lock: the sink's batch stays in flight.
        locker = await asyncpg.connect(database_url)
        stack.push_async_callback(locker.close)
        lock = locker.transaction()
        await lock.start()
        await locker.execute("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
        now = datetime.now(UTC)
        last: dict[TopicPartition, int] = {}
        for i in range(total):
            md = await (
                await producer.send(
                    topics.events_topic("air"), air_event(station, i, now), key=station.encode()
                )
            )
            tp = TopicPartition(md.topic, md.partition)
            last[tp] = max(last.get(tp, -1), md.offset)
        (tp, offset) = next(iter(last.items()))  # one key: one partition

        async def sink_blocked() -> bool:
            # A raw batch (ours, or older records before them: a fresh group starts at
            # the earliest offset) waits for the lock inside its transaction; no raw batch
            # can be stored, so no offset at or past ours can be committed.
            return bool(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_locks "
                    "WHERE relation = 'events'::regclass AND NOT granted"
                )
            )

        await _wait_for(sink_blocked, 30, "the raw sink waiting on the lock")
        writers = await conn.fetch(
            "SELECT pid FROM pg_locks WHERE relation = 'events'::regclass AND NOT granted"
        )
        proc.kill()
        assert await proc.wait() == -9
        await lock.rollback()

        async def killed_backends_gone() -> bool:
            return not await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])",
                [r["pid"] for r in writers],
            )

        await _wait_for(killed_backends_gone, 30, "the killed process's backends to end")
        # Nothing of the batch in flight was stored, and its offsets were not committed.
        assert await conn.fetchval("SELECT count(*) FROM events WHERE source = $1", source) == 0
        before = await _committed(bootstrap_servers, settings.raw_group_id, tp)
        assert before is None or before <= offset

        # The restarted process (same consumer groups) replays and stores them once.
        proc = await _spawn_storage(env, log)

        async def all_there() -> bool:
            n = await conn.fetchval("SELECT count(*) FROM events WHERE source = $1", source)
            return bool(n == total)

        await _wait_for(all_there, 60, f"{total} events after the restart")

        async def committed_to_end() -> bool:
            return await _committed(bootstrap_servers, settings.raw_group_id, tp) == offset + 1

        await _wait_for(committed_to_end, 30, "the offsets committed past our events")
        # Still exactly once after the commit (no second write of the replayed batch).
        counts = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM events WHERE source = $1",
            source,
        )
        assert (counts["n"], counts["ids"]) == (total, total)
        # The rows came from the restarted process's replay: its own counter holds them.
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{settings.storage_http_port}/metrics") as resp,
        ):
            metrics = await resp.text()
        rows = re.search(r'^ioc_sink_rows_total\{sink="raw"\} (\S+)$', metrics, re.MULTILINE)
        assert rows is not None and float(rows.group(1)) >= total, metrics
    finally:
        await stack.aclose()
        await conn.close()
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


@dataclasses.dataclass
class _BrokenConnectionOnce:
    """The real writer, except that its first write fails the way asyncpg fails on a
    connection the server left half-closed during a shutdown (seen in `ioc chaos`)."""

    inner: Any
    failed: int = 0

    async def prepare(self, conn: asyncpg.Connection) -> None:
        await self.inner.prepare(conn)

    async def write(self, conn: asyncpg.Connection, rows: Any) -> int:
        if not self.failed:
            self.failed += 1
            raise asyncpg.exceptions._base.InternalClientError(
                "cannot switch to state 15; another operation (2) is in progress"
            )
        return int(await self.inner.write(conn, rows))


async def test_a_connection_left_mid_operation_pauses_and_retries_not_crashes(
    bootstrap_servers: str, database_url: str, producer: AIOKafkaProducer
) -> None:
    tag = uuid.uuid4().hex[:8]
    station, topic = f"HALF-{tag}", f"test.half.{tag}"
    conn = await asyncpg.connect(database_url)
    await migrate(conn)
    registry = CollectorRegistry()
    sink = _raw_sink(
        bootstrap_servers, database_url, producer, registry, topic=topic, wrap=_BrokenConnectionOnce
    )
    writer = sink.spec.merge
    assert isinstance(writer, _BrokenConnectionOnce)
    stop = asyncio.Event()
    runner = asyncio.create_task(sink.run(stop))
    try:
        now = datetime.now(UTC)
        futures = [await producer.send(topic, air_event(station, i, now)) for i in range(500)]
        await asyncio.gather(*futures)

        async def all_stored() -> bool:
            assert not runner.done(), runner  # a crash ends the sink task
            n = await conn.fetchval(
                "SELECT count(*) FROM events WHERE source = $1", f"/sensors/air/{station}"
            )
            return bool(n == 500)

        await _wait_for(all_stored, 60, "every row after the broken connection")
        assert writer.failed == 1
        assert registry.get_sample_value("ioc_sink_db_errors_total", {"sink": "raw"}) == 1
        assert sink.health.paused_since is None  # paused, then resumed
        assert "another operation" in (sink.health.last_error or "")
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)
        await conn.close()
