"""The push server with real clients, the real broker and the real TimescaleDB."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from events import health, topics
from events.records import AlertCommand, AlertRecord, KpiRecord
from ioc.services import broker
from storage import writers
from storage.rows import alert_row, kpi_row
from tests.db_helpers import migrated, open_alerts
from tests.private_broker import free_port, private_broker
from tests.waiting import until
from ws.app import WsApp
from ws.protocol import CLOSE_AUTH_FAILED, CLOSE_AUTH_TIMEOUT, CLOSE_SLOW_CLIENT
from ws.settings import WsSettings

pytestmark = pytest.mark.integration
TIMEOUT = 10.0


def minute(offset: int = 0) -> datetime:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now + timedelta(minutes=offset)


def kpi(name: str, scope: str, value: float, offset: int = 0, revision: int = 0) -> KpiRecord:
    start = minute(offset)
    return KpiRecord(name, scope, start, start + timedelta(seconds=60), value, 1, revision=revision)


def alert(alert_id: str, subject: str, state: str = "raised", revision: int = 0) -> AlertRecord:
    return AlertRecord(
        alert_id=alert_id,
        rule="water.level.alarm",
        subject=subject,
        state=state,  # type: ignore[arg-type]
        severity="critical",
        level=3,
        title="Mực nước vượt BĐ III",
        kpi="water.level.max",
        value=5.2,
        threshold=5.0,
        raised_at=minute(),
        updated_at=datetime.now(UTC),
        revision=revision,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database(database_url: str) -> str:
    await migrated(database_url)
    return database_url


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def app(bootstrap_servers: str, database: str) -> AsyncIterator[WsApp]:
    settings = WsSettings(
        bootstrap_servers=bootstrap_servers,
        database_url=database,
        ws_port=0,
        ws_tick_s=0.05,
        ws_slow_send_s=1.0,
        ws_max_pending=300,
        ws_kpi_replay=200,
        ws_auth_timeout_s=0.5,
        ws_max_message_bytes=2048,
        ws_max_subscriptions=4,
        ws_tokens={"view": "viewer:wall", "op": "operator:lan"},
    )
    async with WsApp(settings) as wsapp:
        yield wsapp


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def producer(bootstrap_servers: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=5)
    await p.start()
    yield p
    await p.stop()


async def publish_kpis(producer: AIOKafkaProducer, records: list[KpiRecord]) -> None:
    # Keyed like the streams engine does, so one series stays in one partition (ordered).
    for rec in records:
        await producer.send(topics.KPI, rec.to_json(), key=rec.scope.encode())
    await producer.flush()


def ws_url(app: WsApp, query: str = "") -> str:
    return f"ws://127.0.0.1:{app.server.port}/ws{query}"


async def recv(ws: ClientConnection, wait: float = TIMEOUT) -> dict[str, Any]:
    frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), wait))
    return frame


async def authed(app: WsApp, token: str = "view") -> ClientConnection:
    ws = await connect(ws_url(app))
    await ws.send(orjson.dumps({"op": "auth", "token": token}).decode())
    welcome = await recv(ws)
    assert welcome["type"] == "welcome", welcome
    return ws


async def server_holds(app: WsApp, records: list[KpiRecord], wait: float = TIMEOUT) -> None:
    """Until the server has consumed ``records`` (each is its series' latest in memory)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + wait

    def held(rec: KpiRecord) -> bool:
        return any(
            (r.window_start, r.revision, r.value) == (rec.window_start, rec.revision, rec.value)
            for r in app.server.hub.memory_series(rec.kpi, rec.scope)
        )

    while not all(held(r) for r in records):
        assert loop.time() < end, "the push server did not consume the records"
        await asyncio.sleep(0.02)  # polling interval of the condition above


async def subscribe(ws: ClientConnection, **spec: Any) -> dict[str, Any]:
    await ws.send(orjson.dumps({"op": "subscribe", **spec}).decode())
    return await recv(ws)


async def updates_until(
    ws: ClientConnection, done: Any, wait: float = TIMEOUT
) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + wait
    while not done(frames):
        frame = await recv(ws, max(0.01, end - loop.time()))
        assert frame["type"] == "update", frame
        frames.append(frame)
    return frames


async def test_http_page_assets_health_and_metrics(app: WsApp) -> None:
    base = app.server.url
    async with aiohttp.ClientSession() as http:
        for path, needle in [
            ("", "wall.js"),
            ("static/wall.js", "WebSocket"),
            ("static/uplot.iife.min.js", "uPlot"),
            ("static/leaflet.js", "Leaflet 1.9.4"),
            ("static/districts.geojson", '"approximate": true'),
            ("static/stations.geojson", "HD-TV-PL"),
            ("healthz", '"alive"'),
            ("readyz", '"ready"'),
            ("metrics", "ioc_ws_clients "),
            ("metrics", "ioc_ws_frames_sent_total "),
            ("config.json", "Hải Dương"),
        ]:
            async with http.get(base + path) as resp:
                assert resp.status == 200, path
                assert needle in await resp.text(), path
        for path in (health.HEALTHZ, health.READYZ):
            async with http.get(base + path.lstrip("/")) as resp:
                health.validate(path, resp.status, await resp.json(content_type=None))
        async with http.get(base + "static/../settings.py") as resp:
            assert resp.status == 404
        async with http.get(base + "nothing-here") as resp:
            assert resp.status == 404


async def test_origin_allow_list_and_token_in_query(app: WsApp) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(ws_url(app), origin="http://evil.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as info:
        await connect(ws_url(app, "?token=wrong"))
    assert info.value.response.status_code == 401
    own = f"http://127.0.0.1:{app.server.port}"
    async with connect(ws_url(app, "?token=op"), origin=own) as ws:  # type: ignore[arg-type]
        welcome = await recv(ws)
        assert (welcome["type"], welcome["role"], welcome["user"]) == ("welcome", "operator", "lan")


async def test_auth_failures_close_the_connection(app: WsApp) -> None:
    async with connect(ws_url(app)) as ws:
        await ws.send('{"op":"auth","token":"guess"}')
        assert (await recv(ws))["code"] == "auth_failed"
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_AUTH_FAILED
    async with connect(ws_url(app)) as ws:
        await ws.send('{"op":"subscribe","sub":"a","channel":"kpi"}')
        assert (await recv(ws))["code"] == "unauthenticated"
        with pytest.raises(ConnectionClosed):
            await recv(ws)
    async with connect(ws_url(app)) as ws:  # says nothing
        assert (await recv(ws))["code"] == "unauthenticated"
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_AUTH_TIMEOUT


async def test_malformed_frames_get_error_frames_and_the_connection_survives(app: WsApp) -> None:
    ws = await authed(app)
    cases = [
        ("not json", "bad_json"),
        ("42", "not_an_object"),
        ('{"op":"teleport"}', "unknown_op"),
        ('{"op":"subscribe","sub":"a","channel":"weather"}', "unknown_channel"),
        ('{"op":"subscribe","sub":"a","channel":"kpi","scopes":"city"}', "bad_field"),
        ('{"op":"unsubscribe","sub":"none"}', "unknown_subscription"),
        ('{"op":"auth","token":"view"}', "already_authenticated"),
    ]
    for raw, code in cases:
        await ws.send(raw)
        frame = await recv(ws)
        assert (frame["type"], frame["code"]) == ("error", code), raw
    await ws.send(b"\x00binary")
    assert (await recv(ws))["code"] == "binary_not_supported"
    for i in range(4):
        assert (await subscribe(ws, sub=f"s{i}", channel="alerts"))["type"] == "snapshot"
    assert (await subscribe(ws, sub="s9", channel="alerts"))["code"] == "too_many_subscriptions"
    await ws.send('{"op":"ping","id":"p1"}')
    assert (await recv(ws))["id"] == "p1"
    await ws.send('{"op":"ping","pad":"' + "x" * 4000 + '"}')  # over the 2 KiB limit
    with pytest.raises(ConnectionClosed) as closed:
        await recv(ws)
    assert closed.value.sent is not None and closed.value.sent.code == 1009


async def test_snapshot_from_database_and_stream_then_ordered_filtered_updates(
    app: WsApp, database: str, producer: AIOKafkaProducer
) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    scope_a, scope_b = f"district:{tag}A", f"district:{tag}B"
    # History only in the database (as the storage sink would have written it).
    conn = await asyncpg.connect(database)
    try:
        stored = [kpi("air.aqi.vn", scope_a, 40 + i, offset=i - 5, revision=1) for i in range(5)]
        async with conn.transaction():
            await writers.KPI_WINDOWS.prepare(conn)
            await writers.KPI_WINDOWS.write(conn, [kpi_row(r) for r in stored])
    finally:
        await conn.close()
    # The current window only on the stream (the sink lags).
    current = kpi("air.aqi.vn", scope_a, 77)
    await publish_kpis(producer, [current])
    await server_holds(app, [current])

    ws = await authed(app)
    snap = await subscribe(
        ws,
        sub="k",
        channel="kpi",
        kpis=["air.aqi.vn", "traffic.speed.avg"],
        scopes=[f"district:{tag}A*"],
        history=[{"kpi": "air.aqi.vn", "scope": scope_a}],
    )
    assert snap["type"] == "snapshot"
    assert [(i["scope"], i["value"]) for i in snap["items"]] == [(scope_a, 77.0)]
    (hist,) = snap["history"]
    assert [p[1] for p in hist["points"]] == [40.0, 41.0, 42.0, 43.0, 44.0, 77.0]

    wanted = [kpi("air.aqi.vn", scope_a, 100 + i, revision=i + 1) for i in range(20)]
    noise = [kpi("air.aqi.vn", scope_b, 1), kpi("water.level.max", scope_a, 2)]
    await publish_kpis(producer, [*noise, *wanted[:10], *noise, *wanted[10:]])
    frames = await updates_until(ws, lambda fs: fs and fs[-1]["items"][-1]["value"] == 119.0)
    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] > snap["seq"]
    values = [i["value"] for f in frames for i in f["items"]]
    assert values == sorted(values)  # in order; coalescing may skip, never reorder
    assert {(i["kpi"], i["scope"]) for f in frames for i in f["items"]} == {("air.aqi.vn", scope_a)}
    await ws.close()


async def test_resume_without_gaps_and_resnapshot_when_too_old(
    app: WsApp, producer: AIOKafkaProducer
) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    scopes = [f"station:{tag}-{i}" for i in range(3)]
    spec = {"sub": "r", "channel": "kpi", "scopes": [f"station:{tag}-*"]}
    ws = await authed(app)
    snap = await subscribe(ws, **spec)
    epoch = snap["epoch"]
    await publish_kpis(producer, [kpi("water.level.max", s, 1.0) for s in scopes])
    frames = await updates_until(ws, lambda fs: sum(len(f["items"]) for f in fs) >= 3)
    last_seq = frames[-1]["seq"]
    await ws.close()

    # While the client is away: a new value for two of the three stations.
    newer = [kpi("water.level.max", s, 2.0, revision=1) for s in scopes[:2]]
    await publish_kpis(producer, newer)
    await server_holds(app, newer)
    ws = await authed(app)
    resumed = await subscribe(ws, **spec, resume={"epoch": epoch, "seq": last_seq})
    assert resumed["type"] == "resumed"
    assert sorted((i["scope"], i["value"]) for i in resumed["items"]) == [
        (scopes[0], 2.0),
        (scopes[1], 2.0),
    ]
    # ...and live updates continue after the resume point.
    await publish_kpis(producer, [kpi("water.level.max", scopes[2], 3.0, revision=1)])
    (update,) = await updates_until(ws, lambda fs: len(fs) >= 1)
    assert update["seq"] > resumed["seq"]
    assert [(i["scope"], i["value"]) for i in update["items"]] == [(scopes[2], 3.0)]

    # More records than the replay buffer holds (200) pass: resume is refused with a snapshot.
    await publish_kpis(
        producer, [kpi("traffic.speed.avg", f"station:{tag}-X{i}", i) for i in range(250)]
    )
    await updates_until(ws, lambda fs: fs and fs[-1]["seq"] >= update["seq"] + 250)
    again = await subscribe(ws, **{**spec, "sub": "r2"}, resume={"epoch": epoch, "seq": last_seq})
    assert (again["type"], again["resync"]) == ("snapshot", "too_old")
    assert {(i["scope"], i["value"]) for i in again["items"]} >= {(scopes[2], 3.0)}
    other = await subscribe(ws, **{**spec, "sub": "r3"}, resume={"epoch": "elsewhere", "seq": 1})
    assert (other["type"], other["resync"]) == ("snapshot", "other_server")
    await ws.close()


async def drain(ws: ClientConnection) -> None:
    while True:
        await asyncio.wait_for(ws.recv(), TIMEOUT)


async def test_slow_client_is_disconnected_with_a_reason_and_others_unaffected(
    app: WsApp, producer: AIOKafkaProducer
) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    spec = {"sub": "flood", "channel": "kpi", "scopes": [f"station:{tag}-*"]}
    # A client that stops reading: tiny receive buffer, websockets stops reading at 1 frame.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", app.server.port))
    slow = await connect(ws_url(app, "?token=view"), sock=sock, max_queue=1)
    assert (await recv(slow))["type"] == "welcome"
    assert (await subscribe(slow, **spec))["type"] == "snapshot"
    fast = await authed(app)
    assert (await subscribe(fast, **spec))["type"] == "snapshot"

    before = app.server.metrics.slow._value.get()
    pad = "x" * 40  # long scope names make big frames quickly
    # A KPI no wall subscribes to by station: these 24,000 records stay on the shared
    # ioc.kpi (and reach the session database through the storage tests' sinks), where
    # a wall test's map snapshot would otherwise meet them.
    name = "energy.load.avg"
    for rnd in range(8):
        await publish_kpis(
            producer,
            [kpi(name, f"station:{tag}-{pad}{i}", rnd, revision=rnd) for i in range(3000)],
        )
        # The fast client keeps up and sees every round's latest values.
        await updates_until(
            fast, lambda fs, r=rnd: any(i["value"] == r for f in fs[-1:] for i in f["items"])
        )
        if app.server.metrics.slow._value.get() > before:
            break
    assert app.server.metrics.slow._value.get() == before + 1
    # Reading now drains what was queued; the last thing is the close frame with the reason.
    with pytest.raises(ConnectionClosed) as closed:
        await drain(slow)
    rcvd = closed.value.rcvd
    assert rcvd is not None and rcvd.code == CLOSE_SLOW_CLIENT
    assert rcvd.reason.startswith("slow client")
    # Our own socket: release it now, not whenever the garbage collector finds it (an
    # unclosed socket collected during a later test fails that test's warnings check).
    slow.transport.abort()
    sock.close()
    await fast.send('{"op":"ping"}')
    while (await recv(fast))["type"] != "pong":
        pass
    await fast.close()


async def test_operator_ack_goes_to_the_broker_viewer_is_refused(
    app: WsApp, bootstrap_servers: str, producer: AIOKafkaProducer
) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(topics.ALERT_COMMANDS, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        tag = uuid.uuid4().hex[:8]
        viewer = await authed(app, "view")
        operator = await authed(app, "op")
        await viewer.send(orjson.dumps({"op": "ack", "alert_id": f"V{tag}", "id": "a1"}).decode())
        refused = await recv(viewer)
        assert (refused["code"], refused["id"]) == ("forbidden", "a1")
        await operator.send(
            orjson.dumps(
                {"op": "ack", "alert_id": f"O{tag}", "id": "a2", "note": "đã cử đội"}
            ).decode()
        )
        accepted = await recv(operator)
        assert (accepted["type"], accepted["alert_id"], accepted["id"]) == (
            "command_accepted",
            f"O{tag}",
            "a2",
        )
        seen: list[AlertCommand] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + TIMEOUT
        while not any(c.alert_id == f"O{tag}" for c in seen) and loop.time() < end:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                seen.extend(AlertCommand.from_json(r.value) for r in records)
        (cmd,) = [c for c in seen if c.alert_id.endswith(tag)]  # nothing from the viewer
        assert (cmd.command, cmd.by, cmd.note, cmd.command_id) == (
            "ack",
            "lan",
            "đã cử đội",
            accepted["command_id"],
        )
        # The alert worker's echo on ioc.alerts reaches alert subscribers.
        assert (await subscribe(viewer, sub="al", channel="alerts"))["type"] == "snapshot"
        echo = alert(f"O{tag}", "district:HD", "acknowledged", revision=1)
        await producer.send_and_wait(topics.ALERTS, echo.to_json(), key=echo.alert_id.encode())
        (update,) = await updates_until(viewer, lambda fs: len(fs) >= 1)
        (item,) = update["items"]
        assert (item["alert_id"], item["state"]) == (f"O{tag}", "acknowledged")
        await viewer.close()
        await operator.close()
    finally:
        await consumer.stop()


async def test_alert_snapshot_merges_database_and_stream(app: WsApp, database: str) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    conn = await asyncpg.connect(database)
    try:
        async with conn.transaction():
            await writers.ALERTS.prepare(conn)
            await writers.ALERTS.write(conn, [alert_row(alert(f"DB{tag}", f"district:{tag}"))])
    finally:
        await conn.close()
    ws = await authed(app)
    snap = await subscribe(ws, sub="a", channel="alerts", scopes=[f"district:{tag}"])
    assert [i["alert_id"] for i in snap["items"]] == [f"DB{tag}"]
    await ws.close()
    conn = await asyncpg.connect(database)
    try:  # clear it again: other tests' walls share this database
        async with conn.transaction():
            await writers.ALERTS.prepare(conn)
            cleared = alert(f"DB{tag}", f"district:{tag}", "cleared", revision=1)
            await writers.ALERTS.write(conn, [alert_row(cleared)])
    finally:
        await conn.close()


async def test_snapshot_unavailable_when_the_database_is_unreachable_then_memory_snapshot(
    bootstrap_servers: str, producer: AIOKafkaProducer
) -> None:
    # A database address where nothing listens: every snapshot read fails.
    settings = WsSettings(
        bootstrap_servers=bootstrap_servers,
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/nothing",
        ws_port=0,
        ws_tick_s=0.05,
        ws_tokens={"view": "viewer:wall"},
    )
    tag = uuid.uuid4().hex[:6].upper()
    scope = f"district:{tag}"
    async with WsApp(settings) as own:
        ws = await authed(own)
        # A first subscription shows when the server has the record in memory.
        first = await subscribe(ws, sub="live", channel="kpi", scopes=[scope])
        assert (first["type"], first["code"]) == ("error", "snapshot_unavailable")
        assert "127.0.0.1" in first["detail"]  # psycopg's reason names the address
        empty = await recv(ws)
        assert (empty["type"], empty["items"], empty["history"]) == ("snapshot", [], [])
        await publish_kpis(producer, [kpi("air.aqi.vn", scope, 88.0)])
        await updates_until(ws, lambda fs: any(i["value"] == 88.0 for f in fs for i in f["items"]))
        # A new subscription: the error frame first, then the snapshot from memory alone.
        error = await subscribe(
            ws,
            sub="k",
            channel="kpi",
            scopes=[scope],
            history=[{"kpi": "air.aqi.vn", "scope": scope}],
        )
        assert (error["type"], error["code"]) == ("error", "snapshot_unavailable")
        snap = await recv(ws)
        assert (snap["type"], snap["sub"]) == ("snapshot", "k")
        assert [(i["kpi"], i["scope"], i["value"]) for i in snap["items"]] == [
            ("air.aqi.vn", scope, 88.0)
        ]
        assert snap["history"] == []
        # ...and live updates follow normally.
        await publish_kpis(producer, [kpi("air.aqi.vn", scope, 89.0, revision=1)])
        frames = await updates_until(
            ws, lambda fs: any(i["value"] == 89.0 for f in fs for i in f["items"])
        )
        assert {f["channel"] for f in frames} == {"kpi"}
        metrics = own.server.metrics.errors.labels("snapshot_unavailable")._value.get()
        assert metrics == 2
        await ws.close()


async def test_command_failed_when_the_broker_cannot_take_the_command(tmp_path: Path) -> None:
    with private_broker(tmp_path) as own_broker:
        settings = WsSettings(
            bootstrap_servers=own_broker.bootstrap_servers,
            ws_port=0,
            ws_tokens={"op": "operator:lan"},
        )
        async with WsApp(settings) as own:
            operator = await authed(own, "op")
            await operator.send('{"op":"ack","alert_id":"A-up","id":"c1"}')
            accepted = await recv(operator)
            assert (accepted["type"], accepted["id"]) == ("command_accepted", "c1")
            broker.down(own_broker)  # the broker goes away; the server keeps running
            await operator.send('{"op":"ack","alert_id":"A-down","id":"c2"}')
            # aiokafka gives up on the unacknowledged send after its request timeout (40 s)
            failed = await recv(operator, wait=120)
            assert (failed["type"], failed["code"], failed["id"]) == (
                "error",
                "command_failed",
                "c2",
            )
            # The connection stays open.
            await operator.send('{"op":"ping","id":"p"}')
            assert (await recv(operator))["type"] == "pong"
            assert own.server.metrics.errors.labels("command_failed")._value.get() == 1
            await operator.close()
            broker.up(own_broker)  # back, so that the app's clients stop cleanly


async def test_a_large_alert_snapshot_is_bounded_most_severe_first_and_says_how_many_more(
    bootstrap_servers: str, database: str
) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    subject = f"district:{tag}"
    many = [
        replace(
            alert(f"B{tag}-{i:03d}", subject),
            severity="critical" if i % 10 == 0 else "warning",
            updated_at=datetime.now(UTC) + timedelta(seconds=i),
        )
        for i in range(300)
    ]
    async with open_alerts(database, many):
        settings = WsSettings(
            bootstrap_servers=bootstrap_servers,
            database_url=database,
            ws_port=0,
            ws_tokens={"view": "viewer:wall"},
            ws_snapshot_max_bytes=30_000,
            ws_alerts_from_beginning=False,
        )
        # A client with a small frame limit (python-websockets' default is 1 MiB).
        async with WsApp(settings) as own, connect(ws_url(own), max_size=30_000) as ws:
            await ws.send('{"op":"auth","token":"view"}')
            assert (await recv(ws))["type"] == "welcome"
            await ws.send(
                orjson.dumps(
                    {"op": "subscribe", "sub": "a", "channel": "alerts", "scopes": [subject]}
                ).decode()
            )
            raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert len(raw) <= 30_000
            snap = orjson.loads(raw)
            ids = [i["alert_id"] for i in snap["items"]]
            assert 0 < len(ids) < 300 and snap["omitted"] == 300 - len(ids)
            # The 30 critical ones first, newest first; then the newest warnings.
            crit = [a.alert_id for a in many if a.severity == "critical"][::-1]
            warn = [a.alert_id for a in many if a.severity == "warning"][::-1]
            assert ids == (crit + warn)[: len(ids)]
            omitted = own.server.metrics.omitted._value.get()
            assert omitted == 300 - len(ids)


async def test_a_restarted_server_resyncs_with_every_window_since_the_clients_oldest(
    bootstrap_servers: str, database: str, producer: AIOKafkaProducer
) -> None:
    """A client of a server that restarted gets a snapshot (`other_server`); with
    `windows_since` it carries every window from then on, not only the newest: the final
    revisions published while the server was down (some only in the database, some only
    on the stream, read back from `IOC_WS_KPI_REWIND_S` ago)."""
    tag = uuid.uuid4().hex[:6].upper()
    scope = f"station:{tag}"
    stored = [
        replace(kpi("air.pm25.avg", scope, 10 + i, offset=i - 4, revision=3), final=True)
        for i in range(2)
    ]
    conn = await asyncpg.connect(database)
    try:
        async with conn.transaction():
            await writers.KPI_WINDOWS.prepare(conn)
            await writers.KPI_WINDOWS.write(conn, [kpi_row(r) for r in stored])
    finally:
        await conn.close()
    streamed = [
        replace(kpi("air.pm25.avg", scope, 12, offset=-2, revision=4), final=True),
        kpi("air.pm25.avg", scope, 13, offset=-1, revision=1),
    ]
    await publish_kpis(producer, streamed)  # while no server runs
    settings = WsSettings(bootstrap_servers=bootstrap_servers, database_url=database, ws_port=0)
    async with WsApp(settings) as restarted:
        await server_holds(restarted, streamed)
        ws = await authed(restarted, "wall-viewer")
        spec = {"channel": "kpi", "kpis": ["air.pm25.avg"], "scopes": [scope]}
        gone = {"epoch": "before", "seq": 7}
        since = int(stored[0].window_start.timestamp() * 1000)
        snap = await subscribe(ws, sub="all", **spec, resume=gone, windows_since=since)
        assert (snap["type"], snap["resync"]) == ("snapshot", "other_server")
        got = [(i["value"], i["final"]) for i in snap["items"]]
        assert got == [(10.0, True), (11.0, True), (12.0, True), (13.0, False)]
        newest = await subscribe(ws, sub="newest", **spec, resume=gone)
        assert [i["value"] for i in newest["items"]] == [13.0]
        await ws.close()


async def test_no_websocket_before_the_stream_is_read() -> None:
    """Until the bridge has its partitions the handshake is refused (503): a snapshot
    taken earlier could miss what is published before the stream is read."""
    from ws.server import PushServer
    from ws.snapshot import NoSnapshotSource

    async def no_commands(_command: AlertCommand) -> None:
        return None

    server = PushServer(WsSettings(ws_port=0), NoSnapshotSource(), no_commands)
    await server.start()
    try:
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"ws://127.0.0.1:{server.port}/ws")
        assert refused.value.response.status_code == 503
        base = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/readyz") as resp:  # not ready, and says why
                body = await resp.json(content_type=None)
                health.validate(health.READYZ, resp.status, body)
            assert resp.status == 503 and not body["checks"]["consumer"]["ok"]
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200  # alive all the same
        server.consumer_ready = True
        ws = await connect(f"ws://127.0.0.1:{server.port}/ws")
        await ws.close()
    finally:
        await server.stop()


async def test_chaos_clients_resume_through_a_restart_with_every_final_window(
    bootstrap_servers: str, database: str, producer: AIOKafkaProducer
) -> None:
    """The clients of `ioc chaos`' push server row, on a real server restarted on its
    port: windows that became final while it was down (published then, or only in the
    database) reach all 50 clients; none holds a gap at the end."""
    from chaos.pushclients import Fleet, gaps

    tag = uuid.uuid4().hex[:6].upper()
    stations = [f"{tag}-{i}" for i in range(3)]
    base = minute()

    def window(station: str, offset: int, count: int, final: bool) -> KpiRecord:
        start = base + timedelta(minutes=offset)
        return KpiRecord(
            "air.pm25.avg",
            f"station:{station}",
            start,
            start + timedelta(seconds=60),
            float(count),
            count,
            final=final,
            revision=count,
        )

    settings = WsSettings(bootstrap_servers=bootstrap_servers, database_url=database, ws_port=0)
    first = WsApp(settings)
    await first.start()
    port = first.server.port
    fleet = Fleet(f"ws://127.0.0.1:{port}/ws?token=wall-viewer", stations, 50, seed=1)
    try:
        await fleet.start(within_s=30)
        await publish_kpis(producer, [window(s, o, 1, False) for s in stations for o in (-6, -5)])
        await server_holds(first, [window(s, -5, 1, False) for s in stations])
        # Every client holds both open windows before the restart: a client resyncs from
        # its oldest open window, and one that never saw the -6 window watches from its
        # first subscription minus a 5-minute margin, which starts after it.
        opened = {
            (s, int((base + timedelta(minutes=o)).timestamp() * 1000))
            for s in stations
            for o in (-6, -5)
        }
        await until(
            lambda: all(opened <= st.windows.keys() for st in fleet.states),
            lambda: [len(opened - st.windows.keys()) for st in fleet.states],
            TIMEOUT,
        )
        await first.stop()
        down_at = time.monotonic()
        # While the server is down: finals on the stream, and some only in the database.
        await publish_kpis(producer, [window(s, -6, 4, True) for s in stations])
        await publish_kpis(producer, [window(s, -4, 1, False) for s in stations])
        conn = await asyncpg.connect(database)
        try:
            async with conn.transaction():
                await writers.KPI_WINDOWS.prepare(conn)
                only_db = [kpi_row(window(s, -5, 3, True)) for s in stations]
                await writers.KPI_WINDOWS.write(conn, only_db)
        finally:
            await conn.close()
        second = WsApp(settings.model_copy(update={"ws_port": port}))
        await second.start()
        try:
            await fleet.wait_ready(down_at, 30)
            await publish_kpis(producer, [window(s, -4, 2, True) for s in stations])
            finals = {
                (s, int((base + timedelta(minutes=o)).timestamp() * 1000)): n
                for s in stations
                for o, n in ((-6, 4), (-5, 3), (-4, 2))
            }
            await until(
                lambda: gaps(fleet.states, finals).ok,
                lambda: gaps(fleet.states, finals).details,
                TIMEOUT,
            )
            assert all(st.frames["resync:other_server"] == 2 for st in fleet.states)
        finally:
            await second.stop()
    finally:
        await fleet.stop()
