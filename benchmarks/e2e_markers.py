"""The markers of bench_e2e: one `vn.ioc.air.observed` event at a time for a fresh
station, produced to Kafka, traced through every hop (broker ack, stage-1 partials,
stage-2 `ioc.kpi`, the wall's websocket) and, later, to the final record of its window."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import re
import time
import uuid
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer
from websockets.asyncio.client import connect

from events import topics
from events.envelope import encode, new_event
from streams.settings import StreamsSettings
from streams.windows import combined_watermark
from streams.wire import WATERMARK_KEY, decode_internal


class Markers:
    """Marker events out through Kafka, their first appearance on the wall back in."""

    def __init__(self, bootstrap: str, token: str, ws_port: int) -> None:
        self.prefix = f"E2E{uuid.uuid4().hex[:6].upper()}"
        self.bootstrap = bootstrap
        self.token = token
        self.ws_port = ws_port
        self.sent: dict[int, float] = {}
        self.acked: dict[int, float] = {}  # the broker acknowledged the marker (acks=all)
        self.seen: dict[int, float] = {}  # first update on the wall
        # first time the marker's station appears on each internal hop
        self.hops: dict[str, dict[int, float]] = {"partials": {}, "kpi": {}}
        # marker -> (monotonic arrival, seconds after window end + allowed lateness,
        # seconds after stage 1 reported the air topic's watermark past the end) of the
        # final record of its 1-min window
        self.finals: dict[int, tuple[float, float, float | None]] = {}
        self.lateness_s = StreamsSettings().allowed_lateness_s
        # The air topic's watermark as stage 1 reports it on the partials topic: the
        # latest report per source partition, and each rise with when it was first seen.
        self.air_topic = topics.events_topic("air")
        self.air_marks: dict[str, tuple[int | None, bool]] = {}
        self.air_partitions = 0
        self.wm_rises: list[tuple[int, float]] = []
        self.subscribed = asyncio.Event()
        self.arrived = asyncio.Event()

    async def watch(self) -> None:
        url = f"ws://127.0.0.1:{self.ws_port}/ws?token={self.token}"
        pattern = re.compile(rf"^station:{self.prefix}-(\d+)$")
        async with connect(url, max_size=None) as ws:
            await ws.send(
                orjson.dumps(
                    {
                        "op": "subscribe",
                        "sub": "e2e",
                        "channel": "kpi",
                        "kpis": ["air.pm25.avg"],
                        "scopes": [f"station:{self.prefix}-*"],
                    }
                ).decode()
            )
            async for raw in ws:
                now = time.monotonic()
                frame = orjson.loads(raw)
                if frame.get("type") == "snapshot":
                    self.subscribed.set()
                for item in frame.get("items", ()):
                    m = pattern.match(item.get("scope", ""))
                    if m:
                        self.seen.setdefault(int(m.group(1)), now)
                        self.arrived.set()

    async def send(self, interval: float, stop: asyncio.Event) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0)
        await producer.start()
        try:
            n = 0
            while not stop.is_set():
                station = f"{self.prefix}-{n}"
                source = f"/sensors/air/{station}"
                event = new_event(
                    "vn.ioc.air.observed",
                    source,
                    {"station_id": station, "district": "HD", "pm25": 12.0, "pm10": 30.0},
                    time=datetime.now(UTC),
                )
                self.sent[n] = time.monotonic()
                await producer.send_and_wait(
                    topics.events_topic("air"), encode(event), key=source.encode()
                )
                self.acked[n] = time.monotonic()
                n += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
        finally:
            await producer.stop()

    async def trace(self, partials_topic: str) -> None:
        """Watch the stage-1 output (pane partials, keyed `kpi|scope`) and the stage-2
        output (`ioc.kpi`, keyed `kpi|scope|window`) for the marker stations."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka import TopicPartition as TP

        from events.brokers import refresh_metadata

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, fetch_max_wait_ms=10
        )
        await consumer.start()
        try:
            await refresh_metadata(consumer)
            parts = [
                TP(t, p)
                for t in (partials_topic, topics.KPI)
                for p in consumer.partitions_for_topic(t) or ()
            ]
            consumer.assign(parts)
            await consumer.seek_to_end(*parts)
            needle = f"air.pm25.avg|station:{self.prefix}-".encode()
            while True:
                batch = await consumer.getmany(timeout_ms=50)
                now, wall = time.monotonic(), time.time()
                for tp, records in batch.items():
                    hop = self.hops["kpi" if tp.topic == topics.KPI else "partials"]
                    for r in records:
                        if r.key == WATERMARK_KEY and r.value:
                            self._watermarks(r.value, now)
                            continue
                        if r.key and r.key.startswith(needle):
                            n = int(r.key[len(needle) :].split(b"|", 1)[0])
                            hop.setdefault(n, now)
                            if tp.topic == topics.KPI and b'"final":true' in (r.value or b""):
                                self._final(n, r.value, now, wall)
        finally:
            await consumer.stop()

    def _watermarks(self, value: bytes, now: float) -> None:
        reports = decode_internal(value)
        if not isinstance(reports, list):
            return
        for report in reports:
            if report.source.rsplit(":", 1)[0] == self.air_topic:
                self.air_marks[report.source] = (report.watermark_ms, report.idle)
                self.air_partitions = max(self.air_partitions, report.topic_partitions)
        # As stage 2 combines them (streams/merger.py): unreported partitions hold it back.
        marks = list(self.air_marks.values())
        marks += [(None, False)] * (self.air_partitions - len(marks))
        wm = combined_watermark(marks)
        if wm is not None and (not self.wm_rises or wm > self.wm_rises[-1][0]):
            self.wm_rises.append((wm, now))

    def _passed(self, end_ms: int) -> float | None:
        """When the air watermark was first seen at or past ``end_ms`` (None: not seen,
        or already past when the trace began)."""
        i = bisect.bisect_left(self.wm_rises, (end_ms, -math.inf))
        if i == 0 or i == len(self.wm_rises):
            return None
        return self.wm_rises[i][1]

    def _final(self, n: int, value: bytes, now: float, wall: float) -> None:
        # The watermark is the newest event time minus the allowed lateness; the stack's
        # events carry the time they are sent, so it can pass a window's end at the
        # earliest at wall-clock end + lateness. Measured from there, the figure also holds
        # the time an event takes to reach stage 1: an upper bound of "after the watermark
        # passes".
        rec = orjson.loads(value)
        start = datetime.fromisoformat(rec["window_start"]).timestamp()
        end = datetime.fromisoformat(rec["window_end"]).timestamp()
        if end - start == 60 and n not in self.finals:
            passed = self._passed(round(end * 1000))
            after_wm = None if passed is None else now - passed
            self.finals[n] = (now, wall - (end + self.lateness_s), after_wm)

    def finals_between(self, begin: float, end: float) -> list[float]:
        """Seconds after window end + lateness, of the finals that arrived meanwhile."""
        return [lat for at, lat, _ in self.finals.values() if begin <= at < end]

    def finals_after_watermark(self, begin: float, end: float) -> list[float]:
        """Seconds after the watermark passed the window end, same finals."""
        return [w for at, _, w in self.finals.values() if begin <= at < end and w is not None]

    def hop_medians(self, sent_from: float, sent_until: float) -> dict[str, tuple[float, float]]:
        """Median and max seconds from the send to each hop, for the markers of a step
        that reached it."""
        out: dict[str, tuple[float, float]] = {}
        stages = [("ack", self.acked), ("partials", self.hops["partials"])]
        stages += [("kpi", self.hops["kpi"]), ("wall", self.seen)]
        for name, seen in stages:
            xs = sorted(
                seen[n] - t
                for n, t in self.sent.items()
                if sent_from <= t < sent_until and n in seen
            )
            if xs:
                out[name] = (xs[len(xs) // 2], xs[-1])
        return out

    def lags(self, sent_from: float, sent_until: float, timeout: float) -> list[float]:
        out = []
        for n, t in self.sent.items():
            if sent_from <= t < sent_until:
                seen = self.seen.get(n)
                out.append(seen - t if seen is not None and seen - t <= timeout else math.inf)
        return out
