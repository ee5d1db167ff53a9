"""Alerts the database holds open but the alert topic forgot are cleared at start."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaProducer

from events.records import AlertRecord
from storage import migrate as migrations
from storage import writers
from storage.reconcile import alert_ids_on_topic, reconcile_alerts, stale_alerts
from storage.rows import alert_row

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _alert(alert_id: str, state: str = "raised", revision: int = 1) -> AlertRecord:
    return AlertRecord(
        alert_id=alert_id,
        rule="water.level.alarm",
        subject="station:HD-TV-AP",
        state=state,  # type: ignore[arg-type]
        severity="critical",
        level=3,
        title="Mực nước vượt BĐ III",
        kpi="water.level.max",
        value=3.05,
        threshold=2.9,
        raised_at=NOW - timedelta(hours=1),
        updated_at=NOW - timedelta(minutes=50),
        revision=revision,
    )


def test_only_open_alerts_unknown_to_the_topic_are_cleared() -> None:
    known, forgotten = _alert("al-known"), _alert("al-forgotten", "acknowledged", 3)
    [closed] = stale_alerts([known, forgotten], {"al-known": object()}, NOW)
    assert closed == replace(forgotten, state="cleared", updated_at=NOW, revision=4)


async def test_the_storage_start_clears_what_a_restarted_broker_forgot(
    database_url: str, bootstrap_servers: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrations.migrate(conn)
        await writers.ALERTS.prepare(conn)
        tag = uuid.uuid4().hex[:8]
        known, forgotten = _alert(f"al-{tag}-known"), _alert(f"al-{tag}-forgotten")
        await writers.ALERTS.write(conn, [alert_row(known), alert_row(forgotten)])
    finally:
        await conn.close()
    topic = f"test.{tag}.alerts"  # the alert topic of this test: only `known` is on it
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, known.to_json(), key=known.alert_id.encode())
        closed = await reconcile_alerts(database_url, bootstrap_servers, topic, producer)
    finally:
        await producer.stop()
    ids = {a.alert_id for a in closed}
    assert forgotten.alert_id in ids and known.alert_id not in ids
    assert all(a.state == "cleared" for a in closed)
    # the clears are on the topic now (the alert sink stores them, the wall drops them)
    assert forgotten.alert_id in await alert_ids_on_topic(bootstrap_servers, topic)
