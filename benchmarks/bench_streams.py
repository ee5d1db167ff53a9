"""Stream worker throughput and latency, against two baselines in the same run.

    IOC_BROKER_PORT=... python -m benchmarks.bench_streams [--events 200000]

The same pre-produced single-event records (air observations, 4 partitions, on topics of
this run) are consumed by:

(a) raw aiokafka ``getmany`` + orjson + dict aggregation (the practical limit);
(b) a naive Faust agent updating a windowed table per event (subprocess; it gets the
    first ``--faust-events`` records, since at its speed 200k would take minutes);
(c) our worker end to end: consume, validate, window, emit KPIs on the KPI topic,
    measured from its first fetched batch until the final record of the last window.
(d) the same worker hosted by a ``faust.App`` (``ioc streams worker --engine faust``),
    measured the same way (throughput only).

Then, with the worker caught up, it measures the final-result latency (watermark passes
a window end -> final record acked on the KPI topic) and the live-value latency (event
produced -> first live record that includes it, p95).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.results import broker_label, machine_note, record
from events.binding import STRUCTURED_HEADERS
from events.catalogue import EVENT_TYPES
from events.envelope import encode, new_event
from events.records import KpiRecord
from events.topics import DOMAINS
from streams.settings import StreamsSettings

PARTITIONS = 4
MIN = 60_000


def _air(t_ms: int, i: int) -> bytes:
    data = dict(EVENT_TYPES["vn.ioc.air.observed"].example)
    data.update(station_id=f"AQ-{i % 20:03d}", district=("HD", "NS", "GL", "TK", "CL")[i % 5])
    data["pm25"] = float(5 + i % 150)
    return encode(
        new_event(
            "vn.ioc.air.observed",
            f"/bench/{data['station_id']}",
            data,
            time=datetime.fromtimestamp(t_ms / 1000, UTC),
        )
    )


def _air_at(station: str, t_ms: int) -> bytes:
    data = dict(EVENT_TYPES["vn.ioc.air.observed"].example, station_id=station)
    ts = datetime.fromtimestamp(t_ms / 1000, UTC)
    return encode(new_event("vn.ioc.air.observed", f"/lat/{station}", data, time=ts))


async def _produce(bootstrap: str, topic: str, values: list[tuple[int, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    try:
        # As every producer of ours writes them (CloudEvents Kafka binding, structured
        # mode): the content-type header is what the worker checks for binary mode.
        headers = list(STRUCTURED_HEADERS)
        futs = [await producer.send(topic, v, partition=p, headers=headers) for p, v in values]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def bench_raw(bootstrap: str, topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    counts: dict[tuple[str, int], int] = {}
    seen = 0
    start = time.perf_counter()
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            for recs in batch.values():
                for r in recs:
                    ev = orjson.loads(r.value)
                    key = (ev["data"]["station_id"], ev["time"][:16])
                    counts[key] = counts.get(key, 0) + 1
                seen += len(recs)
    finally:
        await consumer.stop()
    return seen / (time.perf_counter() - start)


# -- (b) naive Faust, in a subprocess ------------------------------------------------------


def _write_result(out: str, rate: float) -> None:
    Path(out).write_text(json.dumps({"events_per_s": rate}))


def faust_worker(bootstrap: str, topic: str, target: int, out: str) -> None:
    """A textbook Faust agent: one windowed-table update per event."""
    import faust

    app = faust.App(
        f"bench-naive-{uuid.uuid4().hex[:6]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        topic_partitions=PARTITIONS,
        broker_session_timeout=10,
        broker_rebalance_timeout=10,
        broker_heartbeat_interval=1,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(Path(out).parent / "faust-data"),
    )
    source = app.topic(topic, value_serializer="raw", partitions=PARTITIONS)
    table = app.Table("counts", default=int, partitions=PARTITIONS).tumbling(60, expires=3600)
    state: dict[str, float] = {"n": 0, "t0": 0.0}

    @app.agent(source)
    async def count(stream: Any) -> None:
        async for value in stream:
            ev = orjson.loads(value)
            table[ev["data"]["station_id"]] += 1
            state["n"] += 1
            if state["n"] == 1:
                state["t0"] = time.perf_counter()
            if state["n"] >= target:
                rate = (state["n"] - 1) / (time.perf_counter() - state["t0"])
                _write_result(out, rate)
                os._exit(0)

    sys.argv = ["faust", "worker", "-l", "warn"]
    app.main()


def bench_faust(bootstrap: str, topic: str, target: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "faust.json"
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_streams", "--faust-worker",
             bootstrap, topic, str(target), str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if not out.exists():
            return 0.0
        return float(json.loads(out.read_text())["events_per_s"])


# -- (c) our worker, in this process ---------------------------------------------------------


def _settings(bootstrap: str, tag: str, engine: str) -> StreamsSettings:
    """The benchmark's topics; each engine gets its own group and internal topics and
    reads the same pre-produced events."""

    own = f".{engine}" if engine else ""
    return StreamsSettings(
        bootstrap_servers=bootstrap,
        group_id=f"bench-{tag}" + (f"-{engine}" if engine else ""),
        events_topic_prefix=f"bench.{tag}.events.",
        kpi_topic=f"bench.{tag}.kpi",
        deadletter_topic=f"bench.{tag}.deadletter",
        partials_topic=f"bench.{tag}{own}.partials",
        state_topic=f"bench.{tag}{own}.state",
        http_port=0,
        idle_timeout_s=30,
    )


async def bench_worker(
    bootstrap: str, tag: str, values: list[tuple[int, bytes]], n: int, last_window: int
) -> dict[str, float]:
    from streams.worker import Worker

    worker = Worker(_settings(bootstrap, tag, ""))
    emitted: list[tuple[float, KpiRecord]] = []
    worker.merge.on_records = lambda recs: emitted.extend((time.perf_counter(), r) for r in recs)
    first_batch: list[float] = []
    orig = worker.events.consumer.getmany

    async def timed_getmany(*a: Any, **k: Any) -> Any:
        batch = await orig(*a, **k)
        if batch and not first_batch:
            first_batch.append(time.perf_counter())
        return batch

    worker.events.consumer.getmany = timed_getmany  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))

    def final_of(window: int) -> float | None:
        for ts, r in emitted:
            if (
                r.final and r.kpi == "air.pm25.avg" and r.scope == "city"
                and int(r.window_start.timestamp() * 1000) == window
                and (r.window_end - r.window_start).total_seconds() == 60
            ):  # fmt: skip
                return ts
        return None

    out: dict[str, float] = {}
    try:
        for _ in range(12_000):  # at most 10 minutes
            if final_of(last_window) is not None:
                break
            await asyncio.sleep(0.05)
        done = final_of(last_window)
        processed = sum(a.processed for a in worker.events.aggs.values())
        if done is None or not first_batch:
            raise RuntimeError(f"worker did not finish: {processed} events applied")
        out["events_per_s"] = n / (done - first_batch[0])
        out["kpi_records"] = len(emitted)
        await asyncio.sleep(2.0)
        out.update(
            await _latencies(
                bootstrap, worker.settings.events_topic_prefix + "air", emitted, worker
            )
        )
    finally:
        stop.set()
        await task
    return out


async def bench_faust_hosted(bootstrap: str, tag: str, n: int, last_window: int) -> float:
    """(d) the same stages hosted by a ``faust.App`` (streams/faust_app.py): batches from
    its consumer, same snapshots and commits; first batch until the last window's final."""
    from streams.faust_app import FaustStreamsHost

    host = FaustStreamsHost(_settings(bootstrap, tag, "faust"))
    finals: list[float] = []
    first_batch: list[float] = []

    def on_records(recs: list[KpiRecord]) -> None:
        for r in recs:
            if (
                r.final and r.kpi == "air.pm25.avg" and r.scope == "city"
                and int(r.window_start.timestamp() * 1000) == last_window
                and (r.window_end - r.window_start).total_seconds() == 60
            ):  # fmt: skip
                finals.append(time.perf_counter())

    host.merge.on_records = on_records
    orig = host.on_batch

    async def timed_on_batch(records: Any) -> None:
        if not first_batch:
            first_batch.append(time.perf_counter())
        await orig(records)

    host.on_batch = timed_on_batch  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(host.run(stop))
    try:
        for _ in range(12_000):  # at most 10 minutes
            if finals or task.done():
                break
            await asyncio.sleep(0.05)
        if not finals or not first_batch:
            processed = sum(a.processed for a in host.events.aggs.values())
            raise RuntimeError(f"faust-hosted worker did not finish: {processed} events applied")
        return n / (finals[0] - first_batch[0])
    finally:
        stop.set()
        await task


