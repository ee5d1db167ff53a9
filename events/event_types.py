"""The declarations of every event type, grouped by domain (read by events.catalogue).

City sensors (traffic, air, water, energy, parking) are declared here, the service
systems in :mod:`events.event_types_systems`.

Units are SI or the unit the Vietnamese source systems report in (km/h, µg/m³, VND).
Ranges are physical or system limits, not "normal" values: a value outside them cannot be
a real reading and is rejected as ``out_of_range``; unusual but possible values (a flood
peak, a pollution episode) must pass so the operators see them.
"""

from __future__ import annotations

from events.event_types_systems import SEVERITIES, SYSTEM_TYPES
from events.schema import (
    DISTRICT_FIELD,
    LAT_FIELD,
    LON_FIELD,
    EventType,
    choice,
    integer,
    number,
    text,
)

_TRAFFIC = (
    EventType(
        type="vn.ioc.traffic.observed",
        domain="traffic",
        name="observed",
        description="Counts and speed on one road segment over a reporting interval "
        "(loop detector or camera counter).",
        key_field="segment_id",
        source_prefix="/sensors/traffic",
        fields=(
            text("segment_id", "road segment id"),
            DISTRICT_FIELD,
            LAT_FIELD,
            LON_FIELD,
            integer("vehicle_count", "vehicles", 0, 20_000, "vehicles in the interval"),
            number("avg_speed_kmh", "km/h", 0, 200, "mean speed of the vehicles counted"),
            number("occupancy_pct", "%", 0, 100, "share of time the detector was occupied"),
            integer("interval_s", "s", 1, 3600, "length of the interval", required=False),
            number("heavy_pct", "%", 0, 100, "trucks and buses among vehicles", required=False),
        ),
        example={
            "segment_id": "HD-QL5-012",
            "district": "HD",
            "vehicle_count": 143,
            "avg_speed_kmh": 38.5,
            "occupancy_pct": 21.0,
            "interval_s": 60,
        },
    ),
    EventType(
        type="vn.ioc.traffic.incident",
        domain="traffic",
        name="incident",
        description="A traffic incident reported or cleared on a road segment.",
        key_field="segment_id",
        source_prefix="/systems/traffic-control",
        fields=(
            text("segment_id", "road segment id"),
            DISTRICT_FIELD,
            LAT_FIELD,
            LON_FIELD,
            text("incident_id", "incident id, the same when it is cleared"),
            choice(
                "kind",
                ("collision", "breakdown", "congestion", "flooding", "roadworks", "obstruction"),
                "what happened",
            ),
            choice("severity", SEVERITIES, "impact on traffic"),
            choice("status", ("reported", "cleared"), "reported when it starts"),
            integer("lanes_blocked", "lanes", 0, 12, "lanes closed", required=False),
        ),
        example={
            "segment_id": "HD-QL5-012",
            "district": "HD",
            "incident_id": "TI-20260301-0042",
            "kind": "collision",
            "severity": "high",
            "status": "reported",
            "lanes_blocked": 2,
        },
    ),
)

_AIR = (
    EventType(
        type="vn.ioc.air.observed",
        domain="air",
        name="observed",
        description="Concentrations at an automatic air-quality monitoring station "
        "(µg/m³, 1-hour or shorter averages).",
        key_field="station_id",
        source_prefix="/sensors/air",
        fields=(
            text("station_id", "monitoring station id"),
            DISTRICT_FIELD,
            LAT_FIELD,
            LON_FIELD,
            number("pm25", "µg/m³", 0, 1000, "PM2.5"),
            number("pm10", "µg/m³", 0, 2000, "PM10"),
            number("no2", "µg/m³", 0, 5000, "NO2", required=False),
            number("so2", "µg/m³", 0, 5000, "SO2", required=False),
            number("co", "µg/m³", 0, 200_000, "CO", required=False),
            number("o3", "µg/m³", 0, 2000, "O3", required=False),
            number("temperature_c", "°C", -10, 50, "air temperature", required=False),
            number("humidity_pct", "%", 0, 100, "relative humidity", required=False),
        ),
        example={
            "station_id": "HD-AQ-001",
            "district": "HD",
            "lat": 20.91093,
            "lon": 106.31325,
            "pm25": 42.3,
            "pm10": 68.0,
            "no2": 35.2,
            "so2": 12.0,
            "co": 1150.0,
            "o3": 48.5,
        },
    ),
)

