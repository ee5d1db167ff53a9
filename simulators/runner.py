"""The publishing loop: paces generation with a token bucket and maps real time to
simulated time.

Each iteration takes the tokens the bucket holds (the events due since the last one),
asks the generator for that many events covering the simulated time elapsed since the
previous batch (real elapsed x ``speed``), applies the injections and hands the records
to the publisher. There is no per-event sleep; the loop sleeps only when the bucket is
empty. When the broker falls behind (more than ``max_outstanding`` unacknowledged
records) the loop waits for it instead of queueing without bound, so the reported rate
is what the broker actually takes.

Above ~20,000 events/s one Python process (generation + kafka-python) is the limit, so
``workers > 1`` runs that many processes, each with its own producer, its own share of
the rate and its own random stream (worker index in the seed and in the event ids).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from simulators.generator import ProvinceSimulator
from simulators.injection import Injector, Record
from simulators.model import build_province
from simulators.publisher import Publisher, create_publisher
from simulators.ratelimit import TokenBucket
from simulators.scenarios import Schedule, parse_scenarios
from simulators.settings import SimulatorSettings, default_start
from simulators.signals import FaultModel

log = structlog.get_logger(__name__)

MAX_BATCH = 5000


@dataclass(slots=True)
class Progress:
    """Cumulative counts of a run, reported every ``progress_interval_s``."""

    elapsed_s: float = 0.0
    sim_time: datetime | None = None
    sent: int = 0
    acked: int = 0
    failed: int = 0
    by_domain: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    scenarios: tuple[str, ...] = ()
    idempotent: bool = False
    done: bool = False

    def merge(self, other: Progress) -> None:
        self.sent += other.sent
        self.acked += other.acked
        self.failed += other.failed
        self.by_domain.update(other.by_domain)
        self.by_kind.update(other.by_kind)


ProgressCallback = Callable[[Progress], None]
StopCheck = Callable[[], bool]


def build_simulator(settings: SimulatorSettings, worker: int = 0) -> ProvinceSimulator:
    """The generator for these settings (start = settings.start or now)."""
    start = default_start(settings, datetime.now(UTC))
    province = build_province(settings.seed)
    schedule = Schedule(parse_scenarios(settings.scenario), province, start.timestamp())
    faults = FaultModel(settings.seed) if settings.faults else None
    return ProvinceSimulator(province, schedule, seed=settings.seed, worker=worker, faults=faults)


def build_injector(settings: SimulatorSettings, worker: int = 0) -> Injector:
    return Injector(
        seed=settings.seed * 1000 + worker,
        late=settings.late,
        late_by_s=settings.late_by_s,
        out_of_order=settings.out_of_order,
        duplicates=settings.duplicates,
        malformed=settings.malformed,
    )


def _count(progress: Progress, records: list[Record]) -> None:
    for r in records:
        progress.by_domain[r.domain] += 1
        if r.kind != "ok":
            progress.by_kind[r.kind.split(":", 1)[0]] += 1


def run_worker(
    settings: SimulatorSettings,
    *,
    worker: int = 0,
    rate: float | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> Progress:
    """Publish until ``duration`` has passed or ``should_stop()``; return the totals."""
    rate = rate or settings.rate
    # The simulation starts at the same simulated instant in every worker.
    if settings.start is None:
        settings = settings.model_copy(update={"start": default_start(settings, datetime.now(UTC))})
    simulator = build_simulator(settings, worker)
    injector = build_injector(settings, worker)
    publisher = create_publisher(settings)
    progress = Progress(idempotent=publisher.idempotent)
    bucket = TokenBucket.for_rate(rate)
    batch_most = max(1, min(MAX_BATCH, int(rate * 0.05)))
    # Never more than ~2 s of events (at least 20k records) waiting for the broker.
    max_outstanding = max(20_000, int(rate * 2))
    sim_start = simulator.schedule.sim_start_s
    sim_cursor = sim_start
    began = time.monotonic()
    next_report = began + settings.progress_interval_s
    log.info(
        "simulator_started",
        worker=worker,
        rate=rate,
        speed=settings.speed,
        scenario=settings.scenario,
        idempotent=publisher.idempotent,
    )
    try:
        while True:
            now = time.monotonic()
            elapsed = now - began
            if (settings.duration is not None and elapsed >= settings.duration) or (
                should_stop is not None and should_stop()
            ):
                break
            if now >= next_report:
                _report(progress, publisher, simulator, elapsed, on_progress)
                next_report = now + settings.progress_interval_s
            if publisher.outstanding > max_outstanding:
                time.sleep(0.005)
                continue
            n = bucket.take(now, batch_most)
            if n == 0:
                time.sleep(min(0.05, bucket.wait_time(now, max(1, batch_most // 2))))
                continue
            sim_end = sim_start + elapsed * settings.speed
            events = simulator.generate(sim_cursor, max(sim_end, sim_cursor), n)
            sim_cursor = max(sim_end, sim_cursor)
            records = injector.records(events)
            publisher.send(records)
            _count(progress, records)
        publisher.flush()
    finally:
        publisher.close()
    progress.done = True
    _report(progress, publisher, simulator, time.monotonic() - began, on_progress)
    log.info(
        "simulator_stopped",
        worker=worker,
        sent=progress.sent,
        acked=progress.acked,
        failed=progress.failed,
    )
    return progress


def _report(
    progress: Progress,
    publisher: Publisher,
    simulator: ProvinceSimulator,
    elapsed: float,
    on_progress: ProgressCallback | None,
) -> None:
    progress.elapsed_s = elapsed
    progress.sent, progress.acked, progress.failed = (
        publisher.sent,
        publisher.acked,
        publisher.failed,
    )
    m = simulator.moment
    if m is not None:
        progress.sim_time = datetime.fromtimestamp(m.epoch_s, UTC)
        progress.scenarios = tuple(f"{r.name}:{r.target}" for r in m.scenarios)
    if on_progress is not None:
        on_progress(progress)


# -- several processes ---------------------------------------------------------------


def _worker_main(
    settings: SimulatorSettings, worker: int, rate: float, reports: Any, stop: Any
) -> None:
    # The parent decides when to stop (Ctrl-C reaches the whole process group; SIGTERM
    # from a supervisor too): a worker only finishes its batch, flushes and reports.
    terminated = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: terminated.set())
    logging.getLogger("kafka").setLevel(logging.WARNING)

    def forward(p: Progress) -> None:
        reports.put((worker, p))

    def should_stop() -> bool:
        return bool(stop.is_set() or terminated.is_set())

    run_worker(settings, worker=worker, rate=rate, on_progress=forward, should_stop=should_stop)


def run(
    settings: SimulatorSettings,
    *,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> Progress:
    """Run the simulator with ``settings.workers`` processes; return the totals."""
    workers = settings.effective_workers
    if workers == 1:
        return run_worker(settings, on_progress=on_progress, should_stop=should_stop)
    settings = settings.model_copy(update={"start": default_start(settings, datetime.now(UTC))})
    ctx = mp.get_context("spawn")
    reports = ctx.Queue()
    stop = ctx.Event()
    share = settings.rate / workers
    procs = [
        ctx.Process(target=_worker_main, args=(settings, w, share, reports, stop), daemon=True)
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    latest: dict[int, Progress] = {}
    began = time.monotonic()
    try:
        while any(p.is_alive() for p in procs) or not reports.empty():
            if should_stop is not None and should_stop():
                stop.set()
            try:
                worker, p = reports.get(timeout=0.2)
            except queue.Empty:
                continue
            latest[worker] = p
            if on_progress is not None:
                on_progress(_combine(latest, time.monotonic() - began))
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=60)
    total = _combine(latest, time.monotonic() - began)
    total.done = True
    return total


def _combine(latest: dict[int, Progress], elapsed: float) -> Progress:
    # Each worker times its own run (process start-up excluded), like a single worker.
    total = Progress(elapsed_s=max((p.elapsed_s for p in latest.values()), default=elapsed))
    for p in latest.values():
        total.merge(p)
        total.sim_time = p.sim_time
        total.scenarios = p.scenarios
        total.idempotent = p.idempotent
    return total
