"""One chaos run: services, components, scenarios in sequence, the wait for finals, rows.

Each scenario (one fault row) sends its own stations' events for ``duration_s`` while its
fault runs; all rows are then checked once every acknowledged window of every scenario
is final, every acknowledged event has its raw row and every too-late one its dead letter
(or the deadline passed: what is missing then counts as lost).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from chaos.badinput import BadInput, BadTally, generate, send_all
from chaos.faults import Fault, Outcome
from chaos.ledger import Ledger, Observed, Verdict, compare
from chaos.observe import Tail, raw_rows
from chaos.pushclients import Gaps
from chaos.stack import Ports, Stack, metric
from chaos.traffic import (
    Endpoints,
    EventMaker,
    HttpWay,
    Injection,
    KafkaWay,
    MqttWay,
    Ticker,
    Traffic,
    Way,
)
from ingest.settings import IngestSettings
from ioc import services
from ioc.commands.ingest import DEMO_KEY, provision_demo_key
from ioc.services import mqtt_accounts
from ioc.settings import ServiceSettings

log = structlog.get_logger("chaos.run")

Progress = Callable[[str], None]
DUPLICATES = "ioc_streams_duplicates_total"


@dataclass
class Scenario:
    fault: Fault
    duration_s: float
    rate: float  # events per second over the three ways in
    stations: int = 12

    def engine(self, cfg: Config) -> str:
        """The stream worker's engine while this row runs (its fault's, else the run's)."""
        return self.fault.engine or cfg.engine


@dataclass(frozen=True, slots=True)
class Config:
    scenarios: list[Scenario]
    # shortened event-time bounds make windows final sooner (see docs/reliability.md)
    allowed_lateness_s: float = 120.0
    late_grace_s: float = 120.0
    idle_timeout_s: float = 10.0
    engine: str = "aiokafka"
    ports: Ports = field(default_factory=Ports)
    seed: int = 9
    settle_timeout_s: float = 300.0
    bad_inputs: int = 0  # malformed inputs after the fault rows (hypothesis)

    @property
    def injection(self) -> Injection:
        return Injection(out_of_order_max_ms=int(self.allowed_lateness_s * 500))

    @property
    def engines(self) -> list[str]:
        """The stream engines of the run, in the order the rows use them."""
        return list(dict.fromkeys(sc.engine(self) for sc in self.scenarios))


@dataclass(frozen=True, slots=True)
class Row:
    fault: str
    injected: str
    verdict: Verdict
    recovery_s: list[float]
    recovered: bool
    evidence: list[str]
    out_of_order: int
    duplicates: int
    by_way: dict[str, int]
    clients: Gaps | None = None  # websocket clients' windows (the push server row)

    @property
    def recovery(self) -> str:
        if not self.recovery_s:
            return "-"
        if len(self.recovery_s) == 1:
            return f"{self.recovery_s[0]:.1f}"
        return f"{statistics.median(self.recovery_s):.1f} (max {max(self.recovery_s):.1f})"


@dataclass(frozen=True, slots=True)
class Result:
    rows: list[Row]
    bad: BadTally | None


@dataclass
class _Done:
    scenario: Scenario
    ledger: Ledger
    stations: set[str]
    outcome: Outcome
    out_of_order: int


