"""Settings of the local services, read from ``IOC_*`` environment variables.

Components never read these globals: the CLI builds a :class:`ServiceSettings` once and
passes the addresses they need (bootstrap servers, database URL) into their own settings
objects explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from events.settings import IocSettings


def _default_home() -> Path:
    return Path.home() / ".local" / "share" / "ioc"


class ServiceSettings(IocSettings):
    """Where the local services listen and where their files live."""

    model_config = SettingsConfigDict(env_prefix="IOC_", extra="ignore")

    host: str = "127.0.0.1"
    # Which broker `ioc services up` runs: Apache Kafka (the production broker; needs
    # Java, installed with apt-get when missing and we are root), Tansu (embedded, in
    # memory) or "auto" (Kafka when Java is present or installable, else Tansu).
    broker: Literal["auto", "kafka", "tansu"] = "auto"
    broker_port: int = 9092
    # Apache Kafka's KRaft controller listener; by default the broker port + 1.
    controller_port: int | None = None
    # JVM heap of Apache Kafka: the broker needs little heap (it relies on the page
    # cache), and this machine class has 2 cores shared with every other process.
    kafka_heap: str = "512m"
    # Tansu keeps every record in memory (no retention): when `ioc up` runs our Tansu, the
    # supervisor restarts it once its resident memory passes this many MiB (0: never; see
    # docs/reliability.md). At the demo rate (3.5 to 8 GB an hour, measured) 2048 MiB means
    # a restart every 15 to 35 minutes, and the whole demo stays within about 3.5 GB.
    tansu_max_rss_mb: int = Field(default=2048, ge=0)
    # How often the broker's memory is read, and the least time between two restarts (a
    # cap below what an empty Tansu needs must not restart it in a loop).
    tansu_check_interval_s: float = Field(default=5.0, gt=0)
    tansu_min_restart_interval_s: float = Field(default=60.0, ge=0)
    # Prometheus metrics of `ioc up`'s supervisor (broker restarts, the broker's memory);
    # 0 picks a free port.
    supervisor_http_port: int = Field(default=8095, ge=0, le=65535)
    # Web port of the local Prometheus of `ioc up --with-prometheus`.
    prometheus_port: int = Field(default=9090, ge=1, le=65535)
    db_port: int = 55432
    mqtt_port: int = 1883
    # Password of the ingest gateway's MQTT account `ioc-ingest` on our Mosquitto (which
    # accepts no anonymous client); unset: a random one kept in the state directory.
    mqtt_ingest_password: str | None = None
    # When set, this TimescaleDB is used and no local one is provisioned.
    database_url: str | None = None
    database_name: str = "ioc"
    # Cache of things that are slow to build and reusable between runs (the
    # TimescaleDB root file system, ~800 MB).
    cache_dir: Path = Field(default_factory=lambda: _default_home() / "cache")
    # Pid files, logs and data of the services we start.
    state_dir: Path = Field(default_factory=lambda: _default_home() / "state")
    debian_mirror: str | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.broker_port}"

    @property
    def effective_controller_port(self) -> int:
        return self.controller_port or self.broker_port + 1

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"postgresql://postgres@{self.host}:{self.db_port}/{self.database_name}"

    @property
    def uses_external_database(self) -> bool:
        return bool(self.database_url)
