"""Settings of the ingest gateways (environment variables ``IOC_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from events.envelope import DEFAULT_MAX_FUTURE_SKEW_S
from events.settings import IocSettings


class IngestSettings(IocSettings):
    model_config = SettingsConfigDict(env_prefix="IOC_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    ingest_http_host: str = "127.0.0.1"
    ingest_http_port: int = 8081
    # A request body larger than this is refused with 413 before it is parsed.
    ingest_max_body_bytes: int = 4 * 1024 * 1024
    # At most this many events in one batch request.
    ingest_max_batch: int = 5000
    # An event whose time lies further ahead of the gateway's clock is refused with
    # reason ``future_time`` (IOC_MAX_FUTURE_SKEW_S, shared with the stream workers).
    max_future_skew_s: float = Field(default=DEFAULT_MAX_FUTURE_SKEW_S, ge=0)
    # MQTT bridge; disabled when mqtt_host is empty.
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    ingest_mqtt_topic: str = "ioc/events/#"
    ingest_mqtt_client_id: str = "ioc-ingest"
    # Messages taken from MQTT per Kafka flush (each flush acks them all afterwards).
    ingest_mqtt_batch: int = 1000
