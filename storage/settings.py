"""Settings of the storage components (``IOC_*`` environment variables).

The CLI passes the service addresses in through the environment (``component_env``);
nothing here is read at import time.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from events.envelope import DEFAULT_MAX_FUTURE_SKEW_S
from events.settings import IocSettings


class StorageSettings(IocSettings):
    """Where the sinks read and write, how they batch, and how long data is kept."""

    model_config = SettingsConfigDict(env_prefix="IOC_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    database_url: str = "postgresql://postgres@127.0.0.1:55432/ioc"

    # Raw events further ahead of the sink's clock are dead-lettered as future_time, as the
    # stream workers do (IOC_MAX_FUTURE_SKEW_S).
    max_future_skew_s: float = Field(default=DEFAULT_MAX_FUTURE_SKEW_S, ge=0)

    # Batching of the raw-event sink: whichever limit is reached first closes a batch.
    sink_raw_batch_rows: int = Field(default=5000, ge=1)
    sink_raw_batch_ms: int = Field(default=200, ge=1)
    # Connections that write parts of one raw batch in parallel (the merge is server CPU).
    sink_raw_writers: int = Field(default=2, ge=1, le=8)
    # KPI and alert records are few; small batches keep the wall's history fresh.
    sink_record_batch_rows: int = Field(default=2000, ge=1)
    sink_record_batch_ms: int = Field(default=100, ge=1)
    # Retry of a failed database write: exponential backoff between these bounds.
    sink_retry_initial_s: float = Field(default=0.2, gt=0)
    sink_retry_max_s: float = Field(default=5.0, gt=0)

    raw_group_id: str = "ioc-storage-raw"
    kpi_group_id: str = "ioc-storage-kpi"
    alerts_group_id: str = "ioc-storage-alerts"

    # Health and Prometheus metrics (GET /healthz, /readyz, /metrics); 0 = any free port.
    storage_http_host: str = "127.0.0.1"
    storage_http_port: int = 8092

    # Retention in days per table; 0 keeps forever.
    retention_events_days: int = Field(default=7, ge=0)
    retention_kpi_days: int = Field(default=400, ge=0)
    retention_alerts_days: int = Field(default=0, ge=0)
    # How often the retention + rollup job runs, and how far back it recomputes rollups
    # (late KPI revisions older than this are not folded into the rollups).
    maintenance_interval_s: float = Field(default=300.0, gt=0)
    rollup_lookback_hours: int = Field(default=48, ge=1)
