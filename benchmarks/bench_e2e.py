"""The whole system, sensor to wall: `ioc up` under extra simulator load, step by step.

    .venv/bin/python -m benchmarks.bench_e2e --broker kafka [--steps 0,1000,5000,10000,20000]
    (or `ioc bench e2e --broker kafka`)

Runs the demo (`ioc up`: broker, TimescaleDB, Mosquitto, every component and the demo
simulator at 200 ev/s) and, per step, adds `ioc simulate --rate R --producer aiokafka`
(the generator's cheapest path) on the same machine. Throughout, a marker
`vn.ioc.air.observed` event for a fresh station id is produced to Kafka every
``--marker-interval`` seconds, and a websocket client of the real push server, subscribed
to `air.pm25.avg` for the marker stations, times the first `update` that holds each
marker's station: event → wall. A marker that never reaches the wall within
``--marker-timeout`` seconds counts as infinitely late (it is never dropped), so the
percentiles show it.

Per step it records the input rate achieved (end offsets of the event topics), the rate
the stream worker applied, its consumer lag over time (sustained = the lag does not grow
in the step's second half), KPI records emitted per input event, sink rows/s, and the CPU
share and RSS of every process. Results go to a section of docs/benchmarks.md, a chart
(docs/bench_e2e_<broker>.png) and the figures `e2e_p95_ms_idle`, `e2e_p95_ms_5k`,
`e2e_max_sustained_events_per_s`, `kpi_records_per_event_demo` and
`e2e_final_p95_ms_idle` / `_5k` (the final record of each marker's 1-min window on
`ioc.kpi`, from its end plus the allowed lateness; finals arriving during the step)
(suffixed `_tansu` on Tansu). Not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from kafka import KafkaConsumer, TopicPartition
from rich.console import Console

from benchmarks.e2e_markers import Markers
from benchmarks.e2e_report import Step, fmt_ms, median, report
from benchmarks.soak import process_groups
from events import topics
from events.topics import DOMAINS
from ioc.settings import ServiceSettings
from streams.settings import StreamsSettings

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = Path(__file__).resolve().parent / "e2e"
console = Console(stderr=True)
TICKS = os.sysconf("SC_CLK_TCK")
# A stack of its own (state directory, ports): a fresh broker and database, so no backlog
# of earlier runs sits in front of the markers, and a running demo is not disturbed.
PORTS = {"ws": 18180, "streams": 18191, "storage": 18192}
STACK_ENV = {
    "IOC_BROKER_PORT": "19692",
    "IOC_CONTROLLER_PORT": "19693",
    "IOC_DB_PORT": "55932",
    "IOC_MQTT_PORT": "19983",
    "IOC_WS_PORT": str(PORTS["ws"]),
    "IOC_STREAMS_HTTP_PORT": str(PORTS["streams"]),
    "IOC_STORAGE_HTTP_PORT": str(PORTS["storage"]),
    "IOC_INGEST_HTTP_PORT": "18181",
    "IOC_ALERTS_HTTP_PORT": "18194",
    "IOC_SIM_METRICS_PORT": "18193",
}


async def _metrics(session: aiohttp.ClientSession, port: int) -> dict[str, float]:
    """Prometheus text of a component: each sample summed over its labels."""
    out: dict[str, float] = {}
    try:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            text = await resp.text()
    except aiohttp.ClientError:
        return out
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        name = sample.split("{", 1)[0]
        with contextlib.suppress(ValueError):
            out[name] = out.get(name, 0.0) + float(value)
            if name != sample:  # also each labelled sample, e.g. name{phase="apply"}
                out[sample] = float(value)
    return out


def _event_offsets(consumer: KafkaConsumer) -> int:
    tps = [
        TopicPartition(topics.events_topic(d), p)
        for d in DOMAINS
        for p in consumer.partitions_for_topic(topics.events_topic(d)) or ()
    ]
    return sum(consumer.end_offsets(tps).values())


def _cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def _rss_mb(pids: list[int]) -> float:
    kb = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kb += int(line.split()[1])
    return kb / 1024


async def _wait_healthy(session: aiohttp.ClientSession, demo: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 240
    for name, port in PORTS.items():
        while True:
            if demo.poll() is not None:
                raise SystemExit(f"`ioc up` exited ({demo.returncode}) before {name} was up")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        break
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} did not answer on port {port} within 240 s")
            await asyncio.sleep(0.5)  # polling interval


def _spawn(
    argv: list[str], out: Any = subprocess.DEVNULL, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`ioc <argv>` in its own process group (so it can be stopped with its children)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ioc", *argv],
        stdout=out,
        stderr=subprocess.STDOUT if out is not subprocess.DEVNULL else subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )


async def run_step(
    step: Step,
    markers: Markers,
    session: aiohttp.ClientSession,
    consumer: KafkaConsumer,
    groups: dict[str, list[int]],
    args: argparse.Namespace,
) -> None:
    load: subprocess.Popen[bytes] | None = None
    load_log: Any = None
    if step.extra_rate:
        rate = str(step.extra_rate)
        duration = str(step.seconds + 5)
        load_log = (OUT_DIR / f"load-{step.extra_rate}.log").open("wb")
        load = _spawn(
            [
                *("simulate", "--rate", rate, "--producer", "aiokafka", "--no-live"),
                *("--seed", rate, "--duration", duration),
            ],
            load_log,
            # (no metrics port: the demo's simulator holds IOC_SIM_METRICS_PORT)
            env={**os.environ, "IOC_SIM_METRICS_PORT": "0"},
        )
        groups = {**groups, "load generator": [load.pid]}
    begin = time.monotonic()
    offsets0 = await asyncio.to_thread(_event_offsets, consumer)
    streams0 = await _metrics(session, PORTS["streams"])
    storage0 = await _metrics(session, PORTS["storage"])
    ticks0 = {name: _cpu_ticks(pids) for name, pids in groups.items()}
    rss: dict[str, float] = {}
    while (elapsed := time.monotonic() - begin) < step.seconds:
        m = await _metrics(session, PORTS["streams"])
        step.lag_series.append((elapsed, m.get("ioc_streams_lag_records", 0.0)))
        for name, pids in groups.items():
            rss[name] = max(rss.get(name, 0.0), _rss_mb(pids))
        await asyncio.sleep(1.0)  # sampling interval
    seconds = time.monotonic() - begin
    offsets1 = await asyncio.to_thread(_event_offsets, consumer)
    streams1 = await _metrics(session, PORTS["streams"])
    storage1 = await _metrics(session, PORTS["storage"])
    step.cpu = {
        name: 100 * (_cpu_ticks(pids) - ticks0[name]) / TICKS / seconds
        for name, pids in groups.items()
    }
    step.rss_mb = rss
    step.input_rate = (offsets1 - offsets0) / seconds

    def rate(a: dict[str, float], b: dict[str, float], key: str) -> float:
        return (b.get(key, 0.0) - a.get(key, 0.0)) / seconds

    step.applied_rate = rate(streams0, streams1, "ioc_streams_events_total")
    step.phases = {
        phase: rate(streams0, streams1, f'ioc_streams_phase_seconds_total{{phase="{phase}"}}')
        for phase in ("apply", "publish", "checkpoint", "flush")
    }
    step.kpi_rate = rate(streams0, streams1, "ioc_streams_kpi_records_total")
    step.sink_rate = rate(storage0, storage1, "ioc_sink_rows_total")
    if load is not None:
        if load.poll() not in (None, 0):
            raise SystemExit(
                f"the load generator failed ({load.returncode}): see {OUT_DIR}/load-*.log"
            )
        with contextlib.suppress(ProcessLookupError):
            os.killpg(load.pid, signal.SIGTERM)
        load.wait()
        load_log.close()
    # Markers sent during the step: wait until each arrived or timed out.
    end = begin + seconds
    while any(
        n not in markers.seen and time.monotonic() - t < args.marker_timeout
        for n, t in markers.sent.items()
        if begin <= t < end
    ):
        markers.arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(markers.arrived.wait(), 0.5)
    step.lags_s = markers.lags(begin, end, args.marker_timeout)
    step.hops = markers.hop_medians(begin, end)
    step.finals_s = markers.finals_between(begin, end)
    step.finals_wm_s = markers.finals_after_watermark(begin, end)


def idle_seconds() -> float:
    return StreamsSettings().allowed_lateness_s + 90


async def main_async(args: argparse.Namespace, env: dict[str, str]) -> None:
    load = os.getloadavg()[0]
    settings = ServiceSettings(broker=args.broker)
    OUT_DIR.mkdir(exist_ok=True)
    log_file = OUT_DIR / f"{args.broker}.log"
    with log_file.open("wb") as log:
        demo = _spawn(["up"], log, env=env)
    steps = [Step(int(r), args.step_seconds) for r in args.steps.split(",")]
    if steps and steps[0].extra_rate == 0:
        # Long enough for the final records of the step's own markers (a window is final
        # once the watermark, event time minus the allowed lateness, passes its end).
        steps[0].seconds = max(args.step_seconds, idle_seconds())
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            with console.status("starting `ioc up`…"):
                await _wait_healthy(session, demo)
            from events.brokers import is_tansu

            broker = "Tansu" if is_tansu(settings.bootstrap_servers) else "Apache Kafka"
            markers = Markers(settings.bootstrap_servers, args.token, PORTS["ws"])
            tasks.append(asyncio.create_task(markers.watch()))
            tasks.append(asyncio.create_task(markers.trace("ioc.streams.partials")))
            await asyncio.wait_for(markers.subscribed.wait(), 30)
            tasks.append(asyncio.create_task(markers.send(args.marker_interval, stop)))
            consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
            await asyncio.to_thread(consumer.topics)  # load metadata for every topic
            # The stack's first minute (topics, groups joining, the first windows) is not
            # part of any step; markers sent meanwhile are not counted.
            with console.status(f"warming up for {args.warmup:.0f} s…"):
                await asyncio.sleep(args.warmup)
            for step in steps:
                groups = process_groups(settings, demo.pid)
                console.print(f"step +{step.extra_rate:,} ev/s for {step.seconds:.0f} s…")
                await run_step(step, markers, session, consumer, groups, args)
                console.print(
                    f"  input {step.input_rate:,.0f} ev/s, applied {step.applied_rate:,.0f}, "
                    f"p50 {fmt_ms(step.pct(0.5))} ms, p95 {fmt_ms(step.pct(0.95))} ms, "
                    f"lag growth {step.lag_growth:+,.0f}/s, "
                    f"KPI/event {step.kpi_per_event:.2f}, "
                    f"finals {len(step.finals_s)} (of {len(markers.finals)} so far), "
                    f"after the watermark p50 {fmt_ms(median(step.finals_wm_s or [math.nan]))} ms"
                )
                if step.extra_rate and not step.sustained and step is not steps[-1]:
                    console.print("  fell behind: later steps would only be further behind")
                    steps = steps[: steps.index(step) + 1]
                    break
            consumer.close()
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        # A marker task that died (its consumer failed, say) would leave its figures
        # silently short: that is a failed run, not a result.
        died = [
            r
            for r in await asyncio.gather(*tasks, return_exceptions=True)
            if isinstance(r, Exception)
        ]
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        services_down(Path(args.state_dir), args.broker)
    if died:
        raise SystemExit(f"bench_e2e failed: a marker task died: {died[0]!r}")
    report(steps, args, broker, load)


def fresh_stack(args: argparse.Namespace) -> dict[str, str]:
    """Wipe the benchmark's own state directory (never another one) and return the
    environment of its stack; this process's settings use it too."""
    state_dir = Path(args.state_dir)
    if state_dir.exists():  # a fresh stack every run (ours only: refuse other directories)
        if not (state_dir / ".bench-e2e").exists():
            raise SystemExit(f"{state_dir} exists and is not a bench_e2e state directory")
        services_down(state_dir, args.broker)
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    (state_dir / ".bench-e2e").touch()
    env = {**os.environ, **STACK_ENV, "IOC_BROKER": args.broker, "IOC_STATE_DIR": str(state_dir)}
    env["IOC_STREAMS_ENGINE"] = args.engine
    os.environ.update(env)
    return env


def services_down(state_dir: Path, broker: str) -> None:
    """Stop the services of the benchmark's own stack (a previous run's, or this one's)."""
    env = {**os.environ, **STACK_ENV, "IOC_BROKER": broker, "IOC_STATE_DIR": str(state_dir)}
    subprocess.run(
        [sys.executable, "-m", "ioc", "services", "down"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", choices=["kafka", "tansu"], required=True)
    parser.add_argument("--engine", choices=["faust", "aiokafka"], default="faust")
    parser.add_argument("--steps", default="0,1000,5000,10000,20000")
    parser.add_argument("--step-seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before step 1")
    parser.add_argument("--marker-interval", type=float, default=1.0)
    parser.add_argument("--marker-timeout", type=float, default=30.0)
    parser.add_argument("--token", default="wall-viewer")
    parser.add_argument(
        "--state-dir", default="/tmp/ioc-bench-e2e", help="the stack's own, wiped at start"
    )
    args = parser.parse_args()
    asyncio.run(main_async(args, fresh_stack(args)))


if __name__ == "__main__":
    main()
