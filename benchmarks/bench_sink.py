"""Raw-event sink throughput into TimescaleDB, against a bare COPY baseline, same run.

    IOC_STATE_DIR=... IOC_DB_PORT=... IOC_BROKER_PORT=... .venv/bin/python -m benchmarks.bench_sink

Uses the services of ``ioc services up`` (started if needed) and a fresh database that is
dropped at the end. Three measurements over the same N CloudEvents (bytes as on Kafka):

1. baseline: ``copy_records_to_table`` of the already-decoded rows straight into the
   ``events`` hypertable (no decode, no staging, no conflict check);
2. sink write path: what the raw sink does per batch of 5,000 records — decode and
   validate each event (``events.envelope.decode``), binary COPY into the staging table,
   plain ``INSERT ... SELECT`` into ``events`` (the ``ON CONFLICT DO NOTHING`` merge
   only for batches holding stored rows, which is measured on its own too);
3. sink end to end from Kafka: the same events on a 4-partition topic, consumed by the
   real ``Sink`` (manual offset commits after each DB commit), timed from the first to the
   last row in the table.

Plus the KPI upsert path (COPY + revision-ordered merge into kpi_windows and kpi_latest).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.progress import Progress

from benchmarks.results import broker_label, machine_note, record
from events.envelope import encode, new_event
from events.records import KpiRecord
from ioc import services
from ioc.services import timescale
from ioc.settings import ServiceSettings
from storage import rows, writers
from storage.metrics import SinkMetrics
from storage.migrate import migrate
from storage.rows import EVENT_COLUMNS, kpi_row
from storage.sink import (
    PREPARE_SLICE_ROWS,
    Sink,
    SinkSpec,
    prepare_interleaved,
    split_for_writers,
)

N = int(os.environ.get("BENCH_SINK_EVENTS", "200000"))
REPEATS = int(os.environ.get("BENCH_SINK_REPEATS", "3"))
BATCH = 5000
WRITERS = int(os.environ.get("BENCH_SINK_WRITERS", "2"))  # as IOC_SINK_RAW_WRITERS
COMMAND = ".venv/bin/python -m benchmarks.bench_sink"
console = Console(stderr=True)


def _rates(values: list[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def make_events(n: int) -> list[bytes]:
    t0 = datetime.now(UTC) - timedelta(hours=1)
    return [
        encode(
            new_event(
                "vn.ioc.air.observed",
                f"/sensors/air/HD-AQ-{i % 200:03d}",
                {
                    "station_id": f"HD-AQ-{i % 200:03d}",
                    "district": "HD",
                    "pm25": 10.0 + i % 90,
                    "pm10": 30.0 + i % 70,
                    "no2": 12.5,
                },
                time=t0 + timedelta(milliseconds=i * 10),
            )
        )
        for i in range(n)
    ]


class _Rec:
    """The fields of a Kafka record the sink reads (for the write-path measurement)."""

    __slots__ = ("key", "offset", "partition", "topic", "value")

    def __init__(self, value: bytes, offset: int) -> None:
        self.topic, self.partition, self.offset, self.key, self.value = (
            "bench",
            0,
            offset,
            None,
            value,
        )


async def bench_baseline(conn: asyncpg.Connection, decoded: list[rows.Row]) -> float:
    await conn.execute("TRUNCATE events")
    start = time.perf_counter()
    for i in range(0, len(decoded), BATCH):
        await conn.copy_records_to_table(
            "events", records=decoded[i : i + BATCH], columns=list(EVENT_COLUMNS)
        )
    return len(decoded) / (time.perf_counter() - start)


async def bench_write_path(
    conn: asyncpg.Connection,
    url: str,
    raw: list[bytes],
    writer: writers.BatchWriter = writers.RAW_EVENTS,
) -> float:
    """The sink's write path without Kafka: decode batch k+1 while batch k is written, in
    WRITERS parts on as many connections (as ``Sink`` does)."""
    await conn.execute("TRUNCATE events")
    conns = [conn, *[await asyncpg.connect(url) for _ in range(WRITERS - 1)]]
    for c in conns:
        await writer.prepare(c)
    decode_row = rows.event_row_decoder()
    records = [_Rec(v, i) for i, v in enumerate(raw)]

    async def write(batch: rows.PreparedBatch) -> None:
        parts = split_for_writers(batch, WRITERS, rows.event_writer_key)
        await asyncio.gather(
            *(writer.write(c, part) for c, (part, _) in zip(conns, parts, strict=False))
        )

    start = time.perf_counter()
    in_flight: asyncio.Task[None] | None = None
    for i in range(0, len(records), BATCH):
        batch = await prepare_interleaved(
            lambda recs: rows.event_rows(recs, decode_row, "bench"), records[i : i + BATCH]
        )
        if in_flight is not None:
            await in_flight
        in_flight = asyncio.create_task(write(batch))
        await asyncio.sleep(0)  # the write starts now (the sink's next await is a fetch)
    if in_flight is not None:
        await in_flight
    rate = len(raw) / (time.perf_counter() - start)
    for c in conns[1:]:
        await c.close()
    assert await conn.fetchval("SELECT count(*) FROM events") == len(raw)
    return rate


async def bench_kafka(settings: ServiceSettings, url: str, raw: list[bytes]) -> float:
    topic = f"bench.sink.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=20, max_batch_size=1 << 20
    )
    await producer.start()
    conn = await asyncpg.connect(url)
    await conn.execute("TRUNCATE events")
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("producing to Kafka", total=len(raw))
            for i in range(0, len(raw), BATCH):
                futures = [
                    await producer.send(topic, v, key=str(j % 200).encode())
                    for j, v in enumerate(raw[i : i + BATCH], start=i)
                ]
                await asyncio.gather(*futures)
                progress.advance(task, BATCH)
        decode_row = rows.event_row_decoder()
        registry = CollectorRegistry()
        spec = SinkSpec(
            name="raw",
            topics=(topic,),
            group_id=f"bench-{topic}",
            merge=writers.RAW_EVENTS,
            prepare=lambda recs: rows.event_rows(recs, decode_row, "bench"),
            batch_rows=BATCH,
            batch_ms=200,
            writers=WRITERS,
            writer_key=rows.event_writer_key,
        )
        sink = Sink(
            spec,
            bootstrap_servers=settings.bootstrap_servers,
            database_url=url,
            producer=producer,
            metrics=SinkMetrics.create(registry),
        )
        stop = asyncio.Event()
        runner = asyncio.create_task(sink.run(stop))
        # Progress from the sink's own counter (rows committed), not from count(*) queries
        # that would load the database under test.
        first_t, first_n = 0.0, 0
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("sink consuming", total=len(raw))
            while True:
                n = int(registry.get_sample_value("ioc_sink_rows_total", {"sink": "raw"}) or 0)
                progress.update(task, completed=n)
                now = time.perf_counter()
                if n and not first_t:
                    first_t, first_n = now, n
                if n >= len(raw):
                    break
                await asyncio.sleep(0.01)
        stop.set()
        await runner
        assert await conn.fetchval("SELECT count(*) FROM events") == len(raw)
        return (len(raw) - first_n) / (now - first_t)
    finally:
        await conn.close()
        await producer.stop()


async def bench_kpi(conn: asyncpg.Connection, n: int) -> float:
    start_t = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    recs = [
        kpi_row(
            KpiRecord(
                f"bench.kpi.{i % 20}",
                f"district:D{(i // 20) % 12}",
                start_t + timedelta(minutes=i // 240),
                start_t + timedelta(minutes=i // 240 + 1),
                float(i),
                10,
                revision=1,
            )
        )
        for i in range(n)
    ]
    await writers.KPI_WINDOWS.prepare(conn)
    start = time.perf_counter()
    for i in range(0, n, 2000):
        await writers.KPI_WINDOWS.write(conn, recs[i : i + 2000])
    return n / (time.perf_counter() - start)


async def main() -> None:
    settings = ServiceSettings()
    started = services.up(settings, ("broker", "timescaledb"))
    admin_url = f"postgresql://postgres@{settings.host}:{settings.db_port}/postgres"
    name = f"ioc_bench_{uuid.uuid4().hex[:8]}"
    timescale.ensure_database(admin_url, name)
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        conn = await asyncpg.connect(url)
        await migrate(conn)
        console.print(f"encoding {N:,} events…")
        raw = make_events(N)
        decoded = [rows.event_row_decoder()(v, None) for v in raw]
        load = os.getloadavg()[0]
        # Alternate baseline and sink runs so both see the same (shared, noisy) machine;
        # report the median of each.
        bares, paths = [], []
        for r in range(REPEATS):
            console.print(f"round {r + 1}/{REPEATS}: bare copy_records_to_table…")
            bares.append(await bench_baseline(conn, decoded))
            console.print(f"round {r + 1}/{REPEATS}: sink write path…")
            paths.append(await bench_write_path(conn, url, raw))
        bare, path = statistics.median(bares), statistics.median(paths)
        console.print("staged merge path (what replays and duplicates take)…")
        staged = await bench_write_path(conn, url, raw, writers.RAW_EVENTS.staged)
        kpi = await bench_kpi(conn, 48_000)
        await conn.close()
        console.print("sink end to end from Kafka…")
        e2e = await bench_kafka(settings, url, raw)
    finally:
        timescale.drop_database(admin_url, name)
        if started and not os.environ.get("IOC_TEST_KEEP_SERVICES"):
            services.down(settings, tuple(started))
    broker = broker_label(settings.bootstrap_servers)
    body = f"""
