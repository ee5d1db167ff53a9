"""The MQTT gateway's at-least-once delivery: a message it had not acknowledged when it
died is delivered again after its restart (the real broker, Mosquitto, a gateway process)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from events.envelope import encode
from events.topics import events_topic
from ioc.services import broker, mqtt_accounts
from ioc.settings import ServiceSettings
from tests.ingest_keys import MqttLogins, ensure_key, wait_login
from tests.private_broker import private_broker
from tests.test_ingest import _free_port, _publish_qos1, air_event
from tests.waiting import until


def _log_text(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


def _gateway_log_events(log: Path, event: str) -> list[dict[str, object]]:
    """The gateway's JSON log lines (stderr is not a terminal) whose event is ``event``."""
    found: list[dict[str, object]] = []
    for line in _log_text(log).splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            obj = orjson.loads(line)
            if isinstance(obj, dict) and obj.get("event") == event:
                found.append(obj)
    return found


async def _spawn_gateway(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """`python -m ingest` (as `ioc up` runs it), once it has subscribed to MQTT."""
    connected = len(_gateway_log_events(log, "mqtt_connected"))
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ingest", env={**os.environ, **env}, stdout=out, stderr=out
        )
    try:
        subscribed = lambda: (  # noqa: E731
            len(_gateway_log_events(log, "mqtt_connected")) > connected
            or proc.returncode is not None
        )
        await until(subscribed, lambda: _log_text(log), every=0.1)
        assert proc.returncode is None, _log_text(log)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        raise
    return proc


async def _ids_on(bootstrap: str, topic: str, until: str) -> list[str]:
    """Event ids on ``topic`` from its start, read until ``until`` is among them."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    ids: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while until not in ids:
            assert time.monotonic() < deadline, f"{until} never reached {topic}: {ids}"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                ids += [str(orjson.loads(r.value)["id"]) for r in records]
    finally:
        await consumer.stop()
    return ids


async def test_mqtt_message_unacknowledged_when_the_gateway_dies_is_delivered_after_restart(
    mqtt_logins: MqttLogins, database_url: str, service_settings: ServiceSettings, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    # a device account of its own, so that no other gateway's subscription sees its topic
    device = (f"redelivery-{tag}", f"redelivery-secret-{tag}")
    await ensure_key(database_url, *device, ["*"], ["*"])
    mqtt_accounts.sync_accounts(service_settings, database_url)
    await asyncio.to_thread(wait_login, mqtt_logins.address, device)
    topic = f"ioc/events/{device[0]}/air"
    log = tmp_path / "gateway.log"
    mqtt_address = mqtt_logins.address
    with private_broker(tmp_path) as own:
        env = {
            "IOC_BOOTSTRAP_SERVERS": own.bootstrap_servers,
            "IOC_DATABASE_URL": database_url,
            "IOC_INGEST_HTTP_PORT": str(_free_port()),
            "IOC_MQTT_HOST": mqtt_address[0],
            "IOC_MQTT_PORT": str(mqtt_address[1]),
            "IOC_MQTT_USERNAME": mqtt_logins.gateway[0],
            "IOC_MQTT_PASSWORD": mqtt_logins.gateway[1],
            "IOC_INGEST_MQTT_TOPIC": f"ioc/events/{device[0]}/#",
            "IOC_INGEST_MQTT_CLIENT_ID": f"ioc-ingest-redelivery-{tag}",  # persistent session
        }
        proc = await _spawn_gateway(env, log)
        try:
            # A first event goes through: the subscription is in place and acknowledged.
            probe = air_event(f"PROBE-{tag}")
            _publish_qos1(mqtt_address, topic, encode(probe), device)
            assert str(probe["id"]) in await _ids_on(
                own.bootstrap_servers, events_topic("air"), str(probe["id"])
            )
            # Kafka goes away; the next event reaches the gateway, which cannot publish it,
            # so it holds back its PUBACK and retries... until it is killed.
            broker.down(own)
            held = air_event(f"HELD-{tag}")
            _publish_qos1(mqtt_address, topic, encode(held), device)
            # aiokafka's request timeout is 40 s
            failed = lambda: _gateway_log_events(log, "publish_failed")  # noqa: E731
            await until(failed, lambda: _log_text(log), within=90, every=0.2)
            proc.kill()
            assert await proc.wait() == -signal.SIGKILL
            # Kafka is back (empty: in-memory storage); the restarted gateway resumes its
            # MQTT session and Mosquitto delivers the unacknowledged message again.
            broker.up(own)
            proc = await _spawn_gateway(env, log)
            ids = await _ids_on(own.bootstrap_servers, events_topic("air"), str(held["id"]))
            # ...and only that one: the probe was acknowledged, so it is not sent again.
            assert ids == [str(held["id"])]
        finally:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
