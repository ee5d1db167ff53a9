"""The memory cap of our Tansu under `ioc up` (ioc/broker_guard.py): the decision and the
notice in memory; then a real private Tansu over a tiny cap, restarted by the real
supervisor, with the real push server (`ioc ws serve`) as a component and the wall in
Chromium showing the notice."""

from __future__ import annotations

import asyncio
import io
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from playwright.async_api import async_playwright, expect
from rich.console import Console
from websockets.asyncio.client import connect

from events import topics
from ioc.broker_guard import (
    MIB,
    MemoryCap,
    read_restart,
    restarts_file,
    rss_bytes,
    tansu_guard,
    write_restart,
)
from ioc.services import broker
from ioc.supervisor import Component, Supervisor, python_module
from tests.private_broker import free_port, private_broker
from tests.test_wall_browser import CHROMIUM_ARGS
from tests.waiting import until
from ws.app import WsApp
from ws.notice import broker_restart_notice
from ws.settings import WsSettings

# --- the decision, in memory ------------------------------------------------------------


def test_the_cap_restarts_at_or_above_it_and_never_twice_within_the_interval() -> None:
    cap = MemoryCap(cap_bytes=100 * MIB, min_interval_s=60)
    assert not cap.should_restart(None, 0.0)  # the broker does not run
    assert not cap.should_restart(99 * MIB, 0.0)
    assert cap.should_restart(100 * MIB, 0.0)
    cap.restarted(10.0)
    # Over the cap again at once (a cap below an empty broker's needs): no restart loop.
    assert not cap.should_restart(500 * MIB, 69.9)
    assert cap.should_restart(500 * MIB, 70.0)


def test_a_cap_of_zero_never_restarts() -> None:
    assert not MemoryCap(cap_bytes=0).should_restart(10**12, 0.0)


def test_a_broker_missing_after_a_failed_restart_is_started_again_after_the_interval() -> None:
    cap = MemoryCap(cap_bytes=100 * MIB, min_interval_s=60)
    cap.restarted(0.0)  # ... and that restart failed: no broker, no RSS
    assert not cap.should_restart(None, 30.0, retry=True)
    assert cap.should_restart(None, 60.0, retry=True)
    assert not cap.should_restart(
        None, 60.0
    )  # without a failure a missing broker is not ours to start


def test_rss_of_a_live_process_and_of_none() -> None:
    assert (rss_bytes(os.getpid()) or 0) > 1 * MIB
    assert rss_bytes(2**22 + 12345) is None  # above pid_max: no such process


def test_the_notice_lasts_from_the_restart_for_the_notice_time(tmp_path: Path) -> None:
    path = tmp_path / "broker-restarts.json"
    at = datetime(2026, 12, 4, 5, 7, 30, tzinfo=UTC)
    assert read_restart(path) is None
    write_restart(path, at=at, rss=2100 * MIB, cap=2048 * MIB, count=3)
    record = read_restart(path)
    assert record == {
        "at": "2026-12-04T05:07:30Z",
        "reason": "memory_cap",
        "rss_mb": 2100,
        "cap_mb": 2048,
        "restarts": 3,
    }
    frame = broker_restart_notice(record, at + timedelta(minutes=29), 1800)
    assert frame == {
        "type": "notice",
        "kind": "broker_restart",
        "reason": "memory_cap",
        "at": "2026-12-04T05:07:30.000Z",
        "until": "2026-12-04T05:37:30.000Z",
        "restarts": 3,
    }
    assert broker_restart_notice(record, at + timedelta(minutes=30), 1800) is None
    assert broker_restart_notice(None, at, 1800) is None
    assert broker_restart_notice({"at": "yesterday"}, at, 1800) is None
    assert broker_restart_notice({"at": "2026-12-04T05:07:30"}, at, 1800) is None  # naive


# A component that, on SIGTERM, appends "<name> <whether the source had already exited>"
# to a file and exits; it writes its pid to "<file>.<name>" when it starts.
_STOPPABLE = """
import os, signal, sys
name, out = sys.argv[1], sys.argv[2]
with open(out + "." + name, "w") as f:
    f.write(str(os.getpid()))
def stop(*_):
    with open(out, "a") as f:
        f.write(f"{name} {os.path.exists(out + '.source-gone')}\\n")
    if name == "source":
        open(out + ".source-gone", "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    signal.pause()
"""


