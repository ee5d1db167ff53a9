"""Bounds the memory of our Tansu under `ioc up`: restart it when its RSS passes a cap.

Tansu's in-memory engine ignores retention and compaction, so it holds every record ever
written (about 3.5 GB an hour at the demo rate). Deleting records breaks the connection,
and only a restart frees the memory. So the supervisor watches the broker's resident
memory and, once it passes ``IOC_TANSU_MAX_RSS_MB``:

1. stops the components (the sources first, see :meth:`Supervisor.pause`), so nothing
   produces into a broker that is about to lose it, nor holds offsets or producer ids the
   new broker will not know;
2. restarts Tansu and re-creates every contract and internal topic;
3. writes the restart record (``broker-restarts.json`` in the state directory) that the
   push server turns into a notice on the wall;
4. starts the components again: they find empty topics and no committed offsets, and
   start clean (the stream worker with no state snapshot, the alerts worker with no alert).

What is lost is in docs/reliability.md. :class:`MemoryCap` is the decision, sans-I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ioc.settings import ServiceSettings
from ioc.supervisor import Supervisor

MIB = 1024 * 1024
RESTARTS_FILE = "broker-restarts.json"


@dataclass(slots=True)
class MemoryCap:
    """When to restart: the RSS is at or above the cap (or, with ``retry``, the broker
    is missing after a restart of ours failed) and the last restart (if any) is at least
    ``min_interval_s`` ago. A cap of 0 never restarts."""

    cap_bytes: int
    min_interval_s: float = 60.0
    last_restart: float | None = None

    def should_restart(self, rss_bytes: int | None, now: float, *, retry: bool = False) -> bool:
        if self.cap_bytes <= 0:
            return False
        if not retry and (rss_bytes is None or rss_bytes < self.cap_bytes):
            return False
        return self.last_restart is None or now - self.last_restart >= self.min_interval_s

    def restarted(self, now: float) -> None:
        self.last_restart = now


def rss_bytes(pid: int) -> int | None:
    """The resident memory of process ``pid`` (from /proc), None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def restarts_file(settings: ServiceSettings) -> Path:
    return settings.state_dir / RESTARTS_FILE


def write_restart(
    path: Path, *, at: datetime, rss: int, cap: int, count: int, reason: str = "memory_cap"
) -> None:
    """Record the latest restart (atomically: the push server may read it meanwhile)."""
    record = {
        "at": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "reason": reason,
        "rss_mb": round(rss / MIB),
        "cap_mb": round(cap / MIB),
        "restarts": count,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(record))
    os.replace(tmp, path)


def read_restart(path: Path) -> dict[str, Any] | None:
    """The latest restart record, None when there is none (or it is unreadable)."""
    try:
        record = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("at"), str) else None


