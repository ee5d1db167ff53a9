"""Events with unique ids through Kafka, HTTP and MQTT, each acknowledgement in the ledger.

Every event is a ``vn.ioc.air.observed`` of a station unique to the run and scenario, so
its ``air.pm25.avg`` count per ``station:<id>`` and 1-min window can be compared exactly.
All along, a share of the events is sent twice (the same bytes, through any way in), sent
out of order (a time up to half the allowed lateness back) or too late (15 minutes old,
after on-time events of the same station, so its partition's watermark is far ahead).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import structlog
from aiokafka import AIOKafkaProducer
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from chaos.ledger import Ledger, Planned
from events.binding import STRUCTURED_HEADERS
from events.envelope import encode, epoch_ms, new_event
from events.topics import events_topic

log = structlog.get_logger("chaos.traffic")

AIR = "vn.ioc.air.observed"
TOO_LATE_AGE_MS = 15 * 60_000


@dataclass(frozen=True, slots=True)
class Injection:
    """Shares of the events sent twice, out of order, too late."""

    duplicates: float = 0.05
    out_of_order: float = 0.05
    too_late: float = 0.01
    # how far back an out-of-order event is placed (within the allowed lateness)
    out_of_order_max_ms: int = 30_000


@dataclass(frozen=True, slots=True)
class Endpoints:
    bootstrap_servers: str
    http_url: str  # http://host:port/events
    mqtt_host: str
    mqtt_port: int


def source_of(run: str, station: str) -> str:
    return f"/chaos/{run}/{station}"


class EventMaker:
    """The events of one scenario: unique ids, stations unique to the run."""

    def __init__(self, run: str, scenario: str, stations: int, rng: random.Random) -> None:
        self.run = run
        self.stations = [f"CHAOS-{run}-{scenario}-{i:02d}" for i in range(stations)]
        self._scenario = scenario
        self._rng = rng
        self._n = 0

    def make(self, station: str, time_ms: int, *, too_late: bool = False) -> tuple[Planned, bytes]:
        self._n += 1
        event_id = f"{self.run}-{self._scenario}-{self._n:06d}"
        source = source_of(self.run, station)
        data = {
            "station_id": station,
            "district": "HD",
            "pm25": round(self._rng.uniform(5, 150), 1),
            "pm10": round(self._rng.uniform(10, 250), 1),
        }
        when = datetime.fromtimestamp(time_ms / 1000, UTC)
        raw = encode(new_event(AIR, source, data, time=when, event_id=event_id))
        # the envelope keeps milliseconds: the window follows the encoded time
        return Planned(event_id, source, station, time_ms, too_late), raw


class Way:
    """One way in; ``send`` returns True once the event is acknowledged."""

    name = ""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, station: str, raw: bytes) -> bool:
        return bool(await self.send_raw(station, raw))

    async def send_raw(self, station: str, raw: bytes) -> int | bool:
        """True/False (acknowledged or not), or the HTTP status."""
        raise NotImplementedError


class KafkaWay(Way):
    name = "kafka"

    def __init__(self, bootstrap_servers: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers, acks="all", request_timeout_ms=10_000
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send_raw(self, station: str, raw: bytes) -> int | bool:
        # keyed by the station, as every producer of the contract does (key_for), with the
        # structured-mode header of our producers (the bytes may be broken on purpose, so
        # the broker's clock is the timestamp)
        try:
            await self._producer.send_and_wait(
                events_topic("air"), raw, key=station.encode(), headers=list(STRUCTURED_HEADERS)
            )
        except Exception as exc:
            log.warning("kafka send failed", error=repr(exc))
            return False
        return True


class HttpWay(Way):
    name = "http"

    def __init__(self, url: str, key: str) -> None:
        self._url = url
        self._key = key  # an ingest key's secret (the demo key: any type, any source)
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def send(self, station: str, raw: bytes) -> bool:
        return await self.send_raw(station, raw) == 202

    async def send_raw(self, station: str, raw: bytes) -> int | bool:
        assert self._http is not None
        headers = {
            "Content-Type": "application/cloudevents+json",
            "Authorization": f"Bearer {self._key}",
        }
        try:
            async with self._http.post(self._url, data=raw, headers=headers) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("http send failed", error=repr(exc))
            return False


class MqttWay(Way):
    """QoS 1: acknowledged when the broker's PUBACK came back."""

    name = "mqtt"

    def __init__(self, host: str, port: int, client_id: str, login: tuple[str, str]) -> None:
        self._host, self._port = host, port
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        # an ingest key's device account (name, secret): it writes below ioc/events/<name>/
        self._name = login[0]
        self._client.username_pw_set(*login)
        self._client.max_inflight_messages_set(100)

    async def start(self) -> None:
        self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()

    async def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    async def send_raw(self, station: str, raw: bytes) -> int | bool:
        info = self._client.publish(f"ioc/events/{self._name}/air/{station}", raw, qos=1)
        with contextlib.suppress(RuntimeError, ValueError):
            await asyncio.to_thread(info.wait_for_publish, 10.0)
        return info.is_published()


