"""Health (``/healthz``, ``/readyz``: events.health) and Prometheus metrics (``/metrics``)
of a running simulator.

Fed from the progress reports (about once a second), never from the publishing loop.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from events import health
from simulators.runner import Progress

COMPONENT = "simulator"
# /readyz fails for this long after the broker refused (or did not acknowledge) a record.
FAILURE_WINDOW_S = 30.0


class SimulatorMetrics:
    """Prometheus counters mirroring :class:`Progress`, plus an HTTP server for them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "ioc_simulator_events",
            "events handed to the producer, by domain",
            ["domain"],
            registry=self.registry,
        )
        self.injected = Counter(
            "ioc_simulator_injected",
            "deliberately imperfect events (late, out_of_order, duplicate, malformed)",
            ["kind"],
            registry=self.registry,
        )
        self.acked = Counter(
            "ioc_simulator_acked", "records acknowledged by the broker", registry=self.registry
        )
        self.failed = Counter(
            "ioc_simulator_failed", "records the broker did not take", registry=self.registry
        )
        self._seen = Progress()
        self._last: Progress | None = None
        self._last_failure: float | None = None  # monotonic time of the latest failed send
        self._started = time.monotonic()
        self._server: ThreadingHTTPServer | None = None

    def update(self, p: Progress) -> None:
        # (no rate gauge: rate(ioc_simulator_events_total[1m]) is the rate, by domain too)
        for domain, n in p.by_domain.items():
            delta = n - self._seen.by_domain.get(domain, 0)
            if delta > 0:
                self.events.labels(domain).inc(delta)
        for kind, n in p.by_kind.items():
            delta = n - self._seen.by_kind.get(kind, 0)
            if delta > 0:
                self.injected.labels(kind).inc(delta)
        if p.acked > self._seen.acked:
            self.acked.inc(p.acked - self._seen.acked)
        if p.failed > self._seen.failed:
            self.failed.inc(p.failed - self._seen.failed)
            self._last_failure = time.monotonic()
        self._seen = Progress(
            acked=p.acked, failed=p.failed, by_domain=p.by_domain.copy(), by_kind=p.by_kind.copy()
        )
        self._last = p

    def readiness(self, now: float | None = None) -> list[health.Check]:
        """Connected (the broker acknowledged a record: the producers reach it) and no
        failed send within the last FAILURE_WINDOW_S seconds."""
        now = time.monotonic() if now is None else now
        p = self._last
        acked = 0 if p is None else p.acked
        checks = [
            health.Check(
                "producer",
                acked > 0,
                f"{acked} record(s) acknowledged by the broker"
                if acked
                else "no record acknowledged by the broker yet",
            )
        ]
        failed_ago = None if self._last_failure is None else now - self._last_failure
        if failed_ago is not None and failed_ago < FAILURE_WINDOW_S:
            failed = 0 if p is None else p.failed
            checks.append(
                health.Check(
                    "sends",
                    False,
                    f"a send failed {failed_ago:.0f} s ago ({failed} failed in all)",
                )
            )
        else:
            checks.append(health.Check("sends", True, f"none failed in {FAILURE_WINDOW_S:.0f} s"))
        return checks

    def serve(self, host: str, port: int) -> None:
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                status = 200
                if path == health.HEALTHZ:
                    answer = health.alive(COMPONENT, metrics._started)
                    status, body, ctype = answer.status, answer.encoded(), health.CONTENT_TYPE
                elif path == health.READYZ:
                    answer = health.ready(COMPONENT, metrics.readiness())
                    status, body, ctype = answer.status, answer.encoded(), health.CONTENT_TYPE
                elif path == "/metrics":
                    body, ctype = generate_latest(metrics.registry), CONTENT_TYPE_LATEST
                else:
                    self.send_error(404, "try /healthz, /readyz or /metrics")
                    return
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes are not worth a log line each

        self._server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int | None:
        """The port the server listens on (useful when it was started on port 0)."""
        return None if self._server is None else int(self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
