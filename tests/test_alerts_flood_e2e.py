"""A flood alarm end to end: sensor events → stream worker (real process) → ``ioc.kpi`` →
alerts worker → ``ioc.alerts``, with an operator acknowledgement on
``ioc.alerts.commands``, all on the real broker.

Time is scaled down so the test takes seconds, with the same shape as production: the
stream worker runs 2 s tumbling windows with 4 s of allowed lateness (production: 60 s and
120 s), so a window's final record arrives while the window three windows later is live,
exactly as in production (final of 22:54 while 22:57 is live). The alert rule is the
catalogue's ``water.level.alarm`` with ``window_seconds`` = 2 (the engine's logic does not
depend on the window size). "Held above BĐ III for three minutes" is three windows here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from events import topics
from events.flood import WATER_STATIONS
from events.records import AlertCommand, AlertRecord, KpiRecord
from streams.alerts.engine import AlertEngine
from streams.alerts.rules import rule_by_id
from streams.alerts.worker import AlertsSettings, AlertsWorker
from tests.streams_helpers import raw_event
from tests.test_alerts_worker import Tail
from tests.test_streams_integration import PARTITIONS, Topics, Workers, _create

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

WIN_S = 2  # production: 60
LATENESS_S = 4  # production: 120 (two windows)
PERIOD_S = 0.25  # one reading per partition per second
LEVELS = WATER_STATIONS["HD-TV-AP"].alarm_levels  # An Phụ: 2.1 / 2.5 / 2.9 m
BEFORE, FLOOD, AFTER = 1.23, 3.05, 1.0
FLOOD_FROM, FLOOD_WINDOWS = 2, 3  # windows (from t0) 0-1 calm, 2-4 above BĐ III, 5- calm


class RecordingEngine(AlertEngine):
    """The real engine; notes which KPI record produced which alert records."""

    def __init__(self, alarm_levels: Callable[[str], tuple[float, ...] | None]) -> None:
        alarm = replace(rule_by_id()["water.level.alarm"], window_seconds=WIN_S)
        super().__init__([alarm], alarm_levels=alarm_levels)
        self.causes: list[tuple[KpiRecord, list[AlertRecord]]] = []

    def on_kpi(self, rec: KpiRecord) -> list[AlertRecord]:
        out = super().on_kpi(rec)
        if out:
            self.causes.append((rec, out))
        return out


async def sensor(
    producer: AIOKafkaProducer, topic: str, station: str, level_at: Callable[[int], float]
) -> None:
    """A station reporting every ``PERIOD_S`` with event time = now, round robin over the
    partitions (so every partition's watermark advances). Runs until cancelled."""
    loop = asyncio.get_running_loop()
    due = loop.time()
    i = 0
    while True:
        t_ms = int(time.time() * 1000)
        raw = raw_event(
            "vn.ioc.water.observed", t_ms, station_id=station, district="KM", level_m=level_at(t_ms)
        )
        await producer.send(topic, raw, partition=i % PARTITIONS)
        i += 1
        due += PERIOD_S
        # The sensor's cadence, not a wait for a condition: the next reading is due then.
        await asyncio.sleep(max(0.0, due - loop.time()))


def log_has(log: Path, markers: Iterable[bytes]) -> bool:
    text = log.read_bytes()
    return all(m in text for m in markers)


async def wait_for_log(log: Path, markers: Iterable[bytes], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not log_has(log, markers):
        assert time.monotonic() < deadline, f"stream worker not assigned; see {log}"
        await asyncio.sleep(0.2)  # polling the log for the condition above


async def test_flood_alarm_raised_acknowledged_and_cleared_after_the_first_calm_final(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    t = Topics()
    station = f"IT-{t.tag}"
    subject = f"station:{station}"
    await _create(bootstrap_servers, t, ())
    env = t.env(bootstrap_servers, "flood") | {
        "IOC_STREAMS_KPI_TOPIC": topics.KPI,  # what the alerts worker reads
        "IOC_STREAMS_TUMBLING_S": str(WIN_S),
        "IOC_STREAMS_HOPPING_SIZE_S": str(5 * WIN_S),
        "IOC_STREAMS_HOPPING_HOP_S": str(WIN_S),
        "IOC_STREAMS_ALLOWED_LATENESS_S": str(LATENESS_S),
        "IOC_STREAMS_LATE_GRACE_S": str(LATENESS_S),
        "IOC_STREAMS_LIVE_INTERVAL_S": "0.5",
    }
    engine = RecordingEngine(lambda sid: LEVELS if sid == station else None)
    settings = AlertsSettings(
        bootstrap_servers=bootstrap_servers,
        alerts_group=f"it-flood-{t.tag}",
        alerts_http_port=0,
        alerts_replay_records=0,
        alerts_tick_seconds=0.2,
        alerts_silence_wall_clock=False,
    )
    workers = Workers(env, tmp_path)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=5)
    await producer.start()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(producer.stop)
        alerts = await Tail.open(bootstrap_servers, topics.ALERTS)
        stack.push_async_callback(alerts.consumer.stop)
        worker_stop = asyncio.Event()
        alerts_worker = AlertsWorker(settings, engine)
        alerts_task = asyncio.create_task(alerts_worker.run(worker_stop))
        stack.push_async_callback(lambda: alerts_task)
        stack.callback(worker_stop.set)
        await asyncio.wait_for(alerts_worker.ready.wait(), 45)
        stack.callback(workers.stop_all)
        workers.start()
        await wait_for_log(
            tmp_path / f"{workers.group}-0.log", (b"stage1.assigned", b"stage2.assigned"), 90
        )

        win_ms = WIN_S * 1000
        t0 = (int(time.time() * 1000) // win_ms + 1) * win_ms

        def window(k: int) -> datetime:
            return datetime.fromtimestamp((t0 + k * win_ms) / 1000, UTC)

        def level_at(t_ms: int) -> float:
            k = (t_ms - t0) // win_ms
            if k < FLOOD_FROM:
                return BEFORE
            return FLOOD if k < FLOOD_FROM + FLOOD_WINDOWS else AFTER

        feed = asyncio.create_task(sensor(producer, t.prefix + "water", station, level_at))
        stack.push_async_callback(lambda: asyncio.gather(feed, return_exceptions=True))
        stack.callback(feed.cancel)

        ours: Callable[[bytes], bool] = lambda raw: subject.encode() in raw  # noqa: E731
        [raw] = await alerts.take(ours, 1, wait_s=60)
        raised = AlertRecord.from_json(raw)
        ack_at = datetime.now(UTC)
        ack = AlertCommand(f"ack-{t.tag}", raised.alert_id, "ack", "op.lan", ack_at)
        await producer.send_and_wait(
            topics.ALERT_COMMANDS, ack.to_json(), key=raised.alert_id.encode()
        )
        got = [raised]
        deadline = time.monotonic() + 60
        while got[-1].state != "cleared" and time.monotonic() < deadline:
            got += [AlertRecord.from_json(r) for r in await alerts.take(ours, 1, wait_s=1)]
        # Nothing more for the station: no second alert once the water is down.
        got += [AlertRecord.from_json(r) for r in await alerts.take(ours, 5, wait_s=3)]

    assert {a.alert_id for a in got} == {raised.alert_id}, got
    assert [a.state for a in got] == ["raised", "acknowledged", "cleared"], got
    acked, cleared = got[1], got[2]
    first_calm = window(FLOOD_FROM + FLOOD_WINDOWS)
    # The record that cleared it is the final of the first calm window, nothing earlier.
    causes = [rec for rec, out in engine.causes if any(a.state == "cleared" for a in out)]
    assert [(c.window_start, c.final, c.value) for c in causes] == [(first_calm, True, AFTER)]
    assert cleared.updated_at == max(window(FLOOD_FROM + FLOOD_WINDOWS + 1), acked.updated_at)
    assert (cleared.acknowledged_by, cleared.value) == ("op.lan", AFTER)
    assert (raised.level, raised.value, raised.window_start) == (3, FLOOD, window(FLOOD_FROM))
    assert raised.on_live_window  # raised on the live value of the first flood window
