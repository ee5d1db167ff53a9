"""Settings of the ingest gateways (environment variables ``IOC_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from events.envelope import DEFAULT_MAX_FUTURE_SKEW_S
from events.settings import IocSettings

# Published in the README: a deployment must never accept it (ingest_refuse_demo_key).
DEFAULT_DEMO_KEY = "demo-ingest-key"


class IngestSettings(IocSettings):
    model_config = SettingsConfigDict(env_prefix="IOC_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    # Where the ingest keys live (table ingest_keys; `ioc ingest keys add|list|revoke`).
    database_url: str = "postgresql://postgres@127.0.0.1:55432/ioc"
    # The gateway reloads the active keys this often: a new key works, a revoked one stops
    # working, within this time. When the database cannot be read, the last list serves
    # for at most ingest_keys_max_stale_s after its load, then requests get 503.
    ingest_keys_refresh_s: float = Field(default=5.0, gt=0)
    ingest_keys_max_stale_s: float = Field(default=60.0, gt=0)
    # The secret of the key `demo` that `ioc up` creates (any type, any source).
    ingest_demo_key: str = Field(default=DEFAULT_DEMO_KEY, min_length=8)
    # A deployment (docker-compose.yml) sets this: the gateway then refuses to start
    # without an active key, never accepts a key whose secret is the demo's (the default
    # one or IOC_INGEST_DEMO_KEY), and refuses to start while such a key is active.
    ingest_refuse_demo_key: bool = False
    ingest_http_host: str = "127.0.0.1"
    ingest_http_port: int = 8081
    # A request body larger than this is refused with 413 before it is parsed.
    ingest_max_body_bytes: int = 4 * 1024 * 1024
    # At most this many events in one batch request.
    ingest_max_batch: int = 5000
    # Bytes of events handed to the Kafka producer and not yet acknowledged by the broker:
    # past this, HTTP requests get 429 with Retry-After (seconds) instead of queueing in
    # memory. A request is always admitted when nothing is in flight, so a single large
    # batch cannot be refused forever.
    ingest_max_inflight_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    ingest_retry_after_s: int = Field(default=1, ge=1)
    # An event whose time lies further ahead of the gateway's clock is refused with
    # reason ``future_time`` (IOC_MAX_FUTURE_SKEW_S, shared with the stream workers).
    max_future_skew_s: float = Field(default=DEFAULT_MAX_FUTURE_SKEW_S, ge=0)
    # MQTT bridge; disabled when mqtt_host is empty.
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    # The gateway's MQTT account (`ioc up` passes the one `ioc services up` made).
    mqtt_username: str = "ioc-ingest"
    mqtt_password: str | None = None
    # Below ioc/events/, the first topic level names the ingest key whose scopes the
    # event must fit (the device account of that name may write only there).
    ingest_mqtt_topic: str = "ioc/events/#"
    ingest_mqtt_client_id: str = "ioc-ingest"
    # Messages taken from MQTT per Kafka flush (each flush acks them all afterwards).
    ingest_mqtt_batch: int = 1000
