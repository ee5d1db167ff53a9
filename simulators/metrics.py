"""Health and Prometheus metrics of a running simulator (``/health``, ``/metrics``).

Fed from the progress reports (about once a second), never from the publishing loop.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from simulators.runner import Progress


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
        self.rate = Gauge(
            "ioc_simulator_events_per_second", "recent publish rate", registry=self.registry
        )
        self._seen = Progress()
        self._last: Progress | None = None
        self._server: ThreadingHTTPServer | None = None

    def update(self, p: Progress, rate: float) -> None:
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
        self.rate.set(rate)
        self._seen = Progress(
            acked=p.acked, failed=p.failed, by_domain=p.by_domain.copy(), by_kind=p.by_kind.copy()
        )
        self._last = p

    def health(self) -> dict[str, Any]:
        p = self._last
        return {
            "status": "ok" if p is None or p.failed == 0 else "degraded",
            "sent": 0 if p is None else p.sent,
            "acked": 0 if p is None else p.acked,
            "failed": 0 if p is None else p.failed,
            "scenarios": [] if p is None else list(p.scenarios),
        }

    def serve(self, host: str, port: int) -> None:
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/health"):
                    body, ctype = orjson.dumps(metrics.health()), "application/json"
                elif self.path.startswith("/metrics"):
                    body, ctype = generate_latest(metrics.registry), CONTENT_TYPE_LATEST
                else:
                    self.send_error(404, "try /health or /metrics")
                    return
                self.send_response(200)
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
