"""The read API against the real TimescaleDB: rows written by the sinks' writers, rollups
by the maintenance job's function, answers over HTTP."""

from __future__ import annotations

import statistics
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import jsonschema
import pytest
import pytest_asyncio

from events.contracts import all_schemas
from events.health import validate
from events.kpis import KPI_CATALOGUE
from events.records import AlertRecord, KpiRecord
from readapi.app import ReadApi
from readapi.params import SeriesPlan
from readapi.settings import ReadApiSettings
from storage import series, writers
from storage.retention import MaintenanceReport, refresh_rollups
from storage.rows import alert_row, kpi_row
from tests.db_helpers import migrated

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent

# A fixed past day: no other test writes there, and no retention runs in these tests.
D0 = datetime(2025, 6, 1, tzinfo=UTC)
DAYS = 3
KPI, SCOPE = "air.pm25.avg", "district:HD"
AUTH = {"Authorization": "Bearer wall-viewer"}


def value_at(minute: int) -> float:
    return float(minute % 97) + 0.25


def window(minute: int, scope: str = SCOPE, kpi: str = KPI) -> KpiRecord:
    start = D0 + timedelta(minutes=minute)
    v = value_at(minute)
    return KpiRecord(
        kpi=kpi,
        scope=scope,
        window_start=start,
        window_end=start + timedelta(seconds=60),
        value=v,
        count=10,
        min=v - 1,
        max=v + 2,
        sum=v * 10,
        final=True,
        revision=1,
        computed_at=start + timedelta(seconds=61),
    )


