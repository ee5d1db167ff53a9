"""A broker of one test's own (always Tansu, started with the same code as `ioc services up`), on
a free port, that the test may stop and start again: for what happens when Kafka goes away.
The session broker of the other tests is never touched."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ioc.services import broker
from ioc.settings import ServiceSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_broker(state_dir: Path) -> Iterator[ServiceSettings]:
    """A running broker with the contract topics; stopped at the end (if still running).
    ``broker.down(settings)`` stops it, ``broker.up(settings)`` starts it again (empty:
    its storage is in memory) on the same port."""
    settings = ServiceSettings(
        host="127.0.0.1",
        # Always Tansu: what is tested is our side when the broker goes away; Tansu starts
        # in milliseconds and a stopped one refuses connections at once.
        broker="tansu",
        broker_port=free_port(),
        state_dir=state_dir / f"broker-{uuid.uuid4().hex[:8]}",
    )
    broker.up(settings)
    try:
        yield settings
    finally:
        broker.down(settings)
