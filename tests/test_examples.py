"""The example consumers of examples/, run as a user runs them, against the real stack.

- kpi_alert_consumer.py reads ioc.kpi and ioc.alerts of the real broker: the records
  produced here come out validated, with their keys; invalid ones are reported, not
  printed as records;
- ws_consumer.py follows a real push server through a TCP proxy that the test cuts:
  records published while it is away arrive in the `resumed` frame (no gap, no resync),
  and its updates go on after it.

Every frame the push server sends here is also checked against the server frames'
schemas of docs/asyncapi.yaml.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from jsonschema import Draft202012Validator
from websockets.asyncio.client import ClientConnection, connect

from events import topics
from events.records import AlertRecord, KpiRecord, format_time
from tests import waiting
from tests.db_helpers import migrated
from ws.app import WsApp
from ws.notice import broker_restart_notice
from ws.settings import WsSettings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 30.0


class Process:
    """An example run as a subprocess, its stdout and stderr lines collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        assert proc.stdout is not None and proc.stderr is not None
        self._tasks = [
            asyncio.create_task(self._collect(proc.stdout, self.out)),
            asyncio.create_task(self._collect(proc.stderr, self.err)),
        ]

    @classmethod
    async def start(cls, script: str, *args: str) -> Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "examples" / script), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc)

    @staticmethod
    async def _collect(stream: asyncio.StreamReader, lines: list[str]) -> None:
        async for line in stream:
            lines.append(line.decode().rstrip("\n"))

    def json_lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.out]

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait for ``condition`` (polled), failing with the output if it never holds."""
        output = lambda: f"{what}; stdout={self.out[-5:]} stderr={self.err[-5:]}"  # noqa: E731
        done = lambda: condition() or self.proc.returncode is not None  # noqa: E731
        await waiting.until(done, output, TIMEOUT)
        if not condition():  # the example exited without it
            pytest.fail(f"exited with {self.proc.returncode}: {output()}")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        await asyncio.gather(*self._tasks)


def minute(offset: int) -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=offset)


def kpi(scope: str, offset: int, value: float) -> KpiRecord:
    start = minute(offset)
    return KpiRecord("air.aqi.vn", scope, start, start + timedelta(minutes=1), value, 3)


def alert(alert_id: str, state: str) -> AlertRecord:
    return AlertRecord(alert_id, "water.level.alarm", "station:EX", state,  # type: ignore[arg-type]
                       "critical", 3, "Mực nước vượt BĐ III", "water.level.max", 5.2, 5.0,
                       minute(0), datetime.now(UTC))  # fmt: skip


# ---- kpi_alert_consumer.py -----------------------------------------------------------------


async def group_at_end(bootstrap_servers: str, group: str) -> None:
    """Commit the topics' current ends for ``group``: the example, a known group then,
    goes on from there instead of reading all that the suite left in the topics (on
    Tansu from the last batch of each partition: its "latest" offset is that batch's
    base offset, docs/ws-protocol.md)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        # the partitions the topics are created with (events/topics.py)
        specs = [s for s in topics.CONTRACT_TOPICS if s.name in (topics.KPI, topics.ALERTS)]
        parts = [TopicPartition(s.name, p) for s in specs for p in range(s.partitions)]
        consumer.assign(parts)
        await consumer.commit(await consumer.end_offsets(parts))
    finally:
        await consumer.stop()


