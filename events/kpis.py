"""The KPI catalogue: what the stream workers compute, declared as data.

A :class:`KpiSpec` says which events count (``event_type`` and the ``where`` filter), how
they aggregate, over which scopes and windows. Semantics (the streams engine implements
them; ``ioc kpis --json`` prints them):

- only events of ``event_type`` whose ``data[k]`` is in ``values`` for every ``where``
  item count; events lacking an optional ``field`` do not count for that KPI;
- ``count``: number of events; ``sum``/``mean``/``min``/``max``/``last``: of ``data[field]``;
- ``rate``: 100 × (counted events that also match ``numerator``) / (events counted);
- ``ratio``: 100 × sum(``field``) / sum(``denominator_field``);
- ``quantile``: the ``quantile`` (0..1) of ``data[field]`` (a DDSketch, mergeable);
- ``aqi_vn``/``aqi_us``: the AQI (events.aqi) of the window means of pm25, pm10, o3, no2,
  so2, co;
- scopes: ``city``, ``district`` (scope string ``district:<code>``), ``station`` (per source,
  ``station:<value of the type's key_field>``);
- windows in seconds: 60 (tumbling, always present), 900 (hopping 15 min advancing 60 s),
  3600 (tumbling hourly).

``pipeline.*`` KPIs have ``event_type == "pipeline"``: the streams engine produces them
about itself (e.g. events that arrived too late for their window).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

Aggregation = Literal[
    "count", "sum", "mean", "min", "max", "last", "rate", "ratio", "quantile", "aqi_vn", "aqi_us"
]
AGGREGATIONS: tuple[str, ...] = (
    "count", "sum", "mean", "min", "max", "last", "rate", "ratio", "quantile", "aqi_vn", "aqi_us",
)  # fmt: skip
SCOPES: tuple[str, ...] = ("city", "district", "station")
WINDOWS: tuple[int, ...] = (60, 900, 3600)
PIPELINE_EVENT_TYPE = "pipeline"
AQI_POLLUTANTS: tuple[str, ...] = ("pm25", "pm10", "o3", "no2", "so2", "co")


@dataclass(frozen=True, slots=True)
class KpiSpec:
    id: str
    title_vi: str
    title_en: str
    unit: str
    domain: str
    event_type: str
    aggregation: Aggregation
    field: str | None = None
    where: Mapping[str, tuple[str, ...]] | None = None
    numerator: Mapping[str, tuple[str, ...]] | None = None
    denominator_field: str | None = None
    quantile: float | None = None
    scopes: tuple[str, ...] = ("city", "district")
    windows: tuple[int, ...] = (60,)
    higher_is_worse: bool = True
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title_vi": self.title_vi,
            "title_en": self.title_en,
            "unit": self.unit,
            "domain": self.domain,
            "event_type": self.event_type,
            "aggregation": self.aggregation,
            "field": self.field,
            "where": None if self.where is None else {k: list(v) for k, v in self.where.items()},
            "numerator": None
            if self.numerator is None
            else {k: list(v) for k, v in self.numerator.items()},
            "denominator_field": self.denominator_field,
            "quantile": self.quantile,
            "scopes": list(self.scopes),
            "windows": list(self.windows),
            "higher_is_worse": self.higher_is_worse,
            "description": self.description,
        }


_ALL_SCOPES = ("city", "district", "station")
_AIR = "vn.ioc.air.observed"
_TRAFFIC = "vn.ioc.traffic.observed"

_KPIS = (
    # --- air -------------------------------------------------------------------------------
    KpiSpec("air.pm25.avg", "Bụi PM2.5 trung bình", "Mean PM2.5", "µg/m³", "air", _AIR,
            "mean", field="pm25", scopes=_ALL_SCOPES, windows=(60, 3600)),
    KpiSpec("air.pm10.avg", "Bụi PM10 trung bình", "Mean PM10", "µg/m³", "air", _AIR,
            "mean", field="pm10", scopes=_ALL_SCOPES, windows=(60, 3600)),
    KpiSpec("air.aqi.vn", "Chỉ số VN_AQI", "VN_AQI", "AQI", "air", _AIR, "aqi_vn",
            scopes=_ALL_SCOPES, windows=(60, 3600),
            description="VN_AQI (Decision 1459/QĐ-TCMT) of the window means"),
    KpiSpec("air.aqi.us", "Chỉ số AQI (US EPA)", "US EPA AQI", "AQI", "air", _AIR, "aqi_us",
            scopes=_ALL_SCOPES, windows=(60, 3600),
            description="US EPA AQI (2024 PM2.5 breakpoints) of the window means"),
    # --- traffic ---------------------------------------------------------------------------
    KpiSpec("traffic.speed.avg", "Tốc độ trung bình", "Mean speed", "km/h", "traffic",
            _TRAFFIC, "mean", field="avg_speed_kmh", scopes=_ALL_SCOPES, windows=(60, 900),
            higher_is_worse=False),
    KpiSpec("traffic.vehicles.sum", "Lưu lượng xe", "Vehicles", "vehicles", "traffic",
            _TRAFFIC, "sum", field="vehicle_count", scopes=_ALL_SCOPES, windows=(60, 900)),
    KpiSpec("traffic.occupancy.avg", "Mức chiếm dụng làn", "Lane occupancy", "%", "traffic",
            _TRAFFIC, "mean", field="occupancy_pct", scopes=_ALL_SCOPES, windows=(60, 900)),
    KpiSpec("traffic.incidents.count", "Sự cố giao thông", "Traffic incidents", "incidents",
            "traffic", "vn.ioc.traffic.incident", "count", where={"status": ("reported",)},
            windows=(60, 3600)),
    # --- water -----------------------------------------------------------------------------
    KpiSpec("water.level.max", "Mực nước cao nhất", "Peak water level", "m", "water",
            "vn.ioc.water.observed", "max", field="level_m", scopes=_ALL_SCOPES,
            windows=(60, 3600), description="alarm levels BĐ I/II/III: events.flood"),
    KpiSpec("water.turbidity.max", "Độ đục nước sạch", "Tap-water turbidity", "NTU", "water",
            "vn.ioc.water.quality", "max", field="turbidity_ntu", scopes=_ALL_SCOPES),
    # --- energy ----------------------------------------------------------------------------
    KpiSpec("energy.consumption.sum", "Điện năng tiêu thụ", "Energy consumed", "kWh",
            "energy", "vn.ioc.energy.metered", "sum", field="energy_kwh", windows=(60, 3600)),
    KpiSpec("energy.load.avg", "Phụ tải trung bình", "Mean feeder load", "kW", "energy",
            "vn.ioc.energy.metered", "mean", field="load_kw", scopes=_ALL_SCOPES),
    KpiSpec("energy.streetlight.on.ratio", "Tỷ lệ đèn sáng", "Streetlights on", "%", "energy",
            "vn.ioc.energy.streetlight", "ratio", field="lamps_on",
            denominator_field="lamps_total", higher_is_worse=False),
    KpiSpec("energy.outages.count", "Sự cố mất điện", "Power outages", "outages", "energy",
            "vn.ioc.energy.outage", "count", where={"status": ("started",)},
            windows=(60, 3600)),
    # --- parking ---------------------------------------------------------------------------
    KpiSpec("parking.occupancy.rate", "Tỷ lệ lấp đầy bãi đỗ", "Parking occupancy", "%",
            "parking", "vn.ioc.parking.occupancy", "ratio", field="occupied",
            denominator_field="capacity", scopes=_ALL_SCOPES, windows=(60, 900)),
    # --- public services -------------------------------------------------------------------
    KpiSpec("services.received.count", "Hồ sơ tiếp nhận", "Dossiers received", "dossiers",
            "services", "vn.ioc.services.dossier", "count",
            where={"status": ("received",)}, windows=(60, 3600)),
    KpiSpec("services.ontime.rate", "Tỷ lệ hồ sơ đúng hạn", "Dossiers resolved on time", "%",
            "services", "vn.ioc.services.dossier", "rate", where={"status": ("resolved",)},
            numerator={"timeliness": ("on_time",)}, windows=(60, 3600),
            higher_is_worse=False),
    KpiSpec("services.online.rate", "Tỷ lệ hồ sơ trực tuyến", "Dossiers submitted online", "%",
            "services", "vn.ioc.services.dossier", "rate", where={"status": ("received",)},
            numerator={"channel": ("online",)}, windows=(60, 3600), higher_is_worse=False),
    KpiSpec("services.portal.requests.sum", "Lượt truy cập cổng DVC", "Portal requests",
            "requests", "services", "vn.ioc.services.portal", "sum", field="requests",
            scopes=("city",)),
    KpiSpec("services.portal.errors.ratio", "Tỷ lệ lỗi cổng DVC", "Portal error ratio", "%",
            "services", "vn.ioc.services.portal", "ratio", field="errors",
            denominator_field="requests", scopes=("city",)),
    KpiSpec("services.portal.latency.max", "Độ trễ cổng DVC (p95)", "Portal p95 latency",
            "ms", "services", "vn.ioc.services.portal", "max", field="p95_latency_ms",
            scopes=("city",)),
    # --- citizen feedback ------------------------------------------------------------------
    KpiSpec("feedback.open.count", "Phản ánh mới", "New citizen reports", "reports",
            "feedback", "vn.ioc.feedback.report", "count", where={"status": ("opened",)},
            windows=(60, 3600)),
    KpiSpec("feedback.closed.count", "Phản ánh đã xử lý", "Citizen reports closed", "reports",
            "feedback", "vn.ioc.feedback.report", "count", where={"status": ("closed",)},
            windows=(60, 3600), higher_is_worse=False),
    KpiSpec("feedback.rating.avg", "Mức hài lòng", "Citizen satisfaction", "stars",
            "feedback", "vn.ioc.feedback.report", "mean", field="rating",
            where={"status": ("closed",)}, windows=(60, 3600), higher_is_worse=False),
    # --- emergency -------------------------------------------------------------------------
    KpiSpec("emergency.calls.count", "Cuộc gọi khẩn cấp", "Emergency calls", "calls",
            "emergency", "vn.ioc.emergency.call", "count", windows=(60, 900)),
    KpiSpec("emergency.dispatch.p90", "Thời gian điều phối (P90)", "Dispatch time (p90)", "s",
            "emergency", "vn.ioc.emergency.dispatch", "quantile", field="dispatch_s",
            quantile=0.9, windows=(60, 900)),
    # --- security --------------------------------------------------------------------------
    KpiSpec("security.incidents.count", "Sự việc an ninh trật tự", "Public-order incidents",
            "incidents", "security", "vn.ioc.security.incident", "count", windows=(60, 900)),
    KpiSpec("security.cyber.count", "Tấn công mạng", "Cyber attacks", "attacks", "security",
            "vn.ioc.security.cyber", "count", scopes=("city",), windows=(60, 900)),
    # --- payments --------------------------------------------------------------------------
    KpiSpec("payments.amount.sum", "Giá trị thanh toán", "Amount paid", "VND", "payments",
            "vn.ioc.payments.transaction", "sum", field="amount_vnd",
            where={"status": ("succeeded",)}, windows=(60, 3600), higher_is_worse=False),
    KpiSpec("payments.transactions.count", "Giao dịch thanh toán", "Payments", "payments",
            "payments", "vn.ioc.payments.transaction", "count", windows=(60, 3600),
            higher_is_worse=False),
    KpiSpec("payments.failure.rate", "Tỷ lệ giao dịch lỗi", "Failed payments", "%",
            "payments", "vn.ioc.payments.transaction", "rate",
            numerator={"status": ("failed",)}, windows=(60, 900)),
    # --- the pipeline itself ---------------------------------------------------------------
    KpiSpec("pipeline.late.count", "Sự kiện đến trễ", "Late events", "events", "pipeline",
            PIPELINE_EVENT_TYPE, "count", scopes=("city",),
            description="events dropped for arriving after their window closed"),
)  # fmt: skip

KPI_CATALOGUE: Mapping[str, KpiSpec] = MappingProxyType({k.id: k for k in _KPIS})


def catalogue_json() -> list[dict[str, Any]]:
    """The catalogue as JSON-ready dicts (what ``ioc kpis --json`` prints)."""
    return [spec.to_dict() for spec in KPI_CATALOGUE.values()]
