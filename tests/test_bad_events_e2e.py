"""One bad event must not stop or silence the pipeline: the two reproductions of the
issue against the real broker, the real ingest gateway and a real stream worker process.

1. ``"time": "9999-12-31T23:59:59Z"`` once crash-looped the worker (a window end past
   year 9999); 2. one station a few minutes ahead of the others once moved its partition's
   watermark so far that every other station's on-time events became ``too_late``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson

from events.envelope import encode
from events.records import DeadLetter, KpiRecord
from ingest.settings import IngestSettings
from tests.ingest_keys import AUTH
from tests.streams_helpers import air
from tests.test_ingest import gateway  # noqa: F401  (the real HTTP/MQTT gateway fixture)
from tests.test_streams_integration import (
    Topics,
    Workers,
    _create,
    _latest_kpis,
    _produce,
    _read_all,
    _wait_for,
    workers_factory,  # noqa: F401
)

MIN = 60_000


def _air_at(when: datetime, station: str) -> dict[str, object]:
    event: dict[str, object] = orjson.loads(air(int(when.timestamp() * 1000), station_id=station))
    return event


async def test_the_gateway_refuses_far_future_and_unrepresentable_times(
    gateway: IngestSettings,  # noqa: F811
) -> None:
    url = f"http://127.0.0.1:{gateway.ingest_http_port}/events"
    now = datetime.now(UTC)
    cases = {
        "future_time": _air_at(datetime(2030, 1, 1, tzinfo=UTC), "HD-AQ-FUT"),
        "bad_time": {**_air_at(now, "HD-AQ-FUT"), "time": "9999-12-31T23:59:59Z"},
    }
    async with aiohttp.ClientSession() as http:
        for reason, event in cases.items():
            async with http.post(
                url,
                data=encode(event),
                headers={"Content-Type": "application/cloudevents+json", **AUTH},
            ) as resp:
                assert resp.status == 400
                body = await resp.json()
                assert [r["reason"] for r in body["rejected"]] == [reason]
        # within the allowed skew (300 s by default) an event is accepted
        soon = _air_at(now + timedelta(seconds=240), "HD-AQ-SOON")
        async with http.post(
            url, data=encode(soon), headers={"Content-Type": "application/cloudevents+json", **AUTH}
        ) as resp:
            assert resp.status == 202


async def test_bad_times_are_dead_lettered_and_other_stations_keep_exact_kpis(
    bootstrap_servers: str,
    workers_factory: list[Workers],  # noqa: F811
    tmp_path: Path,
) -> None:
    t = Topics()
    await _create(bootstrap_servers, t, ("g",))
    workers = Workers(t.env(bootstrap_servers, "g"), tmp_path)
    workers_factory.append(workers)
    proc = workers.start()

    now = int(time.time() * 1000)
    pane = now - now % MIN - MIN  # a whole minute just past: every event below is in it
    stations = ["HD-AQ-101", "HD-AQ-102", "HD-AQ-103"]
    far = orjson.loads(air(pane, station_id="HD-AQ-BAD"))
    far["time"] = "9999-12-31T23:59:59Z"
    values: list[tuple[int, bytes]] = [
        (0, air(pane + i, station_id=s)) for i, s in enumerate(stations)
    ]
    values += [
        (1, orjson.dumps(far)),  # once: a crash loop of the worker
        (1, encode(_air_at(datetime(2030, 1, 1, tzinfo=UTC), "HD-AQ-2030"))),
        # four minutes ahead (within the skew bound): once the whole partition went silent
        (0, air(now + 4 * MIN, station_id="HD-AQ-FUT")),
    ]
    values += [(0, air(pane + 1000 + i * 100, station_id=stations[i % 3])) for i in range(150)]
    values += [(1, air(pane + 2000 + i, station_id="HD-AQ-104")) for i in range(20)]
    await _produce(bootstrap_servers, t.air, values)
    want = {f"station:{s}": 51 for s in stations} | {"station:HD-AQ-104": 20}

    async def counted() -> dict[str, KpiRecord] | None:
        latest = await _latest_kpis(bootstrap_servers, t.kpi("g"))
        got = {
            r.scope: r
            for r in latest.values()
            if r.kpi == "air.pm25.avg"
            and r.scope in want
            and int(r.window_start.timestamp() * 1000) == pane
            and (r.window_end - r.window_start).total_seconds() == 60
        }
        return got if {s: r.count for s, r in got.items()} == want else None

    await _wait_for(counted, 90, "exact counts of the other stations")

    async def dead() -> dict[str, DeadLetter] | None:
        dls = [DeadLetter.from_json(r) for r in await _read_all(bootstrap_servers, t.dead, 1)]
        return {d.reason: d for d in dls} if len(dls) >= 2 else None

    letters = await _wait_for(dead, 30, "dead letters")
    assert set(letters) == {"bad_time", "future_time"}  # and no too_late at all
    assert letters["bad_time"].value == orjson.dumps(far)
    assert letters["future_time"].source_partition == 1
    assert proc.poll() is None, "the worker must still run"
    assert b"exited" not in (tmp_path / f"{workers.group}-0.log").read_bytes()
