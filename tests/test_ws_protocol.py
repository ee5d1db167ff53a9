"""Pure tests of the push protocol core: parsing, filters, hub fan-out, session decisions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from events.errors import ProtocolError
from events.records import AlertRecord, KpiRecord
from ws.hub import Hub
from ws.protocol import (
    CLOSE_AUTH_FAILED,
    ERROR_CODES,
    Subscribe,
    parse_client_message,
    pattern_matches,
)
from ws.session import (
    CloseConnection,
    Limits,
    LoadSnapshot,
    PublishCommand,
    SendFrame,
    Session,
    encode_frame,
)

T0 = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)
PROTOCOL_DOC = Path(__file__).resolve().parent.parent / "docs" / "ws-protocol.md"


def documented_error_codes() -> set[str]:
    """The codes of the error table in docs/ws-protocol.md (the contract clients read)."""
    text = PROTOCOL_DOC.read_text(encoding="utf-8")
    table = text.split("| code | when |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE))


TOKENS = {"v": "viewer:wall", "o": "operator:lan"}


def kpi(name: str, scope: str, value: float, minute: int = 0, revision: int = 0) -> KpiRecord:
    start = T0 + timedelta(minutes=minute)
    return KpiRecord(name, scope, start, start + timedelta(seconds=60), value, 1, revision=revision)


def alert(alert_id: str, state: str = "raised", revision: int = 0) -> AlertRecord:
    return AlertRecord(
        alert_id=alert_id,
        rule="flood",
        subject="station:W1",
        state=state,  # type: ignore[arg-type]
        severity="critical",
        level=2,
        title="Mực nước vượt BĐ II",
        kpi="water.level.max",
        value=3.1,
        threshold=3.0,
        raised_at=T0,
        updated_at=T0,
        revision=revision,
    )


def sub(channel: str = "kpi", **kw: object) -> Subscribe:
    defaults: dict[str, object] = {
        "sub": "s",
        "channel": channel,
        "kpis": None,
        "scopes": None,
        "history": (),
        "history_hours": 3.0,
        "resume": None,
    }
    defaults.update(kw)
    return Subscribe(**defaults)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "not_an_object"),
        ('{"op": "dance"}', "unknown_op"),
        ("{}", "unknown_op"),
        ('{"op": "auth"}', "missing_field"),
        ('{"op": "auth", "token": 5}', "bad_field"),
        ('{"op": "subscribe", "sub": "a"}', "missing_field"),
        ('{"op": "subscribe", "sub": "a", "channel": "weather"}', "unknown_channel"),
        ('{"op": "subscribe", "sub": "a b", "channel": "kpi"}', "bad_field"),
        ('{"op": "subscribe", "sub": "a", "channel": "kpi", "kpis": []}', "bad_field"),
        ('{"op": "subscribe", "sub": "a", "channel": "kpi", "scopes": ["d$"]}', "bad_field"),
        ('{"op": "subscribe", "sub": "a", "channel": "kpi", "history_hours": 99}', "bad_field"),
        (
            '{"op": "subscribe", "sub": "a", "channel": "kpi", "resume": {"epoch": "e"}}',
            "bad_field",
        ),
        ('{"op": "subscribe", "sub": "a", "channel": "kpi", "windows_since": "x"}', "bad_field"),
        ('{"op": "subscribe", "sub": "a", "channel": "kpi", "windows_since": -1}', "bad_field"),
        ('{"op": "subscribe", "sub": "a", "channel": "kpi", "window_s": 0}', "bad_field"),
        ('{"op": "subscribe", "sub": "a", "channel": "kpi", "window_s": "60"}', "bad_field"),
        ('{"op": "unsubscribe"}', "missing_field"),
        ('{"op": "ack"}', "missing_field"),
        ('{"op": "assign", "alert_id": "a1"}', "missing_field"),
        (b'{"op": "ping"}', "binary_not_supported"),
        ('{"op": "ping", "pad": "' + "x" * 300 + '"}', "message_too_big"),
    ],
)
def test_every_malformed_frame_has_a_documented_code(raw: str | bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(raw, max_bytes=256)
    assert info.value.code == code
    assert code in documented_error_codes()


def test_the_server_has_exactly_the_documented_error_codes() -> None:
    documented = documented_error_codes()
    assert len(documented) == 17  # the rows of the table, counted in the document
    assert set(ERROR_CODES) == documented


def test_subscribe_parses_filters_history_and_resume() -> None:
    msg = parse_client_message(
        orjson.dumps(
            {
                "op": "subscribe",
                "sub": "k1",
                "channel": "kpi",
                "kpis": ["air.*"],
                "scopes": ["district:*"],
                "history": [{"kpi": "air.aqi.vn", "scope": "city"}],
                "history_hours": 2,
                "resume": {"epoch": "abc", "seq": 7},
                "windows_since": 1_800_000_000_000,
                "window_s": 60,
            }
        ).decode(),
        4096,
    )
    assert isinstance(msg, Subscribe)
    assert msg.window_s == 60
    assert msg.kpis == ("air.*",)
    assert msg.history[0].scope == "city"
    assert msg.resume is not None and msg.resume.seq == 7
    assert msg.windows_since_ms == 1_800_000_000_000


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("district:*", "district:HD", True),
        ("district:*", "city", False),
        ("*", "station:W-1", True),
        ("air.*.avg", "air.pm25.avg", True),
        ("air.*.avg", "air.aqi.vn", False),
        ("city", "city", True),
        ("city", "city2", False),
        ("*:HD", "district:HD", True),
        ("a*a", "a", False),
    ],
)
def test_scope_patterns(pattern: str, value: str, expected: bool) -> None:
    assert pattern_matches(pattern, value) is expected


def test_hub_routes_by_filter_and_coalesces_latest_value() -> None:
    hub = Hub("e1", kpi_replay=100, alert_replay=10, history_points=10)
    c1, c2 = hub.add_client(), hub.add_client()
    s1, _ = hub.subscribe(c1, sub(kpis=("air.aqi.vn",), scopes=("district:*",)))
    s2, _ = hub.subscribe(c2, sub(scopes=("city",)))
    hub.mark_ready(s1)
    hub.mark_ready(s2)
    hub.publish_kpis(
        [
            kpi("air.aqi.vn", "district:HD", 40),
            kpi("air.aqi.vn", "district:HD", 55, revision=1),
            kpi("air.aqi.vn", "city", 50),
            kpi("traffic.speed.avg", "district:HD", 30),
        ],
        now=0.0,
    )
    assert {c.client_id for c in hub.take_dirty()} == {c1.client_id, c2.client_id}
    (frame,) = c1.take_frames(hub.seqs())
    decoded = orjson.loads(frame)
    assert decoded["seq"] == 4
    assert [(i["scope"], i["value"]) for i in decoded["items"]] == [("district:HD", 55.0)]
    (frame2,) = c2.take_frames(hub.seqs())
    assert [i["scope"] for i in orjson.loads(frame2)["items"]] == ["city"]
    assert c1.take_frames(hub.seqs()) == []


def test_a_window_length_filter_keeps_other_lengths_out_of_updates_replay_and_memory() -> None:
    hub = Hub("e1", kpi_replay=100, alert_replay=10, history_points=10)
    client = hub.add_client()
    s, _ = hub.subscribe(client, sub(scopes=("station:*",), window_s=60))
    hub.mark_ready(s)
    quarter = kpi("air.aqi.vn", "station:A", 70)
    quarter = KpiRecord(
        quarter.kpi, quarter.scope, T0, T0 + timedelta(minutes=15), 70.0, 9, revision=1
    )
    hub.publish_kpis([kpi("air.aqi.vn", "station:A", 60), quarter], now=0.0)
    (frame,) = client.take_frames(hub.seqs())
    assert [i["value"] for i in orjson.loads(frame)["items"]] == [60.0]
    assert [r.value for r in hub.memory_latest(s)] == [60.0]
    assert [orjson.loads(i)["value"] for i in hub.replay_for(s, 0)] == [60.0]
    every, _ = hub.subscribe(hub.add_client(), sub(sub="all", scopes=("station:*",)))
    assert sorted(r.value for r in hub.memory_latest(every)) == [60.0, 70.0]


def test_hub_ignores_stale_revisions_and_holds_updates_until_snapshot_sent() -> None:
    hub = Hub("e1", kpi_replay=100, alert_replay=10, history_points=10)
    client = hub.add_client()
    s, seq = hub.subscribe(client, sub())
    assert seq == 0
    hub.publish_kpis([kpi("a", "city", 2, revision=2), kpi("a", "city", 1, revision=1)], now=0)
    assert hub.channels["kpi"].seq == 1  # the older revision was not published
    # The final revision of an earlier window still goes out (charts), without becoming
    # the latest value.
    hub.publish_kpis([kpi("a", "city", 3, minute=1), kpi("a", "city", 9, revision=5)], now=0)
    assert hub.channels["kpi"].seq == 3
    assert [r.value for r in hub.memory_latest(s)] == [3]
    assert [r.value for r in hub.memory_series("a", "city")] == [9, 3]
    assert client.take_frames(hub.seqs()) == []  # snapshot not sent yet
    hub.mark_ready(s)
    assert len(client.take_frames(hub.seqs())) == 1


def test_replay_buffer_resume_and_too_old() -> None:
    hub = Hub("e1", kpi_replay=5, alert_replay=10, history_points=10)
    hub.publish_kpis([kpi("a", "city", i, minute=i) for i in range(8)], now=0)
    channel = hub.channels["kpi"]
    assert channel.seq == 8
    assert channel.can_resume_from(3)  # 4..8 are buffered
    assert not channel.can_resume_from(2)
    assert not channel.can_resume_from(9)

    session = Session(hub, TOKENS, Limits(), preauth_token="v")
    outputs = session.receive(
        '{"op":"subscribe","sub":"r","channel":"kpi","resume":{"epoch":"e1","seq":6}}'
    )
    (resumed,) = outputs
    assert isinstance(resumed, SendFrame)
    frame = orjson.loads(encode_frame(resumed.frame))
    assert frame["type"] == "resumed"
    assert frame["seq"] == 8
    # seq 7 and 8: minutes 6 and 7 of one series (coalescing is per window)
    assert [(i["window_start"], i["value"]) for i in frame["items"]] == [
        ("2026-11-22T04:06:00.000Z", 6),
        ("2026-11-22T04:07:00.000Z", 7),
    ]

    old = session.receive(
        '{"op":"subscribe","sub":"old","channel":"kpi","resume":{"epoch":"e1","seq":1}}'
    )
    assert isinstance(old[0], LoadSnapshot) and old[0].reason == "too_old"
    other = session.receive(
        '{"op":"subscribe","sub":"x","channel":"kpi","resume":{"epoch":"zz","seq":7}}'
    )
    assert isinstance(other[0], LoadSnapshot) and other[0].reason == "other_server"


def test_session_auth_roles_commands_and_limits() -> None:
    hub = Hub("e1", kpi_replay=5, alert_replay=10, history_points=10)
    anon = Session(hub, TOKENS, Limits())
    out = anon.receive('{"op":"subscribe","sub":"a","channel":"kpi"}')
    assert isinstance(out[0], SendFrame) and out[0].frame["code"] == "unauthenticated"
    assert isinstance(out[1], CloseConnection) and out[1].code == CLOSE_AUTH_FAILED

    bad = Session(hub, TOKENS, Limits())
    out = bad.receive('{"op":"auth","token":"nope"}')
    assert out[0].frame["code"] == "auth_failed"  # type: ignore[union-attr]

    viewer = Session(hub, TOKENS, Limits(max_subscriptions=1))
    assert viewer.receive('{"op":"auth","token":"v"}')[0].frame["type"] == "welcome"  # type: ignore[union-attr]
    (refused,) = viewer.receive('{"op":"ack","alert_id":"A1","id":"r1"}')
    assert isinstance(refused, SendFrame)
    assert refused.frame == {
        "type": "error",
        "code": "forbidden",
        "detail": "ack needs role operator",
        "id": "r1",
    }
    assert isinstance(
        viewer.receive('{"op":"subscribe","sub":"a","channel":"alerts"}')[0], LoadSnapshot
    )
    (limit,) = viewer.receive('{"op":"subscribe","sub":"b","channel":"kpi"}')
    assert limit.frame["code"] == "too_many_subscriptions"  # type: ignore[union-attr]
    (bad_json,) = viewer.receive("{")
    assert bad_json.frame["code"] == "bad_json"  # type: ignore[union-attr]
    assert viewer.receive('{"op":"unsubscribe","sub":"zz"}')[0].frame["code"] == (  # type: ignore[union-attr]
        "unknown_subscription"
    )

    operator = Session(hub, TOKENS, Limits(), preauth_token="o")
    (cmd,) = operator.receive('{"op":"assign","alert_id":"A1","assignee":"đội 3"}')
    assert isinstance(cmd, PublishCommand)
    assert (cmd.command.command, cmd.command.by, cmd.command.assignee) == ("assign", "lan", "đội 3")


def test_alert_channel_keeps_latest_revision_and_forgets_nothing_open() -> None:
    hub = Hub("e1", kpi_replay=5, alert_replay=10, history_points=10)
    client = hub.add_client()
    s, _ = hub.subscribe(client, sub("alerts", scopes=("station:*",)))
    hub.mark_ready(s)
    hub.publish_alerts([alert("A1"), alert("A1", "acknowledged", 1), alert("A1", "raised", 0)], 0)
    (frame,) = client.take_frames(hub.seqs())
    items = orjson.loads(frame)["items"]
    assert [(i["alert_id"], i["state"]) for i in items] == [("A1", "acknowledged")]
    assert [a.alert_id for a in hub.memory_alerts(s)] == ["A1"]


def test_slow_client_reasons() -> None:
    hub = Hub("e1", kpi_replay=5, alert_replay=10, history_points=10)
    client = hub.add_client()
    assert client.slow_reason(10.0, max_send_s=1.0, max_pending=2) is None
    client.send_started = 8.0
    assert "send blocked" in (client.slow_reason(10.0, 1.0, 2) or "")
    client.send_started = None
    s, _ = hub.subscribe(client, sub())
    hub.publish_kpis([kpi("a", f"station:{i}", 1) for i in range(3)], now=9.5)
    assert client.slow_reason(10.0, 1.0, 2) is None  # a burst, but the socket takes data
    client.send_started = 9.6
    assert "pending" in (client.slow_reason(10.0, 1.0, 2) or "")
    del s
