"""`ioc chaos`: the ledger comparison (pure), then the short run on real services.

The integration test starts a broker and Mosquitto of its own (free ports, so the exact
counts cannot be disturbed by other tests' events), uses the session's database, and
runs the CI plan (`ioc chaos --short`): the stream worker killed with SIGKILL twice and
storage once, with duplicates, out-of-order and too-late events all along.
"""

from __future__ import annotations

import random
import re
import socket
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chaos.faults import RestartPush
from chaos.ledger import Ledger, Observed, Planned, compare
from chaos.plans import plan
from chaos.pushclients import ClientState, gaps
from chaos.report import HEADER, markdown
from chaos.run import run
from chaos.stack import Ports
from ioc.settings import ServiceSettings

W = 1_800_000_000_000  # a window start (epoch ms, whole minute)


def _ledger() -> Ledger:
    ledger = Ledger()
    events = [
        Planned("a", "/s/1", "S1", W + 1_000),
        Planned("b", "/s/1", "S1", W + 2_000),
        Planned("c", "/s/2", "S2", W + 61_000),
        Planned("late", "/s/1", "S1", W - 900_000, too_late=True),
    ]
    for e in events:
        ledger.attempt(e)
        ledger.ack(e, "kafka")
    ledger.attempt(events[0])  # a duplicate copy, acknowledged too
    ledger.ack(events[0], "http")
    return ledger


def _exact() -> Observed:
    return Observed(
        final_counts={("S1", W): 2, ("S2", W + 60_000): 1},
        raw_rows={"a": 1, "b": 1, "c": 1, "late": 1},
        dead_letters={"late": ["too_late"]},
    )


def test_an_exact_outcome_has_nothing_lost_or_duplicated() -> None:
    v = compare(_ledger(), _exact())
    assert (v.lost, v.duplicated, v.misplaced, v.events, v.copies) == (0, 0, 0, 4, 5)
    assert (v.too_late_sent, v.too_late_dead_lettered) == (1, 1)
    assert v.ok


def test_lost_duplicated_and_misplaced_are_told_apart() -> None:
    seen = _exact()
    lost = Observed({("S1", W): 1, ("S2", W + 60_000): 1}, seen.raw_rows, seen.dead_letters)
    assert (compare(_ledger(), lost).lost, compare(_ledger(), lost).duplicated) == (1, 0)
    twice = Observed({("S1", W): 3, ("S2", W + 60_000): 1}, seen.raw_rows, seen.dead_letters)
    assert (compare(_ledger(), twice).lost, compare(_ledger(), twice).duplicated) == (0, 1)
    no_window = Observed({("S1", W): 2}, seen.raw_rows, seen.dead_letters)
    assert compare(_ledger(), no_window).lost == 1
    no_row = Observed(seen.final_counts, {"a": 1, "b": 1, "c": 1}, seen.dead_letters)
    assert compare(_ledger(), no_row).lost == 1
    # a too-late event counted in a window and missing from the dead letters
    counted = Observed({**seen.final_counts, ("S1", W - 900_000): 1}, seen.raw_rows, {"late": []})
    v = compare(_ledger(), counted)
    assert (v.lost, v.misplaced, v.too_late_dead_lettered) == (1, 1, 0)
    # an on-time event dead-lettered as well as counted
    both = Observed(seen.final_counts, seen.raw_rows, {"late": ["too_late"], "a": ["too_late"]})
    assert compare(_ledger(), both).misplaced == 1


def test_an_unacknowledged_send_may_arrive_once_but_not_twice() -> None:
    ledger = _ledger()
    unacked = Planned("d", "/s/2", "S2", W + 62_000)
    ledger.attempt(unacked)
    ledger.fail("http")
    seen = _exact()
    arrived = Observed({("S1", W): 2, ("S2", W + 60_000): 2}, seen.raw_rows, seen.dead_letters)
    assert compare(ledger, arrived).ok
    thrice = Observed({("S1", W): 2, ("S2", W + 60_000): 3}, seen.raw_rows, seen.dead_letters)
    assert compare(ledger, thrice).duplicated == 1


def _kpi_item(station: str, start_ms: int, count: int, revision: int, final: bool) -> dict:
    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat()

    return {
        "kpi": "air.pm25.avg",
        "scope": f"station:{station}",
        "window_start": iso(start_ms),
        "window_end": iso(start_ms + 60_000),
        "count": count,
        "revision": revision,
        "final": final,
    }


def test_a_push_client_applies_by_revision_and_resumes_from_its_oldest_open_window() -> None:
    st = ClientState()
    first = st.subscribe("kpi", "kpi", ["station:S1"])
    assert "resume" not in first and "windows_since" not in first  # nothing held yet
    snap = {"type": "snapshot", "channel": "kpi", "epoch": "e1", "seq": 5, "items": []}
    assert st.apply(snap)
    watched = st.windows_since()  # nothing held: from a margin before the subscription
    assert watched is not None and watched % 60_000 == 0
    assert 0 < time.time() * 1000 - watched < 6 * 60_000
    st.apply(
        {
            "type": "update",
            "channel": "kpi",
            "seq": 9,
            "items": [
                _kpi_item("S1", W, 3, 2, final=True),
                _kpi_item("S1", W + 60_000, 1, 0, final=False),
                _kpi_item("S1", W, 2, 1, final=False),  # a stale revision changes nothing
            ],
        }
    )
    assert st.windows[("S1", W)].count == 3 and st.windows[("S1", W)].final
    again = st.subscribe("kpi", "kpi", ["station:S1"])
    assert again["resume"] == {"epoch": "e1", "seq": 9}
    assert again["windows_since"] == W + 60_000  # the oldest window not final yet
    # A restarted server: another epoch, a resync snapshot with every window since.
    resync = {
        "type": "snapshot",
        "channel": "kpi",
        "epoch": "e2",
        "seq": 1,
        "resync": "other_server",
        "items": [_kpi_item("S1", W + 60_000, 4, 3, final=True)],
    }
    assert st.apply(resync) and st.epoch == "e2"
    assert st.frames == {"snapshot": 1, "resync:other_server": 1}
    st.apply({"type": "update", "channel": "kpi", "seq": 1, "items": []})  # seq not growing
    assert st.seq_errors == 1
    assert st.windows_since() == W + 60_000  # all final: the newest window held


