"""The wall display in headless Chromium, fed through the real broker (and TimescaleDB)."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from playwright.async_api import async_playwright, expect

from events import topics
from events.flood import WATER_STATIONS
from events.geography import DISTRICTS
from events.records import AlertCommand, AlertRecord, KpiRecord
from simulators.model import build_province
from tests.db_helpers import migrated, open_alerts
from ws import mapdata
from ws.app import WsApp
from ws.settings import WsSettings

pytestmark = pytest.mark.integration
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "wall.png"
# Minutes (ago) with no AQI window in the history: the chart must show a gap there.
AQI_GAP = range(91, 101)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# City-scope values the tiles show (a plausible afternoon in the province).
CITY_VALUES = {
    "air.aqi.vn": 128.0,
    "air.pm25.avg": 46.3,
    "traffic.speed.avg": 31.5,
    "traffic.occupancy.avg": 62.0,
    "traffic.vehicles.sum": 1840.0,
    "traffic.incidents.count": 2.0,
    "water.level.max": 4.1,
    "energy.consumption.sum": 12650.0,
    "energy.load.avg": 758.0,
    "parking.occupancy.rate": 78.4,
    "services.ontime.rate": 96.2,
    "services.online.rate": 71.5,
    "feedback.open.count": 14.0,
    "feedback.closed.count": 9.0,
    "emergency.calls.count": 7.0,
    "emergency.dispatch.p90": 95.0,
    "security.incidents.count": 3.0,
    "security.cyber.count": 1.0,
    "payments.failure.rate": 1.8,
    "payments.transactions.count": 412.0,
    "services.portal.latency.max": 420.0,
    "services.portal.errors.ratio": 0.4,
}


def window(
    kpi: str, scope: str, value: float, minutes_ago: int = 0, revision: int = 1
) -> KpiRecord:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)
    return KpiRecord(kpi, scope, start, start + timedelta(seconds=60), value, 10, revision=revision)


def history_records() -> list[KpiRecord]:
    """Three hours of past windows: the charts get them in the snapshot."""
    records: list[KpiRecord] = []
    for ago in range(180, 0, -1):
        phase = math.sin(ago / 180 * 2 * math.pi)
        if ago not in AQI_GAP:
            records.append(window("air.aqi.vn", "city", 100 + 25 * phase + (ago % 7), ago))
        records.append(window("traffic.speed.avg", "city", 34 - 6 * phase - (ago % 5) / 2, ago))
        records.append(window("water.level.max", "city", 3.2 + 0.9 * (180 - ago) / 180, ago))
        records.append(window("emergency.calls.count", "city", 3 + (ago // 12) % 5, ago))
    return records


def live_records() -> list[KpiRecord]:
    """The current minute, for every tile, district and water station."""
    records = [window(k, "city", v) for k, v in CITY_VALUES.items()]
    aqi_by_rank = [45, 72, 95, 118, 128, 160, 88, 64, 135, 210, 99, 77]
    for i, code in enumerate(DISTRICTS):
        records.append(window("air.aqi.vn", f"district:{code}", aqi_by_rank[i % 12]))
        # Hải Dương city: lanes 90 % occupied (orange), everything else there is normal.
        occupancy = 90 if code == "HD" else 40 + 4 * i
        records.append(window("traffic.occupancy.avg", f"district:{code}", occupancy))
    for i, station in enumerate(WATER_STATIONS.values()):
        lo, mid, _hi = station.alarm_levels
        level = mid + 0.2 if i == 0 else lo - 0.5 + 0.1 * i
        records.append(window("water.level.max", f"station:{station.station_id}", level))
    for i, site in enumerate(build_province().air_stations):
        records.append(window("air.aqi.vn", f"station:{site.site_id}", 60 + 7 * i))
    return records


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def wall(bootstrap_servers: str, module_database_url: str) -> AsyncIterator[WsApp]:
    # A database of its own: the wall shows every open alert the table holds, and the
    # session's other tests leave theirs.
    database_url = await migrated(module_database_url)
    settings = WsSettings(
        bootstrap_servers=bootstrap_servers,
        database_url=database_url,
        ws_port=0,
        ws_tokens={"wall-viewer": "viewer:wall", "trực-ban": "operator:trực ban"},
        ws_alerts_from_beginning=False,
    )
    async with WsApp(settings) as app:
        yield app


async def server_has_consumed(app: WsApp, records: list[KpiRecord], wait_s: float = 15) -> None:
    """Until the newest window of every series of ``records`` is in the server's memory."""
    newest: dict[tuple[str, str], datetime] = {}
    for rec in records:
        key = (rec.kpi, rec.scope)
        newest[key] = max(newest.get(key, rec.window_start), rec.window_start)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while not all(
        any(r.window_start == start for r in app.server.hub.memory_series(kpi, scope))
        for (kpi, scope), start in newest.items()
    ):
        assert loop.time() < deadline, "the push server did not consume the history records"
        await asyncio.sleep(0.05)  # polling interval of the condition above


