"""Port checks before a service starts: a port held as the *source* port of an outgoing
connection is not free, although nothing listens on it (the CI failure this guards
against: TimescaleDB could not bind 55432, which a client socket held)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from events.errors import PortInUseError
from ioc.services.ports import (
    RESERVED_PORTS,
    ensure_port_free,
    format_port_list,
    parse_port_list,
    port_open,
    reserve_port,
    source_port_holders,
)


def test_port_list_round_trip() -> None:
    assert parse_port_list("") == set()
    assert parse_port_list("55432,60000-60002\n") == {55432, 60000, 60001, 60002}
    assert format_port_list({9, 3, 4, 5, 7}) == "3-5,7,9"
    assert parse_port_list(format_port_list({1, 2, 40000, 55432})) == {1, 2, 40000, 55432}


def test_reserve_port_merges_with_what_is_there(tmp_path: Path) -> None:
    path = tmp_path / "ip_local_reserved_ports"
    path.write_text("40000-40002\n")
    assert reserve_port(55432, path)
    assert parse_port_list(path.read_text()) == {40000, 40001, 40002, 55432}
    assert reserve_port(40001, path)  # already there: unchanged
    assert parse_port_list(path.read_text()) == {40000, 40001, 40002, 55432}
    assert not reserve_port(1, tmp_path / "missing" / "file")


@pytest.fixture
def client_on_source_port() -> Iterator[int]:
    """A connection whose local port is bound explicitly: the port is held, nothing
    listens on it."""
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.bind(("127.0.0.1", 0))
        port = int(client.getsockname()[1])
        client.connect(server.getsockname())
        accepted, _ = server.accept()
        with accepted:
            yield port


def test_a_source_port_in_use_is_not_free(client_on_source_port: int) -> None:
    port = client_on_source_port
    assert not port_open("127.0.0.1", port)  # a connect test alone would call it free
    assert source_port_holders(port) >= 1
    with pytest.raises(PortInUseError, match="source port of an outgoing TCP connection"):
        ensure_port_free("timescaledb", "127.0.0.1", port, "IOC_DB_PORT", wait_s=0.3)
    with socket.socket() as listener, pytest.raises(OSError, match="Address already in use"):
        listener.bind(("127.0.0.1", port))  # what PostgreSQL met


def test_a_listening_port_is_not_free() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = int(server.getsockname()[1])
        with pytest.raises(PortInUseError, match="in use by a process we did not start"):
            ensure_port_free("mosquitto", "127.0.0.1", port, "IOC_MQTT_PORT")


def test_a_free_port_is_reserved_where_permitted() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    ensure_port_free("broker", "127.0.0.1", port, "IOC_BROKER_PORT")
    if not os.access(RESERVED_PORTS, os.W_OK):
        pytest.skip("not root: the kernel's reserved ports cannot be changed here")
    assert port in parse_port_list(RESERVED_PORTS.read_text())