async def run(
    cfg: Config,
    settings: ServiceSettings,
    log_dir: Path,
    say: Progress,
) -> Result:
    """The whole run; services are started if needed (and those started stopped again).
    Component logs go to ``log_dir/<run tag>/``."""
    tag = uuid.uuid4().hex[:6]
    rng = random.Random(cfg.seed)
    log_dir = log_dir / tag  # one directory per run: <component>-<start>.log
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    inputs: list[BadInput] = []
    if cfg.bad_inputs:
        # before any other thread runs: hypothesis watches the global random state
        say(f"bad input: generating {cfg.bad_inputs:,} with hypothesis")
        inputs = generate(tag, cfg.bad_inputs, cfg.seed)
    say("services: starting")
    started = await asyncio.to_thread(services.up, settings, services.SERVICES)
    # HTTP (and MQTT) senders need an ingest key: the demo's, as `ioc up` makes it
    demo_key = IngestSettings().ingest_demo_key
    await asyncio.to_thread(provision_demo_key, settings, demo_key)
    await asyncio.to_thread(mqtt_accounts.wait_for_login, settings, (DEMO_KEY, demo_key))
    streams_env = {
        "IOC_STREAMS_ALLOWED_LATENESS_S": str(cfg.allowed_lateness_s),
        "IOC_STREAMS_LATE_GRACE_S": str(cfg.late_grace_s),
        "IOC_STREAMS_IDLE_TIMEOUT_S": str(cfg.idle_timeout_s),
    }
    first = cfg.scenarios[0].engine(cfg) if cfg.scenarios else cfg.engine
    with_ws = any(sc.fault.needs_ws for sc in cfg.scenarios)
    stack = Stack(settings, tag, log_dir, cfg.ports, streams_env, first, with_ws)
    tail = Tail(settings.bootstrap_servers, tag)
    ticker = Ticker(settings.bootstrap_servers, tag)
    ends = Endpoints(
        settings.bootstrap_servers,
        f"http://127.0.0.1:{cfg.ports.ingest}/events",
        settings.host,
        settings.mqtt_port,
    )
    ways: list[Way] = [
        KafkaWay(ends.bootstrap_servers),
        HttpWay(ends.http_url, demo_key),
        MqttWay(ends.mqtt_host, ends.mqtt_port, f"chaos-pub-{tag}", (DEMO_KEY, demo_key)),
    ]
    since = datetime.now(UTC) - timedelta(minutes=30)
    done: list[_Done] = []
    try:
        say(f"run {tag}: starting ingest, streams ({first}), storage{', ws' if with_ws else ''}")
        await stack.start()
        await tail.start()
        await ticker.start()
        for w in ways:
            await w.start()
        for i, sc in enumerate(cfg.scenarios):
            if sc.engine(cfg) != stack.engine:
                say(f"stream worker: switching to {sc.engine(cfg)}")
                await stack.use_engine(sc.engine(cfg))
            say(f"[{i + 1}/{len(cfg.scenarios)}] {sc.fault.name}: {sc.duration_s:.0f} s")
            done.append(await _scenario(stack, tag, i, sc, ways, cfg.injection, rng))
        bad: BadTally | None = None
        expect: dict[int, str] = {}
        repeats_before = 0.0
        if inputs:
            repeats_before = await metric(cfg.ports.streams, DUPLICATES)
            say(f"bad input: sending {len(inputs):,} through Kafka, HTTP and MQTT")
            bad = BadTally()
            expect = await send_all(inputs, {w.name: w for w in ways}, bad)
        say("waiting for final windows, raw rows and dead letters")
        await _settle(done, tail, settings, tag, since, cfg.settle_timeout_s, say, expect)
        rows = [await _row(d, tail, settings, tag, since) for d in done]
        if bad is not None:
            for n, kind in expect.items():
                if reasons := tail.bad.get(n):
                    bad.dead_lettered[kind] += 1
                    bad.reasons.update(set(reasons))
                else:
                    bad.unaccounted.append(kind)
            deadline = time.monotonic() + 60
            while True:  # the repeats may still be on their way (an MQTT batch)
                dropped = await metric(cfg.ports.streams, DUPLICATES) - repeats_before
                if dropped >= bad.repeats_sent or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1.0)
            bad.repeats_dropped = int(dropped)
            bad.crashes = len(stack.unexpected_exits) + sum(
                1 for c in stack.components if not c.alive
            )
        if stack.unexpected_exits:
            log.warning("components exited by themselves", exits=stack.unexpected_exits)
        return Result(rows, bad)
    finally:
        for sc in cfg.scenarios:
            await sc.fault.close()
        for w in ways:
            await w.stop()
        await ticker.stop()
        await tail.stop()
        await stack.stop()
        if started:
            await asyncio.to_thread(services.down, settings, tuple(started))


