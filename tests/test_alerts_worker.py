"""The alerts worker with the real broker: KPI records and commands in, alerts out."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from events import health, topics
from events.brokers import refresh_metadata
from events.records import AlertCommand, AlertRecord, DeadLetter, KpiRecord
from streams.alerts.worker import AlertsSettings, AlertsWorker
from tests.streams_helpers import json_log_events
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class Tail:
    """Reads a topic from the offsets it had when created."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer

    @classmethod
    async def open(cls, servers: str, topic: str) -> Tail:
        consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
        await consumer.start()
        await refresh_metadata(consumer)
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        for tp in parts:  # resolve the positions now, before anything is produced
            await consumer.position(tp)
        return cls(consumer)

    async def take(self, match: Callable[[bytes], bool], n: int, wait_s: float = 30) -> list[bytes]:
        found: list[bytes] = []
        deadline = asyncio.get_running_loop().time() + wait_s
        while len(found) < n and asyncio.get_running_loop().time() < deadline:
            batches = await self.consumer.getmany(timeout_ms=300)
            found += [m.value for msgs in batches.values() for m in msgs if match(m.value)]
        return found


async def start_worker(
    settings: AlertsSettings,
) -> tuple[AlertsWorker, asyncio.Event, asyncio.Task[None]]:
    worker = AlertsWorker(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    ready = asyncio.create_task(worker.ready.wait())
    await asyncio.wait({task, ready}, timeout=45, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises the worker's error
    assert worker.ready.is_set(), "worker did not recover in time"
    return worker, stop, task


def aqi(subject: str, start: datetime, minute: int, value: float) -> KpiRecord:
    ws = start + timedelta(minutes=minute)
    return KpiRecord(
        kpi="air.aqi.vn",
        scope=subject,
        window_start=ws,
        window_end=ws + timedelta(minutes=1),
        value=value,
        count=12,
        final=True,
    )


async def send_kpis(producer: AIOKafkaProducer, records: list[KpiRecord]) -> None:
    for rec in records:
        await producer.send(topics.KPI, rec.to_json(), key=rec.key.encode())
    await producer.flush()


async def send_command(producer: AIOKafkaProducer, cmd: AlertCommand) -> None:
    await producer.send_and_wait(topics.ALERT_COMMANDS, cmd.to_json(), key=cmd.alert_id.encode())


async def test_worker_raises_applies_commands_dead_letters_and_recovers(
    bootstrap_servers: str, producer: AIOKafkaProducer
) -> None:
    tag = uuid.uuid4().hex[:10]
    subject = f"district:IT{tag}"
    settings = AlertsSettings(
        bootstrap_servers=bootstrap_servers,
        alerts_group=f"it-alerts-{tag}",
        alerts_http_port=0,
        alerts_replay_records=2000,
        alerts_tick_seconds=0.2,
        alerts_silence_wall_clock=False,
    )
    async with contextlib.AsyncExitStack() as stack:
        alerts = await Tail.open(bootstrap_servers, topics.ALERTS)
        stack.push_async_callback(alerts.consumer.stop)
        letters = await Tail.open(bootstrap_servers, topics.DEADLETTER)
        stack.push_async_callback(letters.consumer.stop)
        await check_worker(settings, producer, alerts, letters, tag, subject)


async def check_worker(
    settings: AlertsSettings,
    producer: AIOKafkaProducer,
    alerts: Tail,
    letters: Tail,
    tag: str,
    subject: str,
) -> None:
    ours: Callable[[bytes], bool] = lambda raw: subject.encode() in raw  # noqa: E731
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
    worker, stop, task = await start_worker(settings)
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{worker.http_port}"
            async with http.get(f"{base}/readyz") as resp:
                ready = await resp.json()
                health.validate(health.READYZ, resp.status, ready)
            assert (resp.status, ready["component"]) == (200, "alerts"), ready
            assert ready["checks"]["recovered"]["ok"]
            async with http.get(f"{base}/healthz") as resp:
                health.validate(health.HEALTHZ, resp.status, await resp.json())

        # Nine minutes above 150 are not enough; the tenth raises.
        await send_kpis(producer, [aqi(subject, start, m, 170) for m in range(9)])
        await producer.send_and_wait(topics.KPI, f"not json {tag}".encode(), key=b"bad")
        await send_kpis(producer, [aqi(subject, start, 9, 171)])
        [raw] = await alerts.take(ours, 1)
        raised = AlertRecord.from_json(raw)
        assert (raised.state, raised.rule, raised.value, raised.revision) == (
            "raised",
            "air.aqi.high",
            171,
            1,
        )
        assert raised.raised_at == start + timedelta(minutes=10)

        at = datetime.now(UTC)
        ack = AlertCommand(f"ack-{tag}", raised.alert_id, "ack", "op.lan", at)
        assign = AlertCommand(f"asg-{tag}", raised.alert_id, "assign", "op.lan", at, "doi-1")
        ghost = AlertCommand(f"gh-{tag}", f"al-ghost-{tag}", "ack", "op.lan", at)
        for cmd in (ack, ack, assign, ghost):  # the second ack is a re-delivery
            await send_command(producer, cmd)
        no_assignee = assign.to_dict() | {"command_id": f"bad-{tag}", "assignee": None}
        await producer.send_and_wait(topics.ALERT_COMMANDS, orjson.dumps(no_assignee))
        echoed = [AlertRecord.from_json(r) for r in await alerts.take(ours, 2)]
        assert [(a.state, a.acknowledged_by, a.assignee, a.revision) for a in echoed] == [
            ("acknowledged", "op.lan", None, 2),
            ("acknowledged", "op.lan", "doi-1", 3),
        ]
        dead = [
            DeadLetter.from_json(r)
            for r in await letters.take(lambda raw: b'"component":"alerts"' in raw and (
                tag.encode() in DeadLetter.from_json(raw).value), 3)
        ]  # fmt: skip
        assert sorted((d.source_topic, d.reason) for d in dead) == [
            (topics.ALERT_COMMANDS, "missing_attribute"),
            (topics.ALERT_COMMANDS, "unknown_alert"),
            (topics.KPI, "undecodable"),
        ]

        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{worker.http_port}/metrics") as resp,
        ):
            page = await resp.text()
        assert 'ioc_alerts_commands_total{result="duplicate"} 1.0' in page
        assert 'ioc_alerts_transitions_total{state="raised"}' in page
    finally:
        stop.set()
        await task

    # A restarted worker adopts the published state and clears the same alert.
    worker, stop, task = await start_worker(settings)
    try:
        assert [a.alert_id for a in worker.engine.active_alerts() if a.subject == subject] == [
            raised.alert_id
        ]
        await send_kpis(producer, [aqi(subject, start, 10, 140), aqi(subject, start, 11, 120)])
        [raw] = await alerts.take(ours, 1)
        cleared = AlertRecord.from_json(raw)
        assert (cleared.alert_id, cleared.state, cleared.revision, cleared.assignee) == (
            raised.alert_id,
            "cleared",
            4,
            "doi-1",
        )
        # Event time of the clearing window is older than the commands: updated_at never
        # goes backwards.
        assert (
            cleared.updated_at
            == echoed[-1].updated_at
            == at.replace(microsecond=at.microsecond // 1000 * 1000)
        )
        assert await alerts.take(ours, 1, wait_s=2) == []  # nothing else for our subject
    finally:
        stop.set()
        await task


async def test_worker_raises_silence_from_the_wall_clock(
    bootstrap_servers: str, producer: AIOKafkaProducer
) -> None:
    tag = uuid.uuid4().hex[:10]
    subject = f"station:IT-{tag}"
    settings = AlertsSettings(
        bootstrap_servers=bootstrap_servers,
        alerts_group=f"it-silence-{tag}",
        alerts_http_port=0,
        alerts_replay_records=0,
        alerts_tick_seconds=0.2,
        alerts_silence_grace_seconds=0,
        alerts_silence_settle_seconds=1,
    )
    now = datetime.now(UTC).replace(second=0, microsecond=0)

    def level(minutes_ago: int) -> KpiRecord:
        start = now - timedelta(minutes=minutes_ago)
        return KpiRecord(
            "water.level.max", subject, start, start + timedelta(minutes=1), 1.2, count=4
        )

    async with contextlib.AsyncExitStack() as stack:
        alerts = await Tail.open(bootstrap_servers, topics.ALERTS)
        stack.push_async_callback(alerts.consumer.stop)
        _worker, stop, task = await start_worker(settings)
        stack.push_async_callback(lambda: task)
        stack.callback(stop.set)
        # The last window with data ended 11 minutes ago: offline at its end + 10 min.
        await send_kpis(producer, [level(12)])
        [raw] = await alerts.take(lambda raw: subject.encode() in raw, 1)
        offline = AlertRecord.from_json(raw)
        assert (offline.rule, offline.state) == ("water.station.offline", "raised")
        assert offline.raised_at == now - timedelta(minutes=1)
        await send_kpis(producer, [level(0)])
        [raw] = await alerts.take(lambda raw: subject.encode() in raw, 1)
        back = AlertRecord.from_json(raw)
        assert (back.alert_id, back.state) == (offline.alert_id, "cleared")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_log(log: Path) -> str:
    return log.read_text(errors="replace")


# Every worker process a test spawned; killed at the end of the test whatever happened
# (a failed assertion once left one running: it went on raising alerts for later runs).
_SPAWNED: list[asyncio.subprocess.Process] = []


@pytest.fixture(autouse=True)
async def _kill_spawned_workers() -> AsyncIterator[None]:
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def spawn_worker(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """`ioc alerts worker` as its own process, once it is ready (recovered)."""
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ioc", "alerts", "worker",
            env={**os.environ, **env}, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
    _SPAWNED.append(proc)
    url = f"http://127.0.0.1:{env['IOC_ALERTS_HTTP_PORT']}/readyz"

    async with aiohttp.ClientSession() as http:

        async def ready() -> bool:
            assert proc.returncode is None, read_log(log)  # it died: say why
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as resp:
                    return resp.status == 200
            return False

        try:
            await until(ready, lambda: f"the worker to be ready: {read_log(log)}", within=30)
        except AssertionError:
            with contextlib.suppress(ProcessLookupError):  # it may have died already
                proc.kill()
            raise
    return proc


async def send_kpis_noting_offsets(
    producer: AIOKafkaProducer, records: list[KpiRecord], partition: int | None = None
) -> dict[TopicPartition, int]:
    """Like ``send_kpis`` (into ``partition`` if given, else by key); returns, per
    partition, the offset just after our last record."""
    ends: dict[TopicPartition, int] = {}
    for rec in records:
        meta = await producer.send_and_wait(
            topics.KPI, rec.to_json(), key=rec.key.encode(), partition=partition
        )
        tp = TopicPartition(meta.topic, meta.partition)
        ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
    return ends


async def wait_committed(
    servers: str, group: str, ends: dict[TopicPartition, int], wait_s: float = 30
) -> None:
    """Until the group's committed offsets reach ``ends`` (the worker applied and
    committed those records)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    committed: dict[TopicPartition, int | None] = {}

    async def reached() -> bool:
        committed.update({tp: await consumer.committed(tp) for tp in ends})
        return all(c is not None and c >= ends[tp] for tp, c in committed.items())

    try:
        await until(reached, lambda: f"commits {committed} to reach {ends}", within=wait_s)
    finally:
        await consumer.stop()


def log_events(log: Path, event: str) -> list[dict[str, object]]:
    """The worker's JSON log lines (stderr is not a terminal) whose event is ``event``."""
    return json_log_events(read_log(log), event)


@pytest.mark.broker_sensitive
async def test_worker_recovers_after_sigkill(
    bootstrap_servers: str, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:10]
    subject = f"district:KILL{tag}"
    env = {
        "IOC_BOOTSTRAP_SERVERS": bootstrap_servers,
        "IOC_ALERTS_GROUP": f"it-kill-{tag}",
        "IOC_ALERTS_HTTP_PORT": str(free_port()),
        "IOC_ALERTS_REPLAY_RECORDS": "5000",
        "IOC_ALERTS_TICK_SECONDS": "0.2",
        "IOC_ALERTS_SILENCE_WALL_CLOCK": "false",
    }
    log = tmp_path / "worker.log"
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
    ours: Callable[[bytes], bool] = lambda raw: subject.encode() in raw  # noqa: E731
    async with contextlib.AsyncExitStack() as stack:
        alerts = await Tail.open(bootstrap_servers, topics.ALERTS)
        stack.push_async_callback(alerts.consumer.stop)

        # Nine windows above the threshold, then the worker dies without a goodbye.
        proc = await spawn_worker(env, log)
        # All in partition 0: the tenth goes to partition 1, where this group has read
        # nothing yet (keys carry the window, so a subject's windows spread like this).
        nine = await send_kpis_noting_offsets(
            producer, [aqi(subject, start, m, 170) for m in range(9)], partition=0
        )
        # Killed only once it has applied and committed them: they are history now, that
        # only the recovery replay can bring back.
        await wait_committed(bootstrap_servers, env["IOC_ALERTS_GROUP"], nine)
        proc.kill()
        await proc.wait()
        assert len(log_events(log, "recovered")) == 1
        # The tenth window arrives while it is down; the restarted worker still sees ten.
        await send_kpis_noting_offsets(producer, [aqi(subject, start, 9, 171)], partition=1)
        proc = await spawn_worker(env, log)
        raised = [AlertRecord.from_json(r) for r in await alerts.take(ours, 1)]
        # The worker's own account (recovery, replayed counts, alerts) when it did not raise.
        assert [(a.state, a.raised_at) for a in raised] == [
            ("raised", start + timedelta(minutes=10))
        ], read_log(log)[-6000:]
        # The recovery ran: it replayed (at least) the nine committed windows.
        recoveries = log_events(log, "recovered")
        assert len(recoveries) == 2
        replayed = recoveries[1]["replayed_kpi"]
        assert isinstance(replayed, int) and replayed >= 9, recoveries[1]
        proc.kill()  # maybe before its offsets were committed: a re-delivery must be harmless
        await proc.wait()

        await send_kpis(producer, [aqi(subject, start, 10, 100)])
        proc = await spawn_worker(env, log)
        stack.push_async_callback(proc.wait)
        stack.callback(proc.terminate)
        later = [AlertRecord.from_json(r) for r in await alerts.take(ours, 1)]
        later += [AlertRecord.from_json(r) for r in await alerts.take(ours, 5, wait_s=2)]
        assert {a.alert_id for a in later} == {raised[0].alert_id}
        # The raise is not published again (a replayed or re-delivered window is harmless).
        assert [a.state for a in later] == ["cleared"]
        recoveries = log_events(log, "recovered")
        assert len(recoveries) == 3
        restored = recoveries[2]["restored_alerts"]
        assert isinstance(restored, int) and restored >= 1, recoveries[2]
        assert [a.revision for a in later if a.state == "cleared"] == [2]