async def test_a_pause_stops_the_sources_first_runs_the_action_then_starts_everything_again(
    tmp_path: Path,
) -> None:
    out = tmp_path / "stops"
    script = tmp_path / "stoppable.py"
    script.write_text(_STOPPABLE)

    def comp(name: str, source: bool) -> Component:
        return Component(name, [sys.executable, str(script), name, str(out)], source=source)

    console = io.StringIO()
    sup = Supervisor([comp("sink", False), comp("source", True)], Console(file=console))
    run = asyncio.create_task(sup.run())
    try:
        pid_files = [Path(f"{out}.sink"), Path(f"{out}.source")]
        await until(
            lambda: all(p.exists() and p.read_text() for p in pid_files), "starts", within=30
        )
        first = {p.name: p.read_text() for p in pid_files}
        for p in pid_files:
            p.unlink()
        seen: list[tuple[int | None, int | None]] = []

        async def action() -> None:
            seen.append((sup.pid("sink"), sup.pid("source")))

        await sup.pause(action)
        assert seen == [(None, None)]  # nothing ran during the action
        assert out.read_text().split("\n")[:2] == ["source False", "sink True"]
        await until(
            lambda: all(p.exists() and p.read_text() for p in pid_files), "restarts", within=30
        )
        assert {p.name: p.read_text() for p in pid_files} != first
        assert "exited with" not in console.getvalue()  # a pause is not a crash
    finally:
        sup.stop()
        await asyncio.wait_for(run, 30)


# --- the real thing -----------------------------------------------------------------------


async def _healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def _welcome_and_notice(ws_port: int) -> list[dict[str, Any]]:
    """The first two frames a viewer gets: welcome, then the notice (if any)."""
    uri = f"ws://127.0.0.1:{ws_port}/ws?token=wall-viewer"
    async with connect(uri, open_timeout=5) as ws:
        frames = [orjson.loads(await asyncio.wait_for(ws.recv(), 5))]
        frames.append(orjson.loads(await asyncio.wait_for(ws.recv(), 5)))
        return frames


