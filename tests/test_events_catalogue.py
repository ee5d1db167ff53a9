"""The catalogues as data: KPI consistency with the event types, geography, generated docs,
and `ioc kpis --json` / `ioc events --json`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from events.catalogue import EVENT_TYPES, NUMERIC_KINDS
from events.docs import render_events, render_kpis
from events.geography import DISTRICTS
from events.kpis import (
    AGGREGATIONS,
    AQI_POLLUTANTS,
    KPI_CATALOGUE,
    PIPELINE_EVENT_TYPE,
    SCOPES,
    WINDOWS,
    KpiSpec,
    catalogue_json,
)

ROOT = Path(__file__).resolve().parent.parent

REQUIRED_KPIS = (
    "air.pm25.avg", "air.aqi.vn", "air.aqi.us", "traffic.speed.avg", "traffic.vehicles.sum",
    "traffic.occupancy.avg", "water.level.max", "energy.consumption.sum",
    "parking.occupancy.rate", "services.ontime.rate", "services.online.rate",
    "feedback.open.count", "emergency.calls.count", "emergency.dispatch.p90",
    "security.incidents.count", "payments.amount.sum", "pipeline.late.count",
)  # fmt: skip


def test_required_kpis_exist() -> None:
    missing = [k for k in REQUIRED_KPIS if k not in KPI_CATALOGUE]
    assert not missing
    assert "station" in KPI_CATALOGUE["water.level.max"].scopes
    assert KPI_CATALOGUE["parking.occupancy.rate"].aggregation == "ratio"
    assert KPI_CATALOGUE["emergency.dispatch.p90"].aggregation == "quantile"
    assert 3600 in KPI_CATALOGUE["air.aqi.vn"].windows
    assert {k.split(".")[0] for k in KPI_CATALOGUE} >= {
        "traffic", "air", "water", "energy", "parking",
        "services", "feedback", "emergency", "security", "payments", "pipeline",
    }  # fmt: skip


def _check_filter(spec: KpiSpec, name: str, values: tuple[str, ...]) -> None:
    f = EVENT_TYPES[spec.event_type].field(name)
    assert f is not None, f"{spec.id}: filter field {name} not in {spec.event_type}"
    # filters compare strings, so they must be on enum fields with known values
    assert f.kind == "enum", f"{spec.id}: filter field {name} is {f.kind}"
    assert values, spec.id
    assert set(values) <= set(f.choices or ()), f"{spec.id}: {values} not in {f.choices}"


@pytest.mark.parametrize("kpi_id", sorted(KPI_CATALOGUE))
def test_kpi_is_consistent_with_the_event_catalogue(kpi_id: str) -> None:
    spec = KPI_CATALOGUE[kpi_id]
    assert spec.id == kpi_id
    assert spec.aggregation in AGGREGATIONS
    assert set(spec.scopes) <= set(SCOPES) and spec.scopes
    assert 60 in spec.windows and set(spec.windows) <= set(WINDOWS)
    assert spec.title_vi and spec.title_en and spec.unit
    if spec.event_type == PIPELINE_EVENT_TYPE:
        assert spec.domain == "pipeline"
        assert spec.aggregation == "count" and spec.field is None
        return
    et = EVENT_TYPES[spec.event_type]
    assert spec.domain == et.domain
    assert kpi_id.startswith(f"{et.domain}.")
    needs_field = spec.aggregation in {"sum", "mean", "min", "max", "last", "ratio", "quantile"}
    if needs_field:
        assert spec.field is not None, kpi_id
    if spec.field is not None:
        f = et.field(spec.field)
        assert f is not None, f"{kpi_id}: {spec.field} not in {et.type}"
        assert f.kind in NUMERIC_KINDS, f"{kpi_id}: {spec.field} is {f.kind}"
    if spec.aggregation == "ratio":
        assert spec.denominator_field is not None
        d = et.field(spec.denominator_field)
        assert d is not None and d.kind in NUMERIC_KINDS and d.required
    else:
        assert spec.denominator_field is None
    if spec.aggregation == "rate":
        assert spec.numerator, kpi_id
    else:
        assert spec.numerator is None
    if spec.aggregation == "quantile":
        assert spec.quantile is not None and 0 < spec.quantile < 1
    else:
        assert spec.quantile is None
    if spec.aggregation in {"aqi_vn", "aqi_us"}:
        assert all(et.field(p) is not None for p in AQI_POLLUTANTS)
    for name, values in (spec.where or {}).items():
        _check_filter(spec, name, values)
    for name, values in (spec.numerator or {}).items():
        _check_filter(spec, name, values)
    if "station" in spec.scopes:
        assert et.key_field


def test_catalogue_json_round_trips() -> None:
    items = orjson.loads(orjson.dumps(catalogue_json()))
    assert [i["id"] for i in items] == list(KPI_CATALOGUE)
    ontime = next(i for i in items if i["id"] == "services.ontime.rate")
    assert ontime["where"] == {"status": ["resolved"]}
    assert ontime["numerator"] == {"timeliness": ["on_time"]}


def test_geography_codes_and_grid() -> None:
    assert len(DISTRICTS) == 12
    cells = {(d.map_x, d.map_y) for d in DISTRICTS.values()}
    assert len(cells) == len(DISTRICTS)  # no two districts on one cell
    for code, d in DISTRICTS.items():
        assert code == d.code and code.isupper() and code.isascii() and len(code) <= 4
        assert d.population > 50_000
    assert 1_700_000 < sum(d.population for d in DISTRICTS.values()) < 2_100_000
    for et in EVENT_TYPES.values():
        assert et.example["district"] in DISTRICTS


@pytest.mark.parametrize(
    ("path", "render", "command"),
    [
        ("docs/events.md", render_events, "python -m events.docs > docs/events.md"),
        ("docs/kpis.md", render_kpis, "python -m events.docs --kpis > docs/kpis.md"),
    ],
)
def test_generated_docs_are_up_to_date(path: str, render: Callable[[], str], command: str) -> None:
    committed = (ROOT / path).read_text(encoding="utf-8")
    assert committed == render(), f"{path} is stale; regenerate it: {command}"


def test_events_doc_lists_every_type_with_an_example() -> None:
    doc = render_events()
    for type_name in EVENT_TYPES:
        assert f"### `{type_name}`" in doc
        assert f'"type": "{type_name}"' in doc


def _ioc(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "ioc", *args], capture_output=True, cwd=ROOT, timeout=60
    )


def test_ioc_kpis_json_prints_every_kpi() -> None:
    result = _ioc("kpis", "--json")
    assert result.returncode == 0, result.stderr.decode()
    items = orjson.loads(result.stdout)
    assert [i["id"] for i in items] == list(KPI_CATALOGUE)
    # Expected values written out from the catalogue's definitions (events/kpis.py), not
    # produced by the serialiser under test.
    by_id = {i["id"]: i for i in items}
    assert by_id["water.level.max"] == {
        "id": "water.level.max",
        "title_vi": "Mực nước cao nhất",
        "title_en": "Peak water level",
        "unit": "m",
        "domain": "water",
        "event_type": "vn.ioc.water.observed",
        "aggregation": "max",
        "field": "level_m",
        "where": None,
        "numerator": None,
        "denominator_field": None,
        "quantile": None,
        "scopes": ["city", "district", "station"],
        "windows": [60, 3600],
        "higher_is_worse": True,
        "description": "alarm levels BĐ I/II/III: events.flood",
    }
    ontime = by_id["services.ontime.rate"]
    assert (ontime["aggregation"], ontime["where"], ontime["numerator"]) == (
        "rate",
        {"status": ["resolved"]},
        {"timeliness": ["on_time"]},
    )
    assert (ontime["windows"], ontime["higher_is_worse"]) == ([60, 3600], False)
    for item in items:  # every item carries its spec's attributes
        spec = KPI_CATALOGUE[item["id"]]
        assert (item["aggregation"], item["field"], item["scopes"], item["windows"]) == (
            spec.aggregation,
            spec.field,
            list(spec.scopes),
            list(spec.windows),
        ), item["id"]


def test_ioc_events_json_prints_every_type() -> None:
    result = _ioc("events", "--json")
    assert result.returncode == 0, result.stderr.decode()
    items = orjson.loads(result.stdout)
    assert [i["type"] for i in items] == list(EVENT_TYPES)
    assert len(items) == 17  # README: all 17 event types of the ten domains
    assert {i["domain"] for i in items} == {
        "traffic", "air", "water", "energy", "parking",
        "services", "feedback", "emergency", "security", "payments",
    }  # fmt: skip
    assert all(i["topic"] == f"ioc.events.{i['domain']}" for i in items)
