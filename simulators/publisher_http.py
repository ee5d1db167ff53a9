"""Sends the simulated events through the HTTP ingest gateway (``ioc simulate --via http``),
as a sensor gateway or a city system would: batches of CloudEvents
(``application/cloudevents-batch+json``) to ``POST /events`` with the ingest key as a
bearer token.

One sender thread with one keep-alive connection posts the batches in order, so the
publishing loop never waits for HTTP. What the gateway answers is counted as a broker
acknowledgement would be: ``202`` acknowledges the whole batch (the gateway answers only
after Kafka has the events); ``400 invalid_events`` names the refused items, which count
as failed, and the rest of the batch is posted again (the gateway published none of a
refused request); ``429`` and ``503`` are retried after ``Retry-After``; a lost connection
is retried on a new one (a repeat after a lost answer is a duplicate the stream workers
drop by event id); ``401``/``403`` fail the batch and say why in the log.
"""

from __future__ import annotations

import http.client
import queue
import threading
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import orjson
import structlog

from events.errors import ConfigurationError
from simulators.injection import Record
from simulators.settings import SimulatorSettings

log = structlog.get_logger(__name__)

BATCH_EVENTS = 500  # per request: well under the gateway's 5,000 and 4 MiB
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
_RETRY_DEFAULT_S = 0.5


class HttpPublisher:
    """Posts :class:`Record` batches to the ingest gateway and counts its answers."""

    idempotent = False  # a retried request may repeat events; consumers drop repeats

    def __init__(self, settings: SimulatorSettings) -> None:
        parts = urlsplit(settings.ingest_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"IOC_SIM_INGEST_URL={settings.ingest_url!r}: not an URL")
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._path = parts.path.rstrip("/") + "/events"
        self._headers = {
            "Content-Type": BATCH_CONTENT_TYPE,
            "Authorization": f"Bearer {settings.ingest_key}",
        }
        self._queue: queue.Queue[list[Record] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._closing = False
        self.sent = 0
        self.acked = 0
        self.failed = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="ioc-sim-http", daemon=True)
        self._thread.start()

    @property
    def outstanding(self) -> int:
        return self.sent - self.acked - self.failed

    def send(self, records: Sequence[Record]) -> None:
        for i in range(0, len(records), BATCH_EVENTS):
            self._queue.put(list(records[i : i + BATCH_EVENTS]))
        self.sent += len(records)

    def flush(self, timeout: float | None = 30.0) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.outstanding > 0 and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.01)  # polling the sender thread's counters

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)
        self._closing = True
        self._queue.put(None)
        self._thread.join(timeout)

    # ---- the sender thread --------------------------------------------------------

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            self._post_until_answered(batch)
        if self._conn is not None:
            self._conn.close()

    def _count(self, acked: int = 0, failed: int = 0, error: str | None = None) -> None:
        with self._lock:
            self.acked += acked
            self.failed += failed
            if error is not None:
                self.last_error = error

    def _post_until_answered(self, batch: list[Record]) -> None:
        backoff = 0.1
        while batch:
            body = b"[" + b",".join(r.value for r in batch) + b"]"
            try:
                status, headers, answer = self._post(body)
            except (OSError, http.client.HTTPException) as exc:
                self._reset()
                if self._closing:  # the run is over: what is left is not delivered
                    self._count(failed=len(batch), error=repr(exc))
                    return
                log.warning("ingest_unreachable", error=repr(exc), retry_in_s=backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if status == 202:
                self._count(acked=len(batch))
                return
            if status in (429, 503):
                time.sleep(_retry_after(headers.get("Retry-After")))
                continue
            batch = self._refused(batch, status, answer)

    def _refused(self, batch: list[Record], status: int, answer: bytes) -> list[Record]:
        """What of ``batch`` to post again after a 4xx: the valid rest of a batch whose
        items were refused (nothing of it was published), else nothing."""
        try:
            detail = orjson.loads(answer)
        except orjson.JSONDecodeError:
            detail = {"error": answer[:200].decode(errors="replace")}
        rejected = detail.get("rejected") if isinstance(detail, dict) else None
        if status == 400 and isinstance(rejected, list) and rejected:
            bad = {int(r["index"]) for r in rejected if isinstance(r, dict) and "index" in r}
            self._count(failed=len(bad), error=f"400 {rejected[0]}")
            log.warning("ingest_refused_events", count=len(bad), first=rejected[0])
            return [r for i, r in enumerate(batch) if i not in bad]
        self._count(failed=len(batch), error=f"{status} {detail}")
        log.error("ingest_refused_batch", status=status, answer=detail, events=len(batch))
        return []

    def _post(self, body: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=30)
        self._conn.request("POST", self._path, body=body, headers=self._headers)
        resp = self._conn.getresponse()
        return resp.status, resp.headers, resp.read()

    def _reset(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value), 0.05), 30.0) if value else _RETRY_DEFAULT_S
    except ValueError:
        return _RETRY_DEFAULT_S
