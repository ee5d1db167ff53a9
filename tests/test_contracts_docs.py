"""Every statement of docs/contracts.md, checked on the generated schemas."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator

from events import topics
from events.catalogue import EVENT_TYPES, EventType, FieldSpec
from events.contracts import DIALECT, ID_PREFIX, all_schemas, data_schema, record_schema
from events.docs import example_event
from events.envelope import MAX_EVENT_BYTES, decode, encode, latest_event_ms, validate
from events.errors import InvalidEventError
from events.records import AlertCommand, AlertRecord, DeadLetter, KpiRecord, wire
from events.schema import number
from ioc.asyncapi import SCHEMA_FORMAT

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "contracts.md").read_text()
SCHEMAS = all_schemas()
FORMATS = Draft202012Validator.FORMAT_CHECKER
AIR = EVENT_TYPES["vn.ioc.air.observed"]


def check(schema: dict[str, Any], instance: Any) -> bool:
    return Draft202012Validator(schema, format_checker=FORMATS).is_valid(instance)


def accepted(event: dict[str, Any]) -> bool:
    try:
        validate(orjson.loads(orjson.dumps(event)))
    except InvalidEventError:
        return False
    return True


def air(**changes: Any) -> dict[str, Any]:
    return {**example_event(AIR), **changes}


# ---- where they are ------------------------------------------------------------------


def test_the_files_named_are_the_files_generated() -> None:
    named = set(re.findall(r"`schemas/v1/([a-z0-9.-]+\.json)`", DOC))
    assert named <= set(SCHEMAS)
    assert set(SCHEMAS) - named == {f"{t}.json" for t in EVENT_TYPES} - named
    assert (ROOT / "docs" / "openapi.json").is_file()
    assert "`docs/openapi.json`" in DOC


def test_every_id_is_the_urn_of_its_name_and_every_ref_stays_inside_its_file() -> None:
    assert ID_PREFIX == "urn:vn-ioc:schema:v1:"
    for name, schema in SCHEMAS.items():
        if name == "index.json":
            continue
        assert schema["$id"] == ID_PREFIX + name.removesuffix(".json")
        refs = re.findall(r'"\$ref":\s*"([^"]*)"', orjson.dumps(schema).decode())
        assert all(ref.startswith("#/") for ref in refs), name


def test_the_endpoints_named_are_in_the_openapi_document() -> None:
    paths = orjson.loads((ROOT / "docs" / "openapi.json").read_bytes())["paths"]
    named = set(re.findall(r"`GET (/[^` ]*)`", DOC))
    assert named == {"/schemas/v1/{name}", "/schemas/v1/cloudevent.json",
                     "/schemas/v1/index.json", "/openapi.json"}  # fmt: skip
    for path in named:
        templated = re.sub(r"/schemas/v1/[a-z.]+\.json$", "/schemas/v1/{name}", path)
        assert "get" in paths[templated], path


# ---- what the schemas cannot say -----------------------------------------------------------


def test_size_and_future_time_are_checked_by_the_validator_only() -> None:
    big = air(data={**AIR.example, "note": "x" * MAX_EVENT_BYTES})
    assert check(SCHEMAS["cloudevent.json"], big)
    with pytest.raises(InvalidEventError, match="oversize"):
        decode(encode(big))
    assert MAX_EVENT_BYTES == 64 * 1024 and "64 KiB" in DOC
    ahead = air(time="2026-03-01T09:00:00Z")
    now = datetime(2026, 3, 1, 8, 50, tzinfo=UTC).timestamp()
    assert check(SCHEMAS["cloudevent.json"], ahead)
    with pytest.raises(InvalidEventError, match="future_time"):
        validate(ahead, latest_ms=latest_event_ms(now, 300))


def _time_table() -> list[tuple[str, bool]]:
    block = DOC.split("<!-- times:")[1].split("<!-- /times -->")[0]
    rows = re.findall(r"^\s*\| `([^`]*)` \| (yes|no) \|$", block, re.MULTILINE)
    assert len(rows) >= 10
    return [(text, verdict == "yes") for text, verdict in rows]


@pytest.mark.parametrize(("text", "ok"), _time_table())
def test_the_time_examples(text: str, ok: bool) -> None:
    event = air(time=text)
    assert accepted(event) is ok
    assert check(SCHEMAS["cloudevent.json"], event) is ok


def test_integral_numbers_are_integers_and_booleans_never_numbers() -> None:
    outage = EVENT_TYPES["vn.ioc.energy.outage"]
    event = {**example_event(outage)}
    event["data"] = {**outage.example, "customers_affected": 1850.0}
    assert check(SCHEMAS["cloudevent.json"], event)
    assert type(validate(event).data["customers_affected"]) is int
    event["data"] = {**outage.example, "customers_affected": 1850.5}
    assert not accepted(event) and not check(SCHEMAS["cloudevent.json"], event)
    wrong = air(data={**AIR.example, "pm25": True})
    assert not accepted(wrong) and not check(SCHEMAS["cloudevent.json"], wrong)


def test_strings_extensions_undeclared_fields_and_datacontenttype() -> None:
    envelope = SCHEMAS["cloudevent.json"]
    for length, ok in ((1, True), (256, True), (0, False), (257, False)):
        event = air(data={**AIR.example, "station_id": "s" * length})
        assert accepted(event) is ok and check(envelope, event) is ok
    extended = air(traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    extended["data"] = {**AIR.example, "pm1": 12.0, "note": ["anything"]}
    assert accepted(extended) and check(envelope, extended)
    assert check(SCHEMAS["vn.ioc.air.observed.json"], extended["data"])
    for content_type, ok in (
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        (None, True),
        ("text/csv", False),
        ("application/jsonl", False),
    ):
        event = air(datacontenttype=content_type)
        assert accepted(event) is ok and check(envelope, event) is ok
    absent = air()
    del absent["datacontenttype"]
    assert accepted(absent) and check(envelope, absent)


def test_readers_ignore_fields_they_do_not_know() -> None:
    at = datetime(2026, 3, 1, tzinfo=UTC)
    records = [
        KpiRecord("air.pm25.avg", "city", at, at, 1.0, 1, computed_at=at),
        AlertRecord("a", "r", "city", "raised", "warning", 1, "t", None, None, None, at, at),
        AlertCommand("c", "a", "ack", "op", at),
        DeadLetter("undecodable", "", "t", 0, 0, b"x", time=at),
    ]
    for record in records:
        wire_form = {**orjson.loads(record.to_json()), "added_later": {"x": 1}}
        assert type(record).from_json(orjson.dumps(wire_form)) == record


# ---- what changes are compatible ----------------------------------------------------------


def _compatible(
    old: dict[str, Any], new: dict[str, Any], old_events: list[Any], new_events: list[Any]
) -> bool:
    """The doc's definition: old events pass the new schema, new events the old one."""
    return all(check(new, e) for e in old_events) and all(check(old, e) for e in new_events)


