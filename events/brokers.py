"""Which broker answers at an address, and the producer options that follow from it.

The project runs on two brokers: Apache Kafka (production, and locally by default when
Java can be had) and Tansu (embedded, in memory). They differ where the clients notice:

- Tansu answers aiokafka 0.14's InitProducerId with UnknownError, so aiokafka producers
  are idempotent on Apache Kafka only (kafka-python's request version works on both);
- Tansu ignores ``cleanup.policy``/``retention.*`` and cannot describe or alter them.

Tansu identifies itself by its cluster id (``tansu_cluster`` unless configured, and
``ioc services up`` leaves it so); any other cluster id is taken to be Apache Kafka.
The answer is cached per address for the life of the process: one metadata round trip.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import structlog

log = structlog.get_logger(__name__)

TANSU_CLUSTER_PREFIX = "tansu"


_CLUSTER_IDS: dict[str, str] = {}


def cluster_id(bootstrap_servers: str, timeout_ms: int = 5000) -> str | None:
    """The broker's cluster id, or None if it cannot be reached (not remembered)."""
    known = _CLUSTER_IDS.get(bootstrap_servers)
    if known is not None:
        return known
    # kafka-python logs its connection steps at INFO; in a component whose own logs are
    # at INFO (and that otherwise uses aiokafka) that is a dozen lines of noise per probe.
    kafka_logger = logging.getLogger("kafka")
    level = kafka_logger.level
    kafka_logger.setLevel(max(level, logging.WARNING))
    try:
        return _probe(bootstrap_servers, timeout_ms)
    finally:
        kafka_logger.setLevel(level)


def _probe(bootstrap_servers: str, timeout_ms: int) -> str | None:
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers.split(","),
            client_id="ioc-broker-probe",
            request_timeout_ms=timeout_ms,
        )
    except Exception as exc:  # unreachable: the callers choose a safe default
        log.warning("broker_unreachable", bootstrap_servers=bootstrap_servers, error=repr(exc))
        return None
    try:
        cid: Any = admin.describe_cluster().get("cluster_id")
    except Exception as exc:
        log.warning("broker_unreachable", bootstrap_servers=bootstrap_servers, error=repr(exc))
        return None
    finally:
        with contextlib.suppress(Exception):
            admin.close()
    if not cid:
        return None
    _CLUSTER_IDS[bootstrap_servers] = str(cid)
    return str(cid)


def is_tansu(bootstrap_servers: str) -> bool:
    cid = cluster_id(bootstrap_servers)
    return cid is not None and cid.startswith(TANSU_CLUSTER_PREFIX)


def idempotent_producers(bootstrap_servers: str) -> bool:
    """Whether aiokafka producers of this broker should be idempotent.

    True on Apache Kafka. False on Tansu (it refuses aiokafka's InitProducerId) and when
    the broker cannot be reached right now (the producer would not start either way;
    acks=all still holds, and consumers de-duplicate on the CloudEvent id).
    """
    cid = cluster_id(bootstrap_servers)
    return cid is not None and not cid.startswith(TANSU_CLUSTER_PREFIX)


def producer_options(bootstrap_servers: str) -> dict[str, Any]:
    """Delivery options every aiokafka producer of the project is constructed with.

    ``acks="all"`` always; idempotence where the broker supports it, so a batch retried
    after a lost acknowledgement is written once, not twice.
    """
    return {"acks": "all", "enable_idempotence": idempotent_producers(bootstrap_servers)}


async def refresh_metadata(consumer: Any) -> None:
    """Load the partitions of every topic into an aiokafka consumer's own metadata cache.

    Needed before ``partitions_for_topic`` on a consumer that has not subscribed: its
    bootstrap asks for the metadata of no topic, which Tansu answers with every topic and
    Apache Kafka with none, and ``AIOKafkaConsumer.topics()`` fetches into a throwaway
    copy. Without it ``partitions_for_topic`` is None on Apache Kafka.
    """
    # aiokafka has no public call for it; with no tracked topics this asks for all.
    await consumer._client.force_metadata_update()
