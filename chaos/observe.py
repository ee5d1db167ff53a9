"""What came out: final KPI windows and dead letters (tailed from Kafka), raw rows (SQL)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from events.brokers import refresh_metadata
from events.records import DeadLetter, KpiRecord
from events.topics import DEADLETTER, KPI

log = structlog.get_logger("chaos.observe")

COUNT_KPI = "air.pm25.avg"


class Tail:
    """Reads ``ioc.kpi`` and ``ioc.deadletter`` from the beginning, in the background, and
    keeps what concerns the run: the newest revision of every 1-min ``air.pm25.avg``
    window of its stations, and its dead letters by event id."""

    def __init__(self, bootstrap_servers: str, run: str) -> None:
        self._bootstrap = bootstrap_servers
        self._run = run
        self._tag = run.encode()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        # (station, window start ms) -> newest record
        self.windows: dict[tuple[str, int], KpiRecord] = {}
        self.dead: dict[str, list[str]] = defaultdict(list)
        self.records = 0
        # dead letters of the bad inputs: input number -> reasons
        self.bad: dict[int, list[str]] = defaultdict(list)
        self._bad_id = re.compile(rb"bad-" + run.encode() + rb"-(\d{5})")

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False, group_id=None
        )
        await self._consumer.start()
        # every topic's partitions (topics() alone leaves them unknown on Apache Kafka, and
        # the tail then read partition 0 only: most final windows never arrived)
        await refresh_metadata(self._consumer)
        tps = [
            TopicPartition(topic, p)
            for topic in (KPI, DEADLETTER)
            for p in sorted(self._partitions(topic))
        ]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._loop())

    def _partitions(self, topic: str) -> set[int]:
        assert self._consumer is not None
        found = self._consumer.partitions_for_topic(topic)
        if not found:
            raise RuntimeError(f"no partitions known for {topic}: is the broker set up?")
        return set(found)

    async def _loop(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, recs in batches.items():
                for r in recs:
                    self.records += 1
                    if r.value is None:
                        continue
                    if tp.topic != KPI:
                        self._dead_letter(r.value)  # the event inside is base64: no filter
                    elif self._tag in r.value:
                        self._kpi(r.value)

    def _kpi(self, raw: bytes) -> None:
        rec = KpiRecord.from_json(raw)
        if rec.kpi != COUNT_KPI or not rec.scope.startswith("station:"):
            return
        if (rec.window_end - rec.window_start) != timedelta(minutes=1):
            return
        key = (rec.scope.removeprefix("station:"), int(rec.window_start.timestamp() * 1000))
        held = self.windows.get(key)
        if held is None or rec.revision >= held.revision:
            self.windows[key] = rec

    def _dead_letter(self, raw: bytes) -> None:
        letter = DeadLetter.from_json(raw)
        if found := self._bad_id.search(letter.value):
            # by its id: a gateway re-encodes an event it accepted, so bytes may differ
            self.bad[int(found.group(1))].append(letter.reason)
            return
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
            event = orjson.loads(letter.value)
            ok = isinstance(event, dict) and isinstance(event.get("id"), str)
            if ok and event["id"].startswith(self._run):
                self.dead[event["id"]].append(letter.reason)

    def finals(self, stations: set[str]) -> dict[tuple[str, int], int]:
        return {k: r.count for k, r in self.windows.items() if k[0] in stations and r.final}

    def open_windows(self, stations: set[str]) -> list[tuple[str, int]]:
        return [k for k, r in self.windows.items() if k[0] in stations and not r.final]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


async def raw_rows(database_url: str, run: str, since: datetime) -> dict[str, int]:
    """Rows of the raw ``events`` table per event id, for the run's sources."""
    query = "SELECT id, count(*) FROM events WHERE time >= %s AND source LIKE %s GROUP BY id"
    try:
        async with await psycopg.AsyncConnection.connect(database_url, connect_timeout=5) as db:
            cur = await db.execute(query, (since.astimezone(UTC), f"/chaos/{run}/%"))
            return {str(i): int(n) for i, n in await cur.fetchall()}
    except psycopg.Error as exc:
        log.info("raw rows not readable yet", error=str(exc)[:200])
        return {}