async def _fill(bootstrap: str, pid: int, cap_bytes: int) -> None:
    """Produce 512-KB records until the broker's resident memory reaches the cap."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await producer.start()
    try:
        payload = os.urandom(MIB // 2)
        for i in range(4000):
            if (rss_bytes(pid) or 0) >= cap_bytes:
                return
            try:
                await producer.send_and_wait(topics.DEADLETTER, payload, key=str(i).encode())
            except KafkaError:
                return  # the guard saw the cap first and is restarting the broker
        pytest.fail("the broker's memory did not reach the cap after 2 GB")
    finally:
        await producer.stop()


async def _round_trip(bootstrap: str) -> bytes | None:
    """Produce one record to ioc.kpi and read it back from its partition."""
    value = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topics.KPI, value, key=b"round-trip")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topics.KPI, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        batch = await consumer.getmany(tp, timeout_ms=5000)
        got = [r.value for r in batch.get(tp, [])]
        return value if value in got else None
    finally:
        await consumer.stop()


@pytest.mark.integration
async def test_tansu_over_its_cap_is_restarted_with_its_topics_and_the_wall_says_so(
    tmp_path: Path, chromium_executable: str
) -> None:
    with private_broker(tmp_path) as base:
        pid = broker.tansu_pid(base)
        assert pid is not None
        idle = rss_bytes(pid) or 0
        settings = base.model_copy(
            update={
                # A few MB above what the idle broker holds: a handful of records passes it.
                "tansu_max_rss_mb": idle // MIB + 24,
                "tansu_check_interval_s": 0.2,
                "tansu_min_restart_interval_s": 3600,  # once in this test
                "supervisor_http_port": 0,
            }
        )
        lines: list[str] = []
        guard = tansu_guard(settings, lines.append)
        assert guard is not None
        ws_port = free_port()
        env = {
            "IOC_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "IOC_DATABASE_URL": "",  # snapshots from the stream only
            "IOC_WS_HOST": "127.0.0.1",
            "IOC_WS_PORT": str(ws_port),
            "IOC_WS_BROKER_RESTARTS_FILE": str(restarts_file(settings)),
        }
        # A source (stopped first) beside the push server: a process that just waits.
        waiter = [sys.executable, "-c", "import signal; signal.pause()"]
        components = [
            Component("source", waiter, source=True),
            Component("ws", python_module("ioc", "ws", "serve"), env),
        ]
        sup = Supervisor(components, Console(file=io.StringIO()), [guard.watch])
        run = asyncio.create_task(sup.run())
        try:
            health = f"http://127.0.0.1:{ws_port}/readyz"
            await until(lambda: _healthy(health), "the push server to serve", within=60)
            before = (sup.pid("ws"), sup.pid("source"))
            # No restart yet, so no notice: the welcome comes alone.
            uri = f"ws://127.0.0.1:{ws_port}/ws?token=wall-viewer"
            async with connect(uri, open_timeout=5) as ws:
                assert orjson.loads(await ws.recv())["type"] == "welcome"
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.5)

            await _fill(settings.bootstrap_servers, pid, guard.cap.cap_bytes)
            await until(lambda: guard.count >= 1, "the guard to restart the broker", within=60)

            # A new broker process, far below the cap, with every topic again.
            new_pid = broker.tansu_pid(settings)
            assert new_pid is not None and new_pid != pid
            assert (rss_bytes(new_pid) or 0) < guard.cap.cap_bytes
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
            await admin.start()
            try:
                present = set(await admin.list_topics())
            finally:
                await admin.close()
            assert {t.name for t in broker.all_topics()} <= present
            assert await _round_trip(settings.bootstrap_servers) is not None

            # Every component was stopped and started again (new pids), without a backoff.
            await until(lambda: _healthy(health), "the push server to serve again", within=60)
            after = (sup.pid("ws"), sup.pid("source"))
            assert None not in after and after[0] != before[0] and after[1] != before[1]

            # The notice, after the welcome, to every client from now on.
            welcome, notice = await _welcome_and_notice(ws_port)
            assert welcome["type"] == "welcome"
            assert notice["type"] == "notice" and notice["kind"] == "broker_restart"
            assert notice["restarts"] == 1
            at = datetime.fromisoformat(notice["at"])
            assert abs((datetime.now(UTC) - at).total_seconds()) < 120
            shown_until = datetime.fromisoformat(notice["until"])
            assert shown_until - at == timedelta(seconds=1800)

            # Logged as JSON lines and counted in the supervisor's metrics.
            events = [orjson.loads(line)["event"] for line in lines]
            assert events[:3] == ["broker_guard.started", "broker.restarting", "broker.restarted"]
            metrics_url = f"http://127.0.0.1:{guard.http_port}/metrics"
            async with aiohttp.ClientSession() as http, http.get(metrics_url) as resp:
                text = await resp.text()
            assert 'ioc_broker_restarts_total{reason="memory_cap"} 1.0' in text
            assert "ioc_broker_rss_cap_bytes" in text

            # The wall shows it, in Vietnamese (the default) with the local time.
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=chromium_executable, args=CHROMIUM_ARGS
                )
                try:
                    page = await browser.new_page()
                    await page.goto(f"http://127.0.0.1:{ws_port}/")
                    banner = page.locator("#notice")
                    await expect(banner).to_be_visible(timeout=15_000)
                    await expect(banner).to_contain_text(
                        "Máy chủ sự kiện (broker) khởi động lại lúc"
                    )
                    await expect(banner).to_contain_text("dữ liệu đang truyền có thể mất")
                    await page.locator("#lang").click()
                    await expect(banner).to_contain_text("The event broker restarted at")
                finally:
                    await browser.close()
        finally:
            sup.stop()
            await asyncio.wait_for(run, 60)


@pytest.mark.integration
async def test_a_running_push_server_tells_its_clients_when_the_restart_record_appears(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    path = tmp_path / "broker-restarts.json"
    settings = WsSettings(
        bootstrap_servers=bootstrap_servers,
        ws_port=0,
        ws_alerts_from_beginning=False,
        ws_broker_restarts_file=path,
    )
    async with WsApp(settings) as app:
        uri = f"ws://127.0.0.1:{app.server.port}/ws?token=wall-viewer"
        async with connect(uri, open_timeout=5) as ws:
            assert orjson.loads(await ws.recv())["type"] == "welcome"
            write_restart(path, at=datetime.now(UTC), rss=300 * MIB, cap=256 * MIB, count=1)
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert frame["type"] == "notice" and frame["kind"] == "broker_restart"