def _replaced(et: EventType, field_name: str, **changes: Any) -> EventType:
    fields = tuple(
        dataclasses.replace(f, **changes) if f.name == field_name else f for f in et.fields
    )
    return dataclasses.replace(et, fields=fields)


def _with(et: EventType, extra: FieldSpec) -> EventType:
    return dataclasses.replace(et, fields=(*et.fields, extra))


OLD = data_schema(AIR)
# valid events of the current schema: the example, a pollution episode, one without so2
BEFORE = [
    AIR.example,
    {**AIR.example, "pm25": 800.0},
    {k: v for k, v in AIR.example.items() if k != "so2"},
]


def test_a_new_optional_field_and_new_descriptions_are_compatible() -> None:
    pm1 = number("pm1", "µg/m³", 0, 1000, "PM1", required=False)
    new = data_schema(_with(AIR, pm1))
    assert _compatible(OLD, new, BEFORE, [{**AIR.example, "pm1": 9.5}])
    reworded = _replaced(AIR, "pm25", description="fine dust", unit="mg/m³")
    reworded = dataclasses.replace(reworded, example={**AIR.example, "pm25": 7.0})
    assert data_schema(reworded) != OLD
    assert _compatible(OLD, data_schema(reworded), BEFORE, BEFORE)


def test_a_new_optional_record_field_is_compatible() -> None:
    @dataclass(frozen=True, slots=True)
    class KpiRecordLater(KpiRecord):
        unit: str | None = field(default=None, metadata=wire("unit", optional=True))

    old = record_schema(KpiRecord, "kpi-window", "old")
    new = record_schema(KpiRecordLater, "kpi-window", "new")
    at = datetime(2026, 3, 1, tzinfo=UTC)
    before = orjson.loads(KpiRecord("k", "city", at, at, 1.0, 1).to_json())
    after = orjson.loads(KpiRecordLater("k", "city", at, at, 1.0, 1, unit="µg/m³").to_json())
    assert _compatible(old, new, [before], [after])