async def _scenario(
    stack: Stack,
    tag: str,
    index: int,
    sc: Scenario,
    ways: list[Way],
    injection: Injection,
    rng: random.Random,
) -> _Done:
    maker = EventMaker(tag, f"s{index}", sc.stations, rng)
    await sc.fault.prepare(stack, list(maker.stations))
    ledger = Ledger()
    traffic = Traffic(maker, ways, ledger, injection, rng)
    fault_task = asyncio.create_task(sc.fault.run(stack, sc.duration_s, rng))
    await traffic.run(sc.duration_s, sc.rate)
    outcome = await fault_task  # a fault may outlast the traffic (e.g. its last recovery)
    return _Done(sc, ledger, set(maker.stations), outcome, traffic.sent_out_of_order)


async def _settle(
    done: list[_Done],
    tail: Tail,
    settings: ServiceSettings,
    tag: str,
    since: datetime,
    within_s: float,
    say: Progress,
    expect_dead: dict[int, str],
) -> None:
    deadline = time.monotonic() + within_s
    while True:
        raw = await raw_rows(settings.effective_database_url, tag, since)
        waiting = 0
        for d in done:
            finals = tail.finals(d.stations)
            must = d.ledger.windows(acked_only=True)
            waiting += sum(1 for k in must if k not in finals)
            waiting += sum(1 for e in d.ledger.acknowledged() if e.id not in raw)
            waiting += sum(
                1
                for e in d.ledger.acknowledged()
                if e.too_late and "too_late" not in tail.dead.get(e.id, [])
            )
            waiting += len(tail.open_windows(d.stations))
            waiting += d.scenario.fault.waiting(finals)
        waiting += sum(1 for n in expect_dead if n not in tail.bad)
        say(f"waiting for {waiting} windows/rows/dead letters ({tail.records:,} records read)")
        if waiting == 0:
            return
        if time.monotonic() > deadline:
            log.warning("settle deadline passed", waiting=waiting)
            return
        await asyncio.sleep(2.0)


async def _row(d: _Done, tail: Tail, settings: ServiceSettings, tag: str, since: datetime) -> Row:
    raw = await raw_rows(settings.effective_database_url, tag, since)
    mine = {e for e in d.ledger.events}
    seen = Observed(
        final_counts=tail.finals(d.stations),
        raw_rows={i: n for i, n in raw.items() if i in mine or i.startswith(_prefix(d))},
        dead_letters={i: r for i, r in tail.dead.items() if i in mine},
    )
    verdict = compare(d.ledger, seen)
    clients = await d.scenario.fault.finish(seen.final_counts)
    if clients is not None:
        # a client's gap is a loss for that client: counted with the row's events
        verdict = replace(
            verdict,
            lost=verdict.lost + clients.missing,
            duplicated=verdict.duplicated + clients.above,
            misplaced=verdict.misplaced + clients.unknown + clients.seq_errors,
            details=verdict.details + clients.details,
        )
    for line in verdict.details[:20]:
        log.warning("mismatch", fault=d.scenario.fault.name, detail=line)
    return Row(
        fault=d.scenario.fault.name,
        injected=d.scenario.fault.injected,
        verdict=verdict,
        recovery_s=d.outcome.recovery_s,
        recovered=d.outcome.recovered,
        evidence=d.outcome.evidence,
        out_of_order=d.out_of_order,
        duplicates=d.ledger.duplicates_sent,
        by_way=dict(d.ledger.by_way),
        clients=clients,
    )


def _prefix(d: _Done) -> str:
    # event ids are "<run>-s<index>-<n>"; the first one names the scenario's prefix
    first = next(iter(d.ledger.events), "")
    return first.rsplit("-", 1)[0] + "-" if first else "\0"
