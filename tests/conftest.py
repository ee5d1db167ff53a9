"""Session-scoped real services, started with the same code as `ioc services up`.

A test asks only for what it uses (``bootstrap_servers``, ``database_url``,
``mqtt_address``), so pure-logic tests start nothing. Services that are already running
(ours, from `ioc services up`) are reused; those started here are stopped at the end.
Each test session gets its own database, dropped at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka import AIOKafkaProducer

from ioc import services
from ioc.services import timescale
from ioc.settings import ServiceSettings
from tests.ingest_keys import MqttLogins


@pytest.fixture(scope="session")
def service_settings() -> ServiceSettings:
    return ServiceSettings()


def _ensure(settings: ServiceSettings, name: str) -> Iterator[None]:
    started = services.up(settings, (name,))
    yield
    if started and not os.environ.get("IOC_TEST_KEEP_SERVICES"):
        services.down(settings, tuple(started))


@pytest.fixture(scope="session")
def bootstrap_servers(service_settings: ServiceSettings) -> Iterator[str]:
    """Address of the real Kafka-compatible broker, with the contract topics created."""
    yield from (service_settings.bootstrap_servers for _ in _ensure(service_settings, "broker"))


@pytest.fixture(scope="session")
def timescaledb(service_settings: ServiceSettings) -> Iterator[ServiceSettings]:
    yield from (service_settings for _ in _ensure(service_settings, "timescaledb"))


def _fresh_database(settings: ServiceSettings) -> Iterator[str]:
    """A new database (timescaledb extension created), dropped afterwards."""
    name = f"ioc_test_{uuid.uuid4().hex[:10]}"
    if settings.uses_external_database:
        base = settings.effective_database_url.rsplit("/", 1)[0]
        admin = f"{base}/postgres"
    else:
        admin = f"postgresql://postgres@{settings.host}:{settings.db_port}/postgres"
        base = admin.rsplit("/", 1)[0]
    timescale.ensure_database(admin, name)
    yield f"{base}/{name}"
    timescale.drop_database(admin, name)


@pytest.fixture(scope="session")
def database_url(timescaledb: ServiceSettings) -> Iterator[str]:
    """A fresh database for this test session (shared by its tests)."""
    yield from _fresh_database(timescaledb)


@pytest.fixture(scope="module")
def module_database_url(timescaledb: ServiceSettings) -> Iterator[str]:
    """A fresh database of one test module: for tests that read whole tables, which the
    session's other tests would fill."""
    yield from _fresh_database(timescaledb)


@pytest.fixture(scope="session")
def mqtt_address(service_settings: ServiceSettings) -> Iterator[tuple[str, int]]:
    yield from (
        (service_settings.host, service_settings.mqtt_port)
        for _ in _ensure(service_settings, "mosquitto")
    )


@pytest.fixture(scope="session")
def mqtt_logins(
    service_settings: ServiceSettings, mqtt_address: tuple[str, int], database_url: str
) -> MqttLogins:
    """Mosquitto (no anonymous access) with the accounts of the session's ingest keys."""
    import asyncio

    from ioc.services import mqtt_accounts
    from tests.ingest_keys import ALL_KEY, ALL_SECRET, ensure_test_keys, wait_login

    asyncio.run(ensure_test_keys(database_url))
    mqtt_accounts.sync_accounts(service_settings, database_url)
    logins = MqttLogins(
        *mqtt_address,
        gateway=(mqtt_accounts.GATEWAY_USER, mqtt_accounts.gateway_password(service_settings)),
        device=(ALL_KEY, ALL_SECRET),
    )
    wait_login(mqtt_address, logins.device)
    return logins


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """Path of the Debian Chromium for browser tests; installed with apt-get when missing
    (root on Debian), otherwise the test fails saying how to install it."""
    import shutil
    import subprocess
    import time
    from pathlib import Path

    path = Path("/usr/bin/chromium")
    if path.exists():
        return str(path)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(
            "Chromium is missing: install the Debian package as root "
            "(apt-get install -y chromium), then rerun the browser tests"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    last = ""
    for _attempt in range(12):  # another apt run may hold the lock for a while
        update = subprocess.run(
            ["apt-get", "update", "-qq"], capture_output=True, text=True, env=env
        )
        install = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True, text=True, env=env
        )
        if install.returncode == 0 and path.exists():
            return str(path)
        last = (install.stderr or update.stderr).strip()[-400:]
        time.sleep(5)
    pytest.fail(f"apt-get install chromium failed: {last}")


@pytest.fixture
async def producer(bootstrap_servers: str) -> AsyncIterator[AIOKafkaProducer]:
    """A producer of the test (acks from every replica), stopped after it."""
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5)
    await prod.start()
    yield prod
    await prod.stop()
