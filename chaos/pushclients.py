"""Websocket clients of the push server, as a wall keeps them, and the check of their state.

Each client subscribes to the scenario's stations on the ``kpi`` channel (``air.pm25.avg``)
and on the ``alerts`` channel, keeps every 1-min window it is sent (snapshot items and
updates applied by revision), and after a lost connection reconnects with backoff and
subscribes again with ``resume: {epoch, seq}`` and ``windows_since`` (the start of its
oldest window that is not final yet): a ``resumed`` answer replays what it missed, a
``snapshot`` (``resync``, another server epoch after a restart) carries every window from
then on (docs/ws-protocol.md, *Resume*).

:class:`ClientState` and :func:`gaps` are pure (no I/O); :class:`Fleet` runs the clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import structlog
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, WebSocketException

from chaos.observe import COUNT_KPI

log = structlog.get_logger("chaos.pushclients")

WINDOW_MS = 60_000
WATCH_MARGIN_MS = 300_000  # more than any allowed lateness of the runs
WindowKey = tuple[str, int]  # station, window start (epoch ms)


@dataclass(frozen=True, slots=True)
class Held:
    """A client's newest revision of one window."""

    revision: int
    count: int
    final: bool


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


@dataclass
class ClientState:
    """What one client knows: its windows, its server epoch and each channel's last seq."""

    windows: dict[WindowKey, Held] = field(default_factory=dict)
    epoch: str | None = None
    seq: dict[str, int] = field(default_factory=dict)
    connects: int = 0
    frames: Counter[str] = field(default_factory=Counter)  # resumed / snapshot / resync:*
    seq_errors: int = 0  # an update whose seq did not grow within one epoch
    ready_at: float = 0.0  # monotonic: when the last connection had both subscriptions
    watching_since_ms: int | None = None  # wall clock of the first subscribe answer

    def windows_since(self) -> int | None:
        """Where a resync snapshot must start so that nothing is missed: the oldest window
        that is not final yet, else the newest window held, else (nothing held yet) a
        margin before the first subscription (a late event may open an older window);
        None before the first subscription."""
        open_ = [k[1] for k, h in self.windows.items() if not h.final]
        if open_:
            return min(open_)
        if self.windows:
            return max(k[1] for k in self.windows)
        if self.watching_since_ms is None:
            return None
        since = self.watching_since_ms - WATCH_MARGIN_MS
        return since - since % WINDOW_MS

    def subscribe(self, sub: str, channel: str, scopes: list[str]) -> dict[str, Any]:
        frame: dict[str, Any] = {"op": "subscribe", "sub": sub, "channel": channel}
        frame["scopes"] = scopes
        if channel == "kpi":
            frame["kpis"] = [COUNT_KPI]
            if (since := self.windows_since()) is not None:
                frame["windows_since"] = since
        if self.epoch is not None and channel in self.seq:
            frame["resume"] = {"epoch": self.epoch, "seq": self.seq[channel]}
        return frame

    def apply(self, frame: dict[str, Any]) -> bool:
        """One server frame; True when it answered a subscribe (snapshot or resumed)."""
        kind = frame.get("type")
        channel = str(frame.get("channel", ""))
        if kind in ("snapshot", "resumed"):
            if self.watching_since_ms is None:
                self.watching_since_ms = int(time.time() * 1000)
            if frame.get("epoch") != self.epoch:
                self.epoch = str(frame["epoch"])
            self.seq[channel] = int(frame["seq"])
            self.frames[kind if "resync" not in frame else f"resync:{frame['resync']}"] += 1
        elif kind == "update":
            seq = int(frame["seq"])
            if seq <= self.seq.get(channel, -1):
                self.seq_errors += 1
            self.seq[channel] = max(seq, self.seq.get(channel, -1))
        else:
            return False
        if channel == "kpi":
            for item in frame.get("items", ()):
                self._window(item)
        return kind != "update"

    def _window(self, item: dict[str, Any]) -> None:
        start, end = _ms(item["window_start"]), _ms(item["window_end"])
        if item.get("kpi") != COUNT_KPI or end - start != WINDOW_MS:
            return
        scope = str(item.get("scope", ""))
        if not scope.startswith("station:"):
            return
        key = (scope.removeprefix("station:"), start)
        held = self.windows.get(key)
        if held is None or int(item["revision"]) >= held.revision:
            self.windows[key] = Held(int(item["revision"]), int(item["count"]), bool(item["final"]))


