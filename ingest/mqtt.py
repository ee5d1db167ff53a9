"""MQTT gateway: CloudEvents published to Mosquitto (topic ``ioc/events/#``) into Kafka.

Each MQTT message is one structured CloudEvent. Valid events go to their domain topic,
invalid ones to ``ioc.deadletter`` with the reason. The subscription is QoS 1 with manual
acknowledgement and a persistent session: the PUBACK is sent only after Kafka has
acknowledged the batch, so a gateway that dies earlier gets the messages again
(at-least-once; the stream workers and the raw-event sink count an event (source, id)
once, see docs/streams.md).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from events.envelope import decode, latest_event_ms
from events.errors import InvalidEventError, describe_exception
from events.records import DeadLetter
from ingest.gateway import KafkaRecord, to_record
from ingest.keys import MQTT_EVENTS_ROOT, IngestKey, key_name_of_topic
from ingest.keystore import KeysUnavailable
from ingest.metrics import IngestMetrics
from ingest.publisher import KafkaPublisher
from ingest.settings import IngestSettings

log = structlog.get_logger("ingest.mqtt")

# name -> the active ingest key of that name, or None (KeyCache.by_name)
KeyLookup = Callable[[str], IngestKey | None]


def triage(
    messages: list[mqtt.MQTTMessage],
    latest_ms: int | None = None,
    key_of: KeyLookup | None = None,
) -> tuple[list[KafkaRecord], list[DeadLetter]]:
    """Split a batch of MQTT messages into Kafka records and dead letters (an event time
    after ``latest_ms`` is ``future_time``). With ``key_of`` (name -> active key), an event
    must also fit the scopes of the key its topic names (ioc/events/NAME/...): otherwise
    ``unknown_key``, ``type_not_allowed`` or ``source_not_allowed``. ``key_of`` may raise
    :class:`ingest.keystore.KeysUnavailable`; the caller then keeps the batch for later."""
    records: list[KafkaRecord] = []
    letters: list[DeadLetter] = []
    for msg in messages:
        try:
            record = to_record(decode(msg.payload, latest_ms))
            if key_of is not None:
                _check_scope(key_of, msg.topic, record)
            records.append(record)
        except KeysUnavailable:
            raise
        except InvalidEventError as exc:
            letters.append(_dead_letter(msg, exc.reason, exc.detail))
        except Exception as exc:  # a bug the message provokes: dead-letter it, go on
            letters.append(_dead_letter(msg, "processing_error", describe_exception(exc)))
    return records, letters


def _check_scope(key_of: KeyLookup, topic: str, record: KafkaRecord) -> None:
    name = key_name_of_topic(topic)
    key = key_of(name) if name is not None else None
    if key is None:
        raise InvalidEventError(
            "unknown_key",
            f"topic {topic!r}: no active ingest key {name!r} (publish below "
            f"{MQTT_EVENTS_ROOT}/<key name>/)",
        )
    refusal = key.refusal(record.type, record.source)
    if refusal is not None:
        raise InvalidEventError(*refusal)


def _dead_letter(msg: mqtt.MQTTMessage, reason: str, detail: str) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        detail=detail,
        source_topic=f"mqtt:{msg.topic}",
        source_partition=-1,
        source_offset=msg.mid,
        value=bytes(msg.payload),
        component="ingest.mqtt",
    )


class MqttBridge:
    def __init__(
        self,
        settings: IngestSettings,
        publisher: KafkaPublisher,
        metrics: IngestMetrics,
        keys: KeyLookup | None = None,
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._publisher = publisher
        self._metrics = metrics
        self._lock = threading.Lock()
        self._pending: list[mqtt.MQTTMessage] = []
        self._wake = asyncio.Event()
        self.connected = threading.Event()

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any = None
    ) -> None:
        if not reason.is_failure:
            client.subscribe(self._settings.ingest_mqtt_topic, qos=1)
            self.connected.set()
            log.info("mqtt_connected", topic=self._settings.ingest_mqtt_topic)
        else:  # e.g. "Not authorized": IOC_MQTT_USERNAME / IOC_MQTT_PASSWORD
            log.error("mqtt_refused", reason=str(reason), user=self._settings.mqtt_username)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected.clear()
        log.warning("mqtt_disconnected", reason=str(reason))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            # Runs on paho's network thread: append, and wake the loop only for the
            # first message of a batch (one cross-thread call per batch, not per message).
            with self._lock:
                self._pending.append(msg)
                first = len(self._pending) == 1
            if first:
                loop.call_soon_threadsafe(self._wake.set)

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._settings.ingest_mqtt_client_id,
            clean_session=False,
            manual_ack=True,
        )
        if self._settings.mqtt_password is not None:
            client.username_pw_set(self._settings.mqtt_username, self._settings.mqtt_password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = on_message
        client.connect_async(self._settings.mqtt_host, self._settings.mqtt_port, keepalive=30)
        client.loop_start()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                with self._lock:
                    batch = self._pending[: self._settings.ingest_mqtt_batch]
                    del self._pending[: len(batch)]
                    if self._pending:
                        self._wake.set()
                if batch:
                    await self._forward(client, batch)
        finally:
            client.loop_stop()
            client.disconnect()

    async def _forward(self, client: mqtt.Client, batch: list[mqtt.MQTTMessage]) -> None:
        delay = 0.5
        while True:
            try:
                # again on each attempt: the key list may have changed meanwhile
                latest = latest_event_ms(time.time(), self._settings.max_future_skew_s)
                records, letters = triage(batch, latest, self._keys)
                if records:
                    await self._publisher.publish(records, bounded=False)
                if letters:
                    await self._publisher.dead_letter(letters)
                break
            except KeysUnavailable as exc:  # the scopes cannot be checked: keep and retry
                log.warning("keys_unavailable", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except Exception as exc:  # keep the batch unacknowledged and retry
                self._metrics.publish_errors.labels("mqtt").inc()
                log.warning("publish_failed", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        for msg in batch:
            client.ack(msg.mid, msg.qos)
        self._metrics.accepted.labels("mqtt").inc(len(records))
        for letter in letters:
            self._metrics.rejected.labels("mqtt", letter.reason).inc()