class BrokerGuard:
    """Watches our Tansu's RSS and restarts it through the supervisor (see the module doc).

    ``restart`` (blocking; run in a thread) stops and starts the broker and re-creates the
    topics; ``pid`` gives the broker's pid (None when it does not run)."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        pid: Callable[[], int | None],
        restart: Callable[[], None],
        say: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.cap = MemoryCap(settings.tansu_max_rss_mb * MIB, settings.tansu_min_restart_interval_s)
        self._pid = pid
        self._restart = restart
        self._say = say
        self.registry = CollectorRegistry()
        self.restarts = Counter(
            "ioc_broker_restarts",
            "Broker restarts by the supervisor, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.rss = Gauge(
            "ioc_broker_rss_bytes", "Resident memory of the broker", registry=self.registry
        )
        self.cap_gauge = Gauge(
            "ioc_broker_rss_cap_bytes",
            "The broker's memory cap (IOC_TANSU_MAX_RSS_MB; 0 = none)",
            registry=self.registry,
        )
        self.cap_gauge.set(self.cap.cap_bytes)
        self.count = 0
        self.http_port: int | None = None
        self.failed = False  # the last restart raised: the broker may not run at all

    def log(self, event: str, **fields: Any) -> None:
        """One structured (JSON) line on the supervisor's output."""
        line = {"event": event, "timestamp": datetime.now(UTC).isoformat(), **fields}
        self._say(orjson.dumps(line).decode())

    async def serve(self) -> web.AppRunner:
        """/metrics (Prometheus) on IOC_SUPERVISOR_HTTP_PORT."""

        async def metrics(_request: web.Request) -> web.Response:
            resp = web.Response(body=generate_latest(self.registry))
            resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
            return resp

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.supervisor_http_port)
        await site.start()
        server: Any = site._server
        self.http_port = int(server.sockets[0].getsockname()[1])
        return runner

    async def watch(self, supervisor: Supervisor) -> None:
        runner = await self.serve()
        self.log(
            "broker_guard.started",
            cap_mb=self.settings.tansu_max_rss_mb,
            interval_s=self.settings.tansu_check_interval_s,
            metrics_port=self.http_port,
        )
        try:
            while True:
                try:
                    await self.check(supervisor)
                except Exception as exc:  # e.g. the broker did not come back: say so, go on
                    self.failed = True  # and try again after the interval if it is missing
                    self.log("broker.restart_failed", error=str(exc)[:2000])
                await asyncio.sleep(self.settings.tansu_check_interval_s)
        finally:
            await runner.cleanup()

    async def check(self, supervisor: Supervisor) -> bool:
        """Read the broker's memory once; restart it if the cap says so. True if it did."""
        pid = self._pid()
        rss = rss_bytes(pid) if pid is not None else None
        if rss is not None:
            self.rss.set(rss)
        now = time.monotonic()
        retry = self.failed and pid is None
        if not self.cap.should_restart(rss, now, retry=retry):
            return False
        self.cap.restarted(now)
        reason = "restart_failed" if retry else "memory_cap"
        rss = rss or 0
        self.log(
            "broker.restarting",
            reason=reason,
            rss_mb=round(rss / MIB),
            cap_mb=self.settings.tansu_max_rss_mb,
        )
        begin = time.monotonic()
        at = datetime.now(UTC)

        async def restart() -> None:
            await asyncio.to_thread(self._restart)
            self.failed = False
            self.count += 1
            self.restarts.labels(reason).inc()
            write_restart(
                restarts_file(self.settings),
                at=at,
                rss=rss,
                cap=self.cap.cap_bytes,
                count=self.count,
                reason=reason,
            )

        await supervisor.pause(restart)
        new_pid = self._pid()
        after = rss_bytes(new_pid) if new_pid is not None else None
        if after is not None:
            self.rss.set(after)
        self.log(
            "broker.restarted",
            reason=reason,
            rss_before_mb=round(rss / MIB),
            rss_after_mb=round(after / MIB) if after is not None else None,
            restarts=self.count,
            seconds=round(time.monotonic() - begin, 1),
        )
        if after is not None and after >= self.cap.cap_bytes:
            self.log(
                "broker.cap_too_low",
                rss_after_mb=round(after / MIB),
                cap_mb=self.settings.tansu_max_rss_mb,
                detail="the broker needs more than IOC_TANSU_MAX_RSS_MB right after a restart",
            )
        return True


def tansu_guard(settings: ServiceSettings, say: Callable[[str], None]) -> BrokerGuard | None:
    """The guard of our Tansu at these settings, or None (a cap of 0, Apache Kafka, or a
    Tansu we did not start and must not restart)."""
    from ioc.services import broker

    with contextlib.suppress(FileNotFoundError):
        restarts_file(settings).unlink()  # a notice of an earlier run is not this run's
    if settings.tansu_max_rss_mb <= 0 or not broker.ours_tansu(settings):
        return None
    return BrokerGuard(
        settings,
        pid=lambda: broker.tansu_pid(settings),
        restart=lambda: broker.restart_tansu(settings),
        say=say,
    )
