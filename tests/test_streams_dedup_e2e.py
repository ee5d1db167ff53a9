"""Re-sent events count once on the real broker, live and final, also across a SIGKILL."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import aiohttp
import pytest
from aiokafka import TopicPartition

from tests.streams_helpers import T0, air
from tests.test_ingest import _free_port
from tests.test_storage_sink import _committed
from tests.test_streams_integration import (
    PARTITIONS,
    Topics,
    Workers,
    _create,
    _finals,
    _latest_kpis,
    _produce,
    _wait_for,
    workers_factory,  # noqa: F401
)

MIN = 60_000
STATION = "HD-AQ-DUP"


async def _metric(port: int, name: str) -> float:
    """A counter of the worker's /metrics; 0 while the worker is not serving yet."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            text = await resp.text()
    except aiohttp.ClientConnectionError:
        return 0.0
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.broker_sensitive
async def test_re_sent_events_count_once_also_after_a_sigkill(
    bootstrap_servers: str,
    workers_factory: list[Workers],  # noqa: F811
    tmp_path: Path,
) -> None:
    t = Topics()
    await _create(bootstrap_servers, t, ("d",))
    env = t.env(bootstrap_servers, "d")
    env["IOC_STREAMS_HTTP_PORT"] = str(port := _free_port())
    workers = Workers(env, tmp_path)
    workers_factory.append(workers)
    proc = workers.start()

    # 600 events of one station (one source: one partition, as a keyed producer sends
    # them), then 100 of them re-sent byte for byte, as a gateway does after a lost ack.
    events = [air(T0 + i * 100, event_id=f"e{i}", station_id=STATION) for i in range(600)]
    await _produce(bootstrap_servers, t.air, [(0, e) for e in events + events[::6]])

    async def live_dropped() -> float | None:
        return n if (n := await _metric(port, "ioc_streams_duplicates_total")) >= 100 else None

    assert await _wait_for(live_dropped, 60, "the repeats to be dropped") == 100
    # Wait until the state that holds those identities is durable (offsets committed).
    tp = TopicPartition(t.air, 0)

    async def checkpointed() -> int | None:
        c = await _committed(bootstrap_servers, env["IOC_STREAMS_GROUP_ID"], tp)
        return c if c == 700 else None

    await _wait_for(checkpointed, 30, "the checkpoint of partition 0")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL

    workers.start()
    await _produce(bootstrap_servers, t.air, [(0, e) for e in events[::6]])  # once more
    log = tmp_path / f"{workers.group}-1.log"

    async def restored_and_dropped() -> float | None:
        text = log.read_bytes() if log.exists() else b""
        if not re.search(rb"\"restored\": [1-9].*\"stage1.assigned\"", text):
            return None
        n = await _metric(port, "ioc_streams_duplicates_total")
        return n if n >= 100 else None

    # The restarted worker restored its seen identities: the third copies are dropped.
    assert await _wait_for(restored_and_dropped, 90, "restore, then the repeats dropped") == 100
    assert re.search(rb"\"identities\": 600", log.read_bytes())

    await _produce(bootstrap_servers, t.air, [(p, air(T0 + 10 * MIN)) for p in range(PARTITIONS)])

    async def final() -> dict[int, int] | None:
        latest = await _latest_kpis(bootstrap_servers, t.kpi("d"))
        finals = _finals(latest, "air.pm25.avg", f"station:{STATION}")
        live = [
            r
            for r in latest.values()
            if r.kpi == "air.pm25.avg" and r.scope == f"station:{STATION}" and not r.final
        ]
        assert all(r.count <= 600 for r in live)  # never a live value above the truth
        counts = {w: r.count for w, r in finals.items()}
        return counts if counts.get(T0) is not None else None

    counts = await _wait_for(final, 90, "the final window")
    assert counts == {T0: 600}