async def test_the_kafka_consumer_prints_the_records_validated_and_reports_invalid_ones(
    bootstrap_servers: str, producer: AIOKafkaProducer
) -> None:
    run = uuid.uuid4().hex[:8]
    scope = f"station:EX-{run}"
    kpis = [kpi(scope, -2, 101.0), kpi(scope, -1, 117.5)]
    alerts = [alert(f"ex-{run}", "raised"), alert(f"ex-{run}", "acknowledged")]
    bad_kpi = {**kpis[0].to_dict(), "count": -1}  # counts are never negative
    await group_at_end(bootstrap_servers, f"ex-{run}")
    for rec in kpis:
        await producer.send(topics.KPI, rec.to_json(), key=rec.key.encode())
    for a in alerts:
        await producer.send(topics.ALERTS, a.to_json(), key=a.alert_id.encode())
    await producer.send(topics.KPI, orjson.dumps(bad_kpi), key=f"bad-{run}".encode())
    await producer.send(topics.ALERTS, b"{not json", key=f"bad-{run}".encode())
    later = {**kpis[1].to_dict(), "schema": "urn:vn-ioc:schema:v2:kpi-window"}
    await producer.send(topics.KPI, orjson.dumps(later), key=f"bad-{run}-v2".encode())
    await producer.flush()

    example = await Process.start(
        "kpi_alert_consumer.py", "--bootstrap", bootstrap_servers, "--group", f"ex-{run}"
    )
    try:
        mine = lambda: [line for line in example.json_lines()  # noqa: E731
                        if run in (line.get("key") or "")]  # fmt: skip
        await example.until(lambda: len(mine()) == 4, "the valid records were not printed")
        bad = lambda: [line for line in example.err if f"bad-{run}" in line]  # noqa: E731
        await example.until(lambda: len(bad()) == 3, "the invalid records were not reported")
    finally:
        await example.stop()
    printed = {(line["topic"], line["key"], orjson.dumps(line["record"])) for line in mine()}
    assert printed == {(topics.KPI, r.key, r.to_json()) for r in kpis} | {
        (topics.ALERTS, a.alert_id, a.to_json()) for a in alerts
    }
    reports = [orjson.loads(line) for line in bad()]
    assert {r["topic"] for r in reports} == {topics.KPI, topics.ALERTS}
    errors = {r["key"]: r["errors"] for r in reports}
    assert errors[f"bad-{run}-v2"] == ["schema: unknown version 'urn:vn-ioc:schema:v2:kpi-window'"]
    errors = {r["topic"]: r["errors"] for r in reports if r["key"] == f"bad-{run}"}
    assert errors[topics.KPI] == ["count: -1 is less than the minimum of 0"]
    assert errors[topics.ALERTS][0].startswith("not JSON")


# ---- ws_consumer.py ------------------------------------------------------------------------