Medians of {REPEATS} alternating rounds (bare: {_rates(bares)}; sink write path:
{_rates(paths)}). {N:,} `vn.ioc.air.observed` CloudEvents (~270 bytes each), batches
of {BATCH:,} written by {WRITERS} connections (`IOC_SINK_RAW_WRITERS`), into the
`events` hypertable (unique (time, source, id), index (source, time)) of TimescaleDB 2.19
(Apache edition), PostgreSQL 17 on the same machine. {machine_note(load)}

| path | rows/s |
|---|---|
| baseline: bare `copy_records_to_table` of pre-decoded rows into `events` | {bare:,.0f} |
| raw sink write path (`sink_rows_per_s`): decode + validate, staging, plain insert | {path:,.0f} |
| raw sink, staged path (`sink_staged_rows_per_s`): staging + ON CONFLICT merge | {staged:,.0f} |
| raw sink end to end (`sink_kafka_rows_per_s`): Kafka → `Sink` → TimescaleDB | {e2e:,.0f} |
| KPI sink write path: COPY + revision-ordered upsert (48,000 records) | {kpi:,.0f} |

Write path: each event decoded and validated (`events.envelope.decode`), binary COPY
into the temp staging table, a plain `INSERT … SELECT` into `events` in a savepoint; a
batch that holds an already stored row (a replay after a crash, a duplicate delivery)
fails that insert with a unique violation and takes the staged merge instead,
`INSERT … ORDER BY time ON CONFLICT DO NOTHING` (its rate is measured separately).
Batch k is written while batch k+1 is decoded in slices of {PREPARE_SLICE_ROWS} rows (a yield to
the loop between slices keeps the write going), as in the sink. End to end: the
same events on a 4-partition topic of the {broker} broker, consumed by the real `Sink`
(offsets committed after each DB commit), timed from the first to the last committed row.
KPI upserts go into `kpi_windows` and `kpi_latest` in one transaction.

The sink write path costs {100 * (1 - path / bare):.0f} % against the bare COPY: envelope
decoding and validation in Python (the second core runs PostgreSQL).
"""
    record(
        "sink",
        COMMAND,
        body,
        {
            "sink_rows_per_s": round(path),
            "sink_staged_rows_per_s": round(staged),
            "sink_kafka_rows_per_s": round(e2e),
            "bare_copy_rows_per_s": round(bare),
            "kpi_upsert_rows_per_s": round(kpi),
        },
    )
    console.print(body)


if __name__ == "__main__":
    asyncio.run(main())