def alert(alert_id: str, state: str, updated: datetime) -> AlertRecord:
    return AlertRecord(
        alert_id=alert_id,
        rule="water.level.alarm",
        subject="station:HD-TV-PL",
        state=state,  # type: ignore[arg-type]
        severity="critical",
        level=2,
        title="Mực nước vượt BĐ II",
        kpi="water.level.max",
        value=2.9,
        threshold=2.5,
        raised_at=updated - timedelta(minutes=5),
        updated_at=updated,
        acknowledged_by="op1" if state == "acknowledged" else None,
        revision=3,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def data(module_database_url: str) -> dict[str, Any]:
    # A database of its own: the latest windows and alerts of the whole table are read.
    url = await migrated(module_database_url)
    conn = await asyncpg.connect(url)
    tag = uuid.uuid4().hex[:6]
    now = datetime.now(UTC)
    alerts = {
        "raised": alert(f"R-{tag}", "raised", now - timedelta(minutes=1)),
        "acknowledged": alert(f"A-{tag}", "acknowledged", now - timedelta(hours=2)),
        "cleared": alert(f"C-{tag}", "cleared", now - timedelta(minutes=2)),
    }
    try:
        for writer in (writers.KPI_WINDOWS, writers.ALERTS):
            await writer.prepare(conn)
        minutes = range(DAYS * 1440)
        records = [window(m) for m in minutes] + [window(m, "station:HD-AQ-001") for m in minutes]
        await writers.KPI_WINDOWS.write(conn, [kpi_row(r) for r in records])
        await writers.ALERTS.write(conn, [alert_row(a) for a in alerts.values()])
        await refresh_rollups(conn, D0, MaintenanceReport(edition="apache"))
    finally:
        await conn.close()
    return {"url": url, "alerts": alerts, "tag": tag}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(data: dict[str, Any]) -> AsyncIterator[ReadApi]:
    settings = ReadApiSettings(database_url=data["url"], readapi_port=0)
    async with ReadApi(settings) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(
    http: aiohttp.ClientSession, api: ReadApi, path: str, **query: Any
) -> tuple[int, Any]:
    async with http.get(f"{api.url}{path}", params=query, headers=AUTH) as r:
        return r.status, await r.json()


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


async def test_v1_needs_a_push_server_token_health_and_metrics_do_not(
    api: ReadApi, http: aiohttp.ClientSession
) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "wall-viewer"}):
        async with http.get(f"{api.url}/v1/kpis", headers=headers) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await r.json())["error"] == "unauthorized"
    for token in ("wall-viewer", "wall-operator"):
        async with http.get(
            f"{api.url}/v1/kpis", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 200
    async with http.get(f"{api.url}/readyz") as r:
        body = await r.json()
        validate("/readyz", r.status, body)
        assert (r.status, body["checks"]["database"]["ok"]) == (200, True)
    async with http.get(f"{api.url}/metrics") as r:
        text = await r.text()
    assert 'ioc_readapi_requests_total{route="/v1/kpis",status="401"} 3.0' in text
    assert 'ioc_readapi_requests_total{route="/v1/kpis",status="200"} 2.0' in text
    assert 'route="/readyz"' not in text and 'route="/metrics"' not in text  # reads only


async def test_the_catalogue_and_the_openapi_document(
    api: ReadApi, http: aiohttp.ClientSession
) -> None:
    status, body = await get(http, api, "/v1/kpis")
    assert status == 200
    assert body["kpis"] == [spec.to_dict() for spec in KPI_CATALOGUE.values()]
    async with http.get(f"{api.url}/openapi.json") as r:
        assert r.status == 200
        assert await r.read() == (ROOT / "docs" / "openapi.json").read_bytes()


async def test_a_short_range_returns_the_stored_windows(
    api: ReadApi, http: aiohttp.ClientSession
) -> None:
    status, body = await get(
        http, api, f"/v1/kpis/{KPI}/windows", scope=SCOPE, since=iso(D0),
        until=iso(D0 + timedelta(hours=2)), points=500,
    )  # fmt: skip
    assert status == 200
    assert (body["source"], body["bucket_s"]) == ("windows", 60)
    assert [i["value"] for i in body["items"]] == [value_at(m) for m in range(120)]
    first = body["items"][0]
    assert first["start"] == "2025-06-01T00:00:00Z" and first["end"] == "2025-06-01T00:01:00Z"
    assert (first["count"], first["windows"], first["min"], first["max"]) == (10, 1, -0.75, 2.25)
    # epoch milliseconds mean the same instants
    ms = int(D0.timestamp() * 1000)
    _, same = await get(
        http, api, f"/v1/kpis/{KPI}/windows", scope=SCOPE, since=str(ms),
        until=str(ms + 2 * 3600 * 1000), points=500,
    )  # fmt: skip
    assert same == body


async def test_downsampling_keeps_within_points_with_bucket_means(
    api: ReadApi, http: aiohttp.ClientSession
) -> None:
    status, body = await get(
        http, api, f"/v1/kpis/{KPI}/windows", scope=SCOPE, since=iso(D0),
        until=iso(D0 + timedelta(days=DAYS)), points=500,
    )  # fmt: skip
    assert status == 200
    # 259,200 s / 500 = 518 s a point: 60 s windows in 9-minute buckets
    assert (body["source"], body["bucket_s"]) == ("windows", 540)
    items = body["items"]
    assert len(items) == 480 <= 500
    assert items[1]["value"] == pytest.approx(statistics.mean(value_at(m) for m in range(9, 18)))
    assert (items[1]["count"], items[1]["windows"]) == (90, 9)
    assert items[1]["min"] == min(value_at(m) for m in range(9, 18)) - 1


async def test_long_ranges_read_the_hourly_and_daily_rollups_with_the_same_numbers(
    api: ReadApi, http: aiohttp.ClientSession, data: dict[str, Any]
) -> None:
    until = iso(D0 + timedelta(days=DAYS))
    _, hourly = await get(
        http, api, f"/v1/kpis/{KPI}/windows", scope=SCOPE, since=iso(D0), until=until, points=72
    )
    assert (hourly["source"], hourly["bucket_s"], len(hourly["items"])) == ("hourly", 3600, 72)
    _, daily = await get(
        http, api, f"/v1/kpis/{KPI}/windows", scope=SCOPE, since=iso(D0), until=until, points=3
    )
    assert (daily["source"], daily["bucket_s"], len(daily["items"])) == ("daily", 86_400, 3)
    day2 = [value_at(m) for m in range(1440, 2880)]
    assert daily["items"][1]["value"] == pytest.approx(statistics.mean(day2))
    assert daily["items"][1]["max"] == max(day2) + 2
    assert (daily["items"][1]["count"], daily["items"][1]["windows"]) == (14_400, 1440)
    # the windows, bucketed by the hour, give what the hourly rollup gives
    conn = await asyncpg.connect(data["url"])
    try:
        plan = SeriesPlan("windows", 60, 3600, D0, D0 + timedelta(days=DAYS))
        raw = await series.kpi_series(conn, KPI, SCOPE, plan)
    finally:
        await conn.close()
    assert [r["value"] for r in raw] == pytest.approx([i["value"] for i in hourly["items"]])
    assert [r["count"] for r in raw] == [i["count"] for i in hourly["items"]]
    # a range that does not start on the hour is widened to the hour
    _, widened = await get(
        http, api, f"/v1/kpis/{KPI}/windows", scope=SCOPE,
        since=iso(D0 + timedelta(minutes=30)), until=until, points=71,
    )  # fmt: skip
    assert widened["since"] == iso(D0) and widened["source"] == "hourly"


async def test_bad_parameters_are_400s_that_name_them(
    api: ReadApi, http: aiohttp.ClientSession
) -> None:
    path = f"/v1/kpis/{KPI}/windows"
    cases: list[tuple[str, dict[str, str], str]] = [
        (path, {"points": "0"}, "points"),
        (path, {"points": "many"}, "points"),
        (path, {"since": "yesterday"}, "since"),
        (path, {"until": "2026-01-01T00:00:00"}, "until"),
        (path, {"since": iso(D0), "until": iso(D0)}, "since"),
        (path, {"scope": "district:XX"}, "scope"),
        (path, {"scope": "district:*"}, "scope"),
        (path, {"point": "5"}, "point"),
        ("/v1/kpis/latest", {"window": "120"}, "window"),
        ("/v1/kpis/latest", {"kpi": "air.aqi.vm"}, "kpi"),
        ("/v1/kpis/latest", {"scope": "ward:1"}, "scope"),
        ("/v1/alerts", {"state": "open"}, "state"),
        ("/v1/alerts", {"since": "1 hour ago"}, "since"),
        ("/v1/alerts", {"limit": "0"}, "limit"),
    ]
    for route, query, parameter in cases:
        status, body = await get(http, api, route, **query)
        assert status == 400, (route, query, body)
        assert body["error"] == "bad_parameter"
        assert body["parameter"] == parameter, (route, query, body)
        assert body["detail"]
    status, body = await get(http, api, "/v1/kpis/air.aqi.vm/windows")
    assert (status, body["error"], body["parameter"]) == (404, "unknown_kpi", "id")
    assert "air.aqi.vn" in body["detail"]


async def test_latest_windows_from_kpi_latest(api: ReadApi, http: aiohttp.ClientSession) -> None:
    status, body = await get(http, api, "/v1/kpis/latest", kpi=KPI, scope="district:HD,station:*")
    assert status == 200
    by_scope = {i["scope"]: i for i in body["items"]}
    assert set(by_scope) == {SCOPE, "station:HD-AQ-001"}
    last = DAYS * 1440 - 1
    assert by_scope[SCOPE]["value"] == value_at(last)
    assert by_scope[SCOPE]["window_start"] == iso(D0 + timedelta(minutes=last))
    schema = all_schemas()["kpi-window.json"]
    for item in body["items"]:
        jsonschema.validate(item, schema, format_checker=jsonschema.FormatChecker())
    _, one = await get(http, api, "/v1/kpis/latest", kpi=KPI, scope="station:*", limit=1)
    assert one["truncated"] is True and len(one["items"]) == 1


async def test_alerts_by_state_and_since(
    api: ReadApi, http: aiohttp.ClientSession, data: dict[str, Any]
) -> None:
    ours = {a.alert_id for a in data["alerts"].values()}
    status, body = await get(http, api, "/v1/alerts")
    assert status == 200
    active = [i for i in body["items"] if i["alert_id"] in ours]
    assert [i["state"] for i in active] == ["raised", "acknowledged"]  # newest change first
    _, cleared = await get(http, api, "/v1/alerts", state="cleared")
    assert {i["alert_id"] for i in cleared["items"]} & ours == {data["alerts"]["cleared"].alert_id}
    hour_ago = iso(datetime.now(UTC) - timedelta(hours=1))
    _, recent = await get(http, api, "/v1/alerts", state="all", since=hour_ago)
    assert {i["alert_id"] for i in recent["items"]} & ours == {
        data["alerts"]["raised"].alert_id,
        data["alerts"]["cleared"].alert_id,
    }
    schema = all_schemas()["alert.json"]
    for item in recent["items"]:
        jsonschema.validate(item, schema, format_checker=jsonschema.FormatChecker())


async def test_the_queries_use_their_indexes(data: dict[str, Any]) -> None:
    conn = await asyncpg.connect(data["url"])
    try:
        await conn.execute("SET enable_seqscan = off")  # the test tables are small
        d1 = D0 + timedelta(days=1)
        checks = [
            (series.SERIES_SQL["windows"], series.series_args(
                KPI, SCOPE, SeriesPlan("windows", 60, 540, D0, d1)), "kpi_windows_chart"),
            (series.SERIES_SQL["hourly"], series.series_args(
                KPI, SCOPE, SeriesPlan("hourly", 3600, 7200, D0, d1)), "kpi_rollup_hourly_pkey"),
            (series.SERIES_SQL["daily"], series.series_args(
                KPI, SCOPE, SeriesPlan("daily", 86400, 86400, D0, d1)), "kpi_rollup_daily_pkey"),
            (*series.alerts_query(("raised",), None, 10), "alerts_active"),
        ]  # fmt: skip
        for sql, args, index in checks:
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *args))
            assert index in plan, plan
            assert "Seq Scan" not in plan, plan
    finally:
        await conn.close()