async def test_wall_fills_live_and_operator_acknowledges(
    wall: WsApp, bootstrap_servers: str, chromium_executable: str
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=5)
    commands = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None)
    await producer.start()
    await commands.start()
    tp = TopicPartition(topics.ALERT_COMMANDS, 0)
    commands.assign([tp])
    await commands.seek_to_end(tp)
    await commands.position(tp)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=chromium_executable, args=CHROMIUM_ARGS
            )
            page = await browser.new_page(viewport={"width": 1920, "height": 1080})
            await page.clock.install()  # real time flows; lets the test jump ahead later
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # Offline: the page (map included: no tiles) asks nothing of any other host.
            requests: list[str] = []
            page.on("request", lambda req: requests.append(req.url))
            history = history_records()
            for rec in history:
                await producer.send(topics.KPI, rec.to_json(), key=rec.scope.encode())
            await producer.flush()
            await server_has_consumed(wall, history)
            await page.goto(wall.server.url + "?token=tr%E1%BB%B1c-ban")
            await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
            await expect(page.locator("#province")).to_have_text("Tỉnh Hải Dương")

            for rec in live_records():
                await producer.send(topics.KPI, rec.to_json(), key=rec.scope.encode())
            await producer.flush()
            aqi_tile = page.locator('[data-tile="aqi"]')
            await expect(aqi_tile.locator(".value")).to_have_text("128")
            await expect(aqi_tile.locator(".badge")).to_have_text("Kém")
            await expect(page.locator('[data-tile="ontime"] .value')).to_have_text("96,2")
            await expect(page.locator('[data-tile="water"] .sub')).to_contain_text("BĐ II")
            await expect(page.locator('#map [data-district="TK"]')).to_have_attribute(
                "data-status", "3"
            )
            await expect(page.locator("#staleness")).to_contain_text("cập nhật")
            # The charts have the last 3 hours from the snapshot (windows that started
            # 179..1 minutes ago; the one 180 minutes ago began before the cut) + the live one,
            # but for the ten minutes without an AQI window.
            points = await page.evaluate("window.iocWall.state().points")
            assert 169 <= points["air.aqi.vn|city"] <= 170  # 169 if a minute turned meanwhile
            # Those ten minutes are nulls in the plotted data: uPlot leaves a gap, no line.
            await page.wait_for_function(
                "window.iocWall.chart('air.aqi.vn')[0].length >= 179", polling=50
            )
            xs, ys = await page.evaluate("window.iocWall.chart('air.aqi.vn')")
            gap = [x for x, y in zip(xs, ys, strict=True) if y is None]
            assert len(gap) == len(AQI_GAP)
            assert gap == [gap[0] + 60 * i for i in range(len(AQI_GAP))]
            assert all(b - a == 60 for a, b in itertools.pairwise(xs))

            # The map: one polygon per district of the shipped GeoJSON, one marker per
            # station, with the station's live value beside it.
            await expect(page.locator("#map path[data-district]")).to_have_count(len(DISTRICTS))
            stations = json.loads(mapdata.STATIONS_FILE.read_text(encoding="utf-8"))
            await expect(page.locator("#map path[data-station]")).to_have_count(
                len(stations["features"])
            )
            first_air = build_province().air_stations[0].site_id
            await expect(page.locator(f'.station-value[data-station="{first_air}"]')).to_have_text(
                "60"
            )
            pl = page.locator('.station-value[data-station="HD-TV-PL"]')
            await expect(pl).to_have_text(
                f"{WATER_STATIONS['HD-TV-PL'].alarm_levels[1] + 0.2:.2f}".replace(".", ",")
                + " m BĐ II"
            )
            await expect(page.locator('#map [data-district="HD"]')).to_have_attribute(
                "data-status", "2"
            )
            # The marker in the colour of its alarm level (BĐ II: orange).
            await expect(page.locator('#map path[data-station="HD-TV-PL"]')).to_have_attribute(
                "fill", "#f97316"
            )
            cl = page.locator('#map [data-district="CL"]')
            # Chí Linh: Phả Lại at BĐ II (orange) before any alert.
            await expect(cl).to_have_attribute("data-status", "2")
            await expect(cl).to_have_attribute("fill", "#f97316")

            alert_id = f"flood-{uuid.uuid4().hex[:8]}"
            station = next(iter(WATER_STATIONS.values()))
            raised = AlertRecord(
                alert_id=alert_id,
                rule="water.level.alarm",
                subject=f"station:{station.station_id}",
                state="raised",
                severity="critical",
                level=2,
                title=f"Mực nước trạm {station.name} vượt BĐ II",
                title_en=f"Water level at {station.name} station above level II",
                kpi="water.level.max",
                value=station.alarm_levels[1] + 0.2,
                threshold=station.alarm_levels[1],
                raised_at=datetime.now(UTC),
                updated_at=datetime.now(UTC),
                window_start=datetime.now(UTC).replace(second=0, microsecond=0),
                on_live_window=True,  # raised before its window was final
            )
            minor = replace(
                raised,
                alert_id=f"aqi-{alert_id}",
                rule="air.aqi.high",
                subject="district:TK",
                severity="warning",
                level=1,
                title="AQI huyện Tứ Kỳ ở mức Xấu",
                title_en=None,  # a record from before title_en: Vietnamese in both languages
                kpi="air.aqi.vn",
                value=210.0,
                threshold=200.0,
                window_start=None,
                on_live_window=False,
            )
            for a in (minor, raised):
                await producer.send_and_wait(topics.ALERTS, a.to_json(), key=a.alert_id.encode())
            item = page.locator(f'[data-alert-id="{alert_id}"]')
            await expect(item).to_be_visible()
            # Ordered by severity: the critical flood alert before the warning.
            await expect(page.locator(f'[data-alert-id="aqi-{alert_id}"]')).to_be_visible()
            order = await page.eval_on_selector_all(
                "#alerts li", "els => els.map(e => e.dataset.alertId)"
            )
            assert order.index(alert_id) < order.index(f"aqi-{alert_id}")
            # Raised on a live window: the wall says so; the other one has no such mark.
            await expect(item.locator(".live")).to_have_text("Tạm tính")
            await expect(item.locator(".live")).to_have_attribute(
                "title", "Báo theo giá trị tạm tính của một cửa sổ chưa chốt"
            )
            await expect(page.locator(f'[data-alert-id="aqi-{alert_id}"] .live')).to_be_hidden()

            # A critical alert on Phả Lại turns its district, Chí Linh, red.
            await expect(cl).to_have_attribute("data-status", "3")
            await expect(cl).to_have_attribute("fill", "#ef4444")
            # Clicking a district filters the alerts to it; the chip (or the same
            # district again) shows them all.
            items = page.locator("#alerts li")
            await cl.click()
            await expect(page.locator("#alert-filter")).to_have_text("Lọc: Thành phố Chí Linh ✕")
            await expect(items).to_have_count(1)
            await expect(item).to_be_visible()
            tk = page.locator('#map [data-district="TK"]')
            await tk.click()
            await expect(items).to_have_count(1)
            await expect(page.locator(f'[data-alert-id="aqi-{alert_id}"]')).to_be_visible()
            await expect(tk).to_have_attribute("data-selected", "true")
            await tk.click()
            await expect(page.locator("#alert-filter")).to_be_hidden()
            await expect(items).to_have_count(2)
            await cl.click()
            await page.locator("#alert-filter").click()
            await expect(items).to_have_count(2)
            await item.locator("button.ack").click()

            cmd = await next_command(commands, alert_id)
            assert (cmd.command, cmd.by) == ("ack", "trực ban")
            # What the alert worker does with the command: echo the new state.
            acked = replace(
                raised,
                state="acknowledged",
                acknowledged_by=cmd.by,
                revision=1,
                updated_at=datetime.now(UTC),
            )
            await producer.send_and_wait(topics.ALERTS, acked.to_json(), key=alert_id.encode())
            await expect(item).to_have_attribute("data-state", "acknowledged")
            await expect(item.locator(".acked")).to_have_text("Đã xác nhận: trực ban")

            # A network drop: the page reconnects by itself and resumes without a gap.
            await page.evaluate("window.iocWall.drop()")
            await expect(page.locator("#conn")).to_have_attribute("data-state", "closed")
            newer = window("air.aqi.vn", "city", 142.0, revision=2)
            await producer.send_and_wait(topics.KPI, newer.to_json(), key=b"city")
            await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
            await expect(aqi_tile.locator(".value")).to_have_text("142")
            state = await page.evaluate("window.iocWall.state()")
            assert state["resumes"] == 3  # city, map and alerts subscriptions: all resumed

            # The picture once every finite CSS animation/transition has finished.
            await page.wait_for_function(
                """() => document.getAnimations().every(a =>
                    a.playState !== "running" ||
                    a.effect.getComputedTiming().iterations === Infinity)""",
                polling=50,
            )
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "wall.png"))
            # The picture in the README (the wall with live data on its map), rewritten
            # only when asked: IOC_UPDATE_SCREENSHOT=1 (a test run leaves the tree clean).
            if os.environ.get("IOC_UPDATE_SCREENSHOT") == "1":
                await page.screenshot(path=str(SCREENSHOT))

            await page.locator("#lang").click()
            await expect(page.locator(".subtitle")).to_have_text("Intelligent Operations Center")
            await expect(aqi_tile.locator(".badge")).to_have_text("Poor")
            # Alert titles in English where the record has one, else the Vietnamese title.
            await expect(item.locator(".title")).to_have_text(raised.title_en or "")
            await expect(page.locator(f'[data-alert-id="aqi-{alert_id}"] .title')).to_have_text(
                minor.title
            )
            await expect(page.locator(".map-note")).to_contain_text("Approximate boundaries")
            # Data stops: the header says how old the last update is.
            await page.clock.fast_forward("02:30")
            await expect(page.locator("#staleness")).to_have_text("last update 2 min ago")
            await expect(page.locator("#staleness")).to_have_class("staleness stale")
            assert errors == []
            host = wall.server.url.split("//", 1)[1]
            assert requests and all(u.split("//", 1)[1].startswith(host) for u in requests)
            await browser.close()
    finally:
        await commands.stop()
        await producer.stop()


