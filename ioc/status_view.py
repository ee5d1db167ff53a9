"""The calm view of `ioc up`: one row per component, redrawn in place.

Each row: state (running, restarting, stopped), pid, uptime, restarts, what the component
does per second and its lag (read from its own Prometheus ``/metrics``: the counters and
gauges named in :data:`RATE_METRICS` and :data:`LAG_METRICS`), and its last warning or
error. Every line a component prints goes to its log file (``ioc logs NAME``), not here.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ioc.component_output import StatusBoard

# Per component: the counters whose sum per second is its rate, with the unit shown.
RATE_METRICS: Mapping[str, tuple[tuple[str, ...], str]] = {
    "ingest": (("ioc_ingest_events_accepted_total",), "ev/s in"),
    "streams": (("ioc_streams_events_total",), "ev/s"),
    "alerts": (("ioc_alerts_kpi_records_total",), "KPI/s"),
    "ws": (("ioc_ws_frames_sent_total",), "frames/s"),
    "storage": (("ioc_sink_rows_total",), "rows/s"),
    "simulator": (("ioc_simulator_acked_total",), "ev/s out"),
    "readapi": (("ioc_readapi_requests_total",), "req/s"),
}
# Per component: gauges whose sum is its consumer lag in records.
LAG_METRICS: Mapping[str, tuple[str, ...]] = {
    "streams": ("ioc_streams_lag_records",),
}


def sample_sums(text: str, names: set[str]) -> dict[str, float]:
    """The sum over labels of each sample name in ``names`` in a Prometheus text page."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                sums[sample.name] = sums.get(sample.name, 0.0) + float(sample.value)
    return sums


@dataclass
class Reading:
    at: float
    count: float | None
    lag: float | None


class MetricsProbe:
    """Reads each component's ``/metrics`` and keeps its rate and lag."""

    def __init__(self, urls: Mapping[str, str]) -> None:
        self._urls = dict(urls)
        self._last: dict[str, Reading] = {}
        self.rate: dict[str, float] = {}
        self.lag: dict[str, float] = {}

    def apply(self, name: str, text: str, now: float) -> None:
        """One scrape of ``name``'s page at ``now`` (monotonic seconds)."""
        counters, _unit = RATE_METRICS.get(name, ((), ""))
        lags = LAG_METRICS.get(name, ())
        sums = sample_sums(text, set(counters) | set(lags))
        count = sum(sums[c] for c in counters if c in sums) if counters else None
        lag = sum(sums[g] for g in lags if g in sums) if any(g in sums for g in lags) else None
        before = self._last.get(name)
        if count is not None and before is not None and before.count is not None:
            dt = now - before.at
            if dt > 0 and count >= before.count:  # a restart resets counters: skip one
                self.rate[name] = (count - before.count) / dt
        if lag is not None:
            self.lag[name] = lag
        self._last[name] = Reading(now, count, lag)

    async def poll(self) -> None:
        for name, url in self._urls.items():
            try:
                text = await asyncio.to_thread(_get, url)
            except OSError:
                self.rate.pop(name, None)  # not answering (starting, restarting)
                continue
            self.apply(name, text, time.monotonic())


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as resp:
        body: bytes = resp.read()
    return body.decode(errors="replace")


_STATE_STYLE = {"running": "green", "starting": "yellow", "restarting": "red", "stopped": "dim"}


def _uptime(started_at: float | None, now: float) -> str:
    if started_at is None:
        return "-"
    s = int(now - started_at)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _count(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:,.0f}"


def render(board: StatusBoard, probe: MetricsProbe, now: float, width: int) -> RenderableType:
    # One line per component whatever the width: the last column gives way (ellipsis).
    table = Table(box=None, pad_edge=False, width=width, header_style="bold")
    for col in ("component", "state", "pid", "up", "restarts", "rate", "lag"):
        table.add_column(col, no_wrap=True)
    table.add_column("last problem", no_wrap=True, overflow="ellipsis", ratio=1)
    for name, row in board.rows.items():
        rate = probe.rate.get(name)
        unit = RATE_METRICS.get(name, ((), ""))[1]
        lag = probe.lag.get(name)
        table.add_row(
            name,
            Text(row.state, style=_STATE_STYLE.get(row.state, "")),
            str(row.pid or "-"),
            _uptime(row.started_at if row.state == "running" else None, now),
            str(row.restarts),
            "-" if rate is None else f"{_count(rate)} {unit}",
            "-" if lag is None else _count(lag),
            Text(row.last_problem, style="yellow" if row.last_problem else ""),
        )
    footer = Text(
        "full logs: ioc logs <component> [-f]   ·   Ctrl-C stops"
        + ("   ·   stopping…" if board.stopping_all else ""),
        style="dim",
    )
    return Group(table, footer)