async def test_an_unreachable_database_is_a_503_and_the_catalogue_still_answers(
    http: aiohttp.ClientSession,
) -> None:
    settings = ReadApiSettings(database_url="postgresql://postgres@127.0.0.1:9/ioc", readapi_port=0)
    async with ReadApi(settings) as down:
        async with http.get(f"{down.url}/readyz") as r:
            body = await r.json()
            validate("/readyz", r.status, body)
            assert (r.status, body["status"]) == (503, "not_ready")
        async with http.get(f"{down.url}/healthz") as r:  # alive all the same
            validate("/healthz", r.status, await r.json())
        status, body = await get(http, down, "/v1/kpis/latest")
        assert (status, body["error"], body["parameter"]) == (503, "unavailable", None)
        status, _ = await get(http, down, "/v1/kpis")
        assert status == 200
        async with http.get(f"{down.url}/metrics") as r:
            text = await r.text()
        assert "ioc_readapi_db_errors_total 1.0" in text
        assert 'ioc_readapi_request_seconds_count{route="/v1/kpis/latest"} 1.0' in text


async def test_a_statement_over_the_timeout_is_cancelled_and_answered_503(
    data: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    settings = ReadApiSettings(
        database_url=data["url"], readapi_port=0, readapi_statement_timeout_s=0.000_001
    )
    async with ReadApi(settings) as strict:
        status, body = await get(
            http, strict, f"/v1/kpis/{KPI}/windows", scope=SCOPE, since=iso(D0), points=1000
        )
    assert (status, body["error"]) == (503, "unavailable")


async def test_defaults_and_a_repeated_parameter(api: ReadApi, http: aiohttp.ClientSession) -> None:
    # no since/until: the last 24 h at 500 points at most (no data there: no points)
    status, body = await get(http, api, f"/v1/kpis/{KPI}/windows")
    assert (status, body["scope"], body["source"], body["bucket_s"]) == (
        200,
        "city",
        "windows",
        180,
    )
    assert body["items"] == []
    url = f"{api.url}/v1/kpis/{KPI}/windows?points=10&points=20"
    async with http.get(url, headers=AUTH) as r:
        assert r.status == 400
        assert (await r.json())["parameter"] == "points"
