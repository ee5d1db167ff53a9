"""Open alerts in the database that the alert topic no longer knows are closed at start.

The alerts worker knows the alerts of the compacted ``ioc.alerts`` topic and nothing
else. When that topic loses its history (the embedded broker keeps it in memory: a
restart of the demo starts it empty), alerts the database still holds open would stay on
the wall for ever: no worker will ever clear them. So the storage process, before its
sinks start, reads the topic to its end and publishes a ``cleared`` transition for each
alert the database holds open and the topic does not mention at all; its own alert sink
then stores it, and the push server takes it off the wall like any other clear.

An alert the topic does mention is left to the topic: its latest state there is what the
sink stores. Running before the sinks means an alert raised while this runs is not in the
database yet, so it is never mistaken for a stale one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

import psycopg
import structlog
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from events.records import AlertRecord
from storage import queries
from streams.state import read_whole_topic

log = structlog.get_logger(__name__)


def stale_alerts(
    open_in_db: Iterable[AlertRecord], on_topic: Mapping[str, object], now: datetime
) -> list[AlertRecord]:
    """The ``cleared`` transitions of the open alerts that the topic does not know."""
    return [
        replace(a, state="cleared", updated_at=max(now, a.updated_at), revision=a.revision + 1)
        for a in open_in_db
        if a.alert_id not in on_topic
    ]


async def alert_ids_on_topic(bootstrap_servers: str, topic: str) -> set[str]:
    """Every alert id (record key) on ``topic``, read to its end."""
    ids: set[str] = set()

    def keep(_: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        ids.update(r.key.decode() for r in records if r.key is not None)

    await read_whole_topic(bootstrap_servers, topic, keep)
    return ids


async def reconcile_alerts(
    database_url: str, bootstrap_servers: str, topic: str, producer: AIOKafkaProducer
) -> list[AlertRecord]:
    """Publish (and wait for) the clears of the stale open alerts; returns them."""
    on_topic = await alert_ids_on_topic(bootstrap_servers, topic)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        open_in_db = await queries.active_alerts(conn)
    stale = stale_alerts(open_in_db, dict.fromkeys(on_topic), datetime.now(UTC))
    sent = [await producer.send(topic, rec.to_json(), key=rec.alert_id.encode()) for rec in stale]
    await asyncio.gather(*sent)
    if stale:
        log.warning(
            "closed alerts the alert topic no longer knows",
            alerts=len(stale),
            open_in_db=len(open_in_db),
            on_topic=len(on_topic),
        )
    return stale