class Traffic:
    """Drives one scenario's events through the ways in, recording every answer."""

    def __init__(
        self,
        maker: EventMaker,
        ways: list[Way],
        ledger: Ledger,
        injection: Injection,
        rng: random.Random,
        retries: int = 8,
    ) -> None:
        self._maker = maker
        self._ways = ways
        self._ledger = ledger
        self._inject = injection
        self._rng = rng
        self._retries = retries
        self._queues: dict[str, asyncio.Queue[tuple[Planned, bytes] | None]] = {
            w.name: asyncio.Queue() for w in ways
        }
        self._acked_stations: set[str] = set()
        self.sent_out_of_order = 0

    async def _deliver(self, way: Way, planned: Planned, raw: bytes) -> bool:
        """Send until acknowledged (a client with retries); every try is a copy sent."""
        backoff = 0.2
        for _attempt in range(self._retries + 1):
            self._ledger.attempt(planned)
            if await way.send(planned.station, raw):
                self._ledger.ack(planned, way.name)
                return True
            self._ledger.fail(way.name)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 3.0)
        return False

    async def _way_loop(self, way: Way) -> None:
        queue = self._queues[way.name]
        while (item := await queue.get()) is not None:
            planned, raw = item
            if await self._deliver(way, planned, raw) and not planned.too_late:
                self._acked_stations.add(planned.station)
                if self._rng.random() < self._inject.duplicates:
                    # the same bytes again, through any way in (same key: same partition)
                    other = self._rng.choice(self._ways).name
                    self._queues[other].put_nowait((planned, raw))

    async def run(self, duration_s: float, rate: float) -> None:
        """``rate`` events per second for ``duration_s``, then until every queue is empty."""
        loops = [asyncio.create_task(self._way_loop(w)) for w in self._ways]
        start = time.monotonic()
        n = 0
        try:
            while (elapsed := time.monotonic() - start) < duration_s:
                due = int(elapsed * rate) + 1
                while n < due:
                    n += 1
                    self._queue_one()
                await asyncio.sleep(0.02)
        finally:
            for q in self._queues.values():
                q.put_nowait(None)
            await asyncio.gather(*loops)

    def _queue_one(self) -> None:
        now_ms = int(time.time() * 1000)
        way = self._rng.choice(self._ways).name
        roll = self._rng.random()
        if roll < self._inject.too_late and self._acked_stations:
            station = self._rng.choice(sorted(self._acked_stations))
            item = self._maker.make(station, now_ms - TOO_LATE_AGE_MS, too_late=True)
        else:
            station = self._rng.choice(self._maker.stations)
            t = now_ms
            if roll > 1 - self._inject.out_of_order:
                t -= self._rng.randint(1_000, self._inject.out_of_order_max_ms)
                self.sent_out_of_order += 1
            item = self._maker.make(station, t)
        self._queues[way].put_nowait(item)


class Ticker:
    """One current event per partition of the air topic every second, from a source of
    its own (never in the ledger), so every partition's watermark follows the clock and
    the last windows become final without waiting for idle timeouts."""

    def __init__(self, bootstrap_servers: str, run: str) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
        self._run = run
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._producer.start()
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        topic = events_topic("air")
        partitions = sorted(await self._producer.partitions_for(topic))
        n = 0
        while True:
            when = datetime.now(UTC)
            for p in partitions:
                n += 1
                station = f"TICK-{self._run}-{p}"
                data = {"station_id": station, "district": "HD", "pm25": 1.0, "pm10": 1.0}
                raw = encode(
                    new_event(
                        AIR,
                        f"/chaos-tick/{self._run}/{p}",
                        data,
                        time=when,
                        event_id=f"tick-{self._run}-{n}",
                    )
                )
                with contextlib.suppress(Exception):
                    await self._producer.send(
                        topic,
                        raw,
                        key=station.encode(),
                        partition=p,
                        headers=list(STRUCTURED_HEADERS),
                        timestamp_ms=epoch_ms(when),
                    )
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._producer.stop()
