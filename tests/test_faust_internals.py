"""The Faust consumer internals that streams/faust_consumer.py overrides or calls.

`BatchConsumer` replaces Faust's private drain loop and uses private helpers of its
aiokafka consumer. faust-streaming is pinned to an exact version in pyproject.toml; this
test names what changed if an upgrade moves any of it, before a worker meets it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from importlib.metadata import version
from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import Consumer
from mode import Service

from streams.faust_app import _new_app
from streams.faust_consumer import BatchConsumer
from streams.settings import StreamsSettings

PINNED = "0.15.3"

# name -> parameters (after self) the override or call relies on
METHODS = {
    "_drain_messages": ["fetcher"],  # replaced: the per-record hand-off loop
    "_wait_next_records": ["timeout"],  # called: returns (records by TP, active TPs)
    "_commit": ["offsets"],  # called: commit through Faust's consumer thread
    "on_partitions_assigned": ["assigned", "generation_id"],  # extended
    "on_partitions_revoked": ["revoked"],  # extended
}


def test_faust_is_the_pinned_version() -> None:
    assert version("faust-streaming") == PINNED, (
        f"faust-streaming {version('faust-streaming')} installed, {PINNED} pinned: check "
        "streams/faust_consumer.py against the new version, then update the pin and PINNED"
    )


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_consumer_methods_we_override_or_call_exist_with_their_parameters(
    name: str,
) -> None:
    method = getattr(Consumer, name, None)
    assert method is not None, f"Faust's aiokafka Consumer has no {name} any more"
    assert asyncio.iscoroutinefunction(method), f"Consumer.{name} is no longer a coroutine"
    params = [p for p in inspect.signature(method).parameters if p != "self"]
    assert params == METHODS[name], f"Consumer.{name}{params}: expected {METHODS[name]}"
    if name == "_drain_messages":  # our override is the one that runs
        assert BatchConsumer._drain_messages is not Consumer._drain_messages


def test_the_attributes_the_drain_loop_reads() -> None:
    assert isinstance(Consumer.should_stop, property), "Consumer.should_stop is not a property"
    errors = Consumer.consumer_stopped_errors
    assert isinstance(errors, tuple) and errors, "Consumer.consumer_stopped_errors changed"
    # The loop polls the consumer's and the fetcher's `_stopped` events (mode.Service).
    assert "self._stopped = " in inspect.getsource(Service), "mode.Service has no _stopped"


def test_the_timer_overlap_warnings_of_mode_are_silenced(tmp_path: Path) -> None:
    """A tick waiting for a checkpoint's acks outlasts its period every second or so;
    mode would log a warning each time into the demo's output."""
    logging.getLogger("mode.timers").setLevel(logging.NOTSET)
    _new_app(StreamsSettings(), str(tmp_path))
    assert logging.getLogger("mode.timers").level == logging.ERROR


def test_the_liveness_check_reads_the_inbound_time_the_batch_consumer_sets() -> None:
    """BatchConsumer._note_processed writes ``app.monitor.stream_inbound_time[tp]``, the
    time Faust's `verify_event_path` compares with `stream_processing_timeout`."""
    from faust.sensors.monitor import Monitor
    from faust.transport.drivers import aiokafka as driver

    assert "stream_inbound_time" in Monitor.__annotations__, "Monitor.stream_inbound_time gone"
    check = inspect.getsource(driver.ThreadDelegateConsumer.verify_event_path)
    check += inspect.getsource(driver.AIOKafkaConsumerThread.verify_event_path)
    assert "monitor.stream_inbound_time.get(tp)" in check, "Faust's liveness check changed"