class Proxy:
    """A TCP proxy to the push server whose connections the test can cut (a network
    failure: no close frame) and that refuses new ones while it is down."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = True
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def cut(self) -> None:
        self.up = False
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def stop(self) -> None:
        self.cut()
        self.server.close()
        await self.server.wait_closed()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def push_server(bootstrap_servers: str, database_url: str) -> AsyncIterator[WsApp]:
    await migrated(database_url)
    settings = WsSettings(
        bootstrap_servers=bootstrap_servers,
        database_url=database_url,
        ws_port=0,
        ws_tick_s=0.05,
        ws_tokens={"view": "viewer:example", "op": "operator:lan"},
    )
    async with WsApp(settings) as app:
        yield app


async def server_holds(app: WsApp, records: list[KpiRecord]) -> None:
    """Until the push server has consumed ``records`` (in its memory of each series)."""

    def held(rec: KpiRecord) -> bool:
        series = app.server.hub.memory_series(rec.kpi, rec.scope)
        return any((r.window_start, r.value) == (rec.window_start, rec.value) for r in series)

    await waiting.until(lambda: all(held(r) for r in records), "the push server's records", TIMEOUT)


def windows(frames: list[dict[str, Any]]) -> set[tuple[str, float]]:
    return {(item["window_start"], item["value"]) for f in frames for item in f["items"]}


def expected(records: list[KpiRecord]) -> set[tuple[str, float]]:
    return {(format_time(r.window_start), r.value) for r in records if r.value is not None}


async def test_the_ws_consumer_resumes_by_seq_without_a_gap(
    push_server: WsApp, producer: AIOKafkaProducer
) -> None:
    proxy = Proxy(push_server.server.port)
    port = await proxy.start()
    scope = f"station:EX-{uuid.uuid4().hex[:8]}"

    async def publish(records: list[KpiRecord]) -> None:
        for rec in records:
            await producer.send(topics.KPI, rec.to_json(), key=rec.key.encode())
        await producer.flush()

    before, away, after = (
        [kpi(scope, -9 + 3 * part + i, 100.0 + 10 * part + i) for i in range(3)]
        for part in range(3)
    )
    example = await Process.start(
        "ws_consumer.py", "--url", f"ws://127.0.0.1:{port}/ws", "--token", "view",
        "--kpis", "air.aqi.vn", "--scopes", scope, "--retry-s", "0.1",
    )  # fmt: skip
    try:
        frames = example.json_lines
        await example.until(lambda: any(f["frame"] == "snapshot" for f in frames()), "no snapshot")
        await publish(before)
        await example.until(lambda: expected(before) <= windows(frames()), "no updates")
        last_seq = frames()[-1]["seq"]

        proxy.cut()
        await publish(away)
        await server_holds(push_server, away)
        await example.until(lambda: any("disconnected" in e for e in example.err), "no drop")
        proxy.up = True
        await example.until(lambda: frames()[-1]["frame"] == "resumed", "did not resume")
        await publish(after)
        await example.until(lambda: expected(after) <= windows(frames()), "no updates after")
    finally:
        await example.stop()
        await proxy.stop()

    kinds = [f["frame"] for f in frames()]
    assert kinds.count("snapshot") == 1 and kinds.count("resumed") == 1, kinds
    resumed = next(f for f in frames() if f["frame"] == "resumed")
    assert "resync" not in resumed
    assert resumed["from_seq"] == last_seq
    # what was published while it was away is in the resumed frame: no gap
    assert expected(away) <= windows([resumed])
    seqs = [f["seq"] for f in frames()]
    assert seqs == sorted(seqs)
    assert windows(frames()) == expected(before + away + after)


# ---- the push server's frames are those of docs/asyncapi.yaml ------------------------------

ASYNCAPI = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())


def server_frame_valid(frame: dict[str, Any]) -> list[str]:
    """What is wrong with a server frame, by the schema of its type in the document."""
    component = ASYNCAPI["components"]["schemas"].get(f"ws-server-{frame.get('type')}")
    if component is None:
        return [f"no message for type {frame.get('type')!r}"]
    validator = Draft202012Validator(
        component["schema"], format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    return [f"{frame['type']}: {e.message}" for e in validator.iter_errors(frame)]


async def exchange(ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
    await ws.send(orjson.dumps(frame).decode())
    answer: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return answer


async def test_the_push_server_sends_the_frames_the_asyncapi_document_describes(
    push_server: WsApp, producer: AIOKafkaProducer
) -> None:
    scope = f"station:EX-{uuid.uuid4().hex[:8]}"
    url = f"ws://127.0.0.1:{push_server.server.port}/ws"
    seen: dict[str, dict[str, Any]] = {}
    async with connect(url) as ws:
        seen["welcome"] = await exchange(ws, {"op": "auth", "token": "op"})
        sub = {"op": "subscribe", "sub": "k", "channel": "kpi", "scopes": [scope],
               "history": [{"kpi": "air.aqi.vn", "scope": scope}]}  # fmt: skip
        seen["snapshot"] = await exchange(ws, sub)
        rec = kpi(scope, 0, 42.0)
        await producer.send(topics.KPI, rec.to_json(), key=rec.key.encode())
        await producer.flush()
        seen["update"] = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        alerts = {"op": "subscribe", "sub": "a", "channel": "alerts"}
        seen["alerts snapshot"] = await exchange(ws, alerts)
        seen["pong"] = await exchange(ws, {"op": "ping", "id": "p1"})
        seen["error"] = await exchange(ws, {"op": "dance"})
        seen["command_accepted"] = await exchange(ws, {"op": "ack", "alert_id": "ex-1"})
        seen["unsubscribed"] = await exchange(ws, {"op": "unsubscribe", "sub": "a"})
    async with connect(url) as ws:
        await exchange(ws, {"op": "auth", "token": "op"})
        resume = {"epoch": seen["snapshot"]["epoch"], "seq": seen["snapshot"]["seq"]}
        seen["resumed"] = await exchange(ws, {**sub, "resume": resume})
    assert [f["type"] for f in seen.values()] == [
        "welcome", "snapshot", "update", "snapshot", "pong", "error",
        "command_accepted", "unsubscribed", "resumed",
    ]  # fmt: skip
    assert seen["update"]["items"] and seen["resumed"]["items"]
    notice = broker_restart_notice({"at": "2026-12-04T05:07:30+00:00", "restarts": 1},
                                   datetime(2026, 12, 4, 5, 10, tzinfo=UTC), 1800)  # fmt: skip
    assert notice is not None
    assert [e for f in [*seen.values(), notice] for e in server_frame_valid(f)] == []
    # and the schemas are not vacuous
    assert server_frame_valid({**seen["update"], "seq": -1})
    assert server_frame_valid({**seen["welcome"], "role": "admin"})
    assert server_frame_valid({"type": "resumed", "channel": "kpi", "items": [{"kpi": 1}]})
