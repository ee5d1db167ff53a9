"""Local services managed by the project: broker (Apache Kafka or Tansu), TimescaleDB, Mosquitto.

``up`` is idempotent (a running service of ours is reused), ``down`` stops only the
processes that ``up`` started (by pid file), ``status`` reports health and versions.
"""

from __future__ import annotations

from collections.abc import Callable

from ioc.services import broker, mosquitto, timescale
from ioc.services.status import ServiceStatus
from ioc.settings import ServiceSettings

__all__ = ["SERVICES", "ServiceStatus", "down", "status", "up"]

Log = Callable[[str], None]

SERVICES: tuple[str, ...] = ("broker", "timescaledb", "mosquitto")


def up(
    settings: ServiceSettings,
    only: tuple[str, ...] = SERVICES,
    log: Log | None = None,
) -> list[str]:
    """Bring the services up; returns the names of those started by this call."""
    say = log or (lambda _msg: None)
    started: list[str] = []
    for name in only:
        say(f"{name}: starting")
        if name == "broker":
            now = broker.up(settings, log=lambda msg: say(f"broker: {msg}"))
        elif name == "timescaledb":
            now = timescale.up(settings, log=lambda msg: say(f"timescaledb: {msg}"))
        elif name == "mosquitto":
            now = mosquitto.up(settings)
        else:
            raise ValueError(f"unknown service {name!r}")
        say(f"{name}: {'started' if now else 'already running'}")
        if now:
            started.append(name)
    return started


def down(settings: ServiceSettings, only: tuple[str, ...] = SERVICES) -> list[str]:
    """Stop the services we started; returns the names of those stopped."""
    stopped = []
    for name in reversed(only):
        module = {"broker": broker, "timescaledb": timescale, "mosquitto": mosquitto}[name]
        if module.down(settings):
            stopped.append(name)
    return stopped


def status(settings: ServiceSettings) -> list[ServiceStatus]:
    return [broker.status(settings), timescale.status(settings), mosquitto.status(settings)]
