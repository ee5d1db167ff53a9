"""Scale-out on the local broker: two stream workers, two storage processes and two push
servers at once give complete, exact results, and clients of either push server receive
every final window.

The stream workers read event topics of this test's own (a unique prefix) and write to
the real ``ioc.kpi``, under station ids of their own, so the sinks (unique consumer groups
placed at the end of the topics first) and the push servers read the contract topics as
in production while other tests' records cannot change the counts checked here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from chaos.pushclients import Fleet, gaps
from events import topics
from events.topics import DOMAINS
from tests.db_helpers import migrated
from tests.streams_helpers import T0, air
from tests.test_streams_integration import PARTITIONS, Topics, Workers, _create, _produce
from tests.waiting import until
from ws.app import WsApp
from ws.settings import WsSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
MIN = 60_000
STATIONS = 6
TIMEOUT = 150.0


async def _commit_at_end(bootstrap: str, group: str, names: list[str]) -> None:
    """A new consumer group that starts at the end of ``names`` (not at their start: the
    contract topics hold the whole session's records)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = [
            TopicPartition(t, p) for t in names for p in consumer.partitions_for_topic(t) or ()
        ]
        consumer.assign(parts)  # a commit needs the partitions assigned
        ends = await consumer.end_offsets(parts)
        await consumer.commit(dict(ends.items()))
    finally:
        await consumer.stop()


async def _members(bootstrap: str, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    # DescribeGroups responses: groups as (error, group_id, state, protocol type,
    # protocol, members, ...) tuples.
    return sum(len(g[5]) for resp in described for g in resp.groups if g[1] == group)


class Sinks:
    """Storage processes (`python -m storage`) in one set of consumer groups."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        with open(self.log_dir / f"storage-{len(self.procs)}.log", "wb") as log:
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "storage"],
                    cwd=ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest_asyncio.fixture(loop_scope="session")
async def two_push_servers(bootstrap_servers: str, database_url: str) -> AsyncIterator[list[WsApp]]:
    database = await migrated(database_url)
    apps = []
    for _ in range(2):
        app = WsApp(
            WsSettings(bootstrap_servers=bootstrap_servers, database_url=database, ws_port=0)
        )
        await app.start()
        apps.append(app)
    yield apps
    for app in apps:
        await app.stop()


async def test_two_of_each_component_give_exact_results_and_every_client_every_window(
    bootstrap_servers: str, database_url: str, two_push_servers: list[WsApp], tmp_path: Path
) -> None:
    t = Topics()
    await _create(bootstrap_servers, t, ())
    stations = [f"SC{t.tag.upper()}{k}" for k in range(STATIONS)]

    # Two push servers, five wall clients on each, watching the test's stations.
    fleets = [
        Fleet(f"ws://127.0.0.1:{app.server.port}/ws?token=wall-viewer", stations, 5, seed=n)
        for n, app in enumerate(two_push_servers)
    ]
    for fleet in fleets:
        await fleet.start(within_s=30)

    # Two storage processes in one set of groups, which start at the topics' end.
    groups = {kind: f"scale-{kind}-{t.tag}" for kind in ("raw", "kpi", "alerts")}
    event_topics = [topics.events_topic(d) for d in DOMAINS]
    await _commit_at_end(bootstrap_servers, groups["raw"], event_topics)
    await _commit_at_end(bootstrap_servers, groups["kpi"], [topics.KPI])
    await _commit_at_end(bootstrap_servers, groups["alerts"], [topics.ALERTS])
    sinks = Sinks(
        {
            **os.environ,
            "IOC_BOOTSTRAP_SERVERS": bootstrap_servers,
            "IOC_DATABASE_URL": database_url,
            "IOC_RAW_GROUP_ID": groups["raw"],
            "IOC_KPI_GROUP_ID": groups["kpi"],
            "IOC_ALERTS_GROUP_ID": groups["alerts"],
            "IOC_STORAGE_HTTP_PORT": "0",
        },
        tmp_path,
    )
    # Two Faust-hosted stream workers in one group, writing to the real ioc.kpi.
    env = {
        **t.env(bootstrap_servers, "scale"),
        "IOC_STREAMS_ENGINE": "faust",
        "IOC_STREAMS_KPI_TOPIC": topics.KPI,
    }
    workers = Workers(env, tmp_path)
    try:
        sinks.start()
        sinks.start()
        workers.start()
        workers.start()
        await workers.wait_assigned(0)
        await workers.wait_assigned(1)
        for kind in ("kpi", "raw"):
            members: list[int] = [0]

            async def two(kind: str = kind, members: list[int] = members) -> bool:
                members[0] = await _members(bootstrap_servers, groups[kind])
                return members[0] == 2

            await until(
                two, lambda m=members, k=kind: f"2 {k} sinks, not {m[0]}", within=60, every=0.5
            )

        # Three minutes of air readings from six stations on every partition, then one
        # reading per partition ten minutes later: the watermark passes the three windows.
        values: list[tuple[int, bytes]] = []
        expected: dict[tuple[str, int], int] = {}
        for i in range(1800):
            t_ms = T0 + i * 100
            station = stations[i % STATIONS]
            values.append((i % PARTITIONS, air(t_ms, pm25=float(i % 70), station_id=station)))
            key = (station, t_ms - t_ms % MIN)
            expected[key] = expected.get(key, 0) + 1
        values += [(p, air(T0 + 10 * MIN, station_id=stations[0])) for p in range(PARTITIONS)]
        await _produce(bootstrap_servers, t.air, values)

        # Every client of both push servers holds every final window at its exact count.
        for n, fleet in enumerate(fleets):
            ok = lambda f=fleet: gaps(f.states, expected).ok  # noqa: E731
            await until(ok, f"server {n}'s clients", within=TIMEOUT, every=0.2)

        # The storage processes wrote the windows; the table holds each final exactly.
        conn = await asyncpg.connect(database_url)
        try:
            stored: dict[tuple[str, int], int] = {}

            async def all_stored() -> bool:
                rows = await conn.fetch(
                    "SELECT scope, window_start, count FROM kpi_windows "
                    "WHERE kpi = 'air.pm25.avg' AND scope = ANY($1::text[]) AND final "
                    "AND window_end - window_start = interval '1 minute'",
                    [f"station:{s}" for s in stations],
                )
                stored.clear()
                stored.update(
                    {
                        (r["scope"][8:], int(r["window_start"].timestamp() * 1000)): r["count"]
                        for r in rows
                    }
                )
                return stored == expected

            diff = lambda: {k: (stored.get(k), v) for k, v in expected.items()}  # noqa: E731
            await until(all_stored, diff, within=60, every=0.5)
        finally:
            await conn.close()
        assert all(p.poll() is None for p in sinks.procs + workers.procs)
    finally:
        workers.stop_all()
        sinks.stop()
        for fleet in fleets:
            await fleet.stop()
