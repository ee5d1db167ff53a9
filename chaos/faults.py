"""The fault rows: what is done to the stack while a scenario's events flow.

Each fault returns its recovery times (seconds from the fault to the component working
again, as its own log tells) and evidence that the recovery ran.
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

import structlog

from chaos.pushclients import Fleet, Gaps, gaps
from chaos.stack import Process, Stack, metric, wait_http, wait_log
from ioc.services import timescale

log = structlog.get_logger("chaos.faults")

# the restarted stream worker read its partitions' state back (stage 1)
_RESTORED = re.compile(
    rb'"stage1\.assigned".*"restored": [1-9]|"restored": [1-9].*"stage1\.assigned"'
)


@dataclass
class Outcome:
    recovery_s: list[float] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    recovered: bool = True


class Fault:
    """No fault: duplicates, out-of-order and too-late events only."""

    name = "none (5 % duplicates, 5 % out of order, 1 % too late)"

    @property
    def injected(self) -> str:
        return "-"

    engine: str | None = None  # the stream worker's engine for the row (None: the run's)
    needs_ws: bool = False  # the row needs the push server in the stack

    async def prepare(self, stack: Stack, stations: list[str]) -> None:
        """Before the row's events are sent (e.g. clients that watch its stations)."""

    def waiting(self, finals: dict[tuple[str, int], int]) -> int:
        """What the run must still wait for besides the final windows (0: nothing)."""
        return 0

    async def finish(self, finals: dict[tuple[str, int], int]) -> Gaps | None:
        """After the run settled: a check of its own (the clients' windows), if any."""
        return None

    async def close(self) -> None:
        """At the end of the run, whatever happened: stop what :meth:`prepare` started."""

    async def run(self, stack: Stack, duration_s: float, rng: random.Random) -> Outcome:
        before = await metric(stack.ports.streams, "ioc_streams_duplicates_total")
        await asyncio.sleep(duration_s)  # the scenario's length: nothing is done meanwhile
        after = await metric(stack.ports.streams, "ioc_streams_duplicates_total")
        return Outcome(evidence=[f"worker dropped {after - before:.0f} repeats meanwhile"])


