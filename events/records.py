"""Records on the output topics: KPI windows, alerts, operator commands, dead letters.

These are public contracts (see docs/architecture.md). Every producer builds them with
these classes and every consumer reads them with ``from_json``, so field names live in
one place. Times on the wire are RFC 3339 UTC strings with millisecond precision.

Each field carries its contract in its metadata (:func:`wire`): what it means, whether a
reader may find it absent (records written before the field existed), its bounds and its
name on the wire when that differs. ``events.contracts`` turns the classes into the
JSON Schemas ``schemas/v1/{kpi-window,alert,alert-command,dead-letter}.json``; a test
checks the readers against them.

Every record names its schema in a ``schema`` field (the schema's ``$id``, e.g.
``urn:vn-ioc:schema:v1:kpi-window``): a consumer knows which version it reads without
asking the topic. Readers accept records without it (written before it existed).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Protocol

import orjson

from events.errors import InvalidEventError

AlertState = Literal["raised", "escalated", "acknowledged", "cleared"]
AlertSeverity = Literal["info", "warning", "critical"]
CommandName = Literal["ack", "clear", "assign"]

SCHEMA_VERSION = "v1"
# A URN, not a URL: the schemas are the same wherever a gateway serves them.
SCHEMA_ID_PREFIX = f"urn:vn-ioc:schema:{SCHEMA_VERSION}:"


def wire(
    doc: str,
    *,
    optional: bool = False,
    minimum: int | None = None,
    maximum: int | None = None,
    name: str | None = None,
) -> Mapping[str, Any]:
    """The metadata of a record field: its meaning; ``optional`` when readers accept a
    record without it; inclusive integer bounds; its wire ``name`` if not the field's."""
    return {
        "doc": doc,
        "optional": optional,
        "minimum": minimum,
        "maximum": maximum,
        "name": name,
    }


