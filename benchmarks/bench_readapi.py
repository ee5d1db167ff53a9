"""Read API latency: a 7-day, 500-point KPI series over HTTP, against the same SQL run
directly through asyncpg (the ceiling), same run, same series, interleaved.

    IOC_STATE_DIR=... IOC_DB_PORT=... .venv/bin/python -m benchmarks.bench_readapi

Uses the TimescaleDB of ``ioc services up`` (started if needed) and a fresh database,
dropped at the end. It loads a week of demo-like 60 s windows, generated in the server
(``generate_series``: a daily cycle plus noise) for every KPI of the catalogue at city and
district scope and, by default, for the air-quality KPIs at each of the demo's air
stations, then refreshes the hourly and daily rollups with the maintenance job's own
function and runs ``VACUUM ANALYZE`` (what autovacuum does in a running demo).

The read API runs as its own process (``python -m readapi``, as in ``ioc up``); the
client keeps one HTTP connection (keep-alive) and asks for a random series of the loaded
ones each time. Each sample is one request: sent, answered, body read; the baseline
sample is ``SERIES_SQL`` with the same arguments on one asyncpg connection (statement
prepared and cached, as the API's pool does), rows fetched. The two alternate, in
alternating order, so both see the same machine and the same page cache. Every sample
counts (no warm-up is dropped).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import orjson
from rich.console import Console

from benchmarks.results import machine_note, record
from events.geography import DISTRICTS
from events.kpis import KPI_CATALOGUE
from ioc import services
from ioc.services import timescale
from ioc.settings import ServiceSettings
from readapi.params import plan_series
from simulators.model import build_province
from storage import series
from storage.migrate import migrate
from storage.retention import MaintenanceReport, refresh_rollups

REQUESTS = int(os.environ.get("BENCH_READAPI_REQUESTS", "300"))
# Station series too (the air KPIs at the demo's 17 air stations); 0 = city and districts.
WITH_STATIONS = os.environ.get("BENCH_READAPI_STATIONS", "1") != "0"
COMMAND = ".venv/bin/python -m benchmarks.bench_readapi"
TOKEN = "wall-viewer"
console = Console(stderr=True)

# One week of minutes for one series, values of a daily cycle with noise; the sink's
# columns (count, min, max, sum, final, revision) filled as a 60 s window has them.
_LOAD = """
INSERT INTO kpi_windows (kpi, scope, window_start, window_end, value, count, min, max, sum,
                         final, revision, computed_at)
SELECT $1, s.scope, t, t + interval '60 seconds', v, 12, v - 3, v + 3, v * 12, true, 1,
       t + interval '61 seconds'
FROM unnest($2::text[]) WITH ORDINALITY AS s(scope, n),
     generate_series($3::timestamptz, $4::timestamptz - interval '60 seconds',
                     interval '60 seconds') AS t,
     LATERAL (SELECT 50 + 20 * sin(extract(epoch FROM t) / 86400 * 2 * pi() + s.n)
                     + random() * 5 AS v) AS x
"""


def series_list() -> dict[str, list[str]]:
    """kpi -> scopes loaded: as the demo's streams produce them."""
    districts = [f"district:{code}" for code in DISTRICTS]
    stations = [f"station:{s.site_id}" for s in build_province().air_stations]
    loaded: dict[str, list[str]] = {}
    for kpi, spec in KPI_CATALOGUE.items():
        scopes = ["city", *(districts if "district" in spec.scopes else [])]
        if WITH_STATIONS and spec.domain == "air" and "station" in spec.scopes:
            scopes += stations
        loaded[kpi] = scopes
    return loaded


