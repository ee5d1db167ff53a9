"""The one exception hierarchy of the IOC backend.

Every error that a component raises on purpose derives from :class:`IocError`, so a
caller can catch the whole family in one place (the CLI turns them into one-line
messages; the stream and ingest adapters turn them into dead letters or 4xx answers).

    IocError
    ├── ConfigurationError      bad or contradictory settings; the message says what to change
    ├── ServiceError            a local service (broker, TimescaleDB, Mosquitto) cannot be
    │   │                       provisioned, started or reached
    │   └── PortInUseError      a port we need is taken by a process that is not ours
    ├── InvalidEventError       an event that breaks the contract; ``reason`` is a short code
    │                           (``missing_attribute``, ``out_of_range`` ...) and ``detail``
    │                           says which field and why
    └── ProtocolError           a websocket client broke the push protocol; ``code`` is the
                                error code sent back in the error frame
"""

from __future__ import annotations


class IocError(Exception):
    """Base class of every error raised on purpose by this project."""


class ConfigurationError(IocError):
    """Settings are missing, malformed or contradictory."""


class ServiceError(IocError):
    """A local service cannot be provisioned, started or reached."""


class PortInUseError(ServiceError):
    """A port we need is held by a process we did not start."""


class InvalidEventError(IocError):
    """An event violates the contract.

    ``reason`` is a stable machine-readable code (it becomes the dead-letter reason);
    ``detail`` is for people.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ProtocolError(IocError):
    """A websocket client sent something the push protocol does not allow."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


def describe_exception(exc: BaseException) -> str:
    """One line for an unexpected exception (a ``processing_error`` dead letter's detail):
    its type, its text and where it was raised."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = ""
    if tb is not None:
        where = f" at {tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"
    return f"{type(exc).__name__}: {exc}{where}"[:1000]
