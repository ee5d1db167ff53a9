"""`ioc simulate`: the simulator's command (:mod:`simulators.command`) with the local
broker's address (``ioc services``' port settings) as its default."""

from __future__ import annotations

import functools
import os
from typing import Any

from ioc.settings import ServiceSettings
from simulators.command import simulate as _simulate


@functools.wraps(_simulate)  # the same options: typer reads the wrapped signature
def simulate(*args: Any, **kwargs: Any) -> None:
    if kwargs.get("bootstrap_servers") is None and "IOC_BOOTSTRAP_SERVERS" not in os.environ:
        kwargs["bootstrap_servers"] = ServiceSettings().bootstrap_servers
    _simulate(*args, **kwargs)