_WATER = (
    EventType(
        type="vn.ioc.water.observed",
        domain="water",
        name="observed",
        description="Water level at a hydrological station; alarm levels BĐ I/II/III per "
        "station come from events.flood.",
        key_field="station_id",
        source_prefix="/sensors/water",
        fields=(
            text("station_id", "hydrological station id (events.flood.WATER_STATIONS)"),
            DISTRICT_FIELD,
            LAT_FIELD,
            LON_FIELD,
            number("level_m", "m", -10, 50, "water level above the national datum"),
            number("flow_m3s", "m³/s", 0, 50_000, "discharge", required=False),
            number("rainfall_mm", "mm", 0, 1000, "rain since the last report", required=False),
        ),
        example={
            "station_id": "HD-TV-PL",
            "district": "CL",
            "lat": 21.117,
            "lon": 106.3,
            "level_m": 4.12,
        },
    ),
    EventType(
        type="vn.ioc.water.quality",
        domain="water",
        name="quality",
        description="Treated-water quality at a water plant or network sampling point.",
        key_field="site_id",
        source_prefix="/sensors/water-quality",
        fields=(
            text("site_id", "plant or sampling point id"),
            DISTRICT_FIELD,
            LAT_FIELD,
            LON_FIELD,
            number("ph", "pH", 0, 14, "acidity"),
            number("turbidity_ntu", "NTU", 0, 1000, "turbidity"),
            number("chlorine_mg_l", "mg/L", 0, 10, "free residual chlorine", required=False),
        ),
        example={
            "site_id": "HD-NM-VIETHOA",
            "district": "HD",
            "ph": 7.2,
            "turbidity_ntu": 0.8,
            "chlorine_mg_l": 0.45,
        },
    ),
)

_ENERGY = (
    EventType(
        type="vn.ioc.energy.metered",
        domain="energy",
        name="metered",
        description="Energy drawn by a distribution feeder over a reporting interval.",
        key_field="meter_id",
        source_prefix="/meters/energy",
        fields=(
            text("meter_id", "feeder meter id"),
            DISTRICT_FIELD,
            LAT_FIELD,
            LON_FIELD,
            number("energy_kwh", "kWh", 0, 1_000_000, "energy in the interval"),
            number("load_kw", "kW", 0, 500_000, "mean load in the interval"),
            number("power_factor", None, 0, 1, "power factor", required=False),
            integer("interval_s", "s", 1, 3600, "length of the interval", required=False),
        ),
        example={
            "meter_id": "HD-E-471",
            "district": "HD",
            "energy_kwh": 61.5,
            "load_kw": 3690.0,
            "power_factor": 0.93,
            "interval_s": 60,
        },
    ),
    EventType(
        type="vn.ioc.energy.streetlight",
        domain="energy",
        name="streetlight",
        description="State of a streetlight control cabinet.",
        key_field="cabinet_id",
        source_prefix="/devices/streetlight",
        fields=(
            text("cabinet_id", "control cabinet id"),
            DISTRICT_FIELD,
            LAT_FIELD,
            LON_FIELD,
            integer("lamps_on", "lamps", 0, 5000, "lamps switched on"),
            integer("lamps_total", "lamps", 1, 5000, "lamps on the cabinet"),
            number("power_kw", "kW", 0, 2000, "power drawn"),
            integer("lamps_faulty", "lamps", 0, 5000, "lamps reporting a fault", required=False),
        ),
        example={
            "cabinet_id": "HD-SL-0031",
            "district": "HD",
            "lamps_on": 118,
            "lamps_total": 120,
            "power_kw": 11.8,
            "lamps_faulty": 2,
        },
    ),
    EventType(
        type="vn.ioc.energy.outage",
        domain="energy",
        name="outage",
        description="A power outage on a feeder starts or ends.",
        key_field="feeder_id",
        source_prefix="/systems/power-dispatch",
        fields=(
            text("feeder_id", "feeder id"),
            DISTRICT_FIELD,
            LAT_FIELD,
            LON_FIELD,
            choice("status", ("started", "restored"), "started or restored"),
            integer("customers_affected", "customers", 0, 1_000_000, "customers without power"),
            choice(
                "cause", ("fault", "maintenance", "weather", "overload"), "cause", required=False
            ),
        ),
        example={
            "feeder_id": "HD-E-471",
            "district": "HD",
            "status": "started",
            "customers_affected": 1850,
            "cause": "weather",
        },
    ),
)

_PARKING = (
    EventType(
        type="vn.ioc.parking.occupancy",
        domain="parking",
        name="occupancy",
        description="Occupied spaces of a parking lot.",
        key_field="lot_id",
        source_prefix="/sensors/parking",
        fields=(
            text("lot_id", "parking lot id"),
            DISTRICT_FIELD,
            LAT_FIELD,
            LON_FIELD,
            integer("occupied", "spaces", 0, 20_000, "occupied spaces"),
            integer("capacity", "spaces", 1, 20_000, "spaces of the lot"),
        ),
        example={"lot_id": "HD-P-007", "district": "HD", "occupied": 164, "capacity": 200},
    ),
)


DECLARED_TYPES: tuple[EventType, ...] = (
    *_TRAFFIC,
    *_AIR,
    *_WATER,
    *_ENERGY,
    *_PARKING,
    *SYSTEM_TYPES,
)
