"""Settings of the local services, read from ``IOC_*`` environment variables.

Components never read these globals: the CLI builds a :class:`ServiceSettings` once and
passes the addresses they need (bootstrap servers, database URL) into their own settings
objects explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".local" / "share" / "ioc"


class ServiceSettings(BaseSettings):
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
    db_port: int = 55432
    mqtt_port: int = 1883
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
