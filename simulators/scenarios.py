"""Named scenarios: the situations an operator must see on the wall.

- ``pollution`` (target: a district): PM2.5/PM10/NO2/CO rise at every station of the
  district (40 % as much next door) until VN_AQI passes 200;
- ``flood`` (a hydrological station): the water level rises through BĐ I, II and III in
  that order, peaks ~0.4 m above BĐ III and recedes;
- ``traffic_incident`` (a national-road segment): a collision; speed collapses there and
  across its district, occupancy saturates, an incident is reported and later cleared;
- ``dos`` (the public-service portal): a denial-of-service burst; requests x12, errors and
  latency up, the SOC reports ``ddos`` events, the portal's payment gateway fails more;
- ``report_spike`` (a district): new citizen reports from the district jump ~x10 (mostly
  environment and urban order).

A scenario run has a start and an end in *simulated* time and an envelope 0..1: it ramps
up over the first 40 %, holds, and ramps down over the last 30 %, so shapes cross
thresholds in order on the way up and back down on the way out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from events.errors import ConfigurationError
from simulators.model import INDUSTRIAL, Province
from simulators.signals import unit_hash

# In this order in ``cycle`` mode (the flood first: the most striking on the wall).
SCENARIO_NAMES: tuple[str, ...] = ("flood", "pollution", "traffic_incident", "dos", "report_spike")
CYCLE = "cycle"
NONE = "none"

RAMP_UP = 0.4
RAMP_DOWN_FROM = 0.7


@dataclass(frozen=True, slots=True)
class ScenarioRun:
    """One occurrence of a scenario: what, when (epoch seconds, simulated), where."""

    name: str
    start_s: float
    end_s: float
    target: str

    def envelope(self, epoch_s: float) -> float:
        """0 outside the run; rises linearly to 1, holds, falls linearly back to 0."""
        if not self.start_s <= epoch_s < self.end_s:
            return 0.0
        x = (epoch_s - self.start_s) / (self.end_s - self.start_s)
        if x < RAMP_UP:
            return x / RAMP_UP
        if x < RAMP_DOWN_FROM:
            return 1.0
        return max(0.0, (1.0 - x) / (1.0 - RAMP_DOWN_FROM))

    @property
    def peak_s(self) -> float:
        """A simulated time in the middle of the plateau."""
        span = self.end_s - self.start_s
        return self.start_s + span * (RAMP_UP + RAMP_DOWN_FROM) / 2


def parse_scenarios(text: str) -> tuple[str, ...]:
    """'none', 'cycle', or a comma-separated list of scenario names."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if names in ((), (NONE,)):
        return ()
    if names == (CYCLE,):
        return (CYCLE,)
    unknown = [n for n in names if n not in SCENARIO_NAMES]
    if unknown:
        raise ConfigurationError(
            f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIO_NAMES)}, "
            f"{CYCLE} or {NONE}"
        )
    return names


def choose_target(province: Province, name: str, round_no: int) -> str:
    """The site or district a scenario hits in a given round (deterministic for the seed)."""
    u = unit_hash(province.seed, hash_name(name), round_no)
    if name == "pollution":
        districts = sorted({s.district for s in province.air_stations if s.district in INDUSTRIAL})
        return districts[int(u * len(districts))]
    if name == "flood":
        stations = province.water_stations
        return stations[int(u * len(stations))].site_id
    if name == "traffic_incident":
        national = [s for s in province.segments if s.label.startswith("QL")]
        return national[int(u * len(national))].site_id
    if name == "dos":
        return "dichvucong-hd"
    if name == "report_spike":
        codes = [code for code, _ in province.district_weights]
        return codes[int(u * len(codes))]
    raise ConfigurationError(f"unknown scenario {name!r}")


def hash_name(name: str) -> int:
    """A stable integer for a name (``hash()`` of a str changes between processes)."""
    h = 0
    for ch in name.encode():
        h = (h * 131 + ch) & 0xFFFFFFFF
    return h


@dataclass(frozen=True, slots=True)
class Schedule:
    """When each scenario runs.

    Explicit scenarios all start ``lead_s`` after the simulation start and run
    ``duration_s``. ``cycle`` runs every scenario in turn, one after another with
    ``gap_s`` of normal operation between them, forever (the demo's mode).
    """

    names: tuple[str, ...]
    province: Province
    sim_start_s: float
    # 15 simulated minutes: long enough for the alert rules (streams.alerts.rules) to see
    # it — the AQI rule wants > 150 for 10 min, congestion 5 min — and a 5-minute gap so
    # the rate-of-change rules (compared with 10-15 min earlier) start from normal again.
    duration_s: float = 900.0
    lead_s: float = 60.0
    gap_s: float = 300.0

    @property
    def cycling(self) -> bool:
        return self.names == (CYCLE,)

    def runs(self) -> tuple[ScenarioRun, ...]:
        """The explicit runs (for cycle mode: the first round)."""
        if self.cycling:
            return tuple(self._cycle_run(k) for k in range(len(SCENARIO_NAMES)))
        start = self.sim_start_s + self.lead_s
        return tuple(
            ScenarioRun(n, start, start + self.duration_s, choose_target(self.province, n, 0))
            for n in self.names
        )

    def _cycle_run(self, k: int) -> ScenarioRun:
        slot = self.duration_s + self.gap_s
        name = SCENARIO_NAMES[k % len(SCENARIO_NAMES)]
        start = self.sim_start_s + self.lead_s + k * slot
        round_no = k // len(SCENARIO_NAMES)
        return ScenarioRun(
            name, start, start + self.duration_s, choose_target(self.province, name, round_no)
        )

    def active(self, epoch_s: float) -> Sequence[ScenarioRun]:
        """The runs whose time span contains ``epoch_s``."""
        if not self.names:
            return ()
        if self.cycling:
            slot = self.duration_s + self.gap_s
            k = int((epoch_s - self.sim_start_s - self.lead_s) // slot)
            if k < 0:
                return ()
            run = self._cycle_run(k)
            return (run,) if run.start_s <= epoch_s < run.end_s else ()
        return tuple(r for r in self.runs() if r.start_s <= epoch_s < r.end_s)
