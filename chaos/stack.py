"""The pipeline's components as child processes of the harness, on ports of their own.

The harness is their supervisor: a component that a fault killed is started again at
once, and its log (one file per start) tells when it recovered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import structlog

from ioc.components import component_env
from ioc.settings import ServiceSettings

log = structlog.get_logger("chaos.stack")


@dataclass(frozen=True, slots=True)
class Ports:
    """HTTP ports of the components (health, metrics, the ingest endpoint)."""

    ingest: int = 38081
    streams: int = 38091
    storage: int = 38092
    ws: int = 38093  # the push server (only when a row needs it)


@dataclass
class Process:
    """One component; ``starts`` counts its processes, one log file each."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    def start(self) -> None:
        path = self.log_dir / f"{self.name}-{self.starts}.log"
        with open(path, "wb") as out:
            self.proc = subprocess.Popen(
                list(self.argv),
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        self.logs.append(path)
        log.info("started", component=self.name, pid=self.proc.pid, log=str(path))

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> int:
        """SIGKILL (no chance to flush or commit); returns the pid killed."""
        assert self.proc is not None
        pid = self.proc.pid
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        log.info("killed", component=self.name, pid=pid)
        return pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def current_log(self) -> bytes:
        return self.logs[-1].read_bytes() if self.logs else b""

    def all_logs(self) -> bytes:
        return b"".join(p.read_bytes() for p in self.logs if p.exists())


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


class Stack:
    """ingest (HTTP + MQTT), the stream worker and storage, with the run's own group ids
    and internal topics (the broker may hold earlier runs)."""

    def __init__(
        self,
        settings: ServiceSettings,
        run: str,
        log_dir: Path,
        ports: Ports,
        streams_env: dict[str, str],
        engine: str = "aiokafka",
        with_ws: bool = False,
    ) -> None:
        self.settings = settings
        self.ports = ports
        base = component_env(settings)
        self.ingest = Process(
            "ingest",
            _python("ioc", "ingest", "serve"),
            {
                **base,
                "IOC_INGEST_HTTP_PORT": str(ports.ingest),
                "IOC_INGEST_MQTT_CLIENT_ID": f"chaos-ingest-{run}",
            },
            log_dir,
        )
        self.streams = Process(
            "streams",
            _python("ioc", "streams", "worker", "--no-progress", "--engine", engine),
            {
                **base,
                "IOC_STREAMS_HTTP_PORT": str(ports.streams),
                "IOC_STREAMS_GROUP_ID": f"chaos-streams-{run}",
                "IOC_STREAMS_PARTIALS_TOPIC": f"chaos.{run}.streams.partials",
                "IOC_STREAMS_STATE_TOPIC": f"chaos.{run}.streams.state",
                **streams_env,
            },
            log_dir,
        )
        self.storage = Process(
            "storage",
            _python("storage"),
            {
                **base,
                "IOC_STORAGE_HTTP_PORT": str(ports.storage),
                "IOC_RAW_GROUP_ID": f"chaos-raw-{run}",
                "IOC_KPI_GROUP_ID": f"chaos-kpi-{run}",
                "IOC_ALERTS_GROUP_ID": f"chaos-alerts-{run}",
                # no retention or rollups during the run
                "IOC_MAINTENANCE_INTERVAL_S": "86400",
            },
            log_dir,
        )
        self.engine = engine
        self.ws = Process(
            "ws",
            _python("ioc", "ws", "serve", "--host", "127.0.0.1", "--port", str(ports.ws)),
            dict(base),
            log_dir,
        )
        self.components = [self.ingest, self.streams, self.storage]
        if with_ws:
            self.components.append(self.ws)
        self._watch: asyncio.Task[None] | None = None
        self.unexpected_exits: list[str] = []

    async def start(self) -> None:
        for c in self.components:
            c.start()
        await asyncio.gather(
            wait_http(f"http://127.0.0.1:{self.ports.ingest}/readyz", 90, "ingest"),
            wait_log(self.streams, b"stage1.assigned", 120),
            wait_log(self.storage, b"sink started", 120),
            *([self.ws_healthy(120)] if self.ws in self.components else []),
        )
        self._watch = asyncio.create_task(self._restart_dead())

    async def _restart_dead(self) -> None:
        """A supervisor: a component that died by itself is noted and started again."""
        while True:
            await asyncio.sleep(0.5)
            for c in self.components:
                if c.proc is not None and c.proc.poll() is not None:
                    self.unexpected_exits.append(f"{c.name} exited {c.proc.returncode}")
                    log.warning("component exited", component=c.name, code=c.proc.returncode)
                    c.start()

    async def kill_and_restart(self, c: Process, graceful: bool = False) -> float:
        """SIGKILL ``c`` (SIGTERM if ``graceful``), start it again at once; returns the
        time of the kill."""
        assert self._watch is not None
        self._watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watch
        killed_at = time.monotonic()
        if graceful:
            await asyncio.to_thread(c.stop)
        else:
            c.kill()
        c.start()
        self._watch = asyncio.create_task(self._restart_dead())
        return killed_at

    async def ws_healthy(self, within_s: float) -> None:
        await wait_http(f"http://127.0.0.1:{self.ports.ws}/readyz", within_s, "ws")

    async def use_engine(self, engine: str) -> None:
        """Stop the stream worker (SIGTERM: it checkpoints) and start it with ``engine``:
        same consumer group, state and partials topics, so it goes on where the other
        one stopped (both engines drive the same stages and checkpoints)."""
        if engine == self.engine:
            return
        c = self.streams
        argv = list(c.argv)
        argv[argv.index("--engine") + 1] = engine
        c.argv = argv
        self.engine = engine
        await self.kill_and_restart(c, graceful=True)
        await wait_log(c, b"stage1.assigned", 180)
        log.info("engine switched", engine=engine)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for c in reversed(self.components):
            c.stop()


async def wait_http(url: str, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not healthy at {url} within {within_s:.0f}s")
            await asyncio.sleep(0.3)


async def wait_log(c: Process, needle: bytes, within_s: float) -> float:
    """Until the current log of ``c`` holds ``needle``; returns when (monotonic)."""
    deadline = time.monotonic() + within_s
    while needle not in c.current_log():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{c.name} did not log {needle.decode()} within {within_s:.0f}s")
        await asyncio.sleep(0.2)
    return time.monotonic()


async def metric(port: int, name: str) -> float:
    """A counter (summed over its labels) from a component's /metrics; 0 if unreachable."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total