async def _latencies(
    bootstrap: str, topic: str, emitted: list[tuple[float, KpiRecord]], worker: Any
) -> dict[str, float]:
    """Final and live latency with the worker caught up (event times far after the bulk)."""
    lateness = worker.settings.allowed_lateness_s * 1000
    # After the bulk (a day ago) and in the past (the rounds end ~17 min ago): event times
    # beyond IOC_MAX_FUTURE_SKEW_S ahead of the worker's clock are dead-lettered.
    hour_ago = int(time.time() * 1000) - 3_600_000
    base = hour_ago - hour_ago % MIN
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    await producer.start()
    live: list[float] = []
    finals: list[float] = []
    try:
        for round_ in range(5):
            window = base + round_ * 10 * MIN
            # live: events spaced 100 ms into one window of one station
            station = f"LAT-{round_}"
            sent: list[float] = []
            for i in range(10):
                await producer.send_and_wait(topic, _air_at(station, window + i), partition=0)
                sent.append(time.perf_counter())
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.6)
            for i, t_sent in enumerate(sent):
                seen = [
                    ts for ts, r in emitted
                    if r.scope == f"station:{station}" and r.kpi == "air.pm25.avg"
                    and (r.window_end - r.window_start).total_seconds() == 60
                    and r.count >= i + 1 and ts >= t_sent
                ]  # fmt: skip
                if seen:
                    live.append((min(seen) - t_sent) * 1000)
            # final: one event per partition moves every watermark past the window end
            t_close = window + MIN + int(lateness)
            closing = [(p, _air_at(f"CLOSE-{p}", t_close)) for p in range(PARTITIONS)]
            futs = [await producer.send(topic, v, partition=p) for p, v in closing]
            await asyncio.gather(*futs)
            t_pass = time.perf_counter()
            deadline = t_pass + 10
            got = None
            while got is None and time.perf_counter() < deadline:
                for ts, r in emitted:
                    if (r.final and r.scope == f"station:{station}" and r.kpi == "air.pm25.avg"
                            and (r.window_end - r.window_start).total_seconds() == 60):  # fmt: skip
                        got = ts
                await asyncio.sleep(0.02)
            if got is not None:
                finals.append((got - t_pass) * 1000)
    finally:
        await producer.stop()
    live.sort()
    p95 = live[min(len(live) - 1, int(0.95 * len(live)))] if live else float("nan")
    return {
        "final_latency_ms": statistics.median(finals) if finals else float("nan"),
        "final_latency_max_ms": max(finals) if finals else float("nan"),
        "live_p95_ms": p95,
        "live_samples": len(live),
    }