async def _wait_restored(worker: Process, within_s: float) -> float:
    deadline = time.monotonic() + within_s
    while not _RESTORED.search(worker.current_log()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{worker.name} did not restore its state within {within_s:.0f}s")
        await asyncio.sleep(0.2)
    return time.monotonic()


@dataclass
class KillStreams(Fault):
    """SIGKILL the stream worker ``times`` times at random points; restarted at once."""

    times: int = 10
    engine: str | None = "aiokafka"

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"SIGKILL streams worker ({self.engine})"

    @property
    def injected(self) -> str:
        return f"{self.times} × SIGKILL"

    async def run(self, stack: Stack, duration_s: float, rng: random.Random) -> Outcome:
        out = Outcome()
        gap = duration_s / self.times
        for i in range(self.times):
            await asyncio.sleep(rng.uniform(0.2, 1.0) * gap)  # a random point of the run
            killed_at = await stack.kill_and_restart(stack.streams)
            try:
                back = await _wait_restored(stack.streams, 180)
            except TimeoutError as exc:
                out.recovered = False
                out.evidence.append(str(exc))
                return out
            out.recovery_s.append(back - killed_at)
            log.info("worker restored", kill=i + 1, recovery_s=round(back - killed_at, 1))
        dropped = await metric(stack.ports.streams, "ioc_streams_duplicates_total")
        out.evidence.append(
            f"{self.times}/{self.times} restarts restored their state (log: stage1.assigned "
            f"restored ≥ 1); the last one has dropped {dropped:.0f} repeats so far"
        )
        return out


@dataclass
class KillStorage(Fault):
    """SIGKILL the storage process (sinks) ``times`` times; restarted at once."""

    times: int = 3

    @property
    def name(self) -> str:  # type: ignore[override]
        return "SIGKILL storage"

    @property
    def injected(self) -> str:
        return f"{self.times} × SIGKILL"

    async def run(self, stack: Stack, duration_s: float, rng: random.Random) -> Outcome:
        out = Outcome()
        gap = duration_s / self.times
        for _ in range(self.times):
            await asyncio.sleep(rng.uniform(0.3, 1.0) * gap)
            killed_at = await stack.kill_and_restart(stack.storage)
            try:
                back = await wait_log(stack.storage, b'"sink started"', 120)
            except TimeoutError as exc:
                out.recovered = False
                out.evidence.append(str(exc))
                return out
            out.recovery_s.append(back - killed_at)
        out.evidence.append(
            f"{self.times}/{self.times} restarts consumed again from the committed offsets"
        )
        return out


@dataclass
class StopDatabase(Fault):
    """TimescaleDB stopped (fast shutdown) for ``down_s`` seconds, then started again."""

    down_s: float = 30.0

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"TimescaleDB stopped {self.down_s:.0f} s"

    @property
    def injected(self) -> str:
        return "1 × stop/start"

    async def run(self, stack: Stack, duration_s: float, rng: random.Random) -> Outcome:
        out = Outcome()
        if stack.settings.uses_external_database:
            out.recovered = False
            out.evidence.append("skipped: the database is external (not ours to stop)")
            return out
        await asyncio.sleep(rng.uniform(0.1, 0.3) * duration_s)
        await asyncio.to_thread(timescale.down, stack.settings)
        stopped_at = time.monotonic()
        await asyncio.sleep(self.down_s)  # the outage itself
        await asyncio.to_thread(timescale.up, stack.settings)
        started_at = time.monotonic()
        try:
            back = await wait_log(stack.storage, b"database back; resumed", 180)
        except TimeoutError as exc:
            out.recovered = False
            out.evidence.append(str(exc))
            return out
        out.recovery_s.append(back - started_at)
        out.evidence.append(
            f"down {started_at - stopped_at:.0f} s; storage paused and logged "
            f"'database back; resumed' {back - started_at:.1f} s after the start"
        )
        return out


@dataclass
class RestartIngest(Fault):
    """The ingest gateway stopped and started again ``times`` times while the MQTT QoS 1
    publisher and the HTTP client with retries keep sending."""

    times: int = 3

    @property
    def name(self) -> str:  # type: ignore[override]
        return "ingest gateway restarted (MQTT QoS 1 + HTTP retries sending)"

    @property
    def injected(self) -> str:
        return f"{self.times} × restart"

    async def run(self, stack: Stack, duration_s: float, rng: random.Random) -> Outcome:
        out = Outcome()
        gap = duration_s / self.times
        url = f"http://127.0.0.1:{stack.ports.ingest}/readyz"
        for _ in range(self.times):
            await asyncio.sleep(rng.uniform(0.3, 1.0) * gap)
            stopped_at = await stack.kill_and_restart(stack.ingest, graceful=True)
            try:
                await wait_http(url, 90, "ingest")
            except TimeoutError as exc:
                out.recovered = False
                out.evidence.append(str(exc))
                return out
            out.recovery_s.append(time.monotonic() - stopped_at)
        out.evidence.append(
            f"{self.times}/{self.times} restarts answered /readyz again; refused or "
            "unanswered sends were retried (HTTP) or redelivered (MQTT session)"
        )
        return out


@dataclass
class RestartPush(Fault):
    """The push server restarted ``times`` times (SIGKILL and SIGTERM in turn) while
    ``clients`` websocket clients watch the row's stations and its events flow."""

    times: int = 3
    clients: int = 50
    fleet: Fleet | None = None
    needs_ws: bool = True

    @property
    def name(self) -> str:  # type: ignore[override]
        return (
            f"push server restarted while {self.clients} clients are connected "
            "(they resume with no gap, by seq)"
        )

    @property
    def injected(self) -> str:
        return f"{self.times} × restart (SIGKILL / SIGTERM)"

    async def prepare(self, stack: Stack, stations: list[str]) -> None:
        url = f"ws://127.0.0.1:{stack.ports.ws}/ws?token=wall-viewer"
        self.fleet = Fleet(url, stations, self.clients, seed=len(stations))
        await self.fleet.start()

    async def run(self, stack: Stack, duration_s: float, rng: random.Random) -> Outcome:
        assert self.fleet is not None
        out = Outcome()
        gap = duration_s / self.times
        resumed: list[float] = []
        for i in range(self.times):
            await asyncio.sleep(rng.uniform(0.3, 1.0) * gap)  # a random point of the run
            killed_at = await stack.kill_and_restart(stack.ws, graceful=i % 2 == 1)
            try:
                await stack.ws_healthy(90)
                healthy_at = time.monotonic()
                all_back = await self.fleet.wait_ready(killed_at, 90)
            except TimeoutError as exc:
                out.recovered = False
                out.evidence.append(str(exc))
                return out
            out.recovery_s.append(healthy_at - killed_at)
            resumed.append(all_back - killed_at)
            log.info(
                "push server back",
                restart=i + 1,
                healthz_s=round(healthy_at - killed_at, 1),
                all_resumed_s=round(all_back - killed_at, 1),
            )
        frames = sum((st.frames for st in self.fleet.states), Counter[str]())
        out.evidence.append(
            f"{self.times}/{self.times} restarts answered /readyz again and all "
            f"{self.clients} clients subscribed again, {max(resumed):.1f} s after the kill at "
            f"most (median {statistics.median(resumed):.1f} s); subscribe answers: "
            + ", ".join(f"{k} {v}" for k, v in sorted(frames.items()))
        )
        return out

    async def close(self) -> None:
        if self.fleet is not None:
            await self.fleet.stop()

    def waiting(self, finals: dict[tuple[str, int], int]) -> int:
        if self.fleet is None:
            return 0
        return gaps(self.fleet.states, finals).missing

    async def finish(self, finals: dict[tuple[str, int], int]) -> Gaps | None:
        if self.fleet is None:
            return None
        await self.fleet.stop()
        return gaps(self.fleet.states, finals)
