"""What the payload builders share: the moment being simulated and the mutable state.

A :class:`Moment` is computed once per short slice of simulated time (a few seconds),
not per event: the time-of-day factors and the active scenarios barely change inside it.
:class:`SimState` carries the random generator and the memory of sources that evolve
(parking occupancy, open dossiers, ongoing outages ...), so every builder is a plain
function of (state, site, moment, event time).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from simulators.model import Province
from simulators.scenarios import ScenarioRun, Schedule
from simulators.signals import (
    air_pollution,
    citizen_activity,
    electricity_demand,
    lighting_on,
    local_clock,
    office_hours,
    traffic_volume,
)

ICT = timezone(timedelta(hours=7), "ICT")


@dataclass(frozen=True, slots=True)
class Moment:
    """Time-of-day factors and scenario intensities for a slice of simulated time."""

    epoch_s: float
    hour: float
    weekday: int
    traffic: float
    office: float
    citizen: float
    lights: bool
    demand: float
    pollution: float
    scenarios: tuple[ScenarioRun, ...]

    @classmethod
    def at(cls, epoch_s: float, schedule: Schedule) -> Moment:
        hour, weekday = local_clock(epoch_s)
        return cls(
            epoch_s=epoch_s,
            hour=hour,
            weekday=weekday,
            traffic=traffic_volume(hour, weekday),
            office=office_hours(hour, weekday),
            citizen=citizen_activity(hour, weekday),
            lights=lighting_on(hour),
            demand=electricity_demand(hour, weekday),
            pollution=air_pollution(hour, weekday),
            scenarios=tuple(schedule.active(epoch_s)),
        )

    def intensity(self, name: str, epoch_s: float) -> tuple[float, str]:
        """(envelope 0..1, target) of scenario ``name`` at ``epoch_s``; (0, "") if idle."""
        for run in self.scenarios:
            if run.name == name:
                return run.envelope(epoch_s), run.target
        return 0.0, ""

    def run_of(self, name: str) -> ScenarioRun | None:
        for run in self.scenarios:
            if run.name == name:
                return run
        return None


@dataclass(slots=True)
class SimState:
    """Mutable state of one simulator instance; everything random comes from ``rng``."""

    province: Province
    rng: random.Random
    worker: int = 0
    # per-site memory: the last value of a slowly varying quantity, last payload for
    # stuck sensors, open incidents ...
    memory: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    # one-shot events waiting for the next slot: (event type, payload)
    pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def next_id(self, prefix: str, epoch_s: float) -> str:
        """A readable, unique business id: ``PREFIX-YYMMDD-<worker><seq>``."""
        n = self.counters.get(prefix, 0) + 1
        self.counters[prefix] = n
        day = datetime.fromtimestamp(epoch_s, ICT).strftime("%y%m%d")
        return f"{prefix}-{day}-{self.worker}{n:06d}"

    def pick_district(self, boost: str = "", factor: float = 1.0) -> str:
        """A district drawn by population (``boost`` weighted ``factor`` times more)."""
        weights = self.province.district_weights
        if boost and factor != 1.0:
            weights = tuple((c, w * factor if c == boost else w) for c, w in weights)
        total = sum(w for _, w in weights)
        x = self.rng.random() * total
        for code, w in weights:
            x -= w
            if x < 0:
                return code
        return weights[-1][0]


def local_iso(epoch_s: float) -> str:
    """RFC 3339 in Vietnam time (how the dossier systems write their deadlines)."""
    return datetime.fromtimestamp(epoch_s, ICT).isoformat(timespec="seconds")


def utc_datetime(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)
