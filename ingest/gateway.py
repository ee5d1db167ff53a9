"""The sans-I/O core of the ingest gateways: bytes in, Kafka records or reasons out.

Both gateways (HTTP and MQTT) use it, so the same event is accepted or refused with the
same reason whichever way it arrives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from events.binding import structured_from_http
from events.catalogue import event_type, key_for
from events.envelope import MAX_EVENT_BYTES, Event, encode, validate
from events.errors import InvalidEventError, describe_exception
from ingest.keys import IngestKey

# Content types of CloudEvents' HTTP binding, structured and batched mode (binary mode is
# told by its ce-specversion header, whatever the content type).
STRUCTURED = ("application/cloudevents+json", "application/json")
BATCH = "application/cloudevents-batch+json"


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """One record to publish: the event's domain topic, its source id as key."""

    topic: str
    key: bytes
    value: bytes
    event_id: str
    time_ms: int  # the event time: the record's Kafka timestamp
    # what a key's scope is checked against (ingest.keys)
    type: str = ""
    source: str = ""


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why item ``index`` of a request was refused."""

    index: int
    reason: str
    detail: str

    def to_dict(self) -> dict[str, object]:
        return {"index": self.index, "reason": self.reason, "detail": self.detail}


class RejectedRequest(Exception):
    """A request with invalid items; nothing of it is published (all or nothing)."""

    def __init__(self, rejections: list[Rejection]) -> None:
        super().__init__(f"{len(rejections)} invalid event(s)")
        self.rejections = rejections


def to_record(event: Event) -> KafkaRecord:
    return KafkaRecord(
        topic=event_type(event.type).topic,
        key=key_for(event),
        # Re-encode the validated event: downstream gets the canonical form (with every
        # extension attribute of the event).
        value=encode(event),
        event_id=event.id,
        type=event.type,
        source=event.source,
        time_ms=event.time_ms,
    )


def parse_request(
    body: bytes, content_type: str, max_batch: int, latest_ms: int | None = None
) -> list[KafkaRecord]:
    """Records for a structured (one event) or batch (JSON array) request body.

    Raises :class:`InvalidEventError` for a body that is not JSON at all and
    :class:`RejectedRequest` naming every invalid item otherwise. An event time after
    ``latest_ms`` (see :func:`events.envelope.latest_event_ms`) is ``future_time``.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidEventError("undecodable", str(exc)) from None
    if media == BATCH or isinstance(parsed, list):
        if not isinstance(parsed, list):
            raise InvalidEventError("not_an_object", "a batch is a JSON array of CloudEvents")
        if len(parsed) > max_batch:
            raise InvalidEventError("oversize", f"{len(parsed)} events > {max_batch} per batch")
        items = parsed
    else:
        items = [parsed]
    records: list[KafkaRecord] = []
    rejections: list[Rejection] = []
    for index, item in enumerate(items):
        try:
            if len(orjson.dumps(item)) > MAX_EVENT_BYTES:
                raise InvalidEventError("oversize", f"event larger than {MAX_EVENT_BYTES} bytes")
            records.append(to_record(validate(item, latest_ms)))
        except InvalidEventError as exc:
            rejections.append(Rejection(index, exc.reason, exc.detail))
        except Exception as exc:  # a bug the item provokes: refuse it, never crash
            rejections.append(Rejection(index, "processing_error", describe_exception(exc)))
    if rejections:
        raise RejectedRequest(rejections)
    return records


def out_of_scope(key: IngestKey, records: list[KafkaRecord]) -> list[Rejection]:
    """The records (by index in the request) that ``key`` may not publish."""
    refused: list[Rejection] = []
    for index, record in enumerate(records):
        why = key.refusal(record.type, record.source)
        if why is not None:
            refused.append(Rejection(index, *why))
    return refused


def parse_binary(
    headers: Iterable[tuple[str, str]], body: bytes, latest_ms: int | None = None
) -> list[KafkaRecord]:
    """The record of an HTTP binary-mode request (``ce-*`` headers, ``data`` as the body).

    Raises :class:`InvalidEventError` when the request cannot be an event (a required
    ``ce-`` header missing, a body that is not JSON) and :class:`RejectedRequest` when the
    event it makes is invalid, as :func:`parse_request` does.
    """
    return parse_request(structured_from_http(headers, body), STRUCTURED[0], 1, latest_ms)