BREAKING_SECTION = DOC.split("## What changes are compatible")[1].split("These are breaking")[1]
WITHOUT_PM10 = {k: v for k, v in AIR.example.items() if k != "pm10"}
PM2_5 = {**{k: v for k, v in AIR.example.items() if k != "pm25"}, "pm2_5": 42.3}


@pytest.mark.parametrize(
    ("phrase", "new_events"),
    [
        ("a new required field", []),
        ("an optional field made required", []),
        ("a required field removed", [WITHOUT_PM10]),
        ("or renamed", [PM2_5]),
        ("a field's type changed", []),
        ("a range narrowed", []),
        ("a range widened", [{**AIR.example, "pm25": 1500.0}]),
    ],
)
def test_breaking_changes_of_a_field(phrase: str, new_events: list[Any]) -> None:
    et = {
        "a new required field": _with(AIR, number("pm1", "µg/m³", 0, 1000, "PM1")),
        "an optional field made required": _replaced(AIR, "so2", required=True),
        "a required field removed": dataclasses.replace(
            AIR, fields=tuple(f for f in AIR.fields if f.name != "pm10")
        ),
        "or renamed": _replaced(AIR, "pm25", name="pm2_5"),
        "a field's type changed": _replaced(AIR, "pm25", kind="int"),
        "a range narrowed": _replaced(AIR, "pm25", maximum=500),
        "a range widened": _replaced(AIR, "pm25", maximum=2000),
    }[phrase]
    new = data_schema(et)
    assert all(check(OLD, e) for e in BEFORE) and all(check(new, e) for e in new_events)
    assert not _compatible(OLD, new, BEFORE, new_events)
    assert phrase in BREAKING_SECTION


def test_enum_values_removed_or_added_are_breaking() -> None:
    outage = EVENT_TYPES["vn.ioc.energy.outage"]
    old = data_schema(outage)
    fewer = data_schema(_replaced(outage, "cause", choices=("fault", "maintenance", "overload")))
    more = data_schema(_replaced(outage, "cause", choices=("fault", "maintenance", "weather",
                                                             "overload", "theft")))  # fmt: skip
    weather = {**outage.example, "cause": "weather"}
    assert not _compatible(old, fewer, [weather], [])
    assert not _compatible(old, more, [weather], [{**outage.example, "cause": "theft"}])


def test_a_new_event_type_fails_the_old_envelope_but_not_the_per_type_schemas() -> None:
    new_type = air(type="vn.ioc.air.sampled")
    assert not check(SCHEMAS["cloudevent.json"], new_type)
    assert check(SCHEMAS["vn.ioc.air.observed.json"], air()["data"])


# ---- the topics and the websocket (docs/asyncapi.yaml) -------------------------------------

ASYNCAPI = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
ASYNC_SECTION = DOC.split("## The topics and the websocket")[1].split("## Example consumers")[0]
KAFKA_MESSAGES = {
    name: message
    for name, message in ASYNCAPI["components"]["messages"].items()
    if not name.startswith("ws-")
}


