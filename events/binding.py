"""CloudEvents protocol bindings (pure): Kafka structured and binary mode, HTTP binary mode.

The pipeline works on one form, the structured JSON CloudEvent (the whole event in the
record value). Producers of our own write that form and say so with the Kafka header
``content-type: application/cloudevents+json`` (:data:`STRUCTURED_HEADERS`), as the
CloudEvents Kafka protocol binding asks.

Other producers may use binary mode: the attributes as ``ce_<name>`` headers (HTTP:
``ce-<name>``, percent-encoded), ``datacontenttype`` as the ``content-type`` header and
the payload (``data``) as the value / body. A binary message is recognised by its
``ce_specversion`` header and turned into the structured form once, where it is read
(:func:`structured_from_kafka` in the stream workers and the raw-event sink,
:func:`structured_from_http` in the HTTP gateway); everything after that is the usual
structured path, and every attribute (extensions included) is kept.

A binary message that cannot be turned into an event raises
:class:`events.errors.InvalidEventError` with the contract's reason codes
(``missing_attribute``, ``bad_attribute``, ``undecodable``, ``oversize``), so it is
dead-lettered or refused like any bad structured event.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final
from urllib.parse import unquote

import orjson

from events.envelope import DATACONTENTTYPE_PATTERN, MAX_EVENT_BYTES
from events.errors import InvalidEventError

STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents+json"
CONTENT_TYPE_HEADER: Final = "content-type"
KAFKA_PREFIX: Final = "ce_"
HTTP_PREFIX: Final = "ce-"
# The header whose presence marks a binary-mode Kafka record (the binding's own rule).
KAFKA_SPECVERSION: Final = "ce_specversion"
HTTP_SPECVERSION: Final = "ce-specversion"
# Headers every structured record of ours carries (a tuple: aiokafka and kafka-python
# both take a sequence of (name, bytes) pairs, and a shared tuple cannot be mutated).
STRUCTURED_HEADERS: Final[tuple[tuple[str, bytes], ...]] = (
    (CONTENT_TYPE_HEADER, STRUCTURED_CONTENT_TYPE.encode()),
)
# Required in our contract; in binary mode each must come as a header.
_REQUIRED = ("specversion", "id", "source", "type", "time")
_is_json_media = re.compile(DATACONTENTTYPE_PATTERN).fullmatch  # as envelope.py

KafkaHeaders = Sequence[tuple[str, bytes | None]]


def is_binary(headers: KafkaHeaders | None) -> bool:
    """Whether a Kafka record is in binary mode (it has a ``ce_specversion`` header).

    Called for every record on the streams hot path: a structured record of ours has one
    header, so this is one comparison.
    """
    if headers:
        for name, _ in headers:
            if name == KAFKA_SPECVERSION:
                return True
    return False


def structured_from_kafka(headers: KafkaHeaders, value: bytes | None) -> bytes:
    """The structured JSON form of a binary-mode Kafka record (see the module doc)."""
    attributes: dict[str, str] = {}
    content_type: str | None = None
    for name, raw in headers:
        lname = name.lower()
        if lname.startswith(KAFKA_PREFIX):
            _put(attributes, lname[len(KAFKA_PREFIX) :], _text(name, raw), name)
        elif lname == CONTENT_TYPE_HEADER:
            content_type = _text(name, raw)
    return _structured(attributes, content_type, value, KAFKA_PREFIX)


def structured_from_http(headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """The structured JSON form of an HTTP binary-mode request (``ce-*`` headers, whose
    values the HTTP binding percent-encodes; ``Content-Type`` is ``datacontenttype``)."""
    attributes: dict[str, str] = {}
    content_type: str | None = None
    for name, value in headers:
        lname = name.lower()
        if lname.startswith(HTTP_PREFIX):
            _put(attributes, lname[len(HTTP_PREFIX) :], unquote(value), name)
        elif lname == CONTENT_TYPE_HEADER:
            content_type = value
    return _structured(attributes, content_type, body, HTTP_PREFIX)


def _text(name: str, raw: bytes | None) -> str:
    if raw is None:
        raise InvalidEventError("bad_attribute", f"header {name} has no value")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEventError("bad_attribute", f"header {name} is not UTF-8") from None


def _put(attributes: dict[str, str], attribute: str, value: str, header: str) -> None:
    if not attribute or attribute == "data":
        # ``data`` is the value in binary mode; a header of that name is not an attribute.
        raise InvalidEventError("bad_attribute", f"header {header} names no attribute")
    if attribute in attributes and attributes[attribute] != value:
        raise InvalidEventError("bad_attribute", f"header {header} repeated with other values")
    attributes[attribute] = value


def _structured(
    attributes: dict[str, str], content_type: str | None, data: bytes | None, prefix: str
) -> bytes:
    for name in _REQUIRED:
        if name not in attributes:
            raise InvalidEventError(
                "missing_attribute", f"{name} (binary mode: header {prefix}{name})"
            )
    if content_type is not None:
        # Our events carry JSON objects; binary mode says what the value is in
        # content-type, and anything else cannot be a payload of the catalogue.
        if _is_json_media(content_type) is None:
            raise InvalidEventError(
                "bad_attribute", f"datacontenttype {content_type!r} (content-type header)"
            )
        attributes["datacontenttype"] = content_type
    if not data:
        raise InvalidEventError("missing_attribute", "data (binary mode: the value is empty)")
    if len(data) > MAX_EVENT_BYTES:
        raise InvalidEventError("oversize", f"data of {len(data)} bytes > {MAX_EVENT_BYTES}")
    try:
        payload: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidEventError("undecodable", f"data (binary mode: the value): {exc}") from None
    event: dict[str, Any] = dict(attributes)
    event["data"] = payload
    return orjson.dumps(event)


__all__ = [
    "CONTENT_TYPE_HEADER",
    "HTTP_SPECVERSION",
    "KAFKA_SPECVERSION",
    "STRUCTURED_CONTENT_TYPE",
    "STRUCTURED_HEADERS",
    "is_binary",
    "structured_from_http",
    "structured_from_kafka",
]
