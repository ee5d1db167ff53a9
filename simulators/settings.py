"""Settings of the simulator, from ``IOC_*`` environment variables or passed explicitly.

The CLI (``ioc simulate``) and the headless service (``python -m simulators``) both build
one :class:`SimulatorSettings` and hand it to :func:`simulators.runner.run`; nothing in
the package reads the environment on its own.
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timedelta

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from events.errors import ConfigurationError
from events.settings import IocSettings

# What one publishing process sustains on a (shared) 2-core machine, events/s, with
# headroom: generation + kafka-python ~12-14k, generation + aiokafka ~25k.
PROCESS_CAPACITY = {"kafka-python": 12_000, "aiokafka": 22_000, "http": 5_000, "mqtt": 5_000}
AUTO_AIOKAFKA_ABOVE = 10_000


class SimulatorSettings(IocSettings):
    """How fast, how long, which scenario, where to publish, what faults to inject."""

    model_config = SettingsConfigDict(env_prefix="IOC_SIM_", extra="ignore", populate_by_name=True)

    # The broker address comes from the shared variable every component receives
    # (IOC_BOOTSTRAP_SERVERS), not from the IOC_SIM_ prefix.
    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", validation_alias="IOC_BOOTSTRAP_SERVERS"
    )
    rate: float = Field(default=1000.0, gt=0, description="events per real second (total)")
    duration: float | None = Field(default=None, gt=0, description="real seconds; None = forever")
    speed: float = Field(default=1.0, gt=0, description="simulated seconds per real second")
    seed: int = 42
    scenario: str = Field(default="none", description="a scenario name, 'cycle' or 'none'")
    # Simulated start time (UTC); None = the wall clock at start, or earlier with
    # speed > 1 (see default_start): simulated time must not run ahead of the clock.
    start: datetime | None = None
    # Injection of imperfect deliveries for testing the pipeline (fractions of events).
    late: float = Field(default=0.0, ge=0, le=1)
    late_by_s: float = Field(default=900.0, gt=0, description="how far back late events lie")
    out_of_order: float = Field(default=0.0, ge=0, le=1)
    duplicates: float = Field(default=0.0, ge=0, le=1)
    malformed: float = Field(default=0.0, ge=0, le=1)
    faults: bool = Field(default=True, description="sensor faults: stuck values, dropouts")
    # Producer tuning. Tansu accepts idempotent producers (InitProducerId works), but the
    # setting stays switchable for brokers that refuse it: "auto" tries it and falls back.
    idempotence: str = Field(default="auto", pattern="^(auto|on|off)$")
    # kafka-python (idempotent; one pure-Python send() per record, ~40 µs) or aiokafka
    # (~7 µs per record; Tansu 0.6 refuses its InitProducerId, so not idempotent there).
    # "auto": kafka-python up to AUTO_AIOKAFKA_ABOVE events/s, aiokafka above.
    producer: str = Field(default="auto", pattern="^(auto|kafka-python|aiokafka)$")
    linger_ms: int = Field(default=20, ge=0)
    batch_size: int = Field(default=256 * 1024, gt=0)
    # The way in: straight to Kafka (the default), through the ingest gateway over HTTP
    # (batches to IOC_SIM_INGEST_URL with the ingest key IOC_SIM_INGEST_KEY as bearer), or
    # over MQTT as the key's device account (IOC_SIM_INGEST_KEY_NAME, the same secret).
    via: str = Field(default="kafka", pattern="^(kafka|http|mqtt)$")
    ingest_url: str = "http://127.0.0.1:8081"
    # The demo's key (`ioc up` creates it with the secret IOC_INGEST_DEMO_KEY) unless
    # IOC_SIM_INGEST_KEY names another.
    ingest_key: str = Field(
        default="demo-ingest-key",
        validation_alias=AliasChoices("IOC_SIM_INGEST_KEY", "IOC_INGEST_DEMO_KEY"),
    )
    ingest_key_name: str = "demo"
    # Mosquitto, from the shared variables every component receives.
    mqtt_host: str = Field(default="127.0.0.1", validation_alias="IOC_MQTT_HOST")
    mqtt_port: int = Field(default=1883, validation_alias="IOC_MQTT_PORT")
    # Parallel publishing processes (0 = as many as the rate needs by PROCESS_CAPACITY,
    # at most one per core).
    workers: int = Field(default=0, ge=0, le=16)
    # Health and Prometheus metrics of the headless service (0 = off).
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    progress_interval_s: float = Field(default=1.0, gt=0)

    @property
    def effective_producer(self) -> str:
        if self.via != "kafka":
            return self.via
        if self.producer != "auto":
            return self.producer
        return "kafka-python" if self.rate <= AUTO_AIOKAFKA_ABOVE else "aiokafka"

    @property
    def effective_workers(self) -> int:
        if self.workers:
            return self.workers
        per_process = PROCESS_CAPACITY[self.effective_producer]
        return max(1, min(os.cpu_count() or 1, math.ceil(self.rate / per_process)))

    @model_validator(mode="after")
    def _check_fractions(self) -> SimulatorSettings:
        total = self.late + self.out_of_order + self.duplicates + self.malformed
        if total > 1.0:
            raise ConfigurationError(
                f"late + out_of_order + duplicates + malformed = {total:.2f} > 1; lower them"
            )
        if self.via != "kafka" and self.malformed:
            # The gateways refuse broken bytes with a 4xx before Kafka; the malformed
            # injection tests the consumers, so it goes straight to the topics.
            raise ConfigurationError("--malformed needs --via kafka (gateways refuse it)")
        return self


def default_start(settings: SimulatorSettings, now: datetime) -> datetime:
    """The simulated start when none is given: ``now``, or with ``speed`` > 1 and a
    ``duration`` early enough that the run ends at the wall clock. Gateways and stream
    workers refuse event times more than IOC_MAX_FUTURE_SKEW_S ahead of their clock
    (``future_time``), and faster-than-real time would soon be that far ahead."""
    if settings.start is not None:
        return settings.start
    if settings.speed > 1 and settings.duration is not None:
        return now - timedelta(seconds=settings.duration * (settings.speed - 1))
    return now
