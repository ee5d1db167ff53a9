"""The simulated province: every sensor, office and system that produces events.

Built once from a seed. The districts come from :mod:`events.geography` and the
hydrological stations (with their BĐ I/II/III thresholds) from :mod:`events.flood`; the
rest — road segments on the real national and provincial roads of Hải Dương, air-quality
stations (more of them near the Phả Lại power plant and the Kinh Môn cement works),
parking lots, feeders, streetlight cabinets, one-stop offices, cameras, emergency units —
is generated here, sized by district population. Same seed, same province.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from events.flood import WATER_STATIONS
from events.geography import DISTRICTS, place_near_seat

# Roads that cross each district (national routes QL, provincial routes ĐT, city streets).
ROADS: Mapping[str, tuple[str, ...]] = {
    "HD": ("QL5", "QL37", "NguyenLuongBang", "LeThanhNghi", "TranHungDao", "ThongNhat"),
    "CL": ("QL18", "QL37", "DT398"),
    "KM": ("QL17B", "DT389", "QL345"),
    "NS": ("QL37", "DT390", "QL5B"),
    "KT": ("QL5", "QL17B", "DT389"),
    "TH": ("DT390", "DT390B"),
    "CG": ("QL5", "QL38", "DT394"),
    "BG": ("QL38", "DT392", "DT395"),
    "GL": ("QL37", "DT395"),
    "TK": ("QL10", "DT391"),
    "NG": ("QL37", "DT396"),
    "TM": ("QL38B", "DT392"),
}
# Districts with heavy industry: their air stations start from a dirtier baseline.
INDUSTRIAL = {"CL": 1.35, "KM": 1.45, "KT": 1.15, "HD": 1.1}
CITIES = {"HD", "CL", "KM"}

EMERGENCY_SERVICES = ("police_113", "fire_114", "ambulance_115", "rescue_112")


@dataclass(frozen=True, slots=True)
class Site:
    """One producer: a sensor, a device, an office or a system.

    ``index`` is unique in the province (it seeds the site's faults); ``params`` holds the
    numbers its signal model needs (capacity, base level ...).
    """

    index: int
    site_id: str
    district: str
    kind: str
    params: Mapping[str, float] = field(default_factory=dict)
    label: str = ""
    # Where it stands (WGS 84 degrees): near its district's seat, or a hydrological
    # station's own position. Sensor events carry it as data.lat/data.lon.
    lat: float = 0.0
    lon: float = 0.0


@dataclass(frozen=True, slots=True)
class Province:
    """Every producer, grouped by what it is."""

    seed: int
    segments: tuple[Site, ...]
    air_stations: tuple[Site, ...]
    water_stations: tuple[Site, ...]
    water_sites: tuple[Site, ...]
    feeders: tuple[Site, ...]
    cabinets: tuple[Site, ...]
    parking_lots: tuple[Site, ...]
    offices: tuple[Site, ...]
    portals: tuple[Site, ...]
    systems: tuple[Site, ...]
    cameras: tuple[Site, ...]
    gateways: tuple[Site, ...]
    emergency_units: tuple[Site, ...]
    # District codes weighted by population, for events that happen "somewhere".
    district_weights: tuple[tuple[str, float], ...]
    by_id: Mapping[str, Site] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {s.site_id: s for s in self.all_sites()})

    def all_sites(self) -> tuple[Site, ...]:
        return (
            *self.segments,
            *self.air_stations,
            *self.water_stations,
            *self.water_sites,
            *self.feeders,
            *self.cabinets,
            *self.parking_lots,
            *self.offices,
            *self.portals,
            *self.systems,
            *self.cameras,
            *self.gateways,
            *self.emergency_units,
        )

    def site(self, site_id: str) -> Site:
        return self.by_id[site_id]

    def units_of(self, district: str, service: str) -> tuple[Site, ...]:
        return tuple(
            u for u in self.emergency_units if u.district == district and u.label == service
        )


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"province:{seed}")
        self.next_index = 0

    def site(
        self,
        site_id: str,
        district: str,
        kind: str,
        label: str = "",
        at: tuple[float, float] | None = None,
        **params: float,
    ) -> Site:
        lat, lon = at or place_near_seat(district, site_id)
        s = Site(self.next_index, site_id, district, kind, dict(params), label, lat, lon)
        self.next_index += 1
        return s


def _per_district(population: int, per: int, least: int) -> int:
    return max(least, round(population / per))


def build_province(seed: int = 42) -> Province:
    """The province for ``seed`` (deterministic)."""
    b = _Builder(seed)
    rng = b.rng
    segments: list[Site] = []
    air: list[Site] = []
    water_sites: list[Site] = []
    feeders: list[Site] = []
    cabinets: list[Site] = []
    lots: list[Site] = []
    offices: list[Site] = []
    cameras: list[Site] = []
    units: list[Site] = []
    for code, d in DISTRICTS.items():
        urban = code in CITIES
        n_segments = _per_district(d.population, 25_000, 4)
        roads = ROADS.get(code, ("DT",))
        for i in range(n_segments):
            road = roads[i % len(roads)]
            national = road.startswith("QL")
            segments.append(
                b.site(
                    f"{code}-{road}-{i + 1:03d}",
                    code,
                    "segment",
                    label=road,
                    free_flow_kmh=rng.uniform(55, 75) if national else rng.uniform(35, 50),
                    # vehicles per minute at the daily mean volume
                    mean_vpm=rng.uniform(25, 60) if national else rng.uniform(8, 25),
                    lanes=4.0 if national else 2.0,
                    heavy_pct=rng.uniform(15, 30) if national else rng.uniform(3, 10),
                )
            )
        n_air = 3 if code == "HD" else 2 if code in INDUSTRIAL else 1
        for i in range(n_air):
            air.append(
                b.site(
                    f"{code}-AQ-{i + 1:03d}",
                    code,
                    "air",
                    base_pm25=rng.uniform(22, 34) * INDUSTRIAL.get(code, 1.0),
                    so2_factor=2.5 if code in ("CL", "KM") else 1.0,
                )
            )
        water_sites.append(
            b.site(
                f"{code}-NM-{1:02d}", code, "water_quality", base_turbidity=rng.uniform(0.3, 1.2)
            )
        )
        for i in range(_per_district(d.population, 35_000, 3)):
            feeders.append(
                b.site(
                    f"{code}-E-{471 + i}",
                    code,
                    "feeder",
                    base_kw=rng.uniform(2500, 6000) * (1.3 if urban else 1.0),
                    customers=float(rng.randrange(800, 4000)),
                )
            )
        for i in range(_per_district(d.population, 12_000, 6)):
            total = rng.randrange(40, 160)
            cabinets.append(
                b.site(
                    f"{code}-SL-{i + 1:04d}",
                    code,
                    "cabinet",
                    lamps_total=float(total),
                    lamp_kw=rng.choice((0.1, 0.12, 0.15, 0.25)),
                    faulty_share=rng.uniform(0.0, 0.04),
                )
            )
        for i in range(_per_district(d.population, 40_000 if urban else 70_000, 2)):
            lots.append(
                b.site(
                    f"{code}-P-{i + 1:03d}",
                    code,
                    "parking",
                    label=rng.choice(("commercial", "office", "residential", "hospital")),
                    capacity=float(rng.randrange(60, 400 if urban else 150)),
                )
            )
        offices.append(b.site(f"{code}-MC", code, "office", daily=d.population / 1000))
        for i in range(_per_district(d.population, 15_000, 6)):
            cameras.append(b.site(f"{code}-CAM-{i + 1:04d}", code, "camera"))
        for service in EMERGENCY_SERVICES:
            for i in range(2 if urban else 1):
                short = service.split("_")[1]
                units.append(
                    b.site(f"{short}-{code}-{i + 1:02d}", code, "emergency_unit", label=service)
                )
    # The provincial public administration service centre handles provincial procedures.
    offices.append(b.site("HD-HCC", "HD", "office", daily=900.0))
    water_stations = [
        b.site(
            ws.station_id,
            ws.district,
            "water_station",
            label=ws.river,
            at=(ws.lat, ws.lon),
            # Normal level: a little below BĐ I; the gap to BĐ III sets the surge height.
            base_m=ws.alarm_levels[0] - rng.uniform(0.6, 1.2),
            alarm1=ws.alarm_levels[0],
            alarm2=ws.alarm_levels[1],
            alarm3=ws.alarm_levels[2],
        )
        for ws in WATER_STATIONS.values()
    ]
    portals = [
        b.site(f"dichvucong-hd-{i}", "HD", "portal", base_rpm=rng.uniform(1500, 2500))
        for i in (1, 2)
    ]
    systems = [
        b.site(name, "HD", "system")
        for name in ("dichvucong-hd", "egov-hd", "mail-hd", "iocdata-hd", "hoadon-hd")
    ]
    gateways = [
        b.site(name, "HD", "gateway", share=share)
        for name, share in (("PAYGOV-HD", 0.5), ("VNPTPAY-HD", 0.2), ("VIETTELPAY-HD", 0.3))
    ]
    weights = tuple((code, float(d.population)) for code, d in DISTRICTS.items())
    return Province(
        seed=seed,
        segments=tuple(segments),
        air_stations=tuple(air),
        water_stations=tuple(water_stations),
        water_sites=tuple(water_sites),
        feeders=tuple(feeders),
        cabinets=tuple(cabinets),
        parking_lots=tuple(lots),
        offices=tuple(offices),
        portals=tuple(portals),
        systems=tuple(systems),
        cameras=tuple(cameras),
        gateways=tuple(gateways),
        emergency_units=tuple(units),
        district_weights=weights,
    )
