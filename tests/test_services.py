"""The real local services: broker, TimescaleDB, Mosquitto, and their management."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from paho.mqtt.enums import CallbackAPIVersion

from events.errors import ConfigurationError, PortInUseError
from events.topics import CONTRACT_TOPICS
from ingest.settings import IngestSettings
from ioc import services
from ioc.components import component_env
from ioc.services import broker, mosquitto, mqtt_accounts, timescale
from ioc.services.process import ManagedProcess, wait_until
from ioc.settings import ServiceSettings
from tests.ingest_keys import MqttLogins

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_produce_and_consume_through_the_real_broker(bootstrap_servers: str) -> None:
    topic = f"test.roundtrip.{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        for i in range(100):
            await producer.send(topic, key=f"k{i % 7}".encode(), value=f"v{i}".encode())
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=f"test-{uuid.uuid4().hex[:8]}",
    )
    await consumer.start()
    seen: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while len(seen) < 100 and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                seen.extend(r.value for r in records if r.value is not None)
    finally:
        await consumer.stop()
    assert sorted(seen) == sorted(f"v{i}".encode() for i in range(100))


def test_contract_topics_exist_with_their_partitions(bootstrap_servers: str) -> None:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers)
    try:
        for spec in CONTRACT_TOPICS:
            parts = consumer.partitions_for_topic(spec.name)
            assert parts is not None, spec.name
            assert len(parts) == spec.partitions, spec.name
    finally:
        consumer.close()


def test_timescaledb_creates_a_hypertable(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        ext = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        assert ext is not None and ext[0].count(".") >= 1
        loaded = conn.execute("SHOW shared_preload_libraries").fetchone()
        assert loaded is not None and "timescaledb" in loaded[0]
        conn.execute("CREATE TABLE probe (time timestamptz NOT NULL, value double precision)")
        conn.execute("SELECT create_hypertable('probe', 'time')")
        conn.execute(
            "INSERT INTO probe SELECT t, 1.0 FROM generate_series("
            "now() - interval '30 days', now(), interval '1 hour') AS t"
        )
        row = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'probe'"
        ).fetchone()
        assert row is not None and row[0] >= 4  # 7-day chunks over 30 days


def _client(login: tuple[str, str] | None) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    if login is not None:
        client.username_pw_set(*login)
    return client


def test_mosquitto_delivers_a_device_message_to_the_gateway_account_only(
    mqtt_logins: MqttLogins,
) -> None:
    """No anonymous client; a device writes only below ioc/events/<its name>/ (a message
    elsewhere is dropped); the gateway's account reads them."""
    host, port = mqtt_logins.address
    for login in (None, (mqtt_logins.device[0], "wrong password")):
        refused = _client(login)
        refused.connect(host, port)
        refused.loop(timeout=2)
        assert not refused.is_connected(), login
        refused.disconnect()
    assert mosquitto.mqtt_ping(host, port) == "login as anonymous: Not authorized"
    assert mosquitto.mqtt_ping(host, port, mqtt_logins.gateway) is None
    got = threading.Event()
    received: list[tuple[str, bytes]] = []
    tag = uuid.uuid4().hex[:8]
    own = f"ioc/events/{mqtt_logins.device[0]}/{tag}"
    other = f"ioc/events/test-air/{tag}"

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received.append((msg.topic, bytes(msg.payload)))
        if msg.topic == own:
            got.set()

    subscribed = threading.Event()
    sub = _client(mqtt_logins.gateway)
    sub.on_message = on_message
    sub.on_subscribe = lambda *_args: subscribed.set()
    sub.connect(host, port)
    sub.subscribe(f"ioc/events/+/{tag}", qos=1)
    sub.loop_start()
    try:
        assert subscribed.wait(5)  # the SUBACK: Mosquitto routes the topics to us now
        pub = _client(mqtt_logins.device)
        pub.connect(host, port)
        pub.loop_start()
        # first where it may not write (dropped by the ACL), then its own subtree: once the
        # second arrived, the first would have (one client's messages keep their order)
        pub.publish(other, b"not mine", qos=1).wait_for_publish(5)
        pub.publish(own, b"hello", qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        assert got.wait(5)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert received == [(own, b"hello")]


def test_a_mosquitto_of_ours_with_an_older_configuration_is_started_again(tmp_path: Path) -> None:
    """One started before the accounts existed (anonymous access) is not reused as is."""
    settings = ServiceSettings(
        state_dir=tmp_path,
        mqtt_port=_free_port(),
        database_url=f"postgresql://postgres@127.0.0.1:{_free_port()}/none",  # no keys
    )
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {settings.mqtt_port} 127.0.0.1\nallow_anonymous true\n")
    old = ManagedProcess("mosquitto", tmp_path)
    old.start([mosquitto.mosquitto_binary(), "-c", str(conf)])
    try:
        wait_until(
            lambda: mosquitto.mqtt_ping("127.0.0.1", settings.mqtt_port) is None,
            timeout=15,
            what="anonymous access",
            proc=old,
        )
        assert mosquitto.up(settings) is True  # started again, with accounts
        assert mosquitto.mqtt_ping("127.0.0.1", settings.mqtt_port) == (
            "login as anonymous: Not authorized"
        )
        login = (mqtt_accounts.GATEWAY_USER, mqtt_accounts.gateway_password(settings))
        assert mosquitto.mqtt_ping("127.0.0.1", settings.mqtt_port, login) is None
        assert mosquitto.up(settings) is False  # now reused
    finally:
        assert mosquitto.down(settings)


def test_the_components_get_the_gateways_mqtt_account(service_settings: ServiceSettings) -> None:
    env = component_env(service_settings)
    assert (env["IOC_MQTT_USERNAME"], env["IOC_MQTT_PASSWORD"]) == (
        mqtt_accounts.GATEWAY_USER,
        mqtt_accounts.gateway_password(service_settings),
    )
    assert IngestSettings.model_validate({}).mqtt_username == mqtt_accounts.GATEWAY_USER


def test_up_again_is_fast_and_status_is_healthy(
    service_settings: ServiceSettings,
    bootstrap_servers: str,
    database_url: str,
    mqtt_address: tuple[str, int],
) -> None:
    begin = time.monotonic()
    assert services.up(service_settings) == []  # everything already runs: nothing started
    assert time.monotonic() - begin < 10
    statuses = {s.name: s for s in services.status(service_settings)}
    assert set(statuses) == {"broker", "timescaledb", "mosquitto"}
    assert all(s.healthy for s in statuses.values()), statuses
    assert "timescaledb 2." in statuses["timescaledb"].version
    assert statuses["mosquitto"].version.startswith("mosquitto 2.")


def test_a_port_held_by_someone_else_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = ServiceSettings(broker_port=port, state_dir=tmp_path)
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port}.*IOC_BROKER_PORT"):
            broker.up(settings)
        # down must not touch a process it did not start
        assert services.down(settings, ("broker",)) == []