def format_time(ts: datetime) -> str:
    """RFC 3339, UTC, milliseconds: the one time format of our records."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text)
    except (TypeError, ValueError) as exc:
        raise InvalidEventError("bad_time", f"not an RFC 3339 time: {text!r}") from exc
    if ts.tzinfo is None:
        raise InvalidEventError("bad_time", f"time without offset: {text!r}")
    return ts.astimezone(UTC)


def _loads(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEventError("undecodable", f"{what}: {exc}") from exc
    if not isinstance(obj, dict):
        raise InvalidEventError("not_an_object", f"{what} must be a JSON object")
    return obj


@dataclass(frozen=True, slots=True)
class KpiRecord:
    """One KPI value of one window and scope (topic ``ioc.kpi``, table ``kpi_windows``)."""

    SCHEMA: ClassVar[str] = SCHEMA_ID_PREFIX + "kpi-window"

    kpi: str = field(metadata=wire("KPI id from the KPI catalogue (`ioc kpis`)"))
    scope: str = field(metadata=wire('"city", "district:<code>" or "station:<id>"'))
    window_start: datetime = field(metadata=wire("start of the window (inclusive)"))
    window_end: datetime = field(metadata=wire("end of the window (exclusive)"))
    value: float | None = field(
        metadata=wire("the KPI value; null when the window has no data", optional=True)
    )
    count: int = field(metadata=wire("events counted in the window", minimum=0))
    min: float | None = field(default=None, metadata=wire("smallest input", optional=True))
    max: float | None = field(default=None, metadata=wire("largest input", optional=True))
    sum: float | None = field(default=None, metadata=wire("sum of the inputs", optional=True))
    final: bool = field(
        default=False,
        metadata=wire("true once the window is closed (watermark passed)", optional=True),
    )
    revision: int = field(
        default=0,
        metadata=wire("grows with every update of this window", optional=True, minimum=0),
    )
    computed_at: datetime = field(
        default_factory=lambda: datetime.now(UTC),
        metadata=wire("when the stream worker computed this value", optional=True),
    )

    @property
    def key(self) -> str:
        """The Kafka key: one key per (kpi, scope, window) so the sink can upsert."""
        return f"{self.kpi}|{self.scope}|{format_time(self.window_start)}"

    def to_dict(self) -> dict[str, Any]:
        # Field by field, not dataclasses.asdict: that deep-copies the three datetimes
        # (~150 µs a record), and the streams worker emits thousands of records a second.
        return {
            "schema": self.SCHEMA,
            "kpi": self.kpi,
            "scope": self.scope,
            "window_start": format_time(self.window_start),
            "window_end": format_time(self.window_end),
            "value": self.value,
            "count": self.count,
            "min": self.min,
            "max": self.max,
            "sum": self.sum,
            "final": self.final,
            "revision": self.revision,
            "computed_at": format_time(self.computed_at),
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KpiRecord:
        try:
            return cls(
                kpi=str(d["kpi"]),
                scope=str(d["scope"]),
                window_start=parse_time(d["window_start"]),
                window_end=parse_time(d["window_end"]),
                value=None if d.get("value") is None else float(d["value"]),
                count=int(d["count"]),
                min=None if d.get("min") is None else float(d["min"]),
                max=None if d.get("max") is None else float(d["max"]),
                sum=None if d.get("sum") is None else float(d["sum"]),
                final=bool(d.get("final", False)),
                revision=int(d.get("revision", 0)),
                computed_at=parse_time(d["computed_at"])
                if d.get("computed_at")
                else datetime.now(UTC),
            )
        except KeyError as exc:
            raise InvalidEventError("missing_attribute", f"KPI record lacks {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise InvalidEventError("bad_attribute", f"KPI record: {exc}") from exc

    @classmethod
    def from_json(cls, raw: bytes | str) -> KpiRecord:
        return cls.from_dict(_loads(raw, "KPI record"))


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """The state of one alert after a transition (topic ``ioc.alerts``, key alert_id)."""

    SCHEMA: ClassVar[str] = SCHEMA_ID_PREFIX + "alert"

    alert_id: str = field(metadata=wire("alert id, the Kafka key"))
    rule: str = field(metadata=wire("rule id from the alert rule catalogue"))
    subject: str = field(metadata=wire('what it is about: a scope ("district:HK", "station:<id>")'))
    state: AlertState = field(metadata=wire("state after this transition"))
    severity: AlertSeverity = field(metadata=wire("severity"))
    level: int = field(
        metadata=wire(
            "alarm level for flood rules (BĐ I/II/III), else the severity rank",
            minimum=1,
            maximum=3,
        )
    )
    title: str = field(metadata=wire("human text, Vietnamese first (the wall's language)"))
    kpi: str | None = field(metadata=wire("KPI the rule watches", optional=True))
    value: float | None = field(metadata=wire("value that triggered it", optional=True))
    threshold: float | None = field(metadata=wire("threshold it crossed", optional=True))
    raised_at: datetime = field(metadata=wire("when the alert was raised"))
    updated_at: datetime = field(metadata=wire("when this transition happened"))
    acknowledged_by: str | None = field(
        default=None, metadata=wire("operator who acknowledged it", optional=True)
    )
    assignee: str | None = field(
        default=None, metadata=wire("operator it is assigned to", optional=True)
    )
    revision: int = field(
        default=0,
        metadata=wire("grows with every transition of this alert", optional=True, minimum=0),
    )
    # Optional (records written before these fields existed lack them; they parse with
    # the defaults). The window that last raised or escalated the alert: its start, from
    # which on final windows may clear it, and whether its value was live (final=false,
    # still partial) when it did: the wall marks such an alert as provisional.
    window_start: datetime | None = field(
        default=None,
        metadata=wire("start of the window that last raised or escalated it", optional=True),
    )
    on_live_window: bool = field(
        default=False,
        metadata=wire("raised on a window still open (provisional)", optional=True),
    )
    # The English title beside the Vietnamese one, for the wall's other language. Optional:
    # records written before it existed lack it, and the wall then shows ``title``.
    title_en: str | None = field(default=None, metadata=wire("the title in English", optional=True))

    def to_dict(self) -> dict[str, Any]:
        d = {"schema": self.SCHEMA, **asdict(self)}
        for name in ("raised_at", "updated_at"):
            d[name] = format_time(d[name])
        if self.window_start is not None:
            d["window_start"] = format_time(self.window_start)
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlertRecord:
        if d.get("state") not in ("raised", "escalated", "acknowledged", "cleared"):
            raise InvalidEventError("bad_attribute", f"unknown alert state {d.get('state')!r}")
        try:
            return cls(
                alert_id=str(d["alert_id"]),
                rule=str(d["rule"]),
                subject=str(d["subject"]),
                state=d["state"],
                severity=d["severity"],
                level=int(d["level"]),
                title=str(d["title"]),
                kpi=d.get("kpi"),
                value=None if d.get("value") is None else float(d["value"]),
                threshold=None if d.get("threshold") is None else float(d["threshold"]),
                raised_at=parse_time(d["raised_at"]),
                updated_at=parse_time(d["updated_at"]),
                acknowledged_by=d.get("acknowledged_by"),
                assignee=d.get("assignee"),
                revision=int(d.get("revision", 0)),
                window_start=parse_time(d["window_start"]) if d.get("window_start") else None,
                on_live_window=bool(d.get("on_live_window", False)),
                title_en=None if d.get("title_en") is None else str(d["title_en"]),
            )
        except KeyError as exc:
            raise InvalidEventError("missing_attribute", f"alert record lacks {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise InvalidEventError("bad_attribute", f"alert record: {exc}") from exc

    @classmethod
    def from_json(cls, raw: bytes | str) -> AlertRecord:
        return cls.from_dict(_loads(raw, "alert record"))


@dataclass(frozen=True, slots=True)
class AlertCommand:
    """An operator command (topic ``ioc.alerts.commands``, key alert_id)."""

    SCHEMA: ClassVar[str] = SCHEMA_ID_PREFIX + "alert-command"

    command_id: str = field(metadata=wire("unique; makes re-delivered commands harmless"))
    alert_id: str = field(metadata=wire("the alert, the Kafka key"))
    command: CommandName = field(metadata=wire("what to do"))
    by: str = field(metadata=wire("operator name from the token"))
    at: datetime = field(metadata=wire("when the operator sent it"))
    assignee: str | None = field(
        default=None, metadata=wire('operator to assign; required by "assign"', optional=True)
    )
    note: str | None = field(default=None, metadata=wire("free text", optional=True))

    def to_dict(self) -> dict[str, Any]:
        d = {"schema": self.SCHEMA, **asdict(self)}
        d["at"] = format_time(self.at)
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes | str) -> AlertCommand:
        d = _loads(raw, "alert command")
        try:
            cmd = cls(
                command_id=str(d["command_id"]),
                alert_id=str(d["alert_id"]),
                command=d["command"],
                by=str(d["by"]),
                at=parse_time(d["at"]),
                assignee=d.get("assignee"),
                note=d.get("note"),
            )
        except KeyError as exc:
            raise InvalidEventError("missing_attribute", f"alert command lacks {exc}") from exc
        if cmd.command not in ("ack", "clear", "assign"):
            raise InvalidEventError("bad_attribute", f"unknown command {cmd.command!r}")
        if cmd.command == "assign" and not cmd.assignee:
            raise InvalidEventError("missing_attribute", "assign needs an assignee")
        return cmd


class ConsumedRecord(Protocol):
    """What a dead letter needs of a consumed Kafka record (aiokafka's ConsumerRecord)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record some component could not use (topic ``ioc.deadletter``, original key)."""

    SCHEMA: ClassVar[str] = SCHEMA_ID_PREFIX + "dead-letter"

    reason: str = field(
        metadata=wire('stable code, e.g. "undecodable", "out_of_range", "too_late"')
    )
    detail: str = field(metadata=wire("which field and why, for people"))
    source_topic: str = field(metadata=wire('topic it was read from (or "mqtt:<topic>")'))
    source_partition: int = field(metadata=wire("partition it was read from"))
    source_offset: int = field(metadata=wire("its offset (the MQTT message id for MQTT)"))
    value: bytes = field(metadata=wire("the original bytes, base64", name="value_b64"))
    key: bytes | None = field(
        default=None, metadata=wire("the original key, base64", optional=True, name="key_b64")
    )
    component: str = field(default="", metadata=wire("component that gave up on it", optional=True))
    time: datetime = field(
        default_factory=lambda: datetime.now(UTC), metadata=wire("when it was dead-lettered")
    )

    @classmethod
    def of(cls, record: ConsumedRecord, reason: str, detail: str, component: str) -> DeadLetter:
        """The dead letter of a consumed record, with its origin."""
        return cls(
            reason=reason,
            detail=detail,
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            value=record.value or b"",
            key=record.key,
            component=component,
        )

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "schema": self.SCHEMA,
                "reason": self.reason,
                "detail": self.detail,
                "source_topic": self.source_topic,
                "source_partition": self.source_partition,
                "source_offset": self.source_offset,
                "value_b64": base64.b64encode(self.value).decode(),
                "key_b64": None if self.key is None else base64.b64encode(self.key).decode(),
                "component": self.component,
                "time": format_time(self.time),
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> DeadLetter:
        d = _loads(raw, "dead letter")
        return cls(
            reason=d["reason"],
            detail=d["detail"],
            source_topic=d["source_topic"],
            source_partition=int(d["source_partition"]),
            source_offset=int(d["source_offset"]),
            value=base64.b64decode(d["value_b64"]),
            key=None if d.get("key_b64") is None else base64.b64decode(d["key_b64"]),
            component=d.get("component", ""),
            time=parse_time(d["time"]),
        )