def test_client_gaps_are_missing_lower_or_open_windows_per_client() -> None:
    full, short = ClientState(), ClientState()
    for st in (full, short):
        st.apply(
            {
                "type": "snapshot",
                "channel": "kpi",
                "epoch": "e",
                "seq": 0,
                "items": [_kpi_item("S1", W, 3, 1, final=True)],
            }
        )
    full.apply(
        {"type": "update", "channel": "kpi", "seq": 1, "items": [_kpi_item("S2", W, 5, 1, True)]}
    )
    finals = {("S1", W): 3, ("S2", W): 5}
    g = gaps([full, short], finals)
    assert (g.clients, g.windows, g.missing, g.above, g.unknown) == (2, 2, 1, 0, 0)
    assert gaps([full], finals).ok
    assert gaps([full], {("S1", W): 2, ("S2", W): 5}).above == 1
    assert gaps([full], {("S1", W): 3}).unknown == 1


def test_the_full_plan_kills_both_engines_and_restarts_the_push_server() -> None:
    full = plan(short=False, engine="aiokafka")
    names = [sc.fault.name for sc in full.scenarios]
    assert "SIGKILL streams worker (aiokafka)" in names
    assert names[-1] == "SIGKILL streams worker (faust)"  # one engine switch, at the end
    assert full.engines == ["aiokafka", "faust"]
    (push,) = [sc.fault for sc in full.scenarios if isinstance(sc.fault, RestartPush)]
    assert (push.clients, push.times, push.needs_ws) == (50, 3, True)
    short = plan(short=True, engine="aiokafka")
    assert short.engines == ["aiokafka"]
    assert not any(sc.fault.needs_ws for sc in short.scenarios)


def _free_port() -> int:
    """A free port in 38100-38999 (away from the demo's and other services' ports)."""
    for port in random.sample(range(38100, 39000), 900):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 38100-38999")


@pytest.fixture
def own_services(tmp_path: Path, database_url: str) -> ServiceSettings:
    """A broker and Mosquitto for this test only (`run` starts and stops them); the
    session's (fresh) database. The broker is Tansu, the quickest to start. (The short run
    on Apache Kafka once missed its settle deadline: the tail read partition 0 of
    ioc.kpi only, see chaos/observe.py.)"""
    return ServiceSettings(
        broker="tansu",
        state_dir=tmp_path / "state",
        broker_port=_free_port(),
        mqtt_port=_free_port(),
        database_url=database_url,
    )


@pytest.mark.integration
@pytest.mark.timeout(400)
async def test_short_chaos_run_loses_and_duplicates_nothing(
    own_services: ServiceSettings, tmp_path: Path
) -> None:
    cfg = plan(short=True, engine="aiokafka")
    cfg = replace(cfg, ports=Ports(_free_port(), _free_port(), _free_port()))
    started = time.monotonic()
    result = await run(cfg, own_services, tmp_path / "logs", lambda _msg: None)
    rows = result.rows
    (logs,) = (tmp_path / "logs").iterdir()  # the run's own directory
    elapsed = time.monotonic() - started

    assert [r.fault for r in rows] == ["SIGKILL streams worker (aiokafka)", "SIGKILL storage"]
    for r in rows:
        v = r.verdict
        assert (v.lost, v.duplicated, v.misplaced) == (0, 0, 0), (r.fault, v.details[:10])
        assert v.events > 0 and all(r.by_way.get(w, 0) > 0 for w in ("kafka", "http", "mqtt"))
        assert r.duplicates > 0 and r.out_of_order > 0
        assert v.too_late_sent > 0 and v.too_late_dead_lettered == v.too_late_sent
        assert r.recovered, r.evidence
    # Recovery actually ran: two worker restarts read their state back, storage once.
    assert len(rows[0].recovery_s) == 2 and len(rows[1].recovery_s) == 1
    restored = [
        p
        for p in sorted(logs.glob("streams-*.log"))
        if re.search(rb'"restored": [1-9][^}]*"stage1\.assigned"', p.read_bytes())
    ]
    assert len(restored) >= 2, "the restarted workers must restore their state"
    assert len(list(logs.glob("storage-*.log"))) == 2
    assert b'"sink started"' in (logs / "storage-1.log").read_bytes()
    # Bad input: every one refused (HTTP 4xx) or dead-lettered, nothing crashed, the
    # repeated ids dropped as repeats.
    bad = result.bad
    assert bad is not None and bad.total >= 350
    assert (bad.handled, bad.unaccounted, bad.crashes) == (bad.total, [], 0)
    assert sum(bad.refused.values()) > 0 and sum(bad.dead_lettered.values()) > 0
    assert bad.repeats_dropped >= bad.repeats_sent > 0
    report = markdown(result, cfg, "ioc chaos --short", elapsed)
    assert HEADER in report and "all rows exact" in report
    assert elapsed < 180, f"the CI run took {elapsed:.0f} s"