async def next_command(consumer: AIOKafkaConsumer, alert_id: str) -> AlertCommand:
    loop = asyncio.get_running_loop()
    end = loop.time() + 15
    while loop.time() < end:
        for records in (await consumer.getmany(timeout_ms=200)).values():
            for r in records:
                cmd = AlertCommand.from_json(r.value)
                if cmd.alert_id == alert_id:
                    return cmd
    raise AssertionError(f"no command for {alert_id} on {topics.ALERT_COMMANDS}")


@pytest.mark.parametrize("snapshot_max_bytes", [4096, 1_000_000])
async def test_wall_says_how_many_alerts_it_does_not_show(
    bootstrap_servers: str, database_url: str, chromium_executable: str, snapshot_max_bytes: int
) -> None:
    """Left out of a bounded snapshot (room for a few alerts only), or beyond the 100 the
    list shows: either way the operator reads how many more are open."""
    tag = uuid.uuid4().hex[:6].upper()
    now = datetime.now(UTC)
    many = [
        AlertRecord(
            alert_id=f"W{tag}-{i:02d}",
            rule="air.aqi.high",
            subject=f"district:{tag}",
            state="raised",
            severity="warning",
            level=1,
            title=f"AQI cao {i}",
            kpi="air.aqi.vn",
            value=160.0,
            threshold=150.0,
            raised_at=now,
            updated_at=now + timedelta(seconds=i),
        )
        for i in range(150)
    ]
    async with open_alerts(database_url, many) as conn:
        settings = WsSettings(
            bootstrap_servers=bootstrap_servers,
            database_url=database_url,
            ws_port=0,
            ws_tokens={"wall-viewer": "viewer:wall"},
            ws_alerts_from_beginning=False,
            ws_snapshot_max_bytes=snapshot_max_bytes,
        )
        async with WsApp(settings) as app, async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=chromium_executable, args=CHROMIUM_ARGS
            )
            page = await browser.new_page(viewport={"width": 1920, "height": 1080})
            await page.goto(app.server.url)
            note = page.locator("#alerts-omitted")
            await expect(note).to_be_visible()
            shown = await page.locator("#alerts li").count()
            open_now = await conn.fetchval("SELECT count(*) FROM alerts WHERE state <> 'cleared'")
            assert 0 < shown < open_now
            assert shown < 100 if snapshot_max_bytes == 4096 else shown == 100
            await expect(note).to_have_text(
                f"Còn {open_now - shown} cảnh báo ít nghiêm trọng hơn chưa hiển thị"
            )
            await browser.close()
