"""Fan-out core: channels with sequence numbers and replay buffers, subscriptions, and the
per-client coalescing queues. Sans-I/O: the asyncio adapter feeds records in
(:meth:`Hub.publish_kpis`, :meth:`Hub.publish_alerts`) and drains frames out
(:meth:`ClientState.take_frames`).

Why this shape:
- every record gets the next sequence number of its channel and lands in a bounded replay
  buffer, so a reconnecting client can be given exactly what it missed;
- routing a record costs one dict look-up: the subscribers of each (kpi, scope) pair are
  computed once and cached until a subscription changes;
- a client's pending updates are a dict keyed by what they are about (kpi, scope, window
  length / alert id), so a client that cannot keep up gets the latest value instead of a
  growing backlog; the adapter disconnects it when it stays stuck (see ``slow_reason``).
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from events.records import AlertRecord, KpiRecord
from ws.protocol import Channel, Subscribe, any_matches

KpiKey = tuple[str, str, float]  # kpi, scope, window length in seconds
WindowKey = tuple[str, str, float, datetime]  # ... and window start: the coalescing key


def kpi_key(record: KpiRecord) -> KpiKey:
    return (record.kpi, record.scope, (record.window_end - record.window_start).total_seconds())


def window_key(record: KpiRecord) -> WindowKey:
    return (*kpi_key(record), record.window_start)


def newer_kpi(a: KpiRecord, b: KpiRecord) -> bool:
    """Is ``a`` a later state than ``b`` of the same series?"""
    return (a.window_start, a.revision) > (b.window_start, b.revision)


@dataclass(slots=True)
class Subscription:
    spec: Subscribe
    client: ClientState
    ready: bool = False  # False until its snapshot frame has been handed to the client

    def matches_kpi(self, kpi: str, scope: str) -> bool:
        return any_matches(self.spec.kpis, kpi) and any_matches(self.spec.scopes, scope)

    def takes_window(self, seconds: float) -> bool:
        return self.spec.window_s is None or self.spec.window_s == seconds

    def matches_record(self, record: KpiRecord) -> bool:
        """The KPI, the scope and the window length (``window_s``) all match."""
        return self.matches_kpi(record.kpi, record.scope) and self.takes_window(kpi_key(record)[2])

    def matches_alert(self, alert: AlertRecord) -> bool:
        kpi_ok = self.spec.kpis is None or any_matches(self.spec.kpis, alert.kpi)
        return kpi_ok and any_matches(self.spec.scopes, alert.subject)


@dataclass(slots=True)
class ClientState:
    """What the hub knows about one connection."""

    client_id: int
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    pending: dict[Channel, dict[Any, bytes]] = field(
        default_factory=lambda: {"kpi": {}, "alerts": {}}
    )
    pending_since: float | None = None  # monotonic time the oldest unsent update arrived
    send_started: float | None = None  # set by the adapter while a send() is in progress
    frames_sent: int = 0
    closed: bool = False

    def channel_ready(self, channel: Channel) -> bool:
        subs = [s for s in self.subscriptions.values() if s.spec.channel == channel]
        return bool(subs) and all(s.ready for s in subs)

    @property
    def pending_count(self) -> int:
        return len(self.pending["kpi"]) + len(self.pending["alerts"])

    def take_frames(self, seqs: dict[Channel, int]) -> list[bytes]:
        """The update frames to send now (one per channel with pending items)."""
        frames: list[bytes] = []
        for channel in ("kpi", "alerts"):
            items = self.pending[channel]
            if not items or not self.channel_ready(channel):
                continue
            head = b'{"type":"update","channel":"%s","seq":%d,"items":[' % (
                channel.encode(),
                seqs[channel],
            )
            frames.append(head + b",".join(items.values()) + b"]}")
            self.pending[channel] = {}
        if not any(self.pending.values()):
            self.pending_since = None
        self.frames_sent += len(frames)
        return frames

    def slow_reason(self, now: float, max_send_s: float, max_pending: int) -> str | None:
        """Why this client must be disconnected, if it must."""
        blocked = 0.0 if self.send_started is None else now - self.send_started
        if blocked > max_send_s:
            return f"slow client: a send blocked for more than {max_send_s:g}s"
        # A burst may briefly exceed max_pending for any client; it only counts against a
        # client whose socket is not taking data.
        if self.pending_count > max_pending and blocked > max_send_s / 4:
            return f"slow client: more than {max_pending} coalesced updates pending"
        if self.pending_since is not None and now - self.pending_since > 2 * max_send_s:
            return f"slow client: updates pending for more than {2 * max_send_s:g}s"
        return None


@dataclass(slots=True)
class ChannelState:
    name: Channel
    replay_size: int
    seq: int = 0
    # (seq, coalescing key, encoded item); oldest first
    replay: deque[tuple[int, Any, bytes, Any]] = field(default_factory=deque)
    subscribers: list[Subscription] = field(default_factory=list)

    def append(self, key: Any, item: bytes, record: Any) -> int:
        self.seq += 1
        self.replay.append((self.seq, key, item, record))
        if len(self.replay) > self.replay_size:
            self.replay.popleft()
        return self.seq

    def can_resume_from(self, seq: int) -> bool:
        """True when every record after ``seq`` is still in the buffer."""
        if seq > self.seq:
            return False
        oldest = self.replay[0][0] if self.replay else self.seq + 1
        return seq >= oldest - 1

    def since(self, seq: int) -> Iterator[tuple[int, Any, bytes, Any]]:
        start = seq - self.replay[0][0] + 1 if self.replay else 0
        return itertools.islice(self.replay, max(start, 0), None)


class Hub:
    """The sans-I/O state of one server instance."""

    def __init__(self, epoch: str, *, kpi_replay: int, alert_replay: int, history_points: int):
        self.epoch = epoch
        self.channels: dict[Channel, ChannelState] = {
            "kpi": ChannelState("kpi", kpi_replay),
            "alerts": ChannelState("alerts", alert_replay),
        }
        self.clients: dict[int, ClientState] = {}
        self.dirty: set[int] = set()
        # Latest state seen on the stream: merged into snapshots, so a snapshot is right
        # even when the database sink lags behind the topic (or no database is configured).
        self.latest_kpis: dict[KpiKey, KpiRecord] = {}
        self.kpi_series: dict[tuple[str, str], list[KpiRecord]] = {}
        self.alerts: dict[str, AlertRecord] = {}
        self._history_points = history_points
        self._routes: dict[tuple[str, str], list[Subscription]] = {}
        self._ids = itertools.count(1)
        self.records_in = 0
        self.deliveries = 0

    # --- clients and subscriptions -------------------------------------------------
    def add_client(self) -> ClientState:
        client = ClientState(next(self._ids))
        self.clients[client.client_id] = client
        return client

    def remove_client(self, client: ClientState) -> None:
        client.closed = True
        for sub in list(client.subscriptions.values()):
            self._drop(sub)
        client.subscriptions.clear()
        self.clients.pop(client.client_id, None)
        self.dirty.discard(client.client_id)

    def subscribe(self, client: ClientState, spec: Subscribe) -> tuple[Subscription, int]:
        """Register a subscription (not ready yet) and return it with the channel's current
        sequence number: everything after that number reaches the client's queue."""
        sub = Subscription(spec, client)
        client.subscriptions[spec.sub] = sub
        channel = self.channels[spec.channel]
        channel.subscribers.append(sub)
        if spec.channel == "kpi":
            self._routes.clear()
        return sub, channel.seq

    def unsubscribe(self, client: ClientState, sub_id: str) -> bool:
        sub = client.subscriptions.pop(sub_id, None)
        if sub is None:
            return False
        self._drop(sub)
        return True

    def _drop(self, sub: Subscription) -> None:
        channel = self.channels[sub.spec.channel]
        if sub in channel.subscribers:
            channel.subscribers.remove(sub)
        if sub.spec.channel == "kpi":
            self._routes.clear()

    def mark_ready(self, sub: Subscription) -> None:
        sub.ready = True
        if sub.client.pending[sub.spec.channel]:
            self.dirty.add(sub.client.client_id)

    def replay_for(self, sub: Subscription, since: int) -> list[bytes]:
        """Items after ``since`` that match ``sub``, latest per key (caller checked that
        the buffer still reaches back to ``since``)."""
        out: dict[Any, bytes] = {}
        for _seq, key, item, record in self.channels[sub.spec.channel].since(since):
            if self._sub_matches(sub, record):
                out[key] = item
        return list(out.values())

    @staticmethod
    def _sub_matches(sub: Subscription, record: Any) -> bool:
        if isinstance(record, KpiRecord):
            return sub.matches_record(record)
        return bool(sub.matches_alert(record))

    # --- records in ------------------------------------------------------------------
    def publish_kpis(self, records: Iterable[KpiRecord], now: float) -> None:
        channel = self.channels["kpi"]
        for record in records:
            key = kpi_key(record)
            current = self.latest_kpis.get(key)
            if current is None or newer_kpi(record, current):
                self.latest_kpis[key] = record
            elif current.window_start == record.window_start:
                continue  # a stale revision of the current window changes nothing
            # A later revision of an earlier window (e.g. its final value) still goes out:
            # charts need it. Coalescing is per window, so it is not overwritten by the
            # next window's first value.
            if key[2] == 60:
                self._remember_point(record)
            item = orjson.dumps(record.to_dict())
            wkey = window_key(record)
            channel.append(wkey, item, record)
            self.records_in += 1
            route = self._routes.get((record.kpi, record.scope))
            if route is None:
                route = [s for s in channel.subscribers if s.matches_kpi(record.kpi, record.scope)]
                self._routes[(record.kpi, record.scope)] = route
            for sub in route:  # routed by (kpi, scope); the window length per subscription
                if sub.takes_window(key[2]):
                    self._enqueue(sub.client, "kpi", wkey, item, now)

    def publish_alerts(self, records: Iterable[AlertRecord], now: float) -> None:
        channel = self.channels["alerts"]
        for record in records:
            current = self.alerts.get(record.alert_id)
            if current is not None and current.revision > record.revision:
                continue
            self.alerts[record.alert_id] = record
            item = orjson.dumps(record.to_dict())
            channel.append(record.alert_id, item, record)
            self.records_in += 1
            for sub in channel.subscribers:
                if sub.matches_alert(record):
                    self._enqueue(sub.client, "alerts", record.alert_id, item, now)
        # Cleared alerts stay known only while they are useful for a snapshot.
        if len(self.alerts) > 5000:
            for alert_id in [a for a, r in self.alerts.items() if r.state == "cleared"]:
                del self.alerts[alert_id]

    def _enqueue(
        self, client: ClientState, channel: Channel, key: Any, item: bytes, now: float
    ) -> None:
        pending = client.pending[channel]
        pending.pop(key, None)  # re-insert so the frame keeps arrival order
        pending[key] = item
        if client.pending_since is None:
            client.pending_since = now
        self.dirty.add(client.client_id)
        self.deliveries += 1

    def _remember_point(self, record: KpiRecord) -> None:
        """Keep the newest ``history_points`` windows of a series, sorted by start; windows
        may arrive out of order (late revisions, re-delivered batches)."""
        series = self.kpi_series.setdefault((record.kpi, record.scope), [])
        start = record.window_start
        if not series or series[-1].window_start < start:
            series.append(record)
        else:
            i = bisect.bisect_left(series, start, key=lambda r: r.window_start)
            if i < len(series) and series[i].window_start == start:
                if series[i].revision <= record.revision:
                    series[i] = record
            else:
                series.insert(i, record)
        if len(series) > self._history_points:
            del series[: len(series) - self._history_points]

    def take_dirty(self) -> list[ClientState]:
        clients = [self.clients[c] for c in self.dirty if c in self.clients]
        self.dirty.clear()
        return clients

    def seqs(self) -> dict[Channel, int]:
        return {"kpi": self.channels["kpi"].seq, "alerts": self.channels["alerts"].seq}

    # --- snapshot helpers (memory side) --------------------------------------------
    def memory_latest(self, sub: Subscription) -> list[KpiRecord]:
        return [r for r in self.latest_kpis.values() if sub.matches_record(r)]

    def memory_series(self, kpi: str, scope: str) -> list[KpiRecord]:
        return list(self.kpi_series.get((kpi, scope), ()))

    def memory_alerts(self, sub: Subscription) -> list[AlertRecord]:
        return [a for a in self.alerts.values() if a.state != "cleared" and sub.matches_alert(a)]
