"""Apache Kafka as a local service, topic configs read back, and what each broker needs.

The session broker is whichever ``IOC_BROKER`` chose (CI: Apache Kafka, then Tansu for
the ``broker_sensitive`` tests); tests of behaviour that only Apache Kafka has skip on
Tansu and say why.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import kafka
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka import KafkaConsumer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from events.brokers import is_tansu, producer_options
from events.errors import ConfigurationError, ServiceError
from events.topics import ALERTS, CONTRACT_TOPICS, DEADLETTER, TopicSpec
from ioc.services import apache_kafka, broker
from ioc.settings import ServiceSettings
from streams.state import read_to_end

pytestmark = pytest.mark.integration

KAFKA_ONLY = "Tansu accepts topic configs and ignores them (no DescribeConfigs either)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _admin(bootstrap_servers: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10000)


def test_contract_topic_configs_are_read_back(bootstrap_servers: str) -> None:
    if is_tansu(bootstrap_servers):
        pytest.skip(KAFKA_ONLY)
    specs = broker.all_topics()  # the contract topics and the workers' internal ones
    admin = _admin(bootstrap_servers)
    try:
        configs = broker.read_topic_configs(admin, [t.name for t in specs])
    finally:
        admin.close()
    for spec in specs:
        assert {k: configs[spec.name][k] for k in spec.configs()} == spec.configs(), spec.name
    assert configs[ALERTS]["cleanup.policy"] == "compact"
    assert configs["ioc.streams.state"]["cleanup.policy"] == "compact"
    assert configs["ioc.streams.partials"]["cleanup.policy"] == "delete"
    events = configs["ioc.events.traffic"]
    assert events["cleanup.policy"] == "delete"
    assert int(events["retention.ms"]) == 6 * 3_600_000
    assert int(events["retention.bytes"]) == 64 * 1024 * 1024


def test_topics_sets_drifted_configs_back(bootstrap_servers: str) -> None:
    if is_tansu(bootstrap_servers):
        pytest.skip(KAFKA_ONLY)
    spec = next(t for t in CONTRACT_TOPICS if t.name == DEADLETTER)
    admin = _admin(bootstrap_servers)
    try:
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, DEADLETTER, configs={"retention.ms": "1234"})]
        )
        assert broker.read_topic_configs(admin, [DEADLETTER])[DEADLETTER]["retention.ms"] == "1234"
        broker.create_contract_topics(bootstrap_servers, specs=(spec,))
        after = broker.read_topic_configs(admin, [DEADLETTER])[DEADLETTER]
    finally:
        admin.close()
    assert after["retention.ms"] == spec.configs()["retention.ms"]


def test_a_new_topic_is_created_with_its_configs(bootstrap_servers: str) -> None:
    if is_tansu(bootstrap_servers):
        pytest.skip(KAFKA_ONLY)
    spec = TopicSpec(f"test.state.{uuid.uuid4().hex[:8]}", 2, compacted=True)
    broker.create_contract_topics(bootstrap_servers, specs=(spec,))
    admin = _admin(bootstrap_servers)
    try:
        configs = broker.read_topic_configs(admin, [spec.name])[spec.name]
    finally:
        admin.close()
    assert configs["cleanup.policy"] == "compact"
    assert configs["segment.ms"] == spec.configs()["segment.ms"]


def test_topics_replication_factor_is_used_and_checked(bootstrap_servers: str) -> None:
    """`ioc topics --replication` (IOC_TOPIC_REPLICATION): the factor asked for, read back
    from the broker; more than a one-broker cluster can place is one clear error, at once."""
    if is_tansu(bootstrap_servers):
        pytest.skip(KAFKA_ONLY)
    name = f"test.repl.{uuid.uuid4().hex[:8]}"
    spec = TopicSpec(name, 2)
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match="IOC_TOPIC_REPLICATION=3: the cluster at"):
        broker.create_contract_topics(bootstrap_servers, specs=(spec,), replication=3)
    assert time.monotonic() - started < 10  # not retried until the timeout
    broker.create_contract_topics(bootstrap_servers, specs=(spec,), replication=1)
    admin = _admin(bootstrap_servers)
    try:
        (described,) = admin.describe_topics([name])
    finally:
        admin.close()
    assert [len(p["replica_nodes"]) for p in described["partitions"]] == [1, 1]


def test_retention_deletes_old_segments_on_apache_kafka(bootstrap_servers: str) -> None:
    """What keeps a weeks-long demo on disk: closed segments past retention.bytes go."""
    if is_tansu(bootstrap_servers):
        pytest.skip("Tansu ignores retention: its memory grows instead (docs/reliability.md)")
    from kafka import KafkaProducer

    topic = f"test.retention.{uuid.uuid4().hex[:8]}"
    mib = 1024 * 1024
    limits = {"cleanup.policy": "delete", "segment.bytes": str(mib), "retention.bytes": str(mib)}
    admin = _admin(bootstrap_servers)
    try:
        admin.create_topics(
            {topic: {"num_partitions": 1, "replication_factor": 1, "configs": limits}}
        )
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5)
    for i in range(4096):  # 4 MiB: four segments of 1 MiB
        producer.send(topic, i.to_bytes(4, "big") * 256, partition=0)
    producer.flush(timeout=60)
    producer.close()
    tp = kafka.TopicPartition(topic, 0)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers)
    try:
        deadline = time.monotonic() + 90  # the broker checks retention every 15 s
        start = 0
        while time.monotonic() < deadline:
            start = consumer.beginning_offsets([tp])[tp]
            if start > 0:
                break
            time.sleep(0.5)
        end = consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()
    assert end == 4096
    assert 0 < start < end  # old segments deleted, the newest records kept


@pytest.mark.broker_sensitive
async def test_aiokafka_producers_are_idempotent_where_the_broker_allows(
    bootstrap_servers: str,
) -> None:
    options = producer_options(bootstrap_servers)
    assert options["acks"] == "all"
    assert options["enable_idempotence"] is (not is_tansu(bootstrap_servers))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, **options)
    await producer.start()  # on Tansu, an idempotent one would fail here (UnknownError)
    try:
        await producer.send_and_wait(f"test.idem.{uuid.uuid4().hex[:8]}", b"x", key=b"k")
        manager = producer._txn_manager  # aiokafka keeps the producer id there
        if options["enable_idempotence"]:
            assert manager is not None and manager.producer_id >= 0
        else:
            assert manager is None
    finally:
        await producer.stop()


@pytest.mark.broker_sensitive
async def test_reading_to_the_high_watermark_is_exact_on_both_brokers(
    bootstrap_servers: str,
) -> None:
    """The Tansu workaround (read to the fetch high watermark, not to end_offsets())
    reads exactly what was acknowledged; on Apache Kafka end_offsets() agrees with it."""
    topic = f"test.hwm.{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, linger_ms=20, **producer_options(bootstrap_servers)
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, f"v{i}".encode(), partition=0) for i in range(500)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    got: list[bytes] = []
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        await read_to_end(consumer, [tp], lambda _tp, rs: got.extend(r.value or b"" for r in rs))
        high = consumer.highwater(tp)
        end = (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()
    assert got == [f"v{i}".encode() for i in range(500)]
    assert high == 500
    if not is_tansu(bootstrap_servers):
        assert end == 500  # Apache Kafka: ListOffsets(latest) is the end


def _java_or_skip() -> None:
    if not apache_kafka.java_installable():
        pytest.skip("Apache Kafka needs Java (or root with apt-get to install it)")


def test_apache_kafka_from_an_empty_state_dir_keeps_its_log_across_restarts(
    tmp_path: Path,
) -> None:
    _java_or_skip()
    settings = ServiceSettings(
        broker="kafka",
        broker_port=_free_port(),
        controller_port=_free_port(),
        state_dir=tmp_path,
    )
    topic = f"test.persist.{uuid.uuid4().hex[:8]}"
    try:
        assert broker.up(settings) is True
        assert (apache_kafka.data_dir(settings) / "meta.properties").exists()
        # INFO goes to the size-capped rolling file; the service log keeps warnings only.
        assert (apache_kafka.work_dir(settings) / "logs" / "server.log").stat().st_size > 0
        assert "] INFO " not in (tmp_path / "kafka.log").read_text()
        status = broker.status(settings)
        assert status.healthy and status.version == f"apache-kafka {apache_kafka.kafka_version()}"
        assert status.detail == f"{len(CONTRACT_TOPICS)}/{len(CONTRACT_TOPICS)} contract topics"
        pid = apache_kafka.process(settings).pid()
        begin = time.monotonic()
        assert broker.up(settings) is False  # ours runs: reused, not restarted
        # 0.1 s on a quiet machine (docs/development.md); the bound leaves room for a
        # machine busy with other tests, and is still below any restart of Kafka.
        assert time.monotonic() - begin < 3.0
        assert apache_kafka.process(settings).pid() == pid
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
        producer.send(topic, b"kept").get(timeout=30)
        producer.close()
        assert broker.down(settings) is True
        assert not broker.status(settings).healthy
        assert broker.up(settings) is True  # the same log directory, not reformatted
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=settings.bootstrap_servers,
            auto_offset_reset="earliest",
            consumer_timeout_ms=20000,
        )
        try:
            assert next(iter(consumer)).value == b"kept"
        finally:
            consumer.close()
    finally:
        broker.down(settings)


def test_auto_chooses_tansu_without_java_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    settings = ServiceSettings(broker="auto", state_dir=tmp_path, broker_port=_free_port())
    kind, why = broker.choose(settings)
    assert kind == "tansu" and "no Java" in why
    assert broker.describe_choice(settings).startswith("broker: Tansu (no Java")
    with pytest.raises(ServiceError, match=r"apt-get install -y openjdk-17-jre-headless maven"):
        apache_kafka.ensure_java(lambda _msg: None)


def test_auto_chooses_apache_kafka_when_java_is_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    settings = ServiceSettings(broker="auto", state_dir=tmp_path, broker_port=_free_port())
    assert broker.choose(settings)[0] == "kafka"
    assert broker.describe_choice(settings).startswith("broker: Apache Kafka 4.")


def test_one_broker_of_ours_at_a_time(tmp_path: Path) -> None:
    settings = ServiceSettings(broker="tansu", broker_port=_free_port(), state_dir=tmp_path)
    try:
        assert broker.up(settings) is True
        kafka = settings.model_copy(update={"broker": "kafka"})
        with pytest.raises(ServiceError, match=r"Tansu \(ours\) already runs.*services down"):
            broker.up(kafka)
    finally:
        assert broker.down(settings) is True


def test_cli_broker_option_says_which_broker_and_why(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "IOC_STATE_DIR": str(tmp_path),
        "IOC_BROKER_PORT": str(_free_port()),
        "IOC_BROKER": "kafka",  # the option wins over the variable
    }
    up = subprocess.run(
        [sys.executable, "-m", "ioc", "services", "up", "broker", "--broker", "tansu"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    try:
        assert up.returncode == 0, up.stderr
        assert up.stderr.splitlines()[0] == "broker: Tansu (IOC_BROKER=tansu)"
        assert (tmp_path / "broker.pid").exists() and not (tmp_path / "kafka.pid").exists()
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "ioc", "services", "down", "broker"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    assert down.returncode == 0 and "stopped: broker" in down.stderr, down.stderr
