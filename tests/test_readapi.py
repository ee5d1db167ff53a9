"""The read API's parameters and read plan (pure, in memory), and its OpenAPI paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.errors import ConfigurationError
from ioc.components import demo_components
from ioc.settings import ServiceSettings
from readapi import params as p
from readapi.app import ROUTES
from readapi.openapi import READ_PATHS
from readapi.settings import ReadApiSettings
from storage.series import alerts_query
from ws.settings import WsSettings

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 12, 4, 8, 30, tzinfo=UTC)


def _error(call: object, *args: object) -> p.ParamError:
    with pytest.raises(p.ParamError) as info:
        call(*args)  # type: ignore[operator]
    return info.value


def test_times_are_epoch_ms_or_iso_8601_with_an_offset() -> None:
    assert p.parse_time("since", "1796373000000") == NOW
    assert p.parse_time("since", "2026-12-04T08:30:00Z") == NOW
    assert p.parse_time("since", "2026-12-04T15:30:00+07:00") == NOW
    assert p.parse_time("since", "2026-12-04T15:30:00+07:00").tzinfo is UTC
    naive = _error(p.parse_time, "until", "2026-12-04T08:30:00")
    assert naive.parameter == "until"
    assert "UTC offset" in naive.detail
    assert _error(p.parse_time, "since", "yesterday").parameter == "since"
    assert "out of range" in _error(p.parse_time, "since", "999999999999999").detail


def test_the_range_defaults_to_the_last_24_hours_and_must_not_be_empty() -> None:
    assert p.parse_range(None, None, NOW) == (NOW - timedelta(hours=24), NOW)
    assert p.parse_range("2026-12-04T00:00:00Z", None, NOW)[1] == NOW
    err = _error(p.parse_range, "2026-12-04T08:30:00Z", "2026-12-04T08:30:00Z", NOW)
    assert err.parameter == "since"


def test_points_limit_and_window_are_bounded_integers() -> None:
    assert p.parse_int("points", None, p.DEFAULT_POINTS, 1, p.MAX_POINTS) == 500
    assert _error(p.parse_int, "points", "0", 500, 1, p.MAX_POINTS).parameter == "points"
    assert "out of range" in _error(p.parse_int, "points", "1001", 500, 1, 1000).detail
    assert "not an integer" in _error(p.parse_int, "limit", "ten", 5, 1, 10).detail
    assert p.parse_window(None) == 60
    assert p.parse_window("3600") == 3600
    assert _error(p.parse_window, "120").parameter == "window"


def test_kpi_scope_and_state_are_checked_against_the_catalogue() -> None:
    unknown = _error(p.kpi_spec, "air.aqi.vm")
    assert (unknown.status, unknown.parameter) == (404, "id")
    assert "did you mean air.aqi.vn" in unknown.detail
    assert unknown.to_dict()["error"] == "unknown_kpi"
    spec = p.kpi_spec("air.aqi.vn")
    assert p.check_scope(spec, "district:HD") == "district:HD"
    assert p.check_scope(spec, "station:HD-AQ-001") == "station:HD-AQ-001"
    for bad in ("district:*", "district:XX", "province", "city:HD"):
        assert _error(p.check_scope, spec, bad).parameter == "scope", bad
    # a KPI without station scopes
    assert _error(p.check_scope, p.kpi_spec("services.ontime.rate"), "station:x").parameter
    assert p.parse_kpi_list("air.aqi.vn, air.pm25.avg") == ["air.aqi.vn", "air.pm25.avg"]
    assert _error(p.parse_kpi_list, "air.aqi.vn,nope").parameter == "kpi"
    assert p.parse_scope_patterns("city,district:*") == ["city", "district:*"]
    assert _error(p.parse_scope_patterns, "ward:1").parameter == "scope"
    assert p.parse_states(None) == ("raised", "escalated", "acknowledged")
    assert p.parse_states("all") is None
    assert p.parse_states("cleared,raised") == ("cleared", "raised")
    assert _error(p.parse_states, "open").parameter == "state"


def test_unknown_parameters_are_refused_by_name() -> None:
    p.check_known({"points": "5"}, ("scope", "points"))
    err = _error(p.check_known, {"point": "5"}, ("scope", "points"))
    assert err.parameter == "point"
    assert err.to_dict() == {
        "error": "bad_parameter",
        "parameter": "point",
        "detail": err.detail,
    }


def test_the_plan_reads_the_coarsest_source_that_still_gives_the_points() -> None:
    week = p.plan_series(NOW - timedelta(days=7), NOW, 500)
    # 604,800 s / 500 points = 1,210 s a point: finer than an hour, so 60 s windows in
    # 21-minute buckets
    assert (week.source, week.bucket_s) == ("windows", 1260)
    assert week.max_points <= 500
    month = p.plan_series(NOW - timedelta(days=30), NOW, 500)
    assert (month.source, month.grain_s) == ("hourly", 3600)
    assert month.start == datetime(2026, 11, 4, 8, tzinfo=UTC)  # floored to the hour
    assert month.end == datetime(2026, 12, 4, 9, tzinfo=UTC)  # ceiled to the hour
    assert month.bucket_s == 2 * 3600
    year = p.plan_series(NOW - timedelta(days=365), NOW, 200)
    assert (year.source, year.bucket_s) == ("daily", 2 * 86_400)
    assert year.start == datetime(2025, 12, 4, tzinfo=UTC)
    # widening to whole days halves a short request's resolution (docs/readapi.md)
    week7 = p.plan_series(NOW - timedelta(days=7), NOW, 7)
    assert (week7.source, week7.bucket_s, week7.max_points) == ("daily", 2 * 86_400, 4)
    short = p.plan_series(NOW - timedelta(minutes=10), NOW, 500)
    assert (short.source, short.bucket_s) == ("windows", 60)


@given(
    start=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    span_s=st.integers(min_value=1, max_value=3 * 365 * 86_400),
    points=st.integers(min_value=1, max_value=p.MAX_POINTS),
)
def test_a_plan_never_gives_more_than_points_and_covers_the_range(
    start: datetime, span_s: int, points: int
) -> None:
    end = start + timedelta(seconds=span_s)
    plan = p.plan_series(start, end, points)
    assert plan.max_points <= points
    assert plan.start <= start and plan.end >= end
    assert plan.bucket_s % plan.grain_s == 0
    assert int(plan.start.timestamp()) % plan.grain_s == 0
    # below a day a point, the rows one request reads stay bounded by the points: at most
    # 60 windows or 24 hourly rows a point (the daily rollup has one row a day)
    rows = (plan.end - plan.start).total_seconds() / plan.grain_s
    if plan.source != "daily":
        assert rows <= 60 * points + 2


def test_the_alert_query_keeps_the_partial_index_predicate_for_open_states() -> None:
    sql, args = alerts_query(("raised", "acknowledged"), NOW, 10)
    assert "state <> 'cleared'" in sql and "$2::text[]" in sql and "updated_at >= $3" in sql
    assert args == [10, ["raised", "acknowledged"], NOW]
    sql, args = alerts_query(None, NOW, 10)
    assert "state" not in sql.split("FROM", 1)[1] and args == [10, NOW]
    assert "updated_at >= $2" in sql
    sql, _ = alerts_query(("cleared",), None, 10)
    assert "<> 'cleared'" not in sql


def test_the_openapi_read_paths_are_the_served_routes_with_their_own_server() -> None:
    assert {(m, path) for m, path, _ in ROUTES} == set(READ_PATHS)
    document = orjson.loads((ROOT / "docs" / "openapi.json").read_bytes())
    for _, path in READ_PATHS:
        item = document["paths"][path]
        assert item["servers"][0]["url"] == "http://127.0.0.1:8082"
        assert item["get"]["security"] == [{"pushServerToken": []}]
        assert "400" in item["get"]["responses"]


def test_the_read_api_takes_the_push_servers_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ReadApiSettings().ws_tokens == WsSettings().ws_tokens
    monkeypatch.setenv("IOC_WS_TOKENS", '{"dash-1": "viewer:dashboards"}')
    assert ReadApiSettings().ws_tokens == WsSettings().ws_tokens == {"dash-1": "viewer:dashboards"}
    monkeypatch.setenv("IOC_WS_TOKENS", '{"x": "admin"}')
    with pytest.raises(ConfigurationError, match="role must be viewer or operator"):
        ReadApiSettings()


def test_ioc_up_runs_the_read_api_as_its_seventh_component() -> None:
    components = {c.name: c for c in demo_components(ServiceSettings())}
    assert len(components) == 7  # README: seven supervised components
    assert list(components["readapi"].argv[-2:]) == ["-m", "readapi"]
