"""A Faust consumer that hands whole ``getmany`` batches to our code (no per-record hand-off).

Faust's consumer (``faust.transport.consumer.Consumer._drain_messages``) turns every
record into a ``Message``, wraps its delivery in ``wait_first(callback(message),
suspend_flow.wait())`` (new tasks and futures per record), and the conductor then builds
an ``Event`` per record for the agent streams. That per-record cost caps a Faust agent at
a few thousand events/s on this machine (docs/streams.md, docs/benchmarks.md).

:class:`BatchConsumer` keeps everything else of Faust's aiokafka consumer (the consumer
thread, group membership with Faust's assignor, flow control, the seek of every assigned
partition to its committed offset after each rebalance) and replaces only the drain
loop: each fetched batch (``TopicPartition -> [ConsumerRecord]``) goes to one
:class:`BatchHandler` call. Faust never sees, acks or commits these records: the handler
commits offsets itself (:meth:`BatchConsumer.commit_offsets`), after its state is durable.

It is registered by :class:`BatchTransport` (``Transport.Consumer``), which the app in
:mod:`streams.faust_app` installs as its transport.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Set
from typing import Any, Protocol

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaFaustConsumer
from faust.transport.drivers.aiokafka import Transport as AIOKafkaFaustTransport
from faust.types import TP
from mode import ServiceT

# How long one fetch may wait for records (seconds); the handler's own timers (publish,
# checkpoint, flush) run as app timers, so this only bounds shutdown and rebalance reaction.
FETCH_TIMEOUT_S = 0.1


class BatchHandler(Protocol):
    """What the consumer drives: batches in, and the partition lifecycle."""

    async def on_batch(self, records: Mapping[Any, list[Any]]) -> None: ...

    async def on_assigned(self, assigned: Set[TP]) -> None: ...

    async def on_revoked(self, revoked: Set[TP]) -> None: ...


class BatchConsumer(AIOKafkaFaustConsumer):
    """Faust's aiokafka consumer with a batch drain loop (see the module docstring)."""

    def _handler(self) -> BatchHandler:
        handler = getattr(self.app, "batch_handler", None)
        if handler is None:
            raise RuntimeError("BatchConsumer needs an app with a batch_handler")
        return handler  # type: ignore[no-any-return]

    async def on_partitions_assigned(self, assigned: Set[TP], generation_id: int = 0) -> None:
        # Restore our state *before* Faust's chain runs: the flow (fetching) resumes at
        # the end of that chain, so no batch of a partition arrives before its state.
        await self._handler().on_assigned(assigned)
        await super().on_partitions_assigned(assigned, generation_id)

    async def on_partitions_revoked(self, revoked: Set[TP]) -> None:
        # Faust first stops the flow; then we checkpoint what we still own and let go.
        await super().on_partitions_revoked(revoked)
        await self._handler().on_revoked(revoked)

    async def commit_offsets(self, offsets: Mapping[Any, int]) -> bool:
        """Commit these offsets now (through Faust's consumer thread); False if the group
        rebalanced meanwhile (the new owner resumes from the last committed state)."""
        return bool(await self._commit(offsets))

    def _note_processed(self, records: Mapping[Any, list[Any]]) -> None:
        # Faust's liveness check (``verify_event_path``: "Stream has not started processing
        # TP ...", 13 lines per partition at every check once ``stream_processing_timeout``
        # has passed) reads the monitor's per-partition inbound time, which only Faust's own
        # streams set. These partitions are processed here, so say so: once per batch and
        # partition, not per record. A handler that stops returning is still reported.
        inbound = self.app.monitor.stream_inbound_time
        now = time.monotonic()
        for tp in records:
            inbound[tp] = now

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        handler = self._handler()
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set  # type: ignore[attr-defined]
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                records, _active = await self._wait_next_records(FETCH_TIMEOUT_S)
                if not records or self.should_stop:
                    continue
                # Never drop a fetched batch (unlike Faust's getmany on a generation
                # change): its fetch may have run after the post-rebalance seek, so its
                # records would not be fetched again. The handler applies the records of
                # the partitions it owns (a batch fetched before a rebalance continues
                # right after the state it restores, or overlaps it: replays are skipped)
                # and ignores the others (their owner reads them from the commit).
                await handler.on_batch(records)
                self._note_processed(records)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise


class BatchTransport(AIOKafkaFaustTransport):
    """Faust's aiokafka transport with :class:`BatchConsumer` as its consumer."""

    Consumer = BatchConsumer