def _channel(topic: str) -> dict[str, Any]:
    [channel] = [c for c in ASYNCAPI["channels"].values() if c["address"] == topic]
    return channel


def _key_description(topic: str) -> str:
    [ref] = _channel(topic)["messages"].values()
    name = ref["$ref"].rsplit("/", 1)[1]
    description: str = KAFKA_MESSAGES[name]["bindings"]["kafka"]["key"]["description"]
    return description


def test_the_document_has_the_channels_and_servers_the_doc_names() -> None:
    assert ASYNCAPI["asyncapi"] == "3.0.0" and "AsyncAPI 3.0.0" in ASYNC_SECTION
    assert len(topics.DOMAINS) == 10 and "each of the ten domains" in ASYNC_SECTION
    named = set(re.findall(r"`(ioc\.[a-z.]+)`", ASYNC_SECTION.split("<!-- keys")[0]))
    assert named == {topics.KPI, topics.ALERTS, topics.ALERT_COMMANDS, topics.DEADLETTER}
    addresses = {c["address"] for c in ASYNCAPI["channels"].values()}
    assert addresses == {spec.name for spec in topics.CONTRACT_TOPICS} | {"/ws"}
    push = ASYNCAPI["channels"]["push"]
    assert push["address"] == "/ws" and push["servers"] == [{"$ref": "#/servers/push"}]
    for spec in topics.CONTRACT_TOPICS:
        assert _channel(spec.name)["servers"] == [{"$ref": "#/servers/kafka"}]
        configs = _channel(spec.name)["bindings"]["kafka"]["topicConfiguration"]
        assert set(configs) <= {"cleanup.policy", "retention.ms", "retention.bytes"}


def _key_table() -> list[tuple[str, str, str]]:
    block = DOC.split("<!-- keys:")[1].split("<!-- /keys -->")[0]
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]+) \| (.+) \|$", block, re.MULTILINE)
    return [(topic, parts.strip(), key.replace("\\|", "|")) for topic, parts, key in rows]


def test_the_key_and_partition_table() -> None:
    rows = _key_table()
    assert [topic for topic, _, _ in rows] == [
        "ioc.events.<domain>", topics.KPI, topics.ALERTS, topics.ALERT_COMMANDS,
        topics.DEADLETTER,
    ]  # fmt: skip
    specs = {spec.name: spec for spec in topics.CONTRACT_TOPICS}
    for topic, parts, key in rows:
        if topic == "ioc.events.<domain>":
            assert {specs[topics.events_topic(d)].partitions for d in topics.DOMAINS} == {
                int(parts)
            }
            for name, et in EVENT_TYPES.items():
                description = KAFKA_MESSAGES[name]["bindings"]["kafka"]["key"]["description"]
                assert description.startswith(f"data.{et.key_field} of the event")
            assert EVENT_TYPES["vn.ioc.air.observed"].key_field == "station_id"
            assert "`data.station_id` for `vn.ioc.air.observed`" in key
            continue
        count, _, compacted = parts.partition(", ")
        assert specs[topic].partitions == int(count)
        assert specs[topic].compacted is (compacted == "compacted")
        assert _channel(topic)["bindings"]["kafka"]["partitions"] == int(count)
        assert key.strip("`") in _key_description(topic)


