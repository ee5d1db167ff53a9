"""Settings of the stream workers (``IOC_STREAMS_*``; the broker from ``IOC_BOOTSTRAP_SERVERS``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from events.envelope import DEFAULT_MAX_FUTURE_SKEW_S
from events.settings import IocSettings
from events.topics import DEADLETTER, EVENTS_PREFIX, KPI, TopicSpec

if TYPE_CHECKING:  # the engine (numpy, aiokafka) is not imported for the settings alone
    from streams.aggregator import EngineConfig


class StreamsSettings(IocSettings):
    model_config = SettingsConfigDict(
        env_prefix="IOC_STREAMS_", extra="ignore", populate_by_name=True
    )

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("IOC_STREAMS_BOOTSTRAP_SERVERS", "IOC_BOOTSTRAP_SERVERS"),
    )
    group_id: str = "ioc-streams"
    # Contract topics; overridable so tests and benchmarks run on topics of their own.
    events_topic_prefix: str = EVENTS_PREFIX
    kpi_topic: str = KPI
    deadletter_topic: str = DEADLETTER
    # Internal topics: pane partials (stage 1 -> stage 2) and the durable state snapshots.
    partials_topic: str = "ioc.streams.partials"
    partials_partitions: int = 4
    state_topic: str = "ioc.streams.state"

    # Windows, in seconds; every size must be a whole number of panes (= the tumbling size).
    tumbling_s: int = 60
    hopping_size_s: int = 900
    hopping_hop_s: int = 60
    hourly_s: int = 3600
    allowed_lateness_s: float = 120.0
    # How far behind the watermark an event may still be applied (re-emitting a final
    # window with a higher revision); older events are too late.
    late_grace_s: float = 120.0
    idle_timeout_s: float = 10.0
    live_interval_s: float = 1.0
    # Events whose time lies further ahead of this worker's clock are dead-lettered as
    # ``future_time`` (the same bound as the ingest gateways; not all producers are ours).
    max_future_skew_s: float = Field(
        default=DEFAULT_MAX_FUTURE_SKEW_S,
        ge=0,
        validation_alias=AliasChoices("IOC_STREAMS_MAX_FUTURE_SKEW_S", "IOC_MAX_FUTURE_SKEW_S"),
    )

    # Hand-off and durability cadence.
    publish_interval_s: float = 0.25  # stage 1 -> partials topic
    checkpoint_interval_s: float = 1.0  # stage 1 snapshot + offset commit
    flush_interval_s: float = 0.25  # stage 2 emission (+ snapshot + commit)

    # Consumer tuning (Tansu-friendly group timings).
    max_poll_records: int = 20_000
    fetch_max_bytes: int = 64 * 1024 * 1024
    max_partition_fetch_bytes: int = 8 * 1024 * 1024
    session_timeout_ms: int = 10_000
    rebalance_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    # How long reading the state topic back may take before the worker gives up (and exits
    # for its supervisor to restart it) rather than run partitions without their state.
    restore_timeout_s: float = 120.0
    # Faust's ``stream_processing_timeout`` (Faust engine only): a partition with records
    # waiting and nothing processed for this long is logged as stalled by Faust.
    faust_stall_warning_s: float = 300.0

    # Health (/healthz, /readyz) and Prometheus metrics; 0 disables the HTTP server.
    http_host: str = "127.0.0.1"
    http_port: int = 8091
    # /readyz says "not_ready" while a source partition is more records than this behind.
    ready_max_lag: int = Field(default=100_000, ge=0)

    def engine_config(self) -> EngineConfig:
        from streams.aggregator import EngineConfig

        return EngineConfig(
            pane_ms=self.tumbling_s * 1000,
            lateness_ms=int(self.allowed_lateness_s * 1000),
            grace_ms=int(self.late_grace_s * 1000),
            idle_timeout_s=self.idle_timeout_s,
            live_interval_s=self.live_interval_s,
            hopping_size_ms=self.hopping_size_s * 1000,
            hopping_hop_ms=self.hopping_hop_s * 1000,
            hourly_ms=self.hourly_s * 1000,
            events_prefix=self.events_topic_prefix,
            max_future_skew_s=self.max_future_skew_s,
        )


def internal_topics(settings: StreamsSettings) -> tuple[TopicSpec, ...]:
    """The workers' own topics, with configs that bound them on Apache Kafka.

    The snapshots are large and frequent (tens of MB a minute at the demo rate): the state
    topic is compacted and rolls its segments every 16 MiB or hour (``TopicSpec``), so
    the cleaner keeps it to about the newest snapshot per key; partials are a stream with
    the streams' retention. ``ioc services up`` / ``ioc topics`` also set these configs
    back on existing topics.
    """
    return (
        TopicSpec(settings.partials_topic, settings.partials_partitions),
        TopicSpec(settings.state_topic, 1, compacted=True),
    )
