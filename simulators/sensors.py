"""Payloads of the city's sensors: traffic, air, water, energy, parking.

Each builder is ``(state, site, moment, epoch_s) -> payload`` and returns the CloudEvent
``data`` of one reading. Values follow the time-of-day factors in the moment, carry
sensor noise, and respond to the scenarios that target the site or its district.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from events.geography import DISTRICTS
from simulators.model import Site
from simulators.signals import congestion
from simulators.state import Moment, SimState

REPORT_INTERVAL_S = 60
TIDE_PERIOD_S = 12.42 * 3600  # semi-diurnal tide of the lower Thái Bình river system
VEHICLE_LENGTH_M = 5.5


@lru_cache(maxsize=64)
def neighbours(code: str) -> frozenset[str]:
    """Districts next to ``code`` on the schematic map (they share a pollution plume)."""
    d = DISTRICTS[code]
    return frozenset(
        o.code for o in DISTRICTS.values() if abs(o.map_x - d.map_x) + abs(o.map_y - d.map_y) == 1
    )


def traffic_observed(state: SimState, site: Site, m: Moment, t: float) -> dict[str, Any]:
    rng = state.rng
    p = site.params
    volume = m.traffic * rng.gauss(1.0, 0.1)
    count = max(0.0, p["mean_vpm"] * volume)
    speed = p["free_flow_kmh"] * congestion(max(0.0, volume)) * rng.gauss(1.0, 0.05)
    e, target = m.intensity("traffic_incident", t)
    if e > 0.0:
        # A major collision on a national road backs traffic up across its district (the
        # congestion alert watches the district's mean speed); the jam builds faster
        # than the envelope and saturates once it is 60 % up.
        jam = min(1.0, 1.6 * e)
        if site.site_id == target:
            speed *= 1.0 - 0.92 * jam
            count *= 1.0 - 0.55 * jam
        elif site.district == state.province.site(target).district:
            speed *= 1.0 - 0.88 * jam
    speed = max(2.0, speed)
    # occupancy = road length covered by vehicles / length driven in the interval
    metres_driven = speed / 3.6 * REPORT_INTERVAL_S
    occupancy = 100.0 * (count / p["lanes"]) * VEHICLE_LENGTH_M / metres_driven
    if e > 0.0 and site.site_id == target:
        occupancy = max(occupancy, 92.0 * e)
    return {
        "segment_id": site.site_id,
        "district": site.district,
        "lat": site.lat,
        "lon": site.lon,
        "vehicle_count": round(count),
        "avg_speed_kmh": round(speed, 1),
        "occupancy_pct": round(min(100.0, occupancy), 1),
        "interval_s": REPORT_INTERVAL_S,
        "heavy_pct": round(min(100.0, max(0.0, rng.gauss(p["heavy_pct"], 2.0))), 1),
    }


def traffic_incident(
    state: SimState, site: Site, incident_id: str, status: str, severity: str, kind: str
) -> dict[str, Any]:
    return {
        "segment_id": site.site_id,
        "district": site.district,
        "lat": site.lat,
        "lon": site.lon,
        "incident_id": incident_id,
        "kind": kind,
        "severity": severity,
        "status": status,
        "lanes_blocked": (2 if severity == "high" else 1) if status == "reported" else 0,
    }


def background_incident(state: SimState, site: Site, m: Moment, t: float) -> dict[str, Any]:
    """Small everyday incidents: reported on one segment, cleared later."""
    rng = state.rng
    open_incidents: list[tuple[str, str]] = state.memory.setdefault("open_incidents", [])
    if open_incidents and (len(open_incidents) > 3 or rng.random() < 0.5):
        incident_id, segment_id = open_incidents.pop(0)
        segment = state.province.site(segment_id)
        return traffic_incident(state, segment, incident_id, "cleared", "low", "breakdown")
    incident_id = state.next_id("TI", t)
    open_incidents.append((incident_id, site.site_id))
    kind = rng.choice(("breakdown", "congestion", "roadworks", "obstruction", "collision"))
    return traffic_incident(
        state, site, incident_id, "reported", rng.choice(("low", "medium")), kind
    )


def air_observed(state: SimState, site: Site, m: Moment, t: float) -> dict[str, Any]:
    rng = state.rng
    p = site.params
    pm25 = p["base_pm25"] * m.pollution * rng.gauss(1.0, 0.08)
    no2 = (18.0 + 14.0 * m.traffic) * rng.gauss(1.0, 0.1)
    co = (550.0 + 450.0 * m.traffic) * rng.gauss(1.0, 0.08)
    so2 = 9.0 * p["so2_factor"] * rng.gauss(1.0, 0.15)
    sun = max(0.0, math.sin(math.pi * (m.hour - 6.0) / 12.0))
    o3 = (25.0 + 70.0 * sun) * rng.gauss(1.0, 0.1)
    e, target = m.intensity("pollution", t)
    if e > 0.0:
        if site.district == target:
            boost = e
        elif site.district in neighbours(target):
            boost = 0.4 * e
        else:
            boost = 0.0
        # An episode (stagnant air, straw burning, industry) lifts PM2.5 to ~190 µg/m³
        # at the plateau: VN_AQI above 200 ("Xấu"), well above the alert threshold 150.
        pm25 += 170.0 * boost * rng.gauss(1.0, 0.04)
        no2 *= 1.0 + 1.2 * boost
        co *= 1.0 + 1.5 * boost
    pm10 = pm25 * rng.uniform(1.45, 1.75)
    return {
        "station_id": site.site_id,
        "district": site.district,
        "lat": site.lat,
        "lon": site.lon,
        "pm25": round(max(0.0, pm25), 1),
        "pm10": round(max(0.0, pm10), 1),
        "no2": round(max(0.0, no2), 1),
        "so2": round(max(0.0, so2), 1),
        "co": round(max(0.0, co), 0),
        "o3": round(max(0.0, o3), 1),
        "temperature_c": round(24.0 + 6.0 * sun + rng.gauss(0.0, 0.3), 1),
        "humidity_pct": round(min(100.0, 82.0 - 18.0 * sun + rng.gauss(0.0, 2.0)), 1),
    }


def water_level(site: Site, m: Moment, t: float) -> float:
    """The noiseless level of a station: base + tide + any flood surge."""
    p = site.params
    level = p["base_m"] + 0.22 * math.sin(2.0 * math.pi * t / TIDE_PERIOD_S)
    e, target = m.intensity("flood", t)
    if e > 0.0 and site.site_id == target:
        # The surge peaks 0.4 m above BĐ III (the tide is taken out at the peak so the
        # crest reliably exceeds it).
        level += (p["alarm3"] + 0.4 - p["base_m"] + 0.22) * e
    return level


def water_observed(state: SimState, site: Site, m: Moment, t: float) -> dict[str, Any]:
    rng = state.rng
    level = water_level(site, m, t) + rng.gauss(0.0, 0.01)
    e, target = m.intensity("flood", t)
    raining = e > 0.0 and site.site_id == target
    rise = level - site.params["base_m"]
    return {
        "station_id": site.site_id,
        "district": site.district,
        "lat": site.lat,
        "lon": site.lon,
        "level_m": round(level, 2),
        "flow_m3s": round(max(0.0, 350.0 + 900.0 * max(0.0, rise)) * rng.gauss(1.0, 0.03), 0),
        "rainfall_mm": round(rng.uniform(4.0, 25.0) * e if raining else 0.0, 1),
    }


def water_quality(state: SimState, site: Site, m: Moment, t: float) -> dict[str, Any]:
    rng = state.rng
    e, target = m.intensity("flood", t)
    flood_here = e > 0.0 and state.province.site(target).district == site.district
    turbidity = site.params["base_turbidity"] * (1.0 + (6.0 * e if flood_here else 0.0))
    return {
        "site_id": site.site_id,
        "district": site.district,
        "lat": site.lat,
        "lon": site.lon,
        "ph": round(rng.gauss(7.2, 0.08), 2),
        "turbidity_ntu": round(max(0.0, turbidity * rng.gauss(1.0, 0.1)), 2),
        "chlorine_mg_l": round(max(0.0, rng.gauss(0.42, 0.04)), 2),
    }


def energy_metered(state: SimState, site: Site, m: Moment, t: float) -> dict[str, Any]:
    rng = state.rng
    out = site.site_id in state.memory.get("outages", {})
    load = 0.0 if out else site.params["base_kw"] * m.demand * rng.gauss(1.0, 0.04)
    return {
        "meter_id": site.site_id,
        "district": site.district,
        "lat": site.lat,
        "lon": site.lon,
        "energy_kwh": round(load * REPORT_INTERVAL_S / 3600.0, 2),
        "load_kw": round(load, 1),
        "power_factor": round(min(1.0, rng.gauss(0.93, 0.015)), 3),
        "interval_s": REPORT_INTERVAL_S,
    }


def energy_outage(state: SimState, site: Site, m: Moment, t: float) -> dict[str, Any]:
    """Rare feeder outages: started on one feeder, restored on the next call."""
    rng = state.rng
    outages: dict[str, float] = state.memory.setdefault("outages", {})
    if outages:
        feeder_id = next(iter(outages))
        customers = outages.pop(feeder_id)
        feeder = state.province.site(feeder_id)
        return {
            "feeder_id": feeder_id,
            "district": feeder.district,
            "lat": feeder.lat,
            "lon": feeder.lon,
            "status": "restored",
            "customers_affected": round(customers),
        }
    customers = site.params["customers"] * rng.uniform(0.3, 1.0)
    outages[site.site_id] = customers
    return {
        "feeder_id": site.site_id,
        "district": site.district,
        "lat": site.lat,
        "lon": site.lon,
        "status": "started",
        "customers_affected": round(customers),
        "cause": rng.choice(("fault", "maintenance", "weather", "overload")),
    }


def streetlight(state: SimState, site: Site, m: Moment, t: float) -> dict[str, Any]:
    rng = state.rng
    p = site.params
    total = int(p["lamps_total"])
    faulty = min(total, round(total * p["faulty_share"]))
    # At night every working lamp is on; in daylight a few photocells fail "on" (a
    # classic energy waste to spot).
    daylight_on = rng.randrange(0, 3) if rng.random() < 0.05 else 0
    on = total - faulty if m.lights else daylight_on
    return {
        "cabinet_id": site.site_id,
        "district": site.district,
        "lat": site.lat,
        "lon": site.lon,
        "lamps_on": on,
        "lamps_total": total,
        "power_kw": round(on * p["lamp_kw"] * rng.gauss(1.0, 0.02), 2) if on else 0.0,
        "lamps_faulty": faulty,
    }


_PARKING_PROFILE = {
    # (day level, night level) of occupancy; day = the lot type's busy hours
    "office": (0.88, 0.08),
    "commercial": (0.75, 0.2),
    "residential": (0.45, 0.92),
    "hospital": (0.8, 0.45),
}


def parking(state: SimState, site: Site, m: Moment, t: float) -> dict[str, Any]:
    rng = state.rng
    capacity = int(site.params["capacity"])
    day, night = _PARKING_PROFILE.get(site.label, (0.6, 0.3))
    if site.label == "office":
        busy = m.office
    elif site.label == "commercial":
        busy = min(1.0, m.citizen)
    else:
        busy = 1.0 if 7.0 <= m.hour < 19.0 else 0.0
    target = night + (day - night) * busy
    key = f"park:{site.site_id}"
    prev = state.memory.get(key, target)
    # Lots fill and empty gradually: move part of the way toward the target each report.
    share = min(1.0, max(0.0, prev + 0.25 * (target - prev) + rng.gauss(0.0, 0.015)))
    state.memory[key] = share
    return {
        "lot_id": site.site_id,
        "district": site.district,
        "lat": site.lat,
        "lon": site.lon,
        "occupied": min(capacity, round(share * capacity)),
        "capacity": capacity,
    }
