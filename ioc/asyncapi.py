"""AsyncAPI 3.0 of everything the system streams: its Kafka topics and the push server.

Generated, never written by hand: the topics, partitions and topic configs come from
:data:`events.topics.CONTRACT_TOPICS`, the event types (and the field each is keyed by)
from the catalogue, the payloads from the JSON Schemas of :mod:`events.contracts`, the
example keys from the producers' own key functions, and the websocket frames from
:mod:`ws.frames`. ``ioc schemas`` writes it to ``docs/asyncapi.yaml``;
``tests/test_asyncapi.py`` validates it against the published AsyncAPI 3.0.0 JSON Schema
(vendored in ``schemas/vendor/``) and checks it against the code.

Payload schemas are embedded (``components.schemas``), like the files of ``schemas/v1/``
they equal, so the document needs no resolver. They are JSON Schema 2020-12, which
AsyncAPI 3.0 has no format name for: they carry ``schemaFormat``
:data:`SCHEMA_FORMAT`, and tools that only know draft-07 treat them as opaque.

Event messages declare their Kafka headers (:data:`EVENT_HEADERS`): every producer of ours
writes structured mode with ``content-type: application/cloudevents+json``; binary mode
(``ce_*`` headers) is accepted too (:mod:`events.binding`). The records of the other
topics carry no headers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from events import topics
from events.binding import CONTENT_TYPE_HEADER, KAFKA_SPECVERSION, STRUCTURED_CONTENT_TYPE
from events.catalogue import EVENT_TYPES, EventType, key_for
from events.contracts import VERSION, envelope_schema, record_schemas
from events.docs import example_event
from events.records import AlertCommand, AlertRecord, DeadLetter, KpiRecord
from ioc.settings import ServiceSettings
from ws import frames
from ws.settings import WsSettings

ASYNCAPI = "3.0.0"
TITLE = "IOC event streams"
SCHEMA_FORMAT = "application/schema+json;version=2020-12"
KAFKA_BINDING = "0.5.0"
WS_BINDING = "0.1.0"

Document = dict[str, Any]

# The record schemas by topic, and how each topic's records are keyed (the producers:
# streams/worker.py, streams/alerts/worker.py, ws/bridge.py, every dead-lettering
# component). The topics of events are keyed per event type (see _event_message).
RECORDS: dict[str, tuple[str, str, str]] = {
    # topic: (component schema, schemas/v1 file, key description)
    topics.KPI: (
        "KpiWindow",
        "kpi-window.json",
        "`<kpi>|<scope>|<window_start>` (KpiRecord.key, UTF-8): every revision of one "
        "window goes to one partition, in order, and the storage sink upserts by it",
    ),
    topics.ALERTS: (
        "Alert",
        "alert.json",
        "alert_id (UTF-8). The topic is compacted: the latest record of a key is the "
        "alert's current state",
    ),
    topics.ALERT_COMMANDS: (
        "AlertCommand",
        "alert-command.json",
        "alert_id (UTF-8): the commands of one alert are applied in order",
    ),
    topics.DEADLETTER: (
        "DeadLetter",
        "dead-letter.json",
        "the key of the record that could not be used (also in key_b64), absent when it "
        "had none; `<kpi>|<scope>` for a window the stream worker could not build",
    ),
}

# Who writes and who reads each topic (the operations of the document).
PRODUCERS: dict[str, str] = {
    "events": "the ingest gateway (HTTP and MQTT) and the simulators publish validated "
    "CloudEvents (structured JSON mode)",
    topics.KPI: "the stream workers publish every revision of every KPI window",
    topics.ALERTS: "the alerts worker publishes the state of an alert after each transition",
    topics.ALERT_COMMANDS: "the push server publishes the operators' commands",
    topics.DEADLETTER: "every component publishes the records it could not use",
}
CONSUMERS: dict[str, str] = {
    "events": "the stream workers compute KPI windows; the storage sink keeps every event",
    topics.KPI: "the storage sink, the alerts worker and the push server read them",
    topics.ALERTS: "the push server and the storage sink read them; the alerts worker "
    "restores its state from them",
    topics.ALERT_COMMANDS: "the alerts worker applies them",
}

_AT = datetime(2026, 11, 22, 4, 7, tzinfo=UTC)


def _examples() -> dict[str, Any]:
    """One record per output topic, built with the record classes (their ``key``)."""
    kpi = KpiRecord("air.aqi.vn", "district:HD", _AT, _AT + timedelta(minutes=1), 128.0, 412,
                    revision=3, computed_at=_AT + timedelta(seconds=41))  # fmt: skip
    alert = AlertRecord("flood-HD-TV-PL-20261122T0455", "water.level.alarm", "station:HD-TV-PL",
                        "raised", "critical", 3, "Mực nước vượt BĐ III", "water.level.max",
                        5.2, 5.0, _AT, _AT)  # fmt: skip
    command = AlertCommand("6c7f2d1e-0b4a-4e8e-9d61-3f1f3c2b9a10", alert.alert_id, "ack",
                           "operator", _AT, note="đã cử đội")  # fmt: skip
    letter = DeadLetter("undecodable", "not JSON", "ioc.events.air", 2, 4711, b"{oops",
                        b"HD-AQ-001", "streams", _AT)  # fmt: skip
    return {
        topics.KPI: (kpi.key, kpi.to_dict()),
        topics.ALERTS: (alert.alert_id, alert.to_dict()),
        topics.ALERT_COMMANDS: (command.alert_id, command.to_dict()),
        topics.DEADLETTER: ("HD-AQ-001", orjson.loads(letter.to_json())),
    }


def _schema(schema: Document) -> Document:
    return {"schemaFormat": SCHEMA_FORMAT, "schema": schema}


def _ref(*path: str) -> Document:
    return {"$ref": "#/" + "/".join(path)}


def _key(description: str, example: str) -> Document:
    return {
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": description, "examples": [example]},
                "bindingVersion": KAFKA_BINDING,
            }
        }
    }


# The headers of an event record (CloudEvents Kafka protocol binding).
EVENT_HEADERS: Document = {
    "type": "object",
    "description": (
        f"Structured mode (what every producer of ours writes): `{CONTENT_TYPE_HEADER}: "
        f"{STRUCTURED_CONTENT_TYPE}` and the whole CloudEvent as the value. Binary mode is "
        f"accepted too: a record with a `{KAFKA_SPECVERSION}` header carries the attributes as "
        "`ce_<attribute>` headers (extensions included), `datacontenttype` as `content-type`, "
        "and `data` as the value; consumers turn it into the structured form. The record "
        "timestamp is the event time."
    ),
    "properties": {
        CONTENT_TYPE_HEADER: {
            "type": "string",
            "description": f"`{STRUCTURED_CONTENT_TYPE}` in structured mode; in binary mode "
            "the datacontenttype (application/json, parameters allowed)",
            "examples": [STRUCTURED_CONTENT_TYPE],
        },
        KAFKA_SPECVERSION: {
            "const": "1.0",
            "description": "present only in binary mode, with the other ce_ headers",
        },
    },
}


def _event_message(et: EventType) -> Document:
    event = example_event(et)
    return {
        "name": et.type,
        "title": et.type,
        "summary": et.description,
        "contentType": STRUCTURED_CONTENT_TYPE,
        "headers": EVENT_HEADERS,
        "payload": _ref("components", "schemas", "CloudEvent"),
        **_key(
            f"data.{et.key_field} of the event (UTF-8, events.catalogue.key_for): the "
            f"events of one {et.key_field} go to one partition, in order",
            key_for(event).decode(),
        ),
        "examples": [{"name": "example", "payload": event}],
    }


def _channel(
    spec: topics.TopicSpec, messages: dict[str, Document], doc: str, headers: str
) -> Document:
    configs = spec.configs()
    topic_configuration: Document = {"cleanup.policy": [configs["cleanup.policy"]]}
    for name in ("retention.ms", "retention.bytes"):
        if name in configs:
            topic_configuration[name] = int(configs[name])
    return {
        "address": spec.name,
        "title": spec.name,
        "description": f"{doc} {spec.partitions} partition{'s' * (spec.partitions > 1)}; "
        "the producers' default "
        f"partitioner (murmur2 of the key) places each record. {headers}",
        "servers": [_ref("servers", "kafka")],
        "messages": messages,
        "bindings": {
            "kafka": {
                "topic": spec.name,
                "partitions": spec.partitions,
                "topicConfiguration": topic_configuration,
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }


def _channel_id(topic: str) -> str:
    return topic.removeprefix("ioc.").replace(".", "-")


def _kafka(document: Document) -> None:
    channels, operations = document["channels"], document["operations"]
    messages, schemas = document["components"]["messages"], document["components"]["schemas"]
    schemas["CloudEvent"] = _schema(envelope_schema())
    by_topic: dict[str, list[EventType]] = {}
    for et in EVENT_TYPES.values():
        by_topic.setdefault(et.topic, []).append(et)
        messages[et.type] = _event_message(et)
    records = record_schemas()
    examples = _examples()
    for spec in topics.CONTRACT_TOPICS:
        cid = _channel_id(spec.name)
        if spec.name.startswith(topics.EVENTS_PREFIX):
            kind = "events"
            domain = spec.name.removeprefix(topics.EVENTS_PREFIX)
            refs = {et.type: _ref("components", "messages", et.type)
                    for et in by_topic.get(spec.name, [])}  # fmt: skip
            doc = f"CloudEvents of the {domain} domain (schemas/{VERSION}/cloudevent.json)."
            headers = (
                f"Records carry the header {CONTENT_TYPE_HEADER}: {STRUCTURED_CONTENT_TYPE} "
                "(structured mode); binary-mode records (ce_ headers) are accepted."
            )
        else:
            kind = spec.name
            component, file, key_doc = RECORDS[spec.name]
            schemas[component] = _schema(records[file])
            key, payload = examples[spec.name]
            messages[component] = {
                "name": component,
                "title": records[file]["title"],
                "contentType": "application/json",
                "payload": _ref("components", "schemas", component),
                **_key(key_doc, key),
                "examples": [{"name": "example", "payload": payload}],
            }
            refs = {component: _ref("components", "messages", component)}
            doc = f"{records[file]['title']}: JSON, schemas/{VERSION}/{file}."
            headers = "Records carry no headers."
        channels[cid] = _channel(spec, refs, doc, headers)
        for action, who in (("send", PRODUCERS), ("receive", CONSUMERS)):
            if kind in who:
                operations[f"{action}-{cid}"] = {
                    "action": action,
                    "channel": _ref("channels", cid),
                    "summary": who[kind],
                    "messages": [_ref("channels", cid, "messages", m) for m in refs],
                }


def _push(document: Document) -> None:
    schemas, messages = document["components"]["schemas"], document["components"]["messages"]
    examples = frames.examples()
    client: dict[str, Any] = {}
    server: dict[str, Any] = {}
    for side, refs, defined in (
        ("client", client, frames.client_frames()),
        ("server", server, frames.server_frames()),
    ):
        for name, schema in defined.items():
            mid = f"ws-{side}-{name}"
            schemas[mid] = _schema(schema)
            messages[mid] = {
                "name": name,
                "title": schema["title"],
                "contentType": "application/json",
                "payload": _ref("components", "schemas", mid),
            }
            if side == "client":  # examples of what a client sends
                messages[mid]["examples"] = [{"payload": e} for e in examples[name]]
            refs[mid] = _ref("components", "messages", mid)
    document["channels"]["push"] = {
        "address": "/ws",
        "title": "push server websocket",
        "description": "KPI windows and alert states for the wall display and any other "
        "client: JSON text frames, one object each (docs/ws-protocol.md). Subscribe, "
        "remember the last `seq` per channel and the `epoch`, and resume with them after "
        "a reconnect.",
        "servers": [_ref("servers", "push")],
        "messages": {**client, **server},
        "bindings": {
            "ws": {
                "method": "GET",
                "query": {
                    "type": "object",
                    "properties": {
                        "token": {
                            "type": "string",
                            "description": "authenticates at the handshake (else send "
                            "auth first); unknown: HTTP 401",
                        }
                    },
                },
                "bindingVersion": WS_BINDING,
            }
        },
    }
    document["operations"]["receive-push-client-frames"] = {
        "action": "receive",
        "channel": _ref("channels", "push"),
        "summary": "the push server takes the clients' operations",
        "messages": [_ref("channels", "push", "messages", m) for m in client],
    }
    document["operations"]["send-push-server-frames"] = {
        "action": "send",
        "channel": _ref("channels", "push"),
        "summary": "the push server sends welcome, snapshots, updates and answers",
        "messages": [_ref("channels", "push", "messages", m) for m in server],
    }


def asyncapi_document() -> Document:
    """The AsyncAPI 3.0 document of the system's Kafka topics and push server."""
    broker_port = ServiceSettings.model_fields["broker_port"].default
    ws_host = WsSettings.model_fields["ws_host"].default
    ws_port = WsSettings.model_fields["ws_port"].default
    document: Document = {
        "asyncapi": ASYNCAPI,
        "info": {
            "title": TITLE,
            "version": f"1.0.0 (schemas {VERSION})",
            "description": "The Kafka topics of the IOC backend and its websocket push "
            "server. Generated by `ioc schemas` from the code; the payload schemas are "
            f"those of schemas/{VERSION}/ (docs/contracts.md).",
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": f"127.0.0.1:{broker_port}",
                "protocol": "kafka",
                "description": "the broker of `ioc up` (port IOC_BROKER_PORT); `ioc topics` "
                "creates the topics",
            },
            "push": {
                "host": f"{ws_host}:{ws_port}",
                "protocol": "ws",
                "description": "the push server (`ioc ws serve`; IOC_WS_HOST, IOC_WS_PORT)",
            },
        },
        "channels": {},
        "operations": {},
        "components": {"schemas": {}, "messages": {}},
    }
    _kafka(document)
    _push(document)
    return document


__all__ = ["ASYNCAPI", "SCHEMA_FORMAT", "asyncapi_document"]
