"""The Faust-hosted stream worker (`ioc streams worker --engine faust`) against the real broker.

Same known event sets and checks as tests/test_streams_integration.py, with the stages
driven by a ``faust.App`` (streams/faust_app.py): exact final KPI records, and no loss or
double count when a second worker joins mid-stream and one is SIGKILLed and restarted.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from events import health
from tests.streams_helpers import T0, air
from tests.test_streams_integration import (
    MIN,
    PARTITIONS,
    Topics,
    Workers,
    _create,
    _finals,
    _free_port,
    _latest_kpis,
    _metric,
    _produce,
    _wait_for,
    assert_known_finals,
    known_air_events,
)

pytestmark = [pytest.mark.integration, pytest.mark.broker_sensitive]


@pytest.fixture
def workers_factory() -> Iterator[list[Workers]]:
    made: list[Workers] = []
    yield made
    for w in made:
        w.stop_all()


def _faust_env(t: Topics, bootstrap: str, group: str) -> dict[str, str]:
    return {**t.env(bootstrap, group), "IOC_STREAMS_ENGINE": "faust"}


async def test_faust_hosted_worker_gives_exact_kpis(
    bootstrap_servers: str, workers_factory: list[Workers], tmp_path: Path
) -> None:
    t = Topics()
    await _create(bootstrap_servers, t, ("fa",))
    workers = Workers(_faust_env(t, bootstrap_servers, "fa"), tmp_path)
    workers_factory.append(workers)
    port = _free_port()
    workers.start(port)
    values, expected = known_air_events()
    await _produce(bootstrap_servers, t.air, values)
    await assert_known_finals(bootstrap_servers, t.kpi("fa"), expected, 60)
    # The time of each phase of the host's loop is counted (bench_e2e reports it).
    for phase in ("apply", "publish", "checkpoint", "flush"):
        seconds = await _metric(port, f'ioc_streams_phase_seconds_total{{phase="{phase}"}}')
        assert seconds is not None and seconds > 0, phase
    # Ready on the Faust host too: assigned, restored, caught up.
    async with aiohttp.ClientSession() as http:

        async def ready() -> dict[str, Any] | None:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                body: dict[str, Any] = await resp.json()
                health.validate(health.READYZ, resp.status, body)
            return body if resp.status == 200 else None

        body = await _wait_for(ready, 30, "the Faust-hosted worker to be ready")
    assert set(body["checks"]) == {"assigned", "restored", "caught_up"}
    log = (tmp_path / f"{workers.group}-0.log").read_text()
    assert '"engine": "faust"' in log or "engine=faust" in log
    # mode's per-tick "Timer ... is overlapping" warnings are silenced (streams/faust_app.py)
    assert "is overlapping" not in log


async def test_faust_hosted_workers_exact_under_rebalance_and_sigkill(
    bootstrap_servers: str, workers_factory: list[Workers], tmp_path: Path
) -> None:
    t = Topics()
    await _create(bootstrap_servers, t, ("fk",))
    n = 12_000
    values = [
        (i % PARTITIONS, air(T0 + i * 50, event_id=f"e{i}", pm25=float(i % 97))) for i in range(n)
    ]  # 10 minutes of event time, every event distinct
    expected: dict[int, int] = {}
    for i in range(n):
        w = T0 + i * 50 - (T0 + i * 50) % MIN
        expected[w] = expected.get(w, 0) + 1

    workers = Workers(_faust_env(t, bootstrap_servers, "fk"), tmp_path)
    workers_factory.append(workers)
    port = _free_port()
    proc = workers.start(port)
    await workers.wait_assigned(0)
    slices = 4
    step = n // slices
    for k in range(slices):
        await _produce(bootstrap_servers, t.air, values[k * step : (k + 1) * step])
        if k == 0:
            # A second worker joins mid-stream: the group rebalances, half of the
            # partitions move with their state (checkpoint on revoke, restore on assign).
            workers.start()
            await workers.wait_assigned(1)
        if k == 1:
            # Past a few checkpoints (its metrics say so), then a crash mid-stream.
            async def checkpointed() -> bool | None:
                events = await _metric(port, "ioc_streams_events_total")
                checkpoints = await _metric(port, "ioc_streams_checkpoints_total")
                return True if (events or 0) > 0 and (checkpoints or 0) >= 1 else None

            await _wait_for(checkpointed, 60, "worker 0's checkpoints")
            seen_by_1 = len(workers.log_events(1, "stage1.assigned"))
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
            proc = workers.start()

            # Recovery ran: the killed worker's partitions were taken over with their
            # checkpointed state (by the restarted worker or the surviving one).
            async def restored(seen_by_1: int = seen_by_1) -> int | None:
                after_kill = [
                    *workers.log_events(1, "stage1.assigned")[seen_by_1:],
                    *workers.log_events(2, "stage1.assigned"),
                ]
                total = sum(int(str(a.get("restored", 0))) for a in after_kill)
                return total if total > 0 else None

            await _wait_for(restored, 60, "the killed worker's state restored")
    await _produce(bootstrap_servers, t.air, [(p, air(T0 + 30 * MIN)) for p in range(PARTITIONS)])

    async def exact() -> dict[int, int] | None:
        finals = _finals(await _latest_kpis(bootstrap_servers, t.kpi("fk")), "air.pm25.avg")
        counts = {w: finals[w].count for w in expected if w in finals}
        return counts if counts == expected else None

    counts = await _wait_for(exact, 75, "exact finals after SIGKILL")
    assert counts == expected  # no loss, no double count
    log = (tmp_path / f"{workers.group}-2.log").read_text()
    assert "stage1.assigned" in log  # the restarted worker restored and took over


async def test_faust_sees_the_batches_as_processed(
    bootstrap_servers: str, workers_factory: list[Workers], tmp_path: Path
) -> None:
    """Faust's liveness check ("Stream has not started processing TP ...", 13 lines per
    partition, every few seconds after `stream_processing_timeout`) reads the per-partition
    inbound time that only its own streams set; the batch consumer sets it per batch.
    With records flowing and a 5 s timeout, no partition may be reported as never started
    (a slow one may: that is Faust's other warning, real under a loaded machine)."""
    t = Topics()
    await _create(bootstrap_servers, t, ("fs",))
    env = {**_faust_env(t, bootstrap_servers, "fs"), "IOC_STREAMS_FAUST_STALL_WARNING_S": "5"}
    workers = Workers(env, tmp_path)
    workers_factory.append(workers)
    workers.start()
    await workers.wait_assigned(0)
    # Records keep arriving for several of Faust's check intervals (2.5 commit intervals,
    # 7 s), as in the demo: at a check, most partitions have records not yet fetched.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        started, i = time.monotonic(), 0
        while time.monotonic() - started < 25:
            futs = [
                await producer.send(t.air, air(T0 + i + k, event_id=f"s{i + k}"), partition=k % 4)
                for k in range(400)
            ]
            await asyncio.gather(*futs)
            i += 400
    finally:
        await producer.stop()
    log = (tmp_path / f"{workers.group}-0.log").read_text()
    assert workers.log_events(0, "stage1.assigned")
    assert "has not started processing" not in log