async def load_week(conn: asyncpg.Connection, until: datetime) -> int:
    since = until - timedelta(days=7)
    rows = 0
    for i, (kpi, scopes) in enumerate(series_list().items(), start=1):
        status = await conn.execute(_LOAD, kpi, scopes, since, until)
        rows += int(status.rsplit(" ", 1)[-1])
        console.print(f"  {i}/{len(KPI_CATALOGUE)} {kpi}: {rows:,} rows")
    started = time.perf_counter()
    await refresh_rollups(conn, since, MaintenanceReport(edition="apache"))
    console.print(f"  rollups refreshed in {time.perf_counter() - started:.1f} s")
    await conn.execute("VACUUM ANALYZE kpi_windows")
    await conn.execute("VACUUM ANALYZE kpi_rollup_hourly")
    await conn.execute("VACUUM ANALYZE kpi_rollup_daily")
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_healthy(
    http: aiohttp.ClientSession, base: str, proc: asyncio.subprocess.Process
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"python -m readapi exited with {proc.returncode}")
        try:
            async with http.get(f"{base}/readyz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)  # polling a starting process; the condition is /readyz
    raise RuntimeError("the read API did not become healthy in 30 s")


def pct(samples: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of all samples, in milliseconds."""
    ordered = sorted(samples)
    return 1000 * ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def measure(
    http: aiohttp.ClientSession,
    conn: asyncpg.Connection,
    base: str,
    until: datetime,
    points: int,
    n: int,
) -> tuple[list[float], list[float], int, str]:
    """n interleaved (HTTP, bare SQL) samples of the 7-day query; returns both sample
    lists, the points of the last answer and the source it read."""
    rng = random.Random(points)
    pairs = [(k, s) for k, scopes in series_list().items() for s in scopes]
    since = until - timedelta(days=7)
    plan = plan_series(since, until, points)
    query = {"since": since.isoformat(), "until": until.isoformat(), "points": str(points)}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    api: list[float] = []
    bare: list[float] = []
    last_points = 0
    for i in range(n):
        kpi, scope = rng.choice(pairs)

        async def by_http(kpi: str = kpi, scope: str = scope) -> bytes:
            url = f"{base}/v1/kpis/{kpi}/windows"
            started = time.perf_counter()
            async with http.get(url, params={**query, "scope": scope}, headers=headers) as r:
                body = await r.read()
            api.append(time.perf_counter() - started)
            assert r.status == 200, body[:200]
            return body

        async def by_sql(kpi: str = kpi, scope: str = scope) -> None:
            started = time.perf_counter()
            await conn.fetch(series.SERIES_SQL[plan.source], *series.series_args(kpi, scope, plan))
            bare.append(time.perf_counter() - started)

        if i % 2:
            await by_sql()
            body = await by_http()
        else:
            body = await by_http()
            await by_sql()
        last_points = len(orjson.loads(body)["items"])
    return api, bare, last_points, plan.source


async def main() -> None:
    settings = ServiceSettings()
    started = services.up(settings, ("timescaledb",))
    admin_url = f"postgresql://postgres@{settings.host}:{settings.db_port}/postgres"
    name = f"ioc_bench_{uuid.uuid4().hex[:8]}"
    timescale.ensure_database(admin_url, name)
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    proc: asyncio.subprocess.Process | None = None
    results: dict[int, tuple[list[float], list[float], int, str]] = {}
    try:
        conn = await asyncpg.connect(url)
        await migrate(conn)
        until = datetime.now(UTC).replace(second=0, microsecond=0)
        console.print("loading a week of 60 s windows…")
        rows = await load_week(conn, until)
        port = free_port()
        env = {
            **os.environ,
            "IOC_DATABASE_URL": url,
            "IOC_READAPI_PORT": str(port),
            "IOC_READAPI_HOST": "127.0.0.1",
        }
        env.pop("IOC_WS_TOKENS", None)  # the default tokens: TOKEN is one of them
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "readapi", env=env)
        base = f"http://127.0.0.1:{port}"
        load = os.getloadavg()[0]
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, base, proc)
            for points, n in ((500, REQUESTS), (150, REQUESTS // 3), (7, REQUESTS // 3)):
                console.print(f"7-day queries, {points} points: {n} × (HTTP, bare SQL)…")
                results[points] = await measure(http, conn, base, until, points, n)
        await conn.close()
    finally:
        if proc is not None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)
        timescale.drop_database(admin_url, name)
        if started and not os.environ.get("IOC_TEST_KEEP_SERVICES"):
            services.down(settings, tuple(started))
    n_series = sum(len(s) for s in series_list().values())
    table = []
    for points, (api, bare, got, source) in results.items():
        table.append(
            f"| 7 d, {points} points → {got} points from `{source}` | {len(api)} | "
            f"{pct(api, 0.5):.1f} / {pct(api, 0.95):.1f} | "
            f"{pct(bare, 0.5):.1f} / {pct(bare, 0.95):.1f} | "
            f"{pct(api, 0.95) - pct(bare, 0.95):.1f} |"
        )
    api500, bare500, _, _ = results[500]
    stations = ", plus the air KPIs at the 17 air stations" if WITH_STATIONS else ""
    body = f"""
{rows:,} rows of 60 s windows: one week of {n_series} series (every KPI of the catalogue
at city scope and, where it has them, the {len(DISTRICTS)} district scopes{stations}),
generated in the server; rollups refreshed by `storage.retention.refresh_rollups`, then
`VACUUM ANALYZE`. TimescaleDB 2.19 (Apache edition), PostgreSQL 17, on the same machine;
the read API as its own process (`python -m readapi`, pool of 4), one keep-alive HTTP
client. Each sample asks for a random loaded series; samples alternate with the bare SQL
(`storage.series.SERIES_SQL`, same arguments, one asyncpg connection), every sample
counted. {machine_note(load)}

| query | samples | read API p50 / p95 ms | bare SQL p50 / p95 ms | p95 overhead ms |
|---|---|---|---|---|
{chr(10).join(table)}

The 500-point week reads the 10,080 windows of the series through the index
`kpi_windows_chart` and buckets them by 21 minutes (`time_bucket`); fewer points read the
hourly or daily rollup (about 168 or 8 rows). Target: p95 under 50 ms for the 500-point
week (`readapi_p95_ms`); the ceiling is `readapi_bare_sql_p95_ms`. The overhead is the
HTTP round trip, parameter checks, the pool and JSON encoding of the points.
"""
    record(
        "readapi",
        COMMAND,
        body,
        {
            "readapi_p95_ms": round(pct(api500, 0.95), 1),
            "readapi_bare_sql_p95_ms": round(pct(bare500, 0.95), 1),
        },
    )
    console.print(body)


if __name__ == "__main__":
    asyncio.run(main())