async def main(n: int, faust_n: int, broker: Literal["auto", "kafka", "tansu"]) -> None:
    load_at_start = os.getloadavg()[0]
    from ioc import services
    from ioc.settings import ServiceSettings

    settings = ServiceSettings(broker=broker)
    services.up(settings, ("broker",))
    bootstrap = settings.bootstrap_servers
    label = broker_label(bootstrap)
    # Side by side: the Tansu run keeps the historical section and figure names, the
    # Apache Kafka run writes its own ("streams-kafka", figures ending in _kafka).
    suffix = "" if label == "Tansu" else "_kafka"
    tag = uuid.uuid4().hex[:8]
    prefix = f"bench.{tag}.events."
    topic = prefix + "air"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(prefix + d, PARTITIONS, 1) for d in DOMAINS]
            + [NewTopic(f"bench.{tag}.kpi", 4, 1), NewTopic(f"bench.{tag}.deadletter", 1, 1)]
        )
    finally:
        await admin.close()
    # A whole hour a day ago: event times in the future of the worker's clock (beyond
    # IOC_MAX_FUTURE_SKEW_S) would all be dead-lettered as future_time.
    day_ago = int(time.time() * 1000) - 86_400_000
    t0 = day_ago - day_ago % 3_600_000
    step = 15  # ms of event time between events: 200k events = 50 minutes
    values = [(i % PARTITIONS, _air(t0 + i * step, i)) for i in range(n)]
    last = t0 + (n - 1) * step
    last_window = last - last % MIN
    values += [(p, _air(last + 10 * MIN, p)) for p in range(PARTITIONS)]
    print(f"producing {len(values):,} records to {topic} …", flush=True)
    await _produce(bootstrap, topic, values)

    print("(a) raw aiokafka …", flush=True)
    raw = await bench_raw(bootstrap, topic, n)
    print(f"    {raw:,.0f} events/s\n(b) naive Faust ({faust_n:,} events) …", flush=True)
    naive = bench_faust(bootstrap, topic, faust_n)
    print(f"    {naive:,.0f} events/s\n(c) streams worker …", flush=True)
    ours = await bench_worker(bootstrap, tag, values, n, last_window - MIN)
    print(f"    {ours}", flush=True)
    print("(d) streams worker hosted by Faust …", flush=True)
    hosted = await bench_faust_hosted(bootstrap, tag, n, last_window - MIN)
    print(f"    {hosted:,.0f} events/s", flush=True)

    port = os.environ.get("IOC_BROKER_PORT")  # the exact command, as it was run
    cmd = f"IOC_BROKER_PORT={port} " if port else ""
    cmd += f".venv/bin/python -m benchmarks.bench_streams --events {n} --faust-events {faust_n}"
    cmd += f" --broker {'tansu' if label == 'Tansu' else 'kafka'}"
    body = f"""
Same {n:,} pre-produced single-event records (`vn.ioc.air.observed`, {PARTITIONS} partitions,
20 stations in 5 districts, 50 min of event time, each with the header
`content-type: application/cloudevents+json` as our producers write them), {label} broker
on the same machine.
{machine_note(load_at_start)}

| consumer | events/s |
|---|---|
| (a) raw aiokafka `getmany` + orjson + dict aggregation | {raw:,.0f} |
| (b) naive Faust agent, windowed table updated per event (first {faust_n:,} records) | {naive:,.0f} |
| (c) streams worker end to end (consume, validate, window all air KPIs in 3 scopes, emit KPI records) | {ours["events_per_s"]:,.0f} |
| (d) the same worker hosted by a `faust.App` (`--engine faust`: Faust consumer group and timers, batches via a `Consumer` subclass) | {hosted:,.0f} |

Ratios: worker / raw = {ours["events_per_s"] / raw:.2f}; worker / naive Faust = {ours["events_per_s"] / naive if naive else float("nan"):.1f}.
Faust-hosted / aiokafka-hosted worker = {hosted / ours["events_per_s"]:.2f} (run after (c), on the same records).
The worker emitted {int(ours["kpi_records"]):,} KPI records during the run.

Latency with the worker caught up (5 rounds):
- final result: watermark passes the window end (closing events produced) -> final record
  acked on the KPI topic: median {ours["final_latency_ms"]:.0f} ms, max {ours["final_latency_max_ms"]:.0f} ms
  (target < 2000 ms);
- live value: event produced -> first live record including it: p95 {ours["live_p95_ms"]:.0f} ms
  over {int(ours["live_samples"])} events (target < 1500 ms; live values are throttled to 1/s per window).
"""  # noqa: E501
    figures = {
        "streams_events_per_s": round(ours["events_per_s"]),
        "raw_aiokafka_events_per_s": round(raw),
        "naive_faust_events_per_s": round(naive),
        "streams_vs_raw_ratio": round(ours["events_per_s"] / raw, 3),
        "streams_vs_naive_faust_ratio": round(ours["events_per_s"] / naive, 2) if naive else 0,
        "streams_final_latency_ms": round(ours["final_latency_ms"]),
        "streams_live_p95_ms": round(ours["live_p95_ms"]),
        "faust_hosted_events_per_s": round(hosted),
    }
    section = "streams" if label == "Tansu" else "streams-kafka"
    record(section, cmd, body, {f"{k}{suffix}": v for k, v in figures.items()})
    print("recorded in docs/benchmarks.md", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--faust-worker":
        faust_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--faust-events", type=int, default=30_000)
    parser.add_argument(
        "--broker", choices=["auto", "kafka", "tansu"], default="auto", help="same as IOC_BROKER"
    )
    args = parser.parse_args()
    asyncio.run(main(args.events, args.faust_events, args.broker))
