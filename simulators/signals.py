"""Time profiles and sensor faults: the shapes real city signals have.

All profiles take the *local* time of the province (Vietnam, UTC+7, no daylight saving)
as a fractional hour 0..24 and a weekday (0 = Monday). They return dimensionless factors
around 1 that the domain models multiply into their base levels. Everything here is pure
and cheap: the generator calls these once per batch or per event on the hot path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Vietnam has been UTC+7 all year since 1975.
LOCAL_OFFSET_S = 7 * 3600


def local_clock(epoch_s: float) -> tuple[float, int]:
    """(fractional local hour 0..24, weekday 0=Monday) of a UTC epoch time."""
    local = epoch_s + LOCAL_OFFSET_S
    days, secs = divmod(local, 86400.0)
    # 1970-01-01 was a Thursday (weekday 3).
    return secs / 3600.0, int((days + 3) % 7)


def _bump(hour: float, centre: float, width: float) -> float:
    """A smooth peak of height 1 at ``centre`` (hours), about ``width`` hours wide."""
    d = (hour - centre + 12.0) % 24.0 - 12.0
    return math.exp(-0.5 * (d / width) ** 2)


def traffic_volume(hour: float, weekday: int) -> float:
    """Vehicles relative to the daily mean: morning and evening rush, quiet nights.

    Weekday peaks at 07:30 and 17:30 (Vietnamese working hours start 07:00-08:00);
    weekends have a flatter midday hump and no morning rush.
    """
    night = 0.12
    if weekday < 5:
        day = 0.55 * _bump(hour, 12.5, 3.5)
        rush = 1.6 * _bump(hour, 7.4, 0.8) + 1.7 * _bump(hour, 17.5, 0.9)
    else:
        day = 0.85 * _bump(hour, 13.0, 4.0)
        rush = 0.5 * _bump(hour, 18.0, 1.2)
    return night + day + rush


def congestion(volume: float) -> float:
    """Speed reduction factor (1 = free flow) for a relative volume."""
    return 1.0 / (1.0 + 0.35 * volume**2)


def office_hours(hour: float, weekday: int) -> float:
    """Activity of public-service counters: 07:30-11:30 and 13:30-17:00, Mon-Fri,
    Saturday mornings at a third; a trickle of online submissions at other times."""
    if weekday == 6:
        return 0.05
    morning = 7.5 <= hour < 11.5
    afternoon = 13.5 <= hour < 17.0
    if weekday == 5:
        return 0.35 if morning else 0.05
    if morning or afternoon:
        return 1.0
    if 6.0 <= hour < 22.0:
        return 0.15
    return 0.04


def citizen_activity(hour: float, weekday: int) -> float:
    """Reports, calls and payments: awake hours, evening peak, weekends a bit busier."""
    base = 0.08 + 0.7 * _bump(hour, 10.0, 3.0) + 0.8 * _bump(hour, 19.5, 2.5)
    return base * (1.1 if weekday >= 5 else 1.0)


def lighting_on(hour: float) -> bool:
    """Streetlight cabinets switch on at dusk and off at dawn (fixed schedule)."""
    return hour >= 18.0 or hour < 5.75


def electricity_demand(hour: float, weekday: int) -> float:
    """Grid load relative to the mean: midday cooling peak and the evening household peak."""
    base = 0.55 + 0.35 * _bump(hour, 14.0, 3.0) + 0.55 * _bump(hour, 19.5, 1.8)
    return base * (0.9 if weekday >= 5 else 1.0)


def air_pollution(hour: float, weekday: int) -> float:
    """PM level relative to the mean: night-time inversion, rush-hour exhaust,
    afternoon mixing lowers it."""
    inversion = 0.45 * _bump(hour, 5.5, 2.5) + 0.25 * _bump(hour, 22.0, 2.0)
    exhaust = 0.3 * traffic_volume(hour, weekday) / 2.0
    mixing = -0.25 * _bump(hour, 14.5, 2.5)
    return max(0.35, 0.8 + inversion + exhaust + mixing)


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a fast, well-spread integer hash."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def unit_hash(*parts: int) -> float:
    """A deterministic number in [0, 1) from integers (seed, source index, bucket ...)."""
    h = 0
    for p in parts:
        h = _mix64(h ^ (p & 0xFFFFFFFFFFFFFFFF))
    return h / 2.0**64


@dataclass(frozen=True, slots=True)
class FaultModel:
    """Sensor faults decided per source and per simulated time bucket.

    A source is *stuck* in a bucket (repeats the value it had when the fault began) with
    probability ``p_stuck`` and *drops out* (sends nothing) with probability
    ``p_dropout``. Deciding from a hash of (seed, source, bucket) keeps faults
    deterministic and independent of the event rate.
    """

    seed: int
    bucket_s: float = 1800.0
    p_stuck: float = 0.01
    p_dropout: float = 0.02

    def state(self, source_index: int, epoch_s: float) -> str:
        """'ok', 'stuck' or 'dropout' for this source at this time."""
        u = unit_hash(self.seed, source_index, int(epoch_s // self.bucket_s))
        if u < self.p_dropout:
            return "dropout"
        if u < self.p_dropout + self.p_stuck:
            return "stuck"
        return "ok"