@dataclass(frozen=True, slots=True)
class Gaps:
    """The clients' windows against the final windows of the run (``ioc.kpi``)."""

    clients: int
    windows: int  # final windows of the stations
    missing: int  # (client, window) pairs: the final window absent, not final or below
    above: int  # (client, window) pairs: a final count above the final record's
    unknown: int  # (client, window) pairs: final at a client, no final record on ioc.kpi
    seq_errors: int  # updates whose seq did not grow within one server epoch
    details: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.missing == self.above == self.unknown == self.seq_errors == 0


def gaps(states: list[ClientState], finals: dict[WindowKey, int]) -> Gaps:
    """Every client must hold every final window of its stations at its final count."""
    missing = above = unknown = 0
    details: list[str] = []
    for n, st in enumerate(states):
        for key, count in finals.items():
            held = st.windows.get(key)
            if held is None or not held.final or held.count < count:
                missing += 1
                if len(details) < 20:
                    details.append(f"client {n}: {key[0]} @ {key[1]} held {held}, final {count}")
            elif held.count > count:
                above += 1
                details.append(f"client {n}: {key[0]} @ {key[1]} counts {held.count} > {count}")
        for key, held in st.windows.items():
            if held.final and key not in finals:
                unknown += 1
                details.append(f"client {n}: final {key[0]} @ {key[1]} not final on ioc.kpi")
    seq_errors = sum(st.seq_errors for st in states)
    return Gaps(len(states), len(finals), missing, above, unknown, seq_errors, tuple(details[:20]))


class Fleet:
    """``clients`` websocket clients of one push server, reconnecting with backoff."""

    def __init__(self, url: str, stations: list[str], clients: int, seed: int) -> None:
        self.url = url
        self.scopes = [f"station:{s}" for s in stations]
        self.states = [ClientState() for _ in range(clients)]
        self._rng = random.Random(seed)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, within_s: float = 60.0) -> None:
        self._tasks = [asyncio.create_task(self._client(st)) for st in self.states]
        await self.wait_ready(0.0, within_s)

    def ready_since(self, t: float) -> int:
        """How many clients have both subscriptions answered on a connection made after
        ``t`` (monotonic)."""
        return sum(1 for st in self.states if st.ready_at > t)

    async def wait_ready(self, after: float, within_s: float) -> float:
        """Until every client resumed after ``after``; returns when (monotonic)."""
        deadline = time.monotonic() + within_s
        while self.ready_since(after) < len(self.states):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.ready_since(after)}/{len(self.states)} clients resumed "
                    f"within {within_s:.0f}s"
                )
            await asyncio.sleep(0.1)
        return time.monotonic()

    async def _client(self, st: ClientState) -> None:
        backoff = 0.2
        while True:
            try:
                async with connect(
                    self.url, open_timeout=5, max_size=4 * 1024 * 1024, close_timeout=1
                ) as ws:
                    st.connects += 1
                    hello = orjson.loads(await ws.recv())  # ?token= authenticates at once
                    if hello.get("type") != "welcome":
                        raise ConnectionError(f"no welcome: {hello}")
                    for sub, channel in (("kpi", "kpi"), ("alerts", "alerts")):
                        frame = st.subscribe(sub, channel, self.scopes)
                        await ws.send(orjson.dumps(frame).decode())  # text frames only
                    answered = 0
                    async for raw in ws:
                        if st.apply(orjson.loads(raw)):
                            answered += 1
                            if answered == 2:
                                st.ready_at = time.monotonic()
                                backoff = 0.2
            except (OSError, TimeoutError, ConnectionError, InvalidHandshake, WebSocketException):
                pass  # the server is down or restarting: try again
            # the wall's policy: exponential backoff with jitter, here capped at 2 s
            await asyncio.sleep(backoff * (0.5 + self._rng.random()))
            backoff = min(backoff * 2, 2.0)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