def test_down_stops_exactly_what_up_started(tmp_path: Path) -> None:
    settings = ServiceSettings(broker_port=_free_port(), state_dir=tmp_path)
    assert broker.up(settings) is True
    pid_file = "kafka.pid" if broker.choose(settings)[0] == "kafka" else "broker.pid"
    pid = int((tmp_path / pid_file).read_text().split()[0])
    assert broker.up(settings) is False  # reused, not started twice
    assert services.down(settings, ("broker",)) == ["broker"]
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert not broker.status(settings).healthy


def _ioc(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ioc", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_unreachable_database_url_is_a_one_line_error(tmp_path: Path) -> None:
    url = f"postgresql://ioc:secret@127.0.0.1:{_free_port()}/ioc"
    proc = _ioc(
        "services",
        "up",
        "timescaledb",
        env={"IOC_DATABASE_URL": url, "IOC_STATE_DIR": str(tmp_path)},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, proc.stderr
    assert "IOC_DATABASE_URL" in error_lines[0] and "unreachable" in error_lines[0]
    assert "secret" not in proc.stderr  # credentials are never printed


def test_provisioning_without_root_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigurationError, match=r"needs root.*IOC_DATABASE_URL.*docker compose"):
        timescale.check_can_provision()


def test_port_in_use_via_the_cli_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        proc = _ioc(
            "services",
            "up",
            "broker",
            env={"IOC_BROKER_PORT": str(port), "IOC_STATE_DIR": str(tmp_path)},
        )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"port 127.0.0.1:{port} is in use" in proc.stderr
