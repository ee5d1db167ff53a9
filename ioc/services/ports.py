"""The TCP ports our services listen on: is one free, and keeping it free.

A listening port inside the kernel's ephemeral range (``ip_local_port_range``, by default
32768-60999 on Linux) can be taken by any outgoing connection on the machine as its source
port: TimescaleDB's contract port 55432 is in that range. A client socket holding
127.0.0.1:55432 accepts nothing, so a connect test calls the port free, and then
PostgreSQL fails to bind it ("Address already in use"). This happened in CI once, after a
few hundred tests had opened and closed connections. So before starting a service we
(1) reserve its port in ``ip_local_reserved_ports`` where we may (root), which stops the
kernel from handing it out as a source port again (explicit binds still work), and
(2) wait for any connection that already holds it to end, or fail saying so.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from events.errors import PortInUseError

RESERVED_PORTS = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")
_TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
# TIME_WAIT (06) leftovers do not stop a server that sets SO_REUSEADDR, as ours all do.
_TIME_WAIT = "06"


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def parse_port_list(text: str) -> set[int]:
    """``"55432,60000-60002"`` (the format of ``ip_local_reserved_ports``) as a set."""
    ports: set[int] = set()
    for part in text.replace("\n", "").split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        ports.update(range(int(low), int(high or low) + 1))
    return ports


def format_port_list(ports: set[int]) -> str:
    """The inverse of :func:`parse_port_list`, with runs written as ranges."""
    runs: list[str] = []
    ordered = sorted(ports)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        runs.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(runs)


def reserve_port(port: int, path: Path = RESERVED_PORTS) -> bool:
    """Add ``port`` to the kernel's reserved ports; False where that is not permitted."""
    try:
        current = parse_port_list(path.read_text())
        if port in current:
            return True
        path.write_text(format_port_list(current | {port}) + "\n")
    except OSError:
        return False
    return True


def source_port_holders(port: int, tables: tuple[Path, ...] = _TCP_TABLES) -> int:
    """How many TCP sockets (other than TIME_WAIT) have ``port`` as their local port."""
    held = 0
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] != _TIME_WAIT:
                held += 1
    return held


def ensure_port_free(
    service: str, host: str, port: int, env_var: str, *, wait_s: float = 30.0
) -> None:
    """Make sure ``service`` can listen on ``port`` (see the module docstring)."""
    advice = f"stop it or choose another port with {env_var}=<port>"
    if port_open(host, port):
        raise PortInUseError(
            f"{service}: port {host}:{port} is in use by a process we did not start; {advice}"
        )
    reserve_port(port)
    deadline = time.monotonic() + wait_s
    while source_port_holders(port):
        if time.monotonic() >= deadline:
            raise PortInUseError(
                f"{service}: port {port} is the source port of an outgoing TCP connection "
                f"(see `ss -tanp sport = :{port}`) and stayed so for {wait_s:.0f}s; {advice}"
            )
        time.sleep(0.2)
