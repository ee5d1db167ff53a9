"""Reading state back from the real broker: to the true end, or not at all.

A restore that stops before the end of the state topic resumes partitions with old or no
state, which loses events silently; these tests pin the two ways that happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from events.errors import ServiceError
from streams.state import read_to_end

pytestmark = [pytest.mark.integration, pytest.mark.broker_sensitive]

ROOT = Path(__file__).resolve().parent.parent


async def _topic_with(bootstrap: str, records: int) -> str:
    topic = f"test.restore.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
    await producer.start()
    try:
        # Batched sends: Tansu's end_offsets() then reports the last batch, not the end.
        futs = [await producer.send(topic, b"%d" % i, key=b"k") for i in range(records)]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return topic


async def test_reads_every_batch_even_from_a_slow_broker(bootstrap_servers: str) -> None:
    topic = await _topic_with(bootstrap_servers, 5_000)
    tp = TopicPartition(topic, 0)
    # The broker holds each fetch for up to 2 s waiting for bytes that never come: a
    # reader that gives up after a few empty polls stops with nothing.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        fetch_min_bytes=64 * 1024 * 1024,
        fetch_max_wait_ms=2_000,
        max_partition_fetch_bytes=16 * 1024,
    )
    await consumer.start()
    seen: list[int] = []

    def keep(_: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        seen.extend(int(r.value or b"-1") for r in records)

    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        await read_to_end(consumer, [tp], keep, max_records=700)
    finally:
        await consumer.stop()
    assert seen == list(range(5_000))


async def test_gives_up_with_an_error_instead_of_stopping_early(bootstrap_servers: str) -> None:
    topic = await _topic_with(bootstrap_servers, 2_000)
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        # one record per poll and no time at all: the end cannot be reached
        with pytest.raises(ServiceError, match="did not deliver the end"):
            await read_to_end(consumer, [tp], lambda _tp, _r: None, max_records=1, timeout_s=0)
    finally:
        await consumer.stop()


async def test_worker_exits_rather_than_run_partitions_without_state(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    """A failed restore must stop the worker (its supervisor restarts it), not let it
    consume from the committed offsets with empty state."""
    state = await _topic_with(bootstrap_servers, 30_000)
    tag = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "IOC_BOOTSTRAP_SERVERS": bootstrap_servers,
        "IOC_STREAMS_GROUP_ID": f"restore-{tag}",
        "IOC_STREAMS_EVENTS_TOPIC_PREFIX": f"test.{tag}.events.",
        "IOC_STREAMS_KPI_TOPIC": f"test.{tag}.kpi",
        "IOC_STREAMS_DEADLETTER_TOPIC": f"test.{tag}.deadletter",
        "IOC_STREAMS_PARTIALS_TOPIC": f"test.{tag}.partials",
        "IOC_STREAMS_STATE_TOPIC": state,
        "IOC_STREAMS_HTTP_PORT": "0",
        "IOC_STREAMS_ENGINE": "aiokafka",
        # far too short to read 30,000 state records: the restore must fail
        "IOC_STREAMS_RESTORE_TIMEOUT_S": "0",
    }
    log = tmp_path / "worker.log"
    proc = _start_worker(env, log)
    try:
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.wait, 90)
        text = log.read_text(errors="replace")
        assert proc.returncode not in (None, 0), text[-2000:]
        assert "restore.failed" in text and "did not deliver the end" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ioc", "streams", "worker", "--no-progress"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
