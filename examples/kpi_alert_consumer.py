"""A downstream consumer of ioc.kpi and ioc.alerts that validates every record.

Each record is checked against its published JSON Schema (schemas/v1/, also served by
the ingest gateway at /schemas/v1/<name>) before it is used: the one its `schema` field
names (records written before that field existed: the topic's), and a version this
consumer does not know is reported, not guessed at. Valid records are printed
on stdout, one JSON line each; invalid ones on stderr with the schema's reasons, and
skipped: one bad record should not stop a downstream consumer.

    pip install kafka-python jsonschema rfc3339-validator
    python examples/kpi_alert_consumer.py --bootstrap 127.0.0.1:9092 --group my-team
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from kafka import KafkaConsumer

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas" / "v1"
# The schema of each topic's records (docs/asyncapi.yaml says the same).
TOPICS = {"ioc.kpi": "kpi-window.json", "ioc.alerts": "alert.json"}


def validators(schema_dir: Path) -> dict[str, Draft202012Validator]:
    """One validator per schema $id and per topic. FORMAT_CHECKER makes "date-time" an
    assertion (with rfc3339-validator installed), not only an annotation."""
    found = {}
    for topic, name in TOPICS.items():
        schema = json.loads((schema_dir / name).read_text())
        check = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        found[topic] = found[schema["$id"]] = check
    return found


def check(checks: dict[str, Draft202012Validator], topic: str, raw: bytes) -> tuple[Any, list[str]]:
    """The decoded record and what is wrong with it (nothing: valid)."""
    try:
        record = json.loads(raw)
    except ValueError as exc:
        return None, [f"not JSON: {exc}"]
    named = record.get("schema", topic) if isinstance(record, dict) else topic
    validator = checks.get(named)
    if validator is None:
        return record, [f"schema: unknown version {named!r}"]
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '(record)'}: {e.message}"
        for e in validator.iter_errors(record)
    ]
    return record, errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--group", default="kpi-alert-example", help="consumer group")
    parser.add_argument("--schemas", type=Path, default=SCHEMA_DIR)
    args = parser.parse_args(argv)
    checks = validators(args.schemas)
    consumer = KafkaConsumer(
        *TOPICS,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        # A new group reads what the topics still hold; a known group goes on from its
        # committed offsets. ioc.alerts is compacted (key: alert_id), so reading it from
        # the start gives at least the latest state of every alert.
        auto_offset_reset="earliest",
    )
    for msg in consumer:
        record, errors = check(checks, msg.topic, msg.value)
        where = {
            "topic": msg.topic,
            "partition": msg.partition,
            "offset": msg.offset,
            "key": msg.key.decode() if msg.key else None,
        }
        if errors:
            print(json.dumps({**where, "errors": errors}), file=sys.stderr, flush=True)
            continue
        print(json.dumps({**where, "record": record}, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
