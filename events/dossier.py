"""Public-service dossier rules (hồ sơ thủ tục hành chính).

A dossier is received at a one-stop-shop office (bộ phận một cửa) or on the public-service
portal and carries a legal deadline (``due``, from the procedure's processing time). Two
indicators of the provincial administrative-reform index follow from each dossier:

- **on time** (đúng hạn): its result was issued at or before ``due``; a result issued
  after the deadline is overdue (trễ hạn). A dossier that is not resolved yet is overdue
  only once ``due`` has passed (``is_overdue_open``).
- **online** (trực tuyến): submitted through the portal; ``offline`` means in person at
  an office (or by post), whatever the later steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from events.errors import InvalidEventError

Timeliness = Literal["on_time", "overdue"]

# The cross-field rule of the dossier payload as data: when ``status`` is ``resolved``,
# ``resolved_at`` is required. :func:`complete_dossier` enforces it and the JSON Schema
# generator (events.contracts) states it as an ``if``/``then``, from this one tuple.
RESOLVED_NEEDS_TIME = ("status", "resolved", "resolved_at")


def is_on_time(due: datetime, resolved_at: datetime) -> bool:
    """True when the result was issued no later than the deadline (the deadline counts)."""
    return resolved_at <= due


def timeliness(due: datetime, resolved_at: datetime) -> Timeliness:
    return "on_time" if is_on_time(due, resolved_at) else "overdue"


def is_overdue_open(due: datetime, now: datetime) -> bool:
    """A dossier still in progress at ``now`` is overdue once its deadline has passed."""
    return now > due


def is_online(channel: str) -> bool:
    """True for dossiers submitted on the portal; ``offline`` is in person or by post."""
    if channel == "online":
        return True
    if channel == "offline":
        return False
    raise InvalidEventError("bad_value", f"dossier channel must be online or offline: {channel!r}")


def _as_time(value: Any, name: str) -> datetime:
    if isinstance(value, datetime):
        ts = value
    else:
        try:
            ts = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise InvalidEventError("bad_time", f"data.{name}: {value!r}") from None
    if ts.tzinfo is None:
        raise InvalidEventError("bad_time", f"data.{name} has no UTC offset: {value!r}")
    return ts.astimezone(UTC)


def complete_dossier(data: dict[str, Any]) -> None:
    """Cross-field rules of ``vn.ioc.services.dossier`` (run by the decoder after the schema).

    A resolved dossier must say when (``resolved_at``); its ``timeliness`` is derived from
    ``due`` and ``resolved_at`` when the producer did not send it, so KPI rates can count
    on-time dossiers by a plain field match.
    """
    status, resolved, needed = RESOLVED_NEEDS_TIME
    if data[status] != resolved:
        return
    resolved_at = data.get(needed)
    if resolved_at is None:
        raise InvalidEventError("missing_field", f"data.{needed} is required when {resolved}")
    if "timeliness" not in data:
        data["timeliness"] = timeliness(
            _as_time(data["due"], "due"), _as_time(resolved_at, "resolved_at")
        )


def dossier_outcome(data: Mapping[str, Any]) -> Timeliness | None:
    """The timeliness of a validated dossier payload, None while it is not resolved."""
    value = data.get("timeliness")
    return value if value in ("on_time", "overdue") else None
