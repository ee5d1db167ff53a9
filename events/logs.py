"""Structured logging for every component (structlog), also for the libraries' records.

Components log key/value events; on a terminal they render readably, elsewhere (CI, the
demo supervisor, production) as one JSON object per line. Records of the standard
``logging`` module (aiokafka, Faust, mode, websockets, ...) go through the same renderer,
with a ``logger`` field, so every line of a component is structured.

The libraries log at INFO what only their developers need (aiokafka lists every assigned
partition on several hundred characters; Faust announces each of its services starting
and stopping): that flooded the demo's terminal so the component lines scrolled away. They
log from WARNING up unless ``IOC_LIBRARY_LOG_LEVEL`` says otherwise; ``IOC_LOG_LEVEL``
sets the components' own level. This module lives beside the contract, not in the CLI,
because every component uses it.
"""

from __future__ import annotations

import logging
import sys

import structlog
from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from events.settings import IocSettings

# The libraries whose INFO records are noise to an operator (their loggers' roots).
LIBRARY_LOGGERS = ("aiokafka", "kafka", "faust", "mode", "websockets", "asyncio", "httpx")


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class LogSettings(IocSettings):
    model_config = SettingsConfigDict(env_prefix="IOC_", extra="ignore")

    log_level: str = "INFO"
    library_log_level: str = "WARNING"

    @field_validator("log_level", "library_log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in LEVELS:
            raise ValueError(f"use one of {', '.join(LEVELS)}")
        return value.upper()


def configure_logging(
    component: str, settings: LogSettings | None = None, json: bool | None = None
) -> None:
    s = settings or LogSettings()
    level: int = logging.getLevelName(s.log_level)
    library_level: int = logging.getLevelName(s.library_log_level)
    use_json = (not sys.stderr.isatty()) if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, library_level))
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(component=component)
