"""Operational notices for the wall: today, "the broker was restarted to free its memory".

`ioc up` restarts its Tansu when Tansu's memory passes the cap (ioc/broker_guard.py) and
writes the restart record (``IOC_WS_BROKER_RESTARTS_FILE``, JSON with ``at``, ``reason``,
``restarts``). The push server turns it into a ``notice`` frame (docs/ws-protocol.md) that
the wall shows until ``until``. Sans-I/O except :func:`read_record`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson


def read_record(path: Path | None) -> dict[str, Any] | None:
    """The restart record at ``path``; None when there is none or it is unreadable."""
    if path is None:
        return None
    try:
        record = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def broker_restart_notice(
    record: dict[str, Any] | None, now: datetime, notice_s: float
) -> dict[str, Any] | None:
    """The ``notice`` frame for a restart record, while ``now`` is within ``notice_s`` of
    the restart; None before there was one, after that, or for a malformed record."""
    if record is None or not isinstance(record.get("at"), str):
        return None
    try:
        at = datetime.fromisoformat(record["at"])
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    until = at + timedelta(seconds=notice_s)
    if now >= until:
        return None
    frame: dict[str, Any] = {
        "type": "notice",
        "kind": "broker_restart",
        "reason": str(record.get("reason", "memory_cap")),
        "at": _iso(at),
        "until": _iso(until),
    }
    if isinstance(record.get("restarts"), int):
        frame["restarts"] = record["restarts"]
    return frame
