"""The sans-I/O simulator: simulated time in, CloudEvent dicts out.

:meth:`ProvinceSimulator.generate` is asked for ``count`` events spread evenly over a
span of simulated time. Which event each slot becomes is drawn from *streams* (one per
event type) weighted by the moment: sensors report at a steady pace whatever the hour,
while dossiers follow office hours, reports and payments follow citizens' day, and
scenarios boost their streams. Sensor streams visit their sites round-robin, so every
sensor reports regularly; sensor faults make some sites drop out (their turn passes to
the next site) or repeat a stuck reading.

The same seed and the same sequence of calls give the same events, ids included.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from events.catalogue import EVENT_TYPES
from events.envelope import new_event
from simulators import activity, sensors
from simulators.model import Province, Site
from simulators.scenarios import Schedule
from simulators.signals import FaultModel
from simulators.state import Moment, SimState, utc_datetime

Builder = Callable[[SimState, Site, Moment, float], dict[str, Any]]

# The time-of-day factors and scenario intensities are recomputed every SLICE_S
# simulated seconds: often enough for smooth shapes, rarely enough to cost nothing.
SLICE_S = 5.0


@dataclass(frozen=True, slots=True)
class Stream:
    """How one event type is produced: by which sites, how often (relative weight at a
    moment), with which payload builder, and whether sensor faults apply.

    ``sites`` are visited round-robin and passed to the builder; builders of events that
    happen to people (reports, calls, payments) choose their own district and ignore it.
    """

    event_type: str
    sites: tuple[Site, ...]
    weight: Callable[[Moment], float]
    build: Builder
    sensor: bool = False


def _const(w: float) -> Callable[[Moment], float]:
    return lambda m: w


def build_streams(province: Province) -> tuple[Stream, ...]:
    """Every event type of the catalogue with its share of the events (at activity 1)."""
    p = province

    def spike(m: Moment) -> float:
        return m.intensity("report_spike", m.epoch_s)[0]

    def dos(m: Moment) -> float:
        return m.intensity("dos", m.epoch_s)[0]

    def flood(m: Moment) -> float:
        return m.intensity("flood", m.epoch_s)[0]

    return (
        Stream("vn.ioc.traffic.observed", p.segments, _const(0.28), sensors.traffic_observed, True),
        Stream("vn.ioc.traffic.incident", p.segments, _const(0.0008), sensors.background_incident),
        Stream("vn.ioc.air.observed", p.air_stations, _const(0.06), sensors.air_observed, True),
        Stream(
            "vn.ioc.water.observed", p.water_stations, _const(0.04), sensors.water_observed, True
        ),
        Stream("vn.ioc.water.quality", p.water_sites, _const(0.01), sensors.water_quality, True),
        Stream("vn.ioc.energy.metered", p.feeders, _const(0.08), sensors.energy_metered, True),
        Stream("vn.ioc.energy.streetlight", p.cabinets, _const(0.06), sensors.streetlight, True),
        Stream("vn.ioc.energy.outage", p.feeders, _const(0.0006), sensors.energy_outage),
        Stream("vn.ioc.parking.occupancy", p.parking_lots, _const(0.1), sensors.parking, True),
        Stream("vn.ioc.services.dossier", p.offices, lambda m: 0.1 * m.office, activity.dossier),
        Stream("vn.ioc.services.portal", p.portals, _const(0.02), activity.portal),
        Stream(
            "vn.ioc.feedback.report",
            p.offices,
            lambda m: 0.05 * m.citizen * (1.0 + 9.0 * spike(m)),
            activity.feedback,
        ),
        Stream(
            "vn.ioc.emergency.call",
            p.offices,
            # a flood brings calls for help: up to three times the usual volume
            lambda m: 0.03 * m.citizen * (1.0 + 2.0 * flood(m)),
            activity.emergency_call,
        ),
        Stream(
            "vn.ioc.emergency.dispatch",
            p.offices,
            lambda m: 0.02 * m.citizen,
            activity.emergency_dispatch,
        ),
        Stream(
            "vn.ioc.security.incident",
            p.cameras,
            lambda m: 0.04 * (0.5 + m.citizen) / 1.5,
            activity.camera_detection,
        ),
        Stream(
            "vn.ioc.security.cyber",
            p.systems,
            # ~1 report a minute at the demo's 200 events/s (the burst rule fires above
            # 10 a minute), hundreds a minute during a DoS burst
            lambda m: 0.0001 * (1.0 + 800.0 * dos(m)),
            activity.cyber,
        ),
        Stream(
            "vn.ioc.payments.transaction", p.gateways, lambda m: 0.1 * m.citizen, activity.payment
        ),
    )


class ProvinceSimulator:
    """Generates the province's events for spans of simulated time."""

    def __init__(
        self,
        province: Province,
        schedule: Schedule,
        *,
        seed: int,
        worker: int = 0,
        faults: FaultModel | None = None,
    ) -> None:
        self.province = province
        self.schedule = schedule
        self.state = SimState(province, random.Random(f"sim:{seed}:{worker}"), worker)
        self.faults = faults
        self.streams = build_streams(province)
        missing = set(EVENT_TYPES) - {s.event_type for s in self.streams}
        if missing:  # a new catalogue type must get a stream here
            raise RuntimeError(f"no simulator stream for {sorted(missing)}")
        self._types = [EVENT_TYPES[s.event_type] for s in self.streams]
        self._cursor = [0] * len(self.streams)
        # Unique per run: the seed, the worker and the simulated start (a restarted
        # simulator starts later, so its ids differ).
        self._id_prefix = f"sim{seed}-{worker}-{int(schedule.sim_start_s * 1000):x}"
        self._seq = 0
        self._moment: Moment | None = None
        self._slice_end = -math.inf
        self._cum_weights: list[float] = []
        self._protected: frozenset[str] = frozenset()

    # -- the one public operation -----------------------------------------------------

    def generate(self, start_s: float, end_s: float, count: int) -> list[dict[str, Any]]:
        """``count`` CloudEvent dicts with times spread evenly over [start_s, end_s)."""
        if count <= 0:
            return []
        step = (end_s - start_s) / count
        rng = self.state.rng
        pending = self.state.pending
        out: list[dict[str, Any]] = []
        for i in range(count):
            t = start_s + (i + 0.5) * step
            if t >= self._slice_end:
                self._enter_slice(t)
            if pending:
                event_type, data = pending.pop(0)
            else:
                cum = self._cum_weights
                k = bisect.bisect_right(cum, rng.random() * cum[-1])
                k = min(k, len(cum) - 1)
                event_type = self.streams[k].event_type
                data = self._reading(k, t)
            out.append(self._envelope(event_type, data, t))
        return out

    @property
    def moment(self) -> Moment | None:
        return self._moment

    # -- internals ----------------------------------------------------------------------

    def _enter_slice(self, t: float) -> None:
        m = Moment.at(t, self.schedule)
        self._moment = m
        self._slice_end = (math.floor(t / SLICE_S) + 1) * SLICE_S
        self._cum_weights = list(itertools.accumulate(max(0.0, s.weight(m)) for s in self.streams))
        protected: set[str] = set()
        for run in m.scenarios:
            protected.add(run.target)
        self._protected = frozenset(protected)
        self._scenario_edges(m, t)

    def _scenario_edges(self, m: Moment, t: float) -> None:
        """Discrete events at the edges of a scenario: the traffic incident is reported
        when it starts and cleared when it ends."""
        state = self.state
        open_runs: dict[float, tuple[str, str, float]] = state.memory.setdefault(
            "scenario_incidents", {}
        )
        for run in m.scenarios:
            if run.name == "traffic_incident" and run.start_s not in open_runs:
                segment = self.province.site(run.target)
                incident_id = state.next_id("TI", t)
                open_runs[run.start_s] = (incident_id, run.target, run.end_s)
                state.pending.append(
                    (
                        "vn.ioc.traffic.incident",
                        sensors.traffic_incident(
                            state, segment, incident_id, "reported", "high", "collision"
                        ),
                    )
                )
        for start, (incident_id, segment_id, end) in list(open_runs.items()):
            if t >= end:
                segment = self.province.site(segment_id)
                state.pending.append(
                    (
                        "vn.ioc.traffic.incident",
                        sensors.traffic_incident(
                            state, segment, incident_id, "cleared", "high", "collision"
                        ),
                    )
                )
                # keep the key (so the run is not reported again) but mark it done
                open_runs[start] = (incident_id, segment_id, math.inf)

    def _reading(self, k: int, t: float) -> dict[str, Any]:
        stream = self.streams[k]
        sites = stream.sites
        cursor = self._cursor[k]
        site = sites[cursor % len(sites)]
        m = self._moment
        assert m is not None
        if stream.sensor and self.faults is not None:
            for _ in range(3):
                if site.site_id in self._protected or site.district in self._protected:
                    break
                fault = self.faults.state(site.index, t)
                if fault == "dropout":
                    cursor += 1
                    site = sites[cursor % len(sites)]
                    continue
                if fault == "stuck":
                    last = self.state.memory.get(f"last:{site.site_id}")
                    if last is not None:
                        self._cursor[k] = cursor + 1
                        return dict(last)
                break
        self._cursor[k] = cursor + 1
        data = stream.build(self.state, site, m, t)
        if stream.sensor:
            self.state.memory[f"last:{site.site_id}"] = data
        return data

    def _envelope(self, event_type: str, data: dict[str, Any], t: float) -> dict[str, Any]:
        self._seq += 1
        et = EVENT_TYPES[event_type]
        return new_event(
            event_type,
            et.source_for(str(data[et.key_field])),
            data,
            time=utc_datetime(t),
            event_id=f"{self._id_prefix}-{self._seq}",
        )
