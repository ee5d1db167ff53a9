"""Query parameters of the read API: parsing, validation and the read plan (pure).

Every function takes the raw query string values and returns typed values or raises
:class:`ParamError` naming the parameter, which the HTTP layer turns into a 400
``{"error": "bad_parameter", "parameter": ..., "detail": ...}``. No I/O here, so every
rule is tested in memory (tests/test_readapi.py).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from events.geography import DISTRICTS
from events.kpis import KPI_CATALOGUE, WINDOWS, KpiSpec

# Points of one series: the default, and the most a request may ask for. The ceiling
# bounds the rows one request reads (at most 60 × MAX_POINTS windows, see `plan_series`).
DEFAULT_POINTS = 500
MAX_POINTS = 1000
DEFAULT_RANGE = timedelta(hours=24)
DEFAULT_LIMIT = 200
MAX_LIMIT = 5000
ALERT_STATES = ("raised", "escalated", "acknowledged", "cleared")

Source = Literal["windows", "hourly", "daily"]
# (source, grain in seconds), coarsest first: a series reads the coarsest source whose
# grain is at most the width one point must cover.
SOURCES: tuple[tuple[Source, int], ...] = (("daily", 86_400), ("hourly", 3_600), ("windows", 60))

_EPOCH_MS = re.compile(r"^-?[0-9]{1,15}$")


class ParamError(ValueError):
    """A bad query or path parameter; ``parameter`` names it."""

    def __init__(self, parameter: str, detail: str, *, status: int = 400) -> None:
        super().__init__(f"{parameter}: {detail}")
        self.parameter = parameter
        self.detail = detail
        self.status = status

    def to_dict(self) -> dict[str, str]:
        error = "unknown_kpi" if self.status == 404 else "bad_parameter"
        return {"error": error, "parameter": self.parameter, "detail": self.detail}


def _closest(word: str, choices: list[str]) -> str:
    near = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(near)}?" if near else ""


def check_known(query: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    """Refuse a parameter the route does not take: a misspelt one (``point=``) would
    otherwise be ignored silently and the answer would look right."""
    for name in query:
        if name not in allowed:
            raise ParamError(name, f"not a parameter of this route (it takes {', '.join(allowed)})")


def parse_time(parameter: str, text: str) -> datetime:
    """An instant given as epoch milliseconds (``1764806400000``) or as ISO 8601 / RFC 3339
    with a UTC offset (``2026-12-04T00:00:00Z``, ``…+07:00``); a time without an offset is
    refused rather than guessed."""
    text = text.strip()
    if _EPOCH_MS.match(text):
        try:
            return datetime.fromtimestamp(int(text) / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            raise ParamError(parameter, f"{text} ms is out of range") from None
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ParamError(
            parameter,
            f"{text!r} is neither epoch milliseconds nor an ISO 8601 time "
            "(e.g. 2026-12-04T08:00:00Z)",
        ) from None
    if ts.tzinfo is None:
        raise ParamError(parameter, f"{text!r} has no UTC offset; add Z or e.g. +07:00")
    return ts.astimezone(UTC)


def parse_int(parameter: str, text: str | None, default: int, low: int, high: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ParamError(parameter, f"{text!r} is not an integer") from None
    if not low <= value <= high:
        raise ParamError(parameter, f"{value} is out of range ({low}..{high})")
    return value


def parse_range(since: str | None, until: str | None, now: datetime) -> tuple[datetime, datetime]:
    """[since, until): ``until`` defaults to now, ``since`` to 24 h before ``until``."""
    end = parse_time("until", until) if until is not None else now
    start = parse_time("since", since) if since is not None else end - DEFAULT_RANGE
    if start >= end:
        raise ParamError("since", f"must be before until ({end.isoformat()})")
    return start, end


def kpi_spec(kpi_id: str) -> KpiSpec:
    spec = KPI_CATALOGUE.get(kpi_id)
    if spec is None:
        raise ParamError(
            "id",
            f"unknown KPI {kpi_id!r}{_closest(kpi_id, sorted(KPI_CATALOGUE))} "
            "(GET /v1/kpis lists them)",
            status=404,
        )
    return spec


def check_scope(spec: KpiSpec, scope: str) -> str:
    """One exact scope of ``spec``: ``city``, ``district:<code>`` or ``station:<id>``."""
    kind, _, name = scope.partition(":")
    if "*" in scope:
        raise ParamError("scope", "a series has one scope; wildcards are for /v1/kpis/latest")
    if kind not in spec.scopes or (kind == "city") != (name == ""):
        valid = ", ".join("city" if k == "city" else f"{k}:<id>" for k in spec.scopes)
        raise ParamError("scope", f"{spec.id} has no scope {scope!r}; its scopes: {valid}")
    if kind == "district" and name not in DISTRICTS:
        raise ParamError("scope", f"unknown district {name!r}{_closest(name, sorted(DISTRICTS))}")
    return scope


def parse_kpi_list(text: str | None) -> list[str] | None:
    """Comma-separated KPI ids of the catalogue; None (all) when absent."""
    if text is None:
        return None
    ids = [k.strip() for k in text.split(",") if k.strip()]
    if not ids:
        raise ParamError("kpi", "empty; give KPI ids separated by commas")
    for k in ids:
        if k not in KPI_CATALOGUE:
            raise ParamError("kpi", f"unknown KPI {k!r}{_closest(k, sorted(KPI_CATALOGUE))}")
    return ids


def parse_scope_patterns(text: str | None) -> list[str] | None:
    """Comma-separated scope patterns, ``*`` a wildcard (``district:*``); None = all."""
    if text is None:
        return None
    patterns = [s.strip() for s in text.split(",") if s.strip()]
    if not patterns:
        raise ParamError("scope", "empty; give scopes separated by commas, * as a wildcard")
    for p in patterns:
        kind = p.partition(":")[0]
        if kind != "*" and kind not in ("city", "district", "station"):
            raise ParamError("scope", f"{p!r}: a scope is city, district:<code> or station:<id>")
    return patterns


def parse_window(text: str | None) -> int:
    window = parse_int("window", text, 60, 1, 86_400)
    if window not in WINDOWS:
        raise ParamError("window", f"{window} s: windows are {', '.join(map(str, WINDOWS))} s")
    return window


def parse_states(text: str | None) -> tuple[str, ...] | None:
    """Alert states to list: ``active`` (the default: all but cleared), ``all`` (None), or
    a comma-separated subset of the four states."""
    if text is None or text == "active":
        return ("raised", "escalated", "acknowledged")
    if text == "all":
        return None
    states = tuple(s.strip() for s in text.split(",") if s.strip())
    for s in states:
        if s not in ALERT_STATES:
            raise ParamError(
                "state", f"{s!r}: one of active, all, {', '.join(ALERT_STATES)} (commas allowed)"
            )
    if not states:
        raise ParamError("state", "empty")
    return states


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    """How one series is read: from which table, over which grid-aligned range, in
    buckets of how many seconds (a multiple of the source's grain)."""

    source: Source
    grain_s: int
    bucket_s: int
    start: datetime  # since rounded down to the grain
    end: datetime  # until rounded up to the grain

    @property
    def max_points(self) -> int:
        return math.ceil((self.end - self.start).total_seconds() / self.bucket_s)


def _floor(ts: datetime, grain: int) -> datetime:
    epoch = int(ts.timestamp())
    return datetime.fromtimestamp(epoch - epoch % grain, UTC)


def _ceil(ts: datetime, grain: int) -> datetime:
    floor = _floor(ts, grain)
    return floor if floor == ts else floor + timedelta(seconds=grain)


def plan_series(since: datetime, until: datetime, points: int) -> SeriesPlan:
    """Pick the source and the bucket for at most ``points`` points over [since, until).

    One point must cover span/points seconds; the coarsest source whose grain fits in that
    is read (the daily rollup from one day a point, the hourly one from one hour, the 60 s
    windows below), so a long range reads few rows. The range is widened to the source's
    grid (UTC minutes, hours, days: the rollups' buckets), and the bucket is the smallest
    multiple of the grain that cuts the widened range into at most ``points``.
    """
    per_point = (until - since).total_seconds() / points
    source, grain = next(((s, g) for s, g in SOURCES if per_point >= g), SOURCES[-1])
    start, end = _floor(since, grain), _ceil(until, grain)
    span = int((end - start).total_seconds())
    # integer ceiling: bucket × points ≥ span, so the range needs at most `points` buckets
    bucket = max(1, -(-span // (points * grain))) * grain
    return SeriesPlan(source, grain, bucket, start, end)
