"""CloudEvents protocol bindings, in memory: messages made by the official CloudEvents SDK
(``cloudevents`` on PyPI) in every mode we accept become the same validated event, with
every attribute kept; broken binary messages fail with the contract's reasons."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings import http, kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from events.binding import (
    STRUCTURED_HEADERS,
    is_binary,
    structured_from_http,
    structured_from_kafka,
)
from events.envelope import decode, encode
from events.errors import InvalidEventError
from ingest.gateway import parse_binary, parse_request
from simulators.injection import Injector, record_time_ms, to_record
from storage import rows
from streams.aggregator import EngineConfig, PartitionAggregator
from streams.kpis import KpiIndex
from tests.streams_helpers import Rec

WHEN = datetime(2026, 11, 22, 8, 0, 0, 123000, tzinfo=UTC)
WHEN_MS = 1_795_334_400_123
# The attributes beyond the ones the pipeline has fields for: the optional ones of the
# spec (subject, dataschema) and extensions (tracing, partitioning, our own).
EXTRA = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "ioc=1,vendor=x",
    "partitionkey": "HD-AQ-001",
    "subject": "Trạm Phố Huế",  # non-ASCII: percent-encoded in HTTP headers
    "dataschema": "urn:vn-ioc:schema:v1:vn.ioc.air.observed",
    "sensorfirmware": "4.2.1",
}
DATA = {"station_id": "HD-AQ-001", "district": "HD", "pm25": 38.5, "pm10": 61.0}


def sdk_event(
    content_type: str = "application/json; charset=utf-8", **attributes: Any
) -> CloudEvent:
    return CloudEvent(
        attributes={
            "id": "ce-1",
            "source": "/sensors/air/HD-AQ-001",
            "type": "vn.ioc.air.observed",
            "time": WHEN,
            "datacontenttype": content_type,
            **EXTRA,
            **attributes,
        },
        data=dict(DATA),
    )


def kafka_headers(message: kafka.KafkaMessage) -> list[tuple[str, bytes | None]]:
    """As aiokafka hands them over: a sequence of (name, bytes)."""
    return list(message.headers.items())


def assert_whole(raw: bytes) -> None:
    ev = decode(raw)
    assert (ev.id, ev.source, ev.type, ev.time_ms, ev.data) == (
        "ce-1",
        "/sensors/air/HD-AQ-001",
        "vn.ioc.air.observed",
        WHEN_MS,
        DATA,
    )
    assert dict(ev.extensions) == EXTRA
    # Re-encoding (what the gateway publishes) keeps every attribute; the media type's
    # parameters go (a structured event is one JSON document: UTF-8).
    encoded = orjson.loads(encode(ev))
    assert {k: v for k, v in encoded.items() if k in EXTRA} == EXTRA
    assert encoded["datacontenttype"] == "application/json"


def test_sdk_kafka_binary_records_become_the_whole_structured_event() -> None:
    message = kafka.to_binary(sdk_event(), JSONFormat())
    headers = kafka_headers(message)
    assert is_binary(headers)
    assert_whole(structured_from_kafka(headers, message.value))


def test_sdk_kafka_structured_records_keep_their_extensions_and_are_not_binary() -> None:
    message = kafka.to_structured(sdk_event(), JSONFormat())
    assert message.headers == dict(STRUCTURED_HEADERS)
    assert not is_binary(kafka_headers(message))
    assert_whole(message.value)


def test_sdk_http_binary_and_structured_requests_become_the_same_record() -> None:
    binary = http.to_binary(sdk_event(), JSONFormat())
    assert binary.headers["ce-subject"] != EXTRA["subject"]  # percent-encoded on the wire
    assert_whole(structured_from_http(binary.headers.items(), binary.body))
    [from_binary] = parse_binary(binary.headers.items(), binary.body)
    structured = http.to_structured(sdk_event(), JSONFormat())
    [from_structured] = parse_request(structured.body, structured.headers["content-type"], 10)
    assert from_binary == from_structured
    assert from_binary.time_ms == WHEN_MS  # the record timestamp: the event time
    assert_whole(from_binary.value)


# (The SDK writes data as JSON only for a lower-case media type; other spellings are
# checked against the schemas in tests/test_contracts_docs.py.)
@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
def test_datacontenttype_with_parameters_is_accepted(content_type: str) -> None:
    structured = http.to_structured(sdk_event(content_type), JSONFormat())
    assert decode(structured.body).data == DATA
    message = kafka.to_binary(sdk_event(content_type), JSONFormat())
    assert decode(structured_from_kafka(kafka_headers(message), message.value)).data == DATA


def _binary(**changes: bytes | None) -> tuple[list[tuple[str, bytes | None]], bytes | None]:
    message = kafka.to_binary(sdk_event(), JSONFormat())
    headers = {**message.headers, **changes}
    value = headers.pop("value", message.value)
    return [(k, v) for k, v in headers.items() if v is not None or k == "ce_nil"], value


BROKEN = [
    ("no id", _binary(ce_id=None), "missing_attribute", "ce_id"),
    ("no time", _binary(ce_time=None), "missing_attribute", "ce_time"),
    ("no type", _binary(ce_type=None), "missing_attribute", "ce_type"),
    ("data not JSON", _binary(value=b"{pm25: 1"), "undecodable", "data"),
    ("no data", _binary(value=None), "missing_attribute", "data"),
    ("xml data", _binary(**{"content-type": b"application/xml"}), "bad_attribute", "xml"),
    ("header not UTF-8", _binary(ce_subject=b"\xff\xfe"), "bad_attribute", "ce_subject"),
    ("header without value", _binary(ce_nil=None), "bad_attribute", "ce_nil"),
    ("a data header", _binary(ce_data=b"{}"), "bad_attribute", "ce_data"),
    ("data an array", _binary(value=b"[1]"), "bad_attribute", "data"),
    (
        "payload out of range",
        _binary(value=b'{"station_id":"S","district":"HD","pm25":-1,"pm10":1}'),
        "out_of_range",
        "pm25",
    ),
    ("bad time", _binary(ce_time=b"yesterday"), "bad_time", "time"),
]


@pytest.mark.parametrize(("headers_value", "reason", "named"), [b[1:] for b in BROKEN],
                         ids=[b[0] for b in BROKEN])  # fmt: skip
def test_broken_binary_records_fail_with_a_reason_naming_the_problem(
    headers_value: tuple[list[tuple[str, bytes | None]], bytes | None], reason: str, named: str
) -> None:
    headers, value = headers_value
    with pytest.raises(InvalidEventError) as caught:
        decode(structured_from_kafka(headers, value))
    assert caught.value.reason == reason
    assert named in caught.value.detail


def test_binary_records_without_content_type_are_json_and_repeated_headers_must_agree() -> None:
    message = kafka.to_binary(sdk_event(), JSONFormat())
    headers = [(k, v) for k, v in message.headers.items() if k != "content-type"]
    assert decode(structured_from_kafka(headers, message.value)).data == DATA
    same = [*headers, ("ce_id", b"ce-1")]
    assert decode(structured_from_kafka(same, message.value)).id == "ce-1"
    with pytest.raises(InvalidEventError) as caught:
        structured_from_kafka([*headers, ("ce_id", b"ce-2")], message.value)
    assert caught.value.reason == "bad_attribute"
    assert "ce_id" in caught.value.detail


def test_the_streams_aggregator_folds_binary_records_and_dead_letters_broken_ones() -> None:
    agg = PartitionAggregator("ioc.events.air", 0, KpiIndex.from_catalogue(), EngineConfig())
    binary = kafka.to_binary(sdk_event(), JSONFormat())
    structured = kafka.to_structured(sdk_event(id="ce-2"), JSONFormat())
    no_id, value = _binary(ce_id=None)
    bad_range = _binary(value=b'{"station_id":"S","district":"HD","pm25":-1,"pm10":1}')
    dead = agg.process(
        [
            Rec(0, binary.value, b"HD-AQ-001", tuple(binary.headers.items())),
            Rec(1, structured.value, b"HD-AQ-001", tuple(structured.headers.items())),
            Rec(2, value, b"HD-AQ-001", tuple(no_id)),
            Rec(3, bad_range[1], b"HD-AQ-001", tuple(bad_range[0])),
        ],
        now_s=WHEN_MS / 1000,
    )
    assert agg.processed == 2
    assert [(d.source_offset, d.reason) for d in dead] == [
        (2, "missing_attribute"),
        (3, "out_of_range"),
    ]
    assert "ce_id" in dead[0].detail
    # A record that could be converted is dead-lettered in its structured form, which
    # holds the attributes of its headers too; one that could not keeps its value.
    assert dead[0].value == value
    assert orjson.loads(dead[1].value)["traceparent"] == EXTRA["traceparent"]


def test_the_raw_event_rows_hold_the_extensions_of_binary_and_structured_records() -> None:
    binary = kafka.to_binary(sdk_event(), JSONFormat())
    structured = kafka.to_structured(sdk_event(id="ce-2"), JSONFormat())
    plain = encode({**orjson.loads(structured.value), "id": "ce-3"})
    bare = {k: v for k, v in orjson.loads(plain).items() if k not in EXTRA}
    no_time, value = _binary(ce_time=None)
    bad_range, range_value = _binary(value=b'{"station_id":"S","district":"HD","pm25":-1,"pm10":1}')

    class Record(Rec):  # the sinks also need the origin of each record
        topic = "ioc.events.air"
        partition = 0

    batch = rows.event_rows(
        [
            Record(0, binary.value, b"k", tuple(binary.headers.items())),
            Record(1, structured.value, b"k", tuple(structured.headers.items())),
            Record(2, encode(bare), b"k"),
            Record(3, value, b"k", tuple(no_time)),
            Record(4, range_value, b"k", tuple(bad_range)),
        ],
        rows.event_row,
        "test",
        max_future_skew_s=10**9,
    )
    assert [d.reason for d in batch.dead] == ["missing_attribute", "out_of_range"]
    assert "ce_time" in batch.dead[0].detail
    # converted, then refused: the structured form, headers' attributes and all
    assert batch.dead[0].value == value
    assert orjson.loads(batch.dead[1].value)["traceparent"] == EXTRA["traceparent"]
    assert len(batch.rows) == 3
    assert [r[3] for r in batch.rows] == ["ce-1", "ce-2", "ce-3"]
    assert orjson.loads(batch.rows[0][6]) == EXTRA
    assert orjson.loads(batch.rows[1][6]) == EXTRA
    assert batch.rows[2][6] is None  # no extensions: NULL


def test_simulator_records_carry_the_event_time_unless_no_receiver_would_take_it() -> None:
    event = {**orjson.loads(kafka.to_structured(sdk_event(), JSONFormat()).value)}
    now_s = WHEN_MS / 1000
    assert record_time_ms(event, now_s) == WHEN_MS
    assert record_time_ms({**event, "time": WHEN}, now_s) == WHEN_MS
    # beyond the allowed skew (300 s), not a time, no offset: the producer's clock
    assert record_time_ms(event, now_s - 301) is None
    assert record_time_ms({**event, "time": "yesterday at noon"}, now_s) is None
    assert record_time_ms({**event, "time": "2026-11-22T08:00:00"}, now_s) is None
    assert to_record(event).time_ms == WHEN_MS  # (against the wall clock: in the past)
    assert to_record(event, now_s=now_s - 301).time_ms is None
    broken = Injector(seed=1, malformed=1.0).records([event] * 20)
    assert {r.kind.split(":")[0] for r in broken} == {"malformed"}
    assert {r.time_ms for r in broken} == {None}
