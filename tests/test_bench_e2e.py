"""The figures of benchmarks/bench_e2e.py: a marker that never reached the wall stays in
the percentiles, and "sustained" means a flat lag with every marker delivered."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from benchmarks.bench_e2e import Step
from benchmarks.e2e_markers import Markers


def test_a_marker_that_never_arrives_stays_in_the_percentiles() -> None:
    step = Step(5000, 60, lags_s=[0.5] * 95 + [math.inf] * 5)
    assert step.pct(0.5) == 0.5
    assert step.pct(0.95) == 0.5  # the 95th of 100 samples is the last 0.5 s one
    assert math.isinf(step.pct(0.96))
    assert not step.sustained  # some markers never reached the wall


def test_sustained_only_with_a_flat_lag_and_the_input_applied() -> None:
    flat = Step(1000, 60, input_rate=1200, applied_rate=1190, lags_s=[1.0])
    flat.lag_series = [(t, 5000.0 if t < 30 else 300.0 + (t % 2)) for t in range(60)]
    assert abs(flat.lag_growth) < 1
    assert flat.sustained  # a backlog drained in the first half does not count
    behind = Step(20000, 60, input_rate=17860, applied_rate=17208, lags_s=[1.0])
    behind.lag_series = [(t, 300.0) for t in range(60)]
    assert not behind.sustained  # flat lag, but the worker applied 96 % of the input
    growing = Step(20000, 60, input_rate=15000, applied_rate=15000, lags_s=[1.0])
    growing.lag_series = [(t, 1000.0 * t) for t in range(60)]
    assert math.isclose(growing.lag_growth, 1000.0)
    assert not growing.sustained


def test_marker_lags_count_late_ones_as_never() -> None:
    markers = Markers("127.0.0.1:1", "t", 1)
    markers.sent = {0: 10.0, 1: 11.0, 2: 12.0, 3: 50.0}
    markers.seen = {0: 10.8, 2: 50.0}  # 1 never arrived, 2 arrived after the timeout
    lags = markers.lags(0.0, 20.0, timeout=30.0)  # marker 3 was sent after this step
    assert lags[0] == pytest.approx(0.8)
    assert lags[1:] == [math.inf, math.inf]


def test_final_latency_counts_from_window_end_plus_lateness() -> None:
    markers = Markers("127.0.0.1:1", "t", 1)
    markers.lateness_s = 120.0
    end = 1_796_400_060.0  # 2026-12-04 ... :01:00 UTC
    one_min = (
        b'{"kpi":"air.pm25.avg","scope":"station:E2E-7","window_start":"'
        + datetime.fromtimestamp(end - 60, UTC).isoformat().encode()
        + b'","window_end":"'
        + datetime.fromtimestamp(end, UTC).isoformat().encode()
        + b'","final":true}'
    )
    hourly = one_min.replace(
        datetime.fromtimestamp(end - 60, UTC).isoformat().encode(),
        datetime.fromtimestamp(end - 3600, UTC).isoformat().encode(),
    )
    markers._final(7, hourly, now=5.0, wall=end + 500)  # not a 1-min window: ignored
    markers._final(7, one_min, now=6.0, wall=end + 120.4)
    markers._final(7, one_min, now=9.0, wall=end + 300)  # a later revision: ignored
    assert markers.finals_between(0.0, 10.0) == [pytest.approx(0.4)]
    assert markers.finals_between(6.5, 10.0) == []


def test_final_latency_after_the_air_watermark_passed() -> None:
    """The watermark as stage 2 combines it: the minimum over the air topic's partitions,
    an unreported partition holding it back; other topics do not count."""
    from streams.aggregator import WatermarkReport
    from streams.wire import encode_watermarks

    markers = Markers("127.0.0.1:1", "t", 1)
    air = markers.air_topic
    end_ms = 1_796_400_060_000

    def report(at: float, *marks: tuple[str, int]) -> None:
        reports = [WatermarkReport(src, 1, wm, False, 2) for src, wm in marks]
        markers._watermarks(encode_watermarks(reports), now=at)

    report(1.0, (f"{air}:0", end_ms - 5000), (f"{air}:1", end_ms - 9000))
    report(2.0, (f"{air}:0", end_ms + 1000))  # partition 1 still behind
    report(2.5, ("ioc.events.water:0", end_ms + 9000))  # another topic
    report(3.0, (f"{air}:1", end_ms + 200))  # now both past the end
    value = (
        b'{"window_start":"'
        + datetime.fromtimestamp(end_ms / 1000 - 60, UTC).isoformat().encode()
        + b'","window_end":"'
        + datetime.fromtimestamp(end_ms / 1000, UTC).isoformat().encode()
        + b'","final":true}'
    )
    markers._final(1, value, now=3.4, wall=0.0)
    assert markers.finals_after_watermark(0.0, 10.0) == [pytest.approx(0.4)]


def test_targets_are_judged_from_the_steps() -> None:
    from benchmarks.e2e_report import target_rows

    idle = Step(0, 210, input_rate=200, applied_rate=200, kpi_rate=640, lags_s=[0.4] * 19 + [1.2])
    idle.finals_wm_s = [0.5, 0.9]
    busy = Step(5000, 60, input_rate=5100, applied_rate=5100, kpi_rate=900, lags_s=[3.3] * 20)
    rows = target_rows([idle, busy], best=5100)
    assert rows[0] == "| event → wall p95, demo alone ≤ 1,500 ms | 400 ms | met |"
    assert rows[1].endswith("| 3,300 ms | **missed** by 1,300 ms |")
    assert rows[2].endswith("| 900 ms | met |")
    assert rows[3].endswith("| - | not measured in this run |")
    assert rows[4].endswith("| 5,100 ev/s | **missed** by 4,900 ev/s |")
    assert rows[5].endswith("| 0.18 | met |")
