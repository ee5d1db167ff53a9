"""Sends the simulated events over MQTT as field devices do (``ioc simulate --via mqtt``):
one structured CloudEvent per message, QoS 1, logged in with an ingest key's device account
(user = the key's name, password = its secret), below ``ioc/events/<key name>/`` — the only
subtree Mosquitto's ACL lets that account write (docs/ingest.md, *MQTT*).

A record counts as acknowledged when Mosquitto has sent its PUBACK: from then on the
broker holds it and the ingest gateway forwards it to Kafka (and acknowledges to Mosquitto
only after Kafka has it). paho's network thread sends and resends; the publishing loop never
waits. A login Mosquitto refuses stops the run at once with the reason.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from events.errors import ServiceError
from simulators.injection import Record
from simulators.settings import SimulatorSettings

log = structlog.get_logger(__name__)

_CONNECT_WAIT_S = 10.0
MAX_INFLIGHT = 1000  # QoS 1 messages without PUBACK (paho's default, 20, caps the rate)


class MqttPublisher:
    """Publishes :class:`Record` values to Mosquitto and counts its PUBACKs."""

    idempotent = False  # QoS 1 is at-least-once; consumers drop repeated event ids

    def __init__(self, settings: SimulatorSettings) -> None:
        self._prefix = f"ioc/events/{settings.ingest_key_name}"
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._refused: str | None = None
        self.sent = 0
        self.acked = 0
        self.failed = 0
        self.last_error: str | None = None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"ioc-sim-{uuid.uuid4().hex[:8]}"
        )
        client.username_pw_set(settings.ingest_key_name, settings.ingest_key)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(0)  # unbounded: the runner bounds what is outstanding
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        self._client = client
        try:
            client.connect(settings.mqtt_host, settings.mqtt_port)
        except OSError as exc:
            raise ServiceError(
                f"cannot reach Mosquitto at {settings.mqtt_host}:{settings.mqtt_port} ({exc}); "
                "is it running? (`ioc services up mqtt`)"
            ) from exc
        client.loop_start()
        if not self._connected.wait(_CONNECT_WAIT_S) or self._refused:
            client.loop_stop()
            raise ServiceError(
                f"Mosquitto refused the login {settings.ingest_key_name!r}: "
                f"{self._refused or 'no answer'} (an ingest key's name and secret: "
                "IOC_SIM_INGEST_KEY_NAME, IOC_SIM_INGEST_KEY)"
            )

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        if reason.is_failure:
            self._refused = str(reason)
        self._connected.set()

    def _on_publish(self, _c: mqtt.Client, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        with self._lock:
            if reason.is_failure:
                self.failed += 1
                self.last_error = str(reason)
            else:
                self.acked += 1

    @property
    def outstanding(self) -> int:
        return self.sent - self.acked - self.failed

    def send(self, records: Sequence[Record]) -> None:
        publish = self._client.publish
        for r in records:
            # ioc/events/<key>/<domain>/<record key>: the gateway reads the event itself;
            # the rest of the topic is for people and ACLs.
            info = publish(f"{self._prefix}/{r.domain}/{r.key.decode()}", r.value, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
                with self._lock:
                    self.failed += 1
                    self.last_error = mqtt.error_string(info.rc)
        self.sent += len(records)

    def flush(self, timeout: float | None = 30.0) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.outstanding > 0 and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.01)  # polling paho's acknowledgement counters

    def close(self, timeout: float = 30.0) -> None:
        try:
            self.flush(timeout)
            lost = self.outstanding
            if lost:
                with self._lock:
                    self.failed += lost
                log.error("mqtt_unacknowledged", records=lost)
        finally:
            self._client.disconnect()
            self._client.loop_stop()
