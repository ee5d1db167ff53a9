"""Snapshot frames stay within IOC_WS_SNAPSHOT_MAX_BYTES: pure sizing and ordering here,
the real server over the real database in ``test_ws_server``."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given
from hypothesis import strategies as st

from events.records import AlertRecord
from ws.session import RawItems, encode_frame
from ws.snapshot import alert_snapshot_order, fit_snapshot

HEAD = {"type": "snapshot", "sub": "a", "channel": "alerts", "epoch": "3f9c2a1b7d40", "seq": 7}
T0 = datetime(2026, 12, 4, 3, 0, tzinfo=UTC)


def alert(alert_id: str, severity: str, state: str, minutes: int) -> AlertRecord:
    return AlertRecord(
        alert_id=alert_id,
        rule="air.aqi.high",
        subject="district:TK",
        state=state,  # type: ignore[arg-type]
        severity=severity,  # type: ignore[arg-type]
        level=1,
        title="AQI cao",
        kpi="air.aqi.vn",
        value=160.0,
        threshold=150.0,
        raised_at=T0,
        updated_at=T0 + timedelta(minutes=minutes),
    )


@given(
    st.lists(st.binary(min_size=2, max_size=300).map(lambda b: orjson.dumps(b.hex())), max_size=60),
    st.integers(min_value=100, max_value=6000),
)
def test_the_encoded_frame_never_exceeds_the_budget(items: list[bytes], budget: int) -> None:
    kept = fit_snapshot(HEAD, items, budget)
    frame = {**HEAD, "items": RawItems(items[:kept])}
    if kept < len(items):
        frame["omitted"] = len(items) - kept
    text = encode_frame(frame)
    assert len(text.encode()) <= budget or kept == 0
    assert orjson.loads(text)["items"] == [orjson.loads(i) for i in items[:kept]]
    # As many as fit: one more would have gone over.
    if kept < len(items):
        one_more = {**HEAD, "items": RawItems(items[: kept + 1]), "omitted": len(items) - kept}
        assert len(encode_frame(one_more).encode()) > budget


def test_everything_fits_when_the_budget_allows() -> None:
    items = [orjson.dumps({"n": i}) for i in range(100)]
    assert fit_snapshot(HEAD, items, 1_000_000) == 100
    assert fit_snapshot(HEAD, [], 200) == 0


def test_alerts_most_severe_then_unacknowledged_then_newest_first() -> None:
    alerts = [
        alert("info-new", "info", "raised", 50),
        alert("warn-acked-new", "warning", "acknowledged", 40),
        alert("warn-old", "warning", "raised", 1),
        alert("crit-acked", "critical", "acknowledged", 30),
        alert("warn-new", "warning", "escalated", 20),
        alert("crit-old", "critical", "raised", 2),
    ]
    order = [a.alert_id for a in alert_snapshot_order(alerts)]
    assert order == [
        "crit-old",
        "crit-acked",
        "warn-new",
        "warn-old",
        "warn-acked-new",
        "info-new",
    ]
    # Stable for equal keys, and it does not change its input.
    same = [replace(alerts[0], alert_id=f"x{i}") for i in range(3)]
    assert [a.alert_id for a in alert_snapshot_order(same)] == ["x0", "x1", "x2"]
    assert alerts[0].alert_id == "info-new"
