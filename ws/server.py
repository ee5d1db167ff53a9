"""The asyncio adapter: websockets server, the tick flusher, the slow-client watchdog.

All protocol decisions are made by :mod:`ws.session` and :mod:`ws.hub`; this module only
moves bytes. Each connection has one reader (the handler). Writing is done by ONE flusher
task: every tick it takes the dirty clients' coalesced frames and writes them; that bounds
the frame rate (one update per channel per client per tick) and costs no task switch per
frame. A client whose socket buffer is full is not written to by the flusher: its frames
go to a task of its own that waits for the socket, while its queue keeps coalescing; the
watchdog disconnects it if that lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from events import health
from events.errors import ProtocolError
from events.records import AlertCommand, AlertRecord, KpiRecord
from ws import assemble, http, notice
from ws.hub import ClientState, Hub
from ws.protocol import CLOSE_AUTH_TIMEOUT, CLOSE_SLOW_CLIENT, error_frame
from ws.session import (
    CloseConnection,
    Limits,
    LoadSnapshot,
    Output,
    PublishCommand,
    RawItems,
    SendFrame,
    Session,
    encode_frame,
)
from ws.settings import WsSettings
from ws.snapshot import SnapshotSource, alert_snapshot_order, fit_snapshot

log = structlog.get_logger("ws.server")

CommandSink = Callable[[AlertCommand], Awaitable[None]]
# websockets' default write limit (high-water mark of the transport buffer): a send that
# stays below it returns without waiting.
WRITE_HIGH_WATER = 32 * 1024


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.clients = Gauge("ioc_ws_clients", "Open websocket connections", registry=r)
        self.frames = Counter("ioc_ws_frames_sent", "Frames sent to clients", registry=r)
        self.records = Counter(
            "ioc_ws_records_in", "Records consumed from the topics", ["topic"], registry=r
        )
        self.errors = Counter("ioc_ws_error_frames", "Error frames sent", ["code"], registry=r)
        self.rejected = Counter(
            "ioc_ws_rejected_handshakes", "Handshakes refused", ["reason"], registry=r
        )
        self.slow = Counter("ioc_ws_slow_disconnects", "Clients dropped for being slow", registry=r)
        self.commands = Counter(
            "ioc_ws_commands", "Operator commands forwarded", ["command"], registry=r
        )
        self.omitted = Counter(
            "ioc_ws_snapshot_items_omitted",
            "Snapshot items left out to keep a frame within IOC_WS_SNAPSHOT_MAX_BYTES",
            registry=r,
        )
        self.pending = Gauge(
            "ioc_ws_pending_updates", "Coalesced updates waiting in client queues", registry=r
        )


class PushServer:
    def __init__(
        self,
        settings: WsSettings,
        snapshot: SnapshotSource,
        command_sink: CommandSink,
        *,
        hub: Hub | None = None,
    ) -> None:
        self.settings = settings
        self.hub = hub or Hub(
            uuid.uuid4().hex[:12],
            kpi_replay=settings.ws_kpi_replay,
            alert_replay=settings.ws_alert_replay,
            history_points=settings.ws_history_points,
        )
        self.metrics = Metrics()
        self._snapshot = snapshot
        self._command_sink = command_sink
        self._limits = Limits(settings.ws_max_message_bytes, settings.ws_max_subscriptions)
        self._blocked: dict[int, asyncio.Task[None]] = {}  # clients waiting for their socket
        self._flusher: asyncio.Task[None] | None = None
        self._connections: dict[int, ServerConnection] = {}
        self._server: Server | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._config_body: bytes | None = None
        self.consumer_ready = False  # set by the bridge once it has its partitions
        self._started = time.monotonic()
        # The operational notice in force (a broker restart), sent after every welcome.
        self.notice: dict[str, Any] | None = None
        self._notice_task: asyncio.Task[None] | None = None
        self._welcomed: set[int] = set()  # clients past authentication

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        self._server = await serve(
            self._handle,
            s.ws_host,
            s.ws_port,
            process_request=self._process_request,
            max_size=s.ws_max_message_bytes,
            ping_interval=s.ws_ping_interval_s,
            ping_timeout=s.ws_ping_timeout_s,
            compression=None,  # per-message deflate costs CPU per client per frame
            max_queue=32,
            close_timeout=s.ws_slow_send_s,
        )
        self._watchdog = asyncio.create_task(self._watch_slow_clients())
        self._flusher = asyncio.create_task(self._flush_loop())
        self.refresh_notice()
        if s.ws_broker_restarts_file is not None:
            self._notice_task = asyncio.create_task(self._watch_notice())

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.settings.ws_host}:{self.port}/"

    async def stop(self) -> None:
        for task in (self._watchdog, self._flusher, self._notice_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # --- records in (called by the bridge with whole batches) ---------------------------
    def on_kpis(self, records: list[KpiRecord]) -> None:
        self.hub.publish_kpis(records, time.monotonic())
        self.metrics.records.labels("ioc.kpi").inc(len(records))

    def on_alerts(self, records: list[AlertRecord]) -> None:
        self.hub.publish_alerts(records, time.monotonic())
        self.metrics.records.labels("ioc.alerts").inc(len(records))

    # --- operational notices ----------------------------------------------------------
    def refresh_notice(self) -> bool:
        """Read the restart record again; True if the notice changed."""
        record = notice.read_record(self.settings.ws_broker_restarts_file)
        now = datetime.now(UTC)
        current = notice.broker_restart_notice(record, now, self.settings.ws_broker_notice_s)
        if current == self.notice:
            return False
        self.notice = current
        if current is not None:
            log.warning("broker_restart_notice", at=current["at"], until=current["until"])
        return True

    async def _watch_notice(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.refresh_notice() and self.notice is not None:
                frame = encode_frame(self.notice)
                for client_id in list(self._welcomed):
                    ws = self._connections.get(client_id)
                    if ws is None:
                        continue
                    with contextlib.suppress(ConnectionClosed, TimeoutError):
                        await asyncio.wait_for(ws.send(frame), self.settings.ws_slow_send_s)
                        self.metrics.frames.inc()

    # --- writing --------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        tick = self.settings.ws_tick_s
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at = max(next_at + tick, loop.time())
            await asyncio.sleep(next_at - loop.time())
            try:
                await self._flush()
            except Exception:  # never let one bad connection stop every client's updates
                log.exception("flush_failed")

    async def _flush(self) -> None:
        seqs = self.hub.seqs()
        for client in self.hub.take_dirty():
            ws = self._connections.get(client.client_id)
            if ws is None or client.client_id in self._blocked:
                if ws is not None:
                    self.hub.dirty.add(client.client_id)  # still pending; coalescing
                continue
            frames = client.take_frames(seqs)
            if not frames:
                continue
            size = sum(len(f) for f in frames)
            if ws.transport.get_write_buffer_size() + size > WRITE_HIGH_WATER:
                # The socket is not keeping up: wait for it outside the flusher.
                client.send_started = time.monotonic()
                self._blocked[client.client_id] = asyncio.create_task(
                    self._send_blocked(ws, client, frames)
                )
                continue
            try:
                for frame in frames:
                    # Below the write limit: send() writes and returns without suspending.
                    await ws.send(frame, text=True)
            except ConnectionClosed:
                continue
            self.metrics.frames.inc(len(frames))

    async def _send_blocked(
        self, ws: ServerConnection, client: ClientState, frames: list[bytes]
    ) -> None:
        try:
            for frame in frames:
                await ws.send(frame, text=True)
            self.metrics.frames.inc(len(frames))
        except ConnectionClosed:
            pass
        finally:
            client.send_started = None
            self._blocked.pop(client.client_id, None)
            if client.pending_count and not client.closed:
                self.hub.dirty.add(client.client_id)

    # --- plain HTTP and handshake checks ------------------------------------------------
    def _allowed_origins(self) -> set[str]:
        port = self.port
        own = {f"http://{self.settings.ws_host}:{port}", f"http://localhost:{port}"}
        return own | set(self.settings.ws_allowed_origins)

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path == "/ws":
            if not self.consumer_ready:
                # A snapshot taken before the stream is read could miss what is published
                # in between; the client retries (as after any failed connect).
                self.metrics.rejected.labels("starting").inc()
                return conn.respond(503, "starting: not reading the stream yet\n")
            origin = request.headers.get("Origin")
            if origin is None:
                if not self.settings.ws_allow_missing_origin:
                    self.metrics.rejected.labels("origin").inc()
                    return conn.respond(403, "Origin header required\n")
            elif origin not in self._allowed_origins():
                self.metrics.rejected.labels("origin").inc()
                return conn.respond(403, f"Origin {origin} is not allowed\n")
            token = parse_qs(parts.query).get("token", [None])[0]
            if token is not None and token not in self.settings.ws_tokens:
                self.metrics.rejected.labels("token").inc()
                return conn.respond(401, "unknown token\n")
            return None
        if parts.path in (health.HEALTHZ, health.READYZ):
            answer = (
                health.alive("ws", self._started)
                if parts.path == health.HEALTHZ
                else health.ready("ws", self.readiness())
            )
            return self._respond(answer.status, health.CONTENT_TYPE, answer.encoded())
        if parts.path == "/metrics":
            self.metrics.clients.set(len(self.hub.clients))
            self.metrics.pending.set(sum(c.pending_count for c in self.hub.clients.values()))
            return self._respond(
                200, "text/plain; version=0.0.4", generate_latest(self.metrics.registry)
            )
        if parts.path == "/config.json":
            if self._config_body is None:
                self._config_body = http.config_body(self.settings.ws_page_token)
            return self._respond(200, "application/json", self._config_body)
        found = http.static_file(parts.path)
        if found is None:
            return conn.respond(404, f"no such page: {parts.path}\n")
        return self._respond(*found)

    def readiness(self) -> list[health.Check]:
        """Ready once the bridge reads the stream: partitions assigned and their seeks
        resolved (before, a snapshot could miss what is published meanwhile)."""
        ok = self.consumer_ready
        detail = "reading ioc.kpi and ioc.alerts" if ok else "assigning partitions, seeking"
        return [health.Check("consumer", ok, detail)]

    @staticmethod
    def _respond(status: int, ctype: str, body: str | bytes) -> Response:
        data = body.encode() if isinstance(body, str) else body
        headers = Headers(
            [
                ("Content-Type", ctype),
                ("Content-Length", str(len(data))),
                ("Cache-Control", "no-cache"),
                ("Connection", "close"),
            ]
        )
        return Response(status, "OK" if status == 200 else "Error", headers, data)

    # --- one connection -----------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        token = parse_qs(urlsplit(ws.request.path).query).get("token", [None])[0]
        try:
            session = Session(self.hub, self.settings.ws_tokens, self._limits, preauth_token=token)
        except ProtocolError:  # token checked in process_request; kept for safety
            await ws.close(4001, "authentication failed")
            return
        client = session.client
        self._connections[client.client_id] = ws
        try:
            if session.role is not None:
                await self._send(ws, session.hello())
            else:
                try:
                    first = await asyncio.wait_for(ws.recv(), self.settings.ws_auth_timeout_s)
                except TimeoutError:
                    await self._send(ws, error_frame("unauthenticated", "no auth in time"))
                    await ws.close(CLOSE_AUTH_TIMEOUT, "authentication timeout")
                    return
                if not await self._perform(ws, session, session.receive(first)):
                    return
            async for raw in ws:
                if not await self._perform(ws, session, session.receive(raw)):
                    return
        except ConnectionClosed:
            pass
        finally:
            session.close()
            self._connections.pop(client.client_id, None)
            self._welcomed.discard(client.client_id)
            blocked = self._blocked.pop(client.client_id, None)
            if blocked is not None:
                blocked.cancel()

    async def _perform(self, ws: ServerConnection, session: Session, outputs: list[Output]) -> bool:
        """Carry out a session's outputs; False when the connection is being closed."""
        for out in outputs:
            if isinstance(out, SendFrame):
                if out.frame.get("type") == "error":
                    self.metrics.errors.labels(out.frame["code"]).inc()
                await self._send(ws, out.frame)
            elif isinstance(out, CloseConnection):
                await ws.close(out.code, out.reason)
                return False
            elif isinstance(out, PublishCommand):
                await self._forward(ws, out)
            elif isinstance(out, LoadSnapshot):
                await self._send_snapshot(ws, out)
                self.hub.mark_ready(out.sub)
        return True

    async def _send(self, ws: ServerConnection, frame: dict[str, Any]) -> None:
        await ws.send(encode_frame(frame))
        self.metrics.frames.inc()
        if frame.get("type") == "welcome":
            if self.notice is not None:
                await ws.send(encode_frame(self.notice))
                self.metrics.frames.inc()
            for client_id, conn in self._connections.items():
                if conn is ws:
                    self._welcomed.add(client_id)

    async def _forward(self, ws: ServerConnection, out: PublishCommand) -> None:
        cmd = out.command
        try:
            await self._command_sink(cmd)
        except Exception as exc:  # broker down: tell the operator, keep the connection
            log.warning("command_failed", alert_id=cmd.alert_id, error=str(exc))
            self.metrics.errors.labels("command_failed").inc()
            await self._send(ws, error_frame("command_failed", str(exc), out.request_id))
            return
        self.metrics.commands.labels(cmd.command).inc()
        log.info("command_forwarded", alert_id=cmd.alert_id, command=cmd.command, by=cmd.by)
        reply: dict[str, Any] = {
            "type": "command_accepted",
            "command": cmd.command,
            "alert_id": cmd.alert_id,
            "command_id": cmd.command_id,
        }
        if out.request_id is not None:
            reply["id"] = out.request_id
        await self._send(ws, reply)

    async def _send_snapshot(self, ws: ServerConnection, out: LoadSnapshot) -> None:
        spec = out.sub.spec
        head: dict[str, Any] = {
            "type": "snapshot",
            "sub": spec.sub,
            "channel": spec.channel,
            "epoch": self.hub.epoch,
            "seq": out.seq,
        }
        if out.reason is not None:
            head["resync"] = out.reason
        items: list[KpiRecord] | list[AlertRecord]
        try:
            if spec.channel == "kpi":
                items, head["history"] = await assemble.kpi_snapshot(self._snapshot, self.hub, out)
            else:
                items = await assemble.alert_snapshot(self._snapshot, self.hub, out)
        except Exception as exc:
            log.warning("snapshot_failed", error=str(exc))
            self.metrics.errors.labels("snapshot_unavailable").inc()
            await self._send(ws, error_frame("snapshot_unavailable", str(exc)))
            if spec.channel == "kpi":
                items, head["history"] = self.hub.memory_latest(out.sub), []
            else:
                items = alert_snapshot_order(self.hub.memory_alerts(out.sub))
        encoded = [orjson.dumps(r.to_dict()) for r in items]
        kept = fit_snapshot(head, encoded, self.settings.ws_snapshot_max_bytes)
        if kept < len(encoded):
            # Said in the frame, so the wall can tell the operator that more exist.
            head["omitted"] = len(encoded) - kept
            self.metrics.omitted.inc(len(encoded) - kept)
            log.warning("snapshot_bounded", sub=spec.sub, sent=kept, omitted=len(encoded) - kept)
        await self._send(ws, {**head, "items": RawItems(encoded[:kept])})

    async def _watch_slow_clients(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        interval = min(0.5, s.ws_slow_send_s / 4)
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for client in list(self.hub.clients.values()):
                reason = client.slow_reason(now, s.ws_slow_send_s, s.ws_max_pending)
                ws = self._connections.get(client.client_id)
                if reason is None or ws is None:
                    continue
                log.warning("slow_client", client=client.client_id, reason=reason)
                self.metrics.slow.inc()
                # Free its queue now; close() may itself wait on the stuck socket.
                self.hub.remove_client(client)
                asyncio.get_running_loop().create_task(self._close_slow(ws, reason))

    @staticmethod
    async def _close_slow(ws: ServerConnection, reason: str) -> None:
        # The close frame queues behind the stuck data; websockets aborts the TCP
        # connection after close_timeout if the client never answers.
        with contextlib.suppress(ConnectionClosed):
            await ws.close(CLOSE_SLOW_CLIENT, reason[:120])
