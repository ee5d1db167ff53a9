"""The health record every local service reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    name: str
    address: str
    healthy: bool
    version: str = ""
    detail: str = ""
    # "ours" (started by `ioc services up`), "external" (configured, not ours) or "".
    owner: str = ""
