"""docs/asyncapi.yaml: generated, valid AsyncAPI 3.0.0, and true to the code.

- the committed file is what ``ioc schemas`` renders (``--check`` notices an edit);
- it validates against the published AsyncAPI 3.0.0 JSON Schema (npm ``@asyncapi/specs``
  6.11.1, vendored in ``schemas/vendor/``), offline, with the references resolved from
  the vendored file only;
- its channels are the contract topics (partitions, configs) and the push server; its
  payloads are the generated JSON Schemas; its example keys are the producers' keys;
- the websocket client frames' schemas agree with the server's parser; the server
  frames' schemas with what a running push server sends (tests/test_examples.py).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT7
from typer.testing import CliRunner

from events import topics
from events.catalogue import EVENT_TYPES
from events.contracts import all_schemas
from events.errors import ProtocolError
from events.records import KpiRecord
from ioc.asyncapi import SCHEMA_FORMAT, asyncapi_document
from ioc.cli import build_app as build_cli
from ioc.commands.schemas import ASYNCAPI_PATH, stale_files
from ws.protocol import parse_client_message

ROOT = Path(__file__).resolve().parent.parent
VENDORED = ROOT / "schemas" / "vendor" / "asyncapi-3.0.0.json"
DOCUMENT: dict[str, Any] = yaml.safe_load((ROOT / ASYNCAPI_PATH).read_text())
SCHEMAS = all_schemas()
FORMATS = Draft202012Validator.FORMAT_CHECKER


def _offline(uri: str) -> Resource[Any]:
    """Nothing is fetched: a reference the vendored files do not hold is an error."""
    raise NoSuchResource(ref=uri)


def asyncapi_validator() -> Any:
    """A validator of the published AsyncAPI 3.0.0 schema; every ``$ref`` in it resolves
    in the registry built from the vendored file (its definitions carry their own
    ``$id``s), or in the JSON Schema meta-schemas that ship with jsonschema."""
    schema = orjson.loads(VENDORED.read_bytes())
    resource = Resource.from_contents(schema, default_specification=DRAFT7)
    registry: Registry[Any] = Registry(retrieve=_offline).with_resource(schema["$id"], resource)
    registry = registry.crawl()
    cls = validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=registry)


VALIDATOR = asyncapi_validator()


def payload_schema(message: dict[str, Any]) -> dict[str, Any]:
    ref = message["payload"]["$ref"].removeprefix("#/components/schemas/")
    component = DOCUMENT["components"]["schemas"][ref]
    assert component["schemaFormat"] == SCHEMA_FORMAT
    schema: dict[str, Any] = component["schema"]
    return schema


def check(schema: dict[str, Any], instance: Any) -> bool:
    return Draft202012Validator(schema, format_checker=FORMATS).is_valid(instance)


# ---- generated, committed, valid ---------------------------------------------------------


def test_the_committed_document_is_the_rendering() -> None:
    assert stale_files(ROOT) == [], "contracts are stale; regenerate them: ioc schemas"
    assert orjson.loads(orjson.dumps(asyncapi_document())) == DOCUMENT


def test_the_check_notices_an_edited_document(tmp_path: Path) -> None:
    runner = CliRunner()
    cli = build_cli("schemas")
    assert runner.invoke(cli, ["schemas", "--root", str(tmp_path)]).exit_code == 0
    path = tmp_path / ASYNCAPI_PATH
    path.write_text(path.read_text().replace("partitions: 4", "partitions: 8", 1))
    result = runner.invoke(cli, ["schemas", "--root", str(tmp_path), "--check"])
    assert result.exit_code == 1 and ASYNCAPI_PATH in result.output
    assert stale_files(tmp_path) == [ASYNCAPI_PATH]


def test_the_document_is_valid_asyncapi_3_0_0() -> None:
    assert DOCUMENT["asyncapi"] == "3.0.0"
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in VALIDATOR.iter_errors(DOCUMENT)]  # fmt: skip
    assert errors == []


@pytest.mark.parametrize(
    ("where", "change"),
    [
        # AsyncAPI 2's verbs are not 3.0's
        (("operations", "send-kpi"), {"action": "publish"}),
        (("channels", "kpi", "bindings", "kafka"), {"partitions": 0}),
        (("channels", "events-air"), {"address": 42}),
        (("servers", "push"), {"protocol": None}),
        (("components", "messages", "KpiWindow"), {"payload": "kpi-window.json"}),
    ],
)
def test_the_validation_would_notice_a_broken_document(
    where: tuple[str, ...], change: dict[str, Any]
) -> None:
    broken = copy.deepcopy(DOCUMENT)
    node = broken
    for part in where:
        node = node[part]
    node.update(change)
    assert not VALIDATOR.is_valid(broken)


def _dangling(node: Any, resource: Any) -> list[str]:
    """``#/…`` references that point nowhere; inside an embedded schema with an ``$id``
    they resolve in that schema (JSON Schema), elsewhere in the document (AsyncAPI)."""
    if isinstance(node, list):
        return [ref for item in node for ref in _dangling(item, resource)]
    if not isinstance(node, dict):
        return []
    resource = node if "$id" in node else resource
    found = []
    ref = node.get("$ref")
    if isinstance(ref, str):
        assert ref.startswith("#/"), ref
        target = resource
        for part in ref.removeprefix("#/").split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        if target is None:
            found.append(ref)
    return found + [ref for value in node.values() for ref in _dangling(value, resource)]


def test_every_reference_resolves_inside_the_document() -> None:
    assert _dangling(DOCUMENT, DOCUMENT) == []
    broken = copy.deepcopy(DOCUMENT)
    broken["channels"]["kpi"]["servers"] = [{"$ref": "#/servers/nope"}]
    assert _dangling(broken, broken) == ["#/servers/nope"]


# ---- true to the code --------------------------------------------------------------------


def test_the_channels_are_the_contract_topics_and_the_push_server() -> None:
    channels = DOCUMENT["channels"]
    by_address = {c["address"]: c for c in channels.values()}
    assert set(by_address) == {spec.name for spec in topics.CONTRACT_TOPICS} | {"/ws"}
    assert {topics.events_topic(d) for d in topics.DOMAINS} <= set(by_address)
    for spec in topics.CONTRACT_TOPICS:
        binding = by_address[spec.name]["bindings"]["kafka"]
        assert binding["partitions"] == spec.partitions
        configs = binding["topicConfiguration"]
        assert configs["cleanup.policy"] == [spec.configs()["cleanup.policy"]]
        if not spec.compacted:
            assert configs["retention.ms"] == spec.retention_ms
    for name, et in EVENT_TYPES.items():
        assert name in by_address[et.topic]["messages"]
    assert by_address[topics.ALERTS]["bindings"]["kafka"]["topicConfiguration"] == {
        "cleanup.policy": ["compact"]
    }


def test_the_payloads_are_the_generated_schemas() -> None:
    components = DOCUMENT["components"]["schemas"]
    for component, name in (("CloudEvent", "cloudevent.json"), ("KpiWindow", "kpi-window.json"),
                            ("Alert", "alert.json"), ("AlertCommand", "alert-command.json"),
                            ("DeadLetter", "dead-letter.json")):  # fmt: skip
        assert components[component]["schema"] == SCHEMAS[name], component


def _key(message: dict[str, Any]) -> tuple[str, str]:
    key = message["bindings"]["kafka"]["key"]
    [example] = key["examples"]
    return key["description"], example


def test_every_example_passes_its_payload_and_carries_the_producers_key() -> None:
    messages = DOCUMENT["components"]["messages"]
    for name, et in EVENT_TYPES.items():
        [example] = messages[name]["examples"]
        assert check(payload_schema(messages[name]), example["payload"])
        description, key = _key(messages[name])
        assert f"data.{et.key_field}" in description
        assert key == str(example["payload"]["data"][et.key_field])
    kpi = messages["KpiWindow"]
    payload = kpi["examples"][0]["payload"]
    assert check(payload_schema(kpi), payload)
    assert _key(kpi)[1] == KpiRecord.from_dict(payload).key
    for name in ("Alert", "AlertCommand"):
        payload = messages[name]["examples"][0]["payload"]
        assert check(payload_schema(messages[name]), payload)
        assert _key(messages[name])[1] == payload["alert_id"]
    letter = messages["DeadLetter"]["examples"][0]["payload"]
    assert check(payload_schema(messages["DeadLetter"]), letter)
    # a wrong payload fails: the schemas are not vacuous
    assert not check(payload_schema(kpi), {**payload, "count": -1})


# ---- websocket client frames: schema and parser agree ------------------------------------

PUSH = DOCUMENT["channels"]["push"]["messages"]


def client_schema(op: str) -> dict[str, Any]:
    message = DOCUMENT["components"]["messages"][f"ws-client-{op}"]
    return payload_schema(message)


def parses(frame: dict[str, Any]) -> bool:
    try:
        parse_client_message(orjson.dumps(frame).decode(), 16384)
    except ProtocolError:
        return False
    return True


def test_every_operation_has_a_client_message_with_examples_the_server_accepts() -> None:
    ops = {m["$ref"].rsplit("ws-client-", 1)[1] for m in PUSH.values()
           if "ws-client-" in m["$ref"]}  # fmt: skip
    assert ops == {"auth", "subscribe", "unsubscribe", "ack", "clear", "assign", "ping"}
    for op in ops:
        examples = DOCUMENT["components"]["messages"][f"ws-client-{op}"]["examples"]
        assert examples
        for example in examples:
            assert check(client_schema(op), example["payload"]) and parses(example["payload"])


SUB = {"op": "subscribe", "sub": "s1", "channel": "kpi"}
FRAMES = [
    (SUB, True),
    ({**SUB, "channel": "weather"}, False),
    ({**SUB, "sub": "has space"}, False),
    ({**SUB, "sub": "x" * 65}, False),
    ({**SUB, "kpis": []}, False),
    ({**SUB, "kpis": ["air.*"], "scopes": ["district:*", "city"]}, True),
    ({**SUB, "scopes": ["a b"]}, False),
    ({**SUB, "history_hours": 0}, False),
    ({**SUB, "history_hours": 24}, True),
    ({**SUB, "history_hours": 24.5}, False),
    ({**SUB, "history_hours": True}, False),
    ({**SUB, "history": [{"kpi": "air.aqi.vn", "scope": "city"}]}, True),
    ({**SUB, "history": [{"kpi": "air.aqi.vn"}]}, False),
    ({**SUB, "history": [{"kpi": "k", "scope": "city"}] * 17}, False),
    ({**SUB, "resume": {"epoch": "e1", "seq": 0}}, True),
    ({**SUB, "resume": {"epoch": "e1", "seq": -1}}, False),
    ({**SUB, "resume": {"epoch": "e1"}}, False),
    ({**SUB, "windows_since": 1795138020000}, True),
    ({**SUB, "windows_since": -5}, False),
    ({"op": "auth", "token": ""}, False),
    ({"op": "auth"}, False),
    ({"op": "ack", "alert_id": "A1", "id": "r1"}, True),
    ({"op": "ack", "alert_id": "A1", "note": ""}, False),
    ({"op": "assign", "alert_id": "A1"}, False),
    ({"op": "assign", "alert_id": "A1", "assignee": "lan"}, True),
    ({"op": "unsubscribe"}, False),
    ({"op": "ping"}, True),
    ({"op": "ping", "id": "bad id"}, False),
]


@pytest.mark.parametrize(("frame", "ok"), FRAMES)
def test_the_client_schemas_accept_what_the_parser_accepts(frame: dict[str, Any], ok: bool) -> None:
    assert parses(frame) is ok
    assert check(client_schema(frame["op"]), frame) is ok
