"""Payloads of the province's service systems: dossiers, the portal, citizen reports,
emergency calls and dispatches, security detections, payments.

These are events of people, not of sensors: how many happen follows office hours and
citizens' waking hours (the generator weights their streams by the moment), and each
builder draws a realistic payload for one of them.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from simulators.model import Site
from simulators.state import Moment, SimState, local_iso

DAY_S = 86400.0
PROCEDURES = ("1.004227", "1.001612", "2.000908", "1.003003", "1.008904", "2.002154")
# Share of dossiers submitted online in Vietnamese provinces (2024-2025 reports: ~40-70 %).
ONLINE_SHARE = 0.58
OVERDUE_SHARE = 0.04


def _lognormal(state: SimState, median: float, sigma: float) -> float:
    return median * math.exp(state.rng.gauss(0.0, sigma))


def _pick_office(state: SimState) -> Site:
    offices = state.province.offices
    total = sum(o.params["daily"] for o in offices)
    x = state.rng.random() * total
    for o in offices:
        x -= o.params["daily"]
        if x < 0:
            return o
    return offices[-1]


def dossier(state: SimState, site: Site, m: Moment, t: float) -> dict[str, Any]:
    """A dossier received at a one-stop office, or one resolved (from this run's open
    dossiers when there are any, else from the office's backlog)."""
    rng = state.rng
    office = _pick_office(state)
    open_dossiers: deque[tuple[str, str, float]] = state.memory.setdefault(
        f"dossiers:{office.site_id}", deque(maxlen=5000)
    )
    base: dict[str, Any] = {"district": office.district, "office_id": office.site_id}
    if rng.random() < 0.55:
        dossier_id = state.next_id(office.site_id, t)
        channel = "online" if rng.random() < ONLINE_SHARE else "offline"
        due = t + rng.choice((3, 5, 7, 10, 15)) * DAY_S
        open_dossiers.append((dossier_id, channel, due))
        return {
            **base,
            "dossier_id": dossier_id,
            "status": "received",
            "channel": channel,
            "due": local_iso(due),
            "procedure_code": rng.choice(PROCEDURES),
        }
    if open_dossiers and rng.random() < 0.5:
        dossier_id, channel, due = open_dossiers.popleft()
    else:
        dossier_id = state.next_id(f"{office.site_id}-BL", t)
        channel = "online" if rng.random() < ONLINE_SHARE else "offline"
        if rng.random() < OVERDUE_SHARE:
            due = t - rng.uniform(0.2, 5.0) * DAY_S
        else:
            due = t + rng.uniform(0.1, 10.0) * DAY_S
    return {
        **base,
        "dossier_id": dossier_id,
        "status": "resolved",
        "channel": channel,
        "due": local_iso(due),
        "resolved_at": local_iso(t),
        "procedure_code": rng.choice(PROCEDURES),
    }


def portal(state: SimState, site: Site, m: Moment, t: float) -> dict[str, Any]:
    """Load of one portal front end over the last minute; a DoS burst multiplies it."""
    rng = state.rng
    requests = site.params["base_rpm"] * (0.2 + 0.5 * m.office + 0.3 * m.citizen)
    error_share = 0.002
    p95 = 380.0
    e, _ = m.intensity("dos", t)
    if e > 0.0:
        requests *= 1.0 + 11.0 * e
        error_share += 0.25 * e
        p95 += 4200.0 * e
    requests *= rng.gauss(1.0, 0.06)
    return {
        "portal_id": site.site_id,
        "district": site.district,
        "requests": max(0, round(requests)),
        "errors": max(0, round(requests * error_share * rng.uniform(0.7, 1.3))),
        "p95_latency_ms": round(max(1.0, p95 * rng.gauss(1.0, 0.08)), 1),
        "interval_s": 60,
    }


_REPORT_CATEGORIES = (
    ("environment", 0.2),
    ("traffic", 0.18),
    ("urban_order", 0.22),
    ("infrastructure", 0.2),
    ("public_service", 0.1),
    ("security", 0.05),
    ("other", 0.05),
)
_SPIKE_CATEGORIES = (("environment", 0.55), ("urban_order", 0.3), ("infrastructure", 0.15))


def _weighted(state: SimState, options: tuple[tuple[str, float], ...]) -> str:
    x = state.rng.random() * sum(w for _, w in options)
    for value, w in options:
        x -= w
        if x < 0:
            return value
    return options[-1][0]


def feedback(state: SimState, site: Site, m: Moment, t: float) -> dict[str, Any]:
    """A citizen report opened, taken up or closed; a spike floods one district with
    new reports."""
    rng = state.rng
    e, target = m.intensity("report_spike", t)
    spike = e > 0.0 and rng.random() < (9.0 * e) / (1.0 + 9.0 * e)
    district = target if spike else state.pick_district()
    open_reports: deque[tuple[str, str, str, float]] = state.memory.setdefault(
        "open_reports", deque(maxlen=5000)
    )
    channel = _weighted(state, (("app", 0.45), ("hotline", 0.2), ("web", 0.15), ("zalo", 0.2)))
    if spike or not open_reports or rng.random() < 0.55:
        category = _weighted(state, _SPIKE_CATEGORIES if spike else _REPORT_CATEGORIES)
        report_id = state.next_id("PA", t)
        open_reports.append((report_id, district, category, t))
        return {
            "report_id": report_id,
            "district": district,
            "category": category,
            "status": "opened",
            "channel": channel,
        }
    report_id, district, category, opened = open_reports.popleft()
    if rng.random() < 0.4:
        open_reports.append((report_id, district, category, opened))
        return {
            "report_id": report_id,
            "district": district,
            "category": category,
            "status": "in_progress",
            "channel": channel,
        }
    # Reports opened in this run were opened minutes ago (simulated); most closures are of
    # older reports, so the response time is drawn (median ~30 h), not measured.
    response_h = max((t - opened) / 3600.0, _lognormal(state, 30.0, 0.8))
    return {
        "report_id": report_id,
        "district": district,
        "category": category,
        "status": "closed",
        "channel": channel,
        "rating": min(5, max(1, round(rng.gauss(4.0, 0.9)))),
        "response_h": round(response_h, 1),
    }


_SERVICES = (("police_113", 0.45), ("ambulance_115", 0.35), ("fire_114", 0.1), ("rescue_112", 0.1))


def _emergency_district(state: SimState, m: Moment, t: float) -> str:
    e, target = m.intensity("flood", t)
    if e > 0.0:
        return state.pick_district(state.province.site(target).district, 1.0 + 6.0 * e)
    return state.pick_district()


def emergency_call(state: SimState, site: Site, m: Moment, t: float) -> dict[str, Any]:
    rng = state.rng
    service = _weighted(state, _SERVICES)
    return {
        "call_id": state.next_id(f"C{service[-3:]}", t),
        "district": _emergency_district(state, m, t),
        "service": service,
        "priority": _weighted(
            state, (("low", 0.3), ("medium", 0.4), ("high", 0.22), ("critical", 0.08))
        ),
        "answer_s": round(_lognormal(state, 5.0, 0.6) + rng.uniform(0, 1), 1),
    }


def emergency_dispatch(state: SimState, site: Site, m: Moment, t: float) -> dict[str, Any]:
    rng = state.rng
    service = _weighted(state, _SERVICES)
    district = _emergency_district(state, m, t)
    dispatch_s = _lognormal(state, 45.0 if service == "fire_114" else 80.0, 0.5)
    urban = district in ("HD", "CL", "KM")
    arrival_s = _lognormal(state, 420.0 if urban else 840.0, 0.4)
    e, target = m.intensity("traffic_incident", t)
    if e > 0.0 and state.province.site(target).district == district:
        arrival_s *= 1.0 + 0.8 * e
    units = state.province.units_of(district, service)
    payload: dict[str, Any] = {
        "incident_id": state.next_id("E", t),
        "district": district,
        "service": service,
        "dispatch_s": round(dispatch_s, 1),
        "arrival_s": round(arrival_s, 1),
    }
    if units:
        payload["unit_id"] = units[rng.randrange(len(units))].site_id
    return payload


_DETECTIONS = (
    ("crowd", 0.35),
    ("intrusion", 0.2),
    ("abandoned_object", 0.15),
    ("wanted_vehicle", 0.15),
    ("fight", 0.08),
    ("fire_smoke", 0.07),
)


def camera_detection(state: SimState, site: Site, m: Moment, t: float) -> dict[str, Any]:
    rng = state.rng
    kind = _weighted(state, _DETECTIONS)
    severity = "high" if kind in ("fight", "fire_smoke") else rng.choice(("low", "medium"))
    return {
        "camera_id": site.site_id,
        "district": site.district,
        "kind": kind,
        "severity": severity,
        "confidence": round(rng.uniform(0.55, 0.99), 3),
        "incident_id": state.next_id("SEC", t),
    }


def cyber(state: SimState, site: Site, m: Moment, t: float) -> dict[str, Any]:
    """Background scans and password guessing on every system; during a DoS burst most
    reports are ``ddos`` against the portal, their traffic following the burst."""
    rng = state.rng
    e, target = m.intensity("dos", t)
    if e > 0.0 and rng.random() < 0.95:
        return {
            "system_id": target,
            "district": "HD",
            "kind": "ddos",
            "severity": "high" if e > 0.5 else "medium",
            "requests_per_s": round(25_000.0 * e * rng.uniform(0.8, 1.2), 0),
            "blocked": rng.random() < 0.6,
        }
    kind = _weighted(state, (("scan", 0.6), ("brute_force", 0.3), ("malware", 0.1)))
    return {
        "system_id": site.site_id,
        "district": site.district,
        "kind": kind,
        "severity": "medium" if kind == "malware" else "low",
        "blocked": rng.random() < 0.97,
    }


_PURPOSES = (
    ("utility", 0.3, 450_000.0),
    ("fee", 0.2, 150_000.0),
    ("tax", 0.12, 2_500_000.0),
    ("fine", 0.06, 1_200_000.0),
    ("transport", 0.12, 30_000.0),
    ("parking", 0.1, 20_000.0),
    ("healthcare", 0.05, 300_000.0),
    ("education", 0.05, 1_500_000.0),
)


def payment(state: SimState, site: Site, m: Moment, t: float) -> dict[str, Any]:
    rng = state.rng
    gateways = state.province.gateways
    x = rng.random()
    gateway = gateways[-1]
    for g in gateways:
        x -= g.params["share"]
        if x < 0:
            gateway = g
            break
    x = rng.random()
    purpose, median = _PURPOSES[-1][0], _PURPOSES[-1][2]
    for name, share, med in _PURPOSES:
        x -= share
        if x < 0:
            purpose, median = name, med
            break
    fail = 0.015
    latency = _lognormal(state, 800.0, 0.35)
    e, _ = m.intensity("dos", t)
    if e > 0.0 and gateway.site_id == "PAYGOV-HD":
        # The provincial gateway sits behind the attacked portal.
        fail += 0.3 * e
        latency *= 1.0 + 4.0 * e
    return {
        "gateway_id": gateway.site_id,
        "district": state.pick_district(),
        "transaction_id": state.next_id("TX", t),
        "amount_vnd": float(round(_lognormal(state, median, 0.6), -3) or 1000.0),
        "purpose": purpose,
        "method": _weighted(
            state, (("qr", 0.45), ("e_wallet", 0.25), ("card", 0.1), ("bank_transfer", 0.2))
        ),
        "status": "failed" if rng.random() < fail else "succeeded",
        "latency_ms": round(latency, 0),
    }
