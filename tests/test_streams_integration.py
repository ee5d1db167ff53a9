"""The stream worker against the real broker: exact KPIs, dead letters, SIGKILL, 1 vs 2 workers.

Each test runs workers as real processes (`python -m ioc streams worker`) on topics of its
own (a unique prefix), so other tests publishing to the contract topics cannot disturb
the exact counts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from events import health
from events.records import DeadLetter, KpiRecord
from events.topics import DOMAINS
from streams.state import read_to_end
from tests.streams_helpers import T0, air, json_log_events

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
MIN = 60_000
PARTITIONS = 4


class Topics:
    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.prefix = f"test.{self.tag}.events."
        self.air = f"{self.prefix}air"
        self.dead = f"test.{self.tag}.deadletter"

    def kpi(self, group: str) -> str:
        return f"test.{self.tag}.{group}.kpi"

    def env(self, bootstrap: str, group: str) -> dict[str, str]:
        return {
            **os.environ,
            "IOC_BOOTSTRAP_SERVERS": bootstrap,
            # unique per run: a kept broker still knows the groups of earlier runs
            "IOC_STREAMS_GROUP_ID": f"{group}-{self.tag}",
            "IOC_STREAMS_EVENTS_TOPIC_PREFIX": self.prefix,
            "IOC_STREAMS_KPI_TOPIC": self.kpi(group),
            "IOC_STREAMS_DEADLETTER_TOPIC": self.dead,
            "IOC_STREAMS_PARTIALS_TOPIC": f"test.{self.tag}.{group}.partials",
            "IOC_STREAMS_STATE_TOPIC": f"test.{self.tag}.{group}.state",
            "IOC_STREAMS_HTTP_PORT": "0",
            "IOC_STREAMS_IDLE_TIMEOUT_S": "4",
            # the getmany engine here; tests/test_streams_faust.py runs the Faust-hosted one
            "IOC_STREAMS_ENGINE": "aiokafka",
        }


async def _create(bootstrap: str, t: Topics, groups: tuple[str, ...]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                # every domain topic the worker subscribes to: missing ones make Tansu
                # groups rebalance over and over while they get auto-created
                *(NewTopic(t.prefix + d, PARTITIONS, 1) for d in DOMAINS),
                NewTopic(t.dead, 1, 1),
                *(NewTopic(t.kpi(g), 4, 1) for g in groups),
            ]
        )
    finally:
        await admin.close()


class Workers:
    """Worker processes we start (and only those are stopped or killed)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.group = env["IOC_STREAMS_GROUP_ID"]

    def start(self, http_port: int | None = None) -> subprocess.Popen[bytes]:
        """Start worker ``len(procs)``; with ``http_port``, its health/metrics there."""
        # The child keeps its own descriptor of the log; ours is closed right away.
        name = f"{self.group}-{len(self.procs)}.log"
        with open(self.log_dir / name, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ioc", "streams", "worker", "--no-progress"],
                cwd=ROOT,
                env=self.env
                if http_port is None
                else {**self.env, "IOC_STREAMS_HTTP_PORT": str(http_port)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    async def wait_assigned(self, index: int, within_s: float = 60.0) -> None:
        """Until worker ``index`` logged its stage-1 assignment."""
        log = self.log_dir / f"{self.group}-{index}.log"
        deadline = time.monotonic() + within_s
        while b"stage1.assigned" not in log.read_bytes():
            assert time.monotonic() < deadline, f"worker {index} never got partitions"
            await asyncio.sleep(0.5)

    def log_events(self, index: int, event: str) -> list[dict[str, object]]:
        """Worker ``index``'s JSON log lines whose event is ``event``."""
        return json_log_events((self.log_dir / f"{self.group}-{index}.log").read_bytes(), event)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def workers_factory(tmp_path: Path) -> Iterator[list[Workers]]:
    made: list[Workers] = []
    yield made
    for w in made:
        w.stop_all()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _metric(port: int, name: str) -> float | None:
    """A sample of the worker's /metrics, or None while it does not answer."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            text = await resp.text()
    except aiohttp.ClientError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def _produce(bootstrap: str, topic: str, values: list[tuple[int, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        futs = [await producer.send(topic, v, partition=p) for p, v in values]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str, partitions: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out: list[bytes] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        await read_to_end(consumer, tps, lambda _, rs: out.extend(r.value for r in rs if r.value))
    finally:
        await consumer.stop()
    return out


def _window_id(rec: KpiRecord) -> str:
    # The Kafka key (kpi|scope|window_start) is shared by windows of different sizes
    # that start together; the sink's identity adds window_end.
    return f"{rec.key}|{rec.window_end.isoformat()}"


async def _latest_kpis(bootstrap: str, topic: str) -> dict[str, KpiRecord]:
    latest: dict[str, KpiRecord] = {}
    for raw in await _read_all(bootstrap, topic, 4):
        rec = KpiRecord.from_json(raw)
        held = latest.get(_window_id(rec))
        if held is None or rec.revision >= held.revision:
            latest[_window_id(rec)] = rec
    return latest


async def _wait_for(cond_coro, within_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within_s
    while True:
        result = await cond_coro()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(1.0)


def _finals(latest: dict[str, KpiRecord], kpi: str, scope: str = "city") -> dict[int, KpiRecord]:
    return {
        int(r.window_start.timestamp() * 1000): r
        for r in latest.values()
        if r.kpi == kpi
        and r.scope == scope
        and r.final
        and (r.window_end - r.window_start).total_seconds() == 60
    }


def known_air_events() -> tuple[list[tuple[int, bytes]], dict[int, list[float]]]:
    """3 minutes of events on 4 partitions from 3 stations, then one event per partition
    10 min later so every partition's watermark passes the first three windows; with the
    pm2.5 values each 1-min window must hold."""
    values: list[tuple[int, bytes]] = []
    expected: dict[int, list[float]] = {}
    for i in range(1200):
        t_ms = T0 + i * 150
        pm = float(10 + i % 50)
        values.append((i % PARTITIONS, air(t_ms, pm25=pm, station_id=f"HD-AQ-{i % 3:03d}")))
        expected.setdefault(t_ms - t_ms % MIN, []).append(pm)
    values += [(p, air(T0 + 10 * MIN)) for p in range(PARTITIONS)]
    return values, expected


async def assert_known_finals(
    bootstrap: str, kpi_topic: str, expected: dict[int, list[float]], within_s: float
) -> dict[str, KpiRecord]:
    """Wait for the final windows of :func:`known_air_events` and check them exactly."""

    async def done() -> dict[int, KpiRecord] | None:
        finals = _finals(await _latest_kpis(bootstrap, kpi_topic), "air.pm25.avg")
        return finals if all(w in finals for w in expected) else None

    finals = await _wait_for(done, within_s, "final KPI records")
    for w, pms in expected.items():
        rec = finals[w]
        assert rec.count == len(pms)
        assert rec.value == pytest.approx(sum(pms) / len(pms))
        assert (rec.min, rec.max) == (min(pms), max(pms))
    latest = await _latest_kpis(bootstrap, kpi_topic)
    stations = _finals(latest, "air.pm25.avg", "station:HD-AQ-001")
    assert stations[T0].count == sum(1 for i in range(400) if i % 3 == 1)
    return latest


async def test_events_give_exact_kpis_and_bad_records_become_dead_letters(
    bootstrap_servers: str, workers_factory: list[Workers], tmp_path: Path
) -> None:
    t = Topics()
    await _create(bootstrap_servers, t, ("g1",))
    env = t.env(bootstrap_servers, "g1")
    with socket.socket() as sock:  # a free port for the health/metrics endpoint
        sock.bind(("127.0.0.1", 0))
        http_port = sock.getsockname()[1]
    env["IOC_STREAMS_HTTP_PORT"] = str(http_port)
    workers = Workers(env, tmp_path)
    workers_factory.append(workers)
    workers.start()
    values, expected = known_air_events()
    bad = [(1, b"not json at all"), (2, air(T0, pm25=-1.0))]
    values[100:100] = bad
    values += [(3, air(T0))]  # now too late: behind the watermark by more than lateness + grace
    await _produce(bootstrap_servers, t.air, values)
    latest = await assert_known_finals(bootstrap_servers, t.kpi("g1"), expected, 90)

    async def dead() -> list[DeadLetter] | None:
        dls = [DeadLetter.from_json(r) for r in await _read_all(bootstrap_servers, t.dead, 1)]
        return dls if len(dls) >= 3 else None

    dls = await _wait_for(dead, 30, "dead letters")
    by_reason = {d.reason: d for d in dls}
    assert set(by_reason) == {"undecodable", "out_of_range", "too_late"}
    assert by_reason["undecodable"].value == b"not json at all"
    assert by_reason["undecodable"].source_topic == t.air
    assert by_reason["undecodable"].source_partition == 1
    assert by_reason["too_late"].source_partition == 3
    late = _finals(latest, "pipeline.late.count") or {
        int(r.window_start.timestamp() * 1000): r
        for r in latest.values()
        if r.kpi == "pipeline.late.count"
    }
    assert sum(r.count for r in late.values()) == 1

    async with aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{http_port}"

        async def readiness() -> tuple[int, dict[str, Any]] | None:
            async with http.get(f"{base}/readyz") as resp:
                answer = resp.status, await resp.json()
            return answer if answer[0] == 200 else None

        # Ready: assigned, restored, and caught up (the lag is measured at checkpoints).
        status, ready = await _wait_for(readiness, 30, "the worker to be ready")
        health.validate(health.READYZ, status, ready)
        assert ready["component"] == "streams"
        assert set(ready["checks"]) == {"assigned", "restored", "caught_up"}
        async with http.get(f"{base}/healthz") as resp:
            health.validate(health.HEALTHZ, resp.status, await resp.json())
        async with http.get(f"{base}/metrics") as resp:
            metrics = await resp.text()
    assert f"ioc_streams_events_total {float(1200 + PARTITIONS)}" in metrics
    # every record read, good or bad, counts as input of its domain
    assert f'ioc_streams_input_events_total{{domain="air"}} {float(len(values))}' in metrics
    assert 'ioc_streams_dead_letters_total{reason="too_late"} 1.0' in metrics
    assert f'ioc_streams_watermark_timestamp_seconds{{source="{t.air}:0"}}' in metrics
    assert f'ioc_streams_lag_records{{source="{t.air}:0"}}' in metrics


@pytest.mark.broker_sensitive
async def test_exact_under_sigkill_and_same_with_two_workers(
    bootstrap_servers: str, workers_factory: list[Workers], tmp_path: Path
) -> None:
    t = Topics()
    await _create(bootstrap_servers, t, ("single", "pair"))
    n = 24_000
    values = [
        (i % PARTITIONS, air(T0 + i * 25, event_id=f"e{i}", pm25=float(i % 97))) for i in range(n)
    ]  # 10 minutes of event time, every event distinct
    tail = [(p, air(T0 + 30 * MIN)) for p in range(PARTITIONS)]
    expected: dict[int, int] = {}
    for i in range(n):
        w = T0 + i * 25 - (T0 + i * 25) % MIN
        expected[w] = expected.get(w, 0) + 1

    one = Workers(t.env(bootstrap_servers, "single"), tmp_path)
    two = Workers(t.env(bootstrap_servers, "pair"), tmp_path)
    workers_factory.extend([one, two])
    port = _free_port()
    proc = one.start(port)
    two.start()
    # The second worker joins once the first has partitions, so half of them move with
    # their state (checkpoint on revoke, restore from the state topic) mid-stream.
    await two.wait_assigned(0)
    two.start()
    # Produce in slices while the single worker is SIGKILLed and restarted three times.
    slices = 6
    step = n // slices
    kills = 0
    for k in range(slices):
        await _produce(bootstrap_servers, t.air, values[k * step : (k + 1) * step])
        if k in (1, 3, 4):
            # Killed once this process has applied events and committed a snapshot (its
            # state is durable; more of the slice may still be in flight). One: a broker
            # that hands over the whole slice in one fetch gives one checkpoint for it.
            async def checkpointed(port: int = port) -> bool | None:
                events = await _metric(port, "ioc_streams_events_total")
                checkpoints = await _metric(port, "ioc_streams_checkpoints_total")
                return True if (events or 0) > 0 and (checkpoints or 0) >= 1 else None

            await _wait_for(checkpointed, 60, f"worker {len(one.procs) - 1}'s checkpoints")
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
            kills += 1
            port = _free_port()
            proc = one.start(port)
            index = len(one.procs) - 1

            # Recovery ran: the restarted process restored its partitions' state.
            async def restored(index: int = index) -> int | None:
                assigned = one.log_events(index, "stage1.assigned")
                total = sum(int(str(a.get("restored", 0))) for a in assigned)
                return total if total > 0 else None

            await _wait_for(restored, 60, f"worker {index} restoring its state")
    await _produce(bootstrap_servers, t.air, tail)
    assert kills == 3

    async def complete(group: str) -> dict[str, KpiRecord]:
        seen: dict[int, int | None] = {}

        async def check() -> dict[str, KpiRecord] | None:
            latest = await _latest_kpis(bootstrap_servers, t.kpi(group))
            finals = _finals(latest, "air.pm25.avg")
            counts = {w: finals[w].count for w in expected if w in finals}
            seen.clear()
            seen.update({w: counts.get(w) for w in expected if counts.get(w) != expected[w]})
            return latest if counts == expected else None

        # Late partials re-emit a window with a higher revision, so wait for the counts.
        try:
            result: dict[str, KpiRecord] = await _wait_for(check, 120, f"finals of {group}")
        except AssertionError:
            wrong = {(w - T0) // MIN: (c, expected[w]) for w, c in seen.items()}
            logs = f"{tmp_path}/{group}-*.log"
            raise AssertionError(f"{group}: minute -> (got, want) {wrong}; see {logs}") from None
        return result

    single = await complete("single")
    pair = await complete("pair")
    finals = _finals(single, "air.pm25.avg")
    assert {w: finals[w].count for w in expected} == expected  # no loss, no double count

    # The same final records with one (crashing) worker and with two workers.
    def final_values(latest: dict[str, KpiRecord]) -> dict[str, tuple[object, ...]]:
        return {
            k: (r.value, r.count, r.min, r.max, r.sum)
            for k, r in latest.items()
            if r.final and r.window_end.timestamp() * 1000 <= T0 + 11 * MIN
        }

    a, b = final_values(single), final_values(pair)
    assert len(a) > 100
    assert a == b