def test_event_messages_declare_the_cloudevents_headers_and_records_none() -> None:
    assert "`content-type: application/cloudevents+json`" in ASYNC_SECTION
    assert "carry no headers" in ASYNC_SECTION
    for name, message in KAFKA_MESSAGES.items():
        if name in EVENT_TYPES:
            headers = message["headers"]["properties"]
            assert headers["content-type"]["examples"] == ["application/cloudevents+json"]
            assert headers["ce_specversion"]["const"] == "1.0"
        else:
            assert "headers" not in message, name
    # That our producers set the header and the timestamp is checked on the broker:
    # tests/test_cloudevents_kafka.py (gateway) and tests/test_simulators_broker.py. Only
    # the producers of events send headers at all:
    sources = [p for pkg in ("events", "ingest", "streams", "storage", "ws", "simulators", "chaos")
               for p in (ROOT / pkg).rglob("*.py")]  # fmt: skip
    sends = re.compile(r"\.send(?:_and_wait|_batch)?\((?:[^()]|\([^()]*\))*headers\s*=")
    with_headers = {str(p.relative_to(ROOT)) for p in sources if sends.search(p.read_text())}
    assert "ingest/publisher.py" in with_headers
    assert with_headers <= {
        "chaos/traffic.py",
        "ingest/publisher.py",
        "simulators/publisher.py",
        "simulators/publisher_aiokafka.py",
    }


def test_the_payloads_are_the_schemas_embedded_with_the_2020_12_format() -> None:
    assert f"`schemaFormat: {SCHEMA_FORMAT}`" in ASYNC_SECTION
    components = ASYNCAPI["components"]["schemas"]
    named = re.findall(r"`([a-z-]+\.json)`", ASYNC_SECTION.split("**Payloads**")[1][:400])
    assert set(named) == {"cloudevent.json", "kpi-window.json", "alert.json",
                          "alert-command.json", "dead-letter.json"}  # fmt: skip
    embedded = [c["schema"] for c in components.values()]
    for name in named:
        assert SCHEMAS[name] in embedded, name
    assert {c["schemaFormat"] for c in components.values()} == {SCHEMA_FORMAT}
    assert all(s["$schema"] == DIALECT for s in embedded)


def test_the_websocket_frames_named_are_the_channel_messages() -> None:
    websocket = ASYNC_SECTION.split("**The websocket**")[1].split("**Validated**")[0]
    client = set(re.findall(r"`([a-z_]+)`", websocket.split("every server frame")[0]))
    server = set(re.findall(r"`([a-z_]+)`", websocket.split("every server frame")[1]))
    client -= {"push"}
    messages = ASYNCAPI["channels"]["push"]["messages"]
    assert {m.removeprefix("ws-client-") for m in messages if "client" in m} == client
    assert {m.removeprefix("ws-server-") for m in messages if "server" in m} == server
    protocol = (ROOT / "docs" / "ws-protocol.md").read_text()
    assert all(f"`{op}`" in protocol for op in client)
    assert all(re.search(f'"type": ?"{t}"', protocol) for t in server)


def test_the_vendored_asyncapi_schema_is_the_one_named() -> None:
    validated = ASYNC_SECTION.split("**Validated**")[1]
    vendored = ROOT / "schemas" / "vendor" / "asyncapi-3.0.0.json"
    assert "`schemas/vendor/asyncapi-3.0.0.json`" in validated
    assert orjson.loads(vendored.read_bytes())["$id"].endswith("/3.0.0/asyncapi.json")
    notes = (ROOT / "schemas" / "vendor" / "README.md").read_text()
    assert "`@asyncapi/specs` 6.11.1" in validated and "`@asyncapi/specs` 6.11.1" in notes
    assert (
        (ROOT / "schemas" / "vendor" / "LICENSE-asyncapi-specs").read_text().count("Apache License")
    )
    assert "tests/test_asyncapi.py" in validated and (ROOT / "tests/test_asyncapi.py").is_file()


def test_the_examples_named_exist_are_short_and_are_run_by_a_test() -> None:
    section = DOC.split("## Example consumers (`examples/`)")[1]
    named = re.findall(r"`(examples/[a-z_]+\.py)`", section)
    assert sorted(named) == ["examples/kpi_alert_consumer.py", "examples/ws_consumer.py"]
    runner = (ROOT / "tests" / "test_examples.py").read_text()
    for path in named:
        assert len((ROOT / path).read_text().splitlines()) < 100, path
        assert f'"{Path(path).name}"' in runner, path
    assert (ROOT / "examples" / "README.md").is_file()
