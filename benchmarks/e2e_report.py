"""The table, figures and chart of bench_e2e (benchmarks/bench_e2e.py): one :class:`Step`
per load level, written to docs/benchmarks.md."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from benchmarks.results import DOC, machine_note, record
from benchmarks.soak import slope

console = Console(stderr=True)


@dataclass
class Step:
    extra_rate: int
    seconds: float
    lags_s: list[float] = field(default_factory=list)  # math.inf: never reached the wall
    input_rate: float = 0.0
    applied_rate: float = 0.0
    kpi_rate: float = 0.0
    sink_rate: float = 0.0
    lag_series: list[tuple[float, float]] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core
    rss_mb: dict[str, float] = field(default_factory=dict)
    hops: dict[str, tuple[float, float]] = field(default_factory=dict)  # median, max (s)
    # Final 1-min windows of markers that arrived on ioc.kpi during the step: seconds
    # after the watermark could first pass their end (window end + allowed lateness).
    finals_s: list[float] = field(default_factory=list)
    # The same finals, seconds after stage 1 reported the watermark past the window end.
    finals_wm_s: list[float] = field(default_factory=list)
    # Faust host: seconds per second of the step in each phase of its one loop
    phases: dict[str, float] = field(default_factory=dict)

    def pct(self, q: float) -> float:
        if not self.lags_s:
            return math.nan
        ordered = sorted(self.lags_s)
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    @property
    def kpi_per_event(self) -> float:
        return self.kpi_rate / self.applied_rate if self.applied_rate else math.nan

    @property
    def lag_growth(self) -> float:
        """Least-squares slope (records/s) of the worker's lag over the second half."""
        return slope(self.lag_series[len(self.lag_series) // 2 :])

    @property
    def sustained(self) -> bool:
        # Flat lag (it grows by less than 2 % of the input per second), the worker applied
        # at least 97 % of the input, and every marker reached the wall.
        return (
            self.lag_growth <= 0.02 * self.input_rate + 20
            and self.applied_rate >= 0.97 * self.input_rate
            and math.inf not in self.lags_s
        )


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def fmt_ms(s: float) -> str:
    return "never" if math.isinf(s) else "-" if math.isnan(s) else f"{s * 1000:,.0f}"


def report(steps: list[Step], args: argparse.Namespace, broker: str, load: float) -> None:
    rows = []
    for s in steps:
        lost = sum(1 for x in s.lags_s if math.isinf(x))
        rows.append(
            f"| {s.extra_rate:,} | {s.input_rate:,.0f} | {s.applied_rate:,.0f} | "
            f"{len(s.lags_s)}{f' ({lost} never)' if lost else ''} | {fmt_ms(s.pct(0.5))} | "
            f"{fmt_ms(s.pct(0.95))} | {fmt_ms(s.pct(0.99))} | {s.lag_growth:+,.0f} | "
            f"{'yes' if s.sustained else 'no'} | {s.kpi_per_event:.2f} | {s.sink_rate:,.0f} |"
        )
    names = sorted(
        {n for s in steps for n in s.cpu}, key=lambda n: -max(s.cpu.get(n, 0.0) for s in steps)
    )
    cpu_rows = [
        f"| {n} | "
        + " | ".join(f"{s.cpu.get(n, 0):.0f} % / {s.rss_mb.get(n, 0):,.0f}" for s in steps)
        + " |"
        for n in names
    ]
    hop_names = (
        ("ack", "acked by the broker"),
        ("partials", "stage 1 output (`ioc.streams.partials`)"),
        ("kpi", "stage 2 output (`ioc.kpi`)"),
        ("wall", "websocket client (the wall)"),
    )
    hop_rows = [
        f"| {label} | "
        + " | ".join(
            f"{s.hops[key][0]:.2f} / {s.hops[key][1]:.2f}" if key in s.hops else "-" for s in steps
        )
        + " |"
        for key, label in hop_names
    ]
    for label, attr in (
        (
            "final 1-min window on `ioc.kpi`, after stage 1 reported the watermark past its end",
            "finals_wm_s",
        ),
        (
            "the same, after its end + allowed lateness (an upper bound: includes the time "
            "until the events that move the watermark arrive)",
            "finals_s",
        ),
    ):
        hop_rows.append(
            f"| {label} | "
            + " | ".join(
                f"{median(xs):.2f} / {max(xs):.2f}" if (xs := getattr(s, attr)) else "-"
                for s in steps
            )
            + " |"
        )
    sustained = [s.input_rate for s in steps if s.sustained]
    best = max(sustained) if sustained else 0.0
    chart = _chart(steps, broker)
    verdicts = target_rows(steps, best)
    body = (
        f"Broker: {broker}; stream engine: {args.engine}. {machine_note(load)} "
        "A fresh stack (its own state directory) "
        f"warms up for {args.warmup:.0f} s, then each step runs {args.step_seconds:.0f} s "
        f"(the first, without extra load, {steps[0].seconds:.0f} s: the finals of its own "
        "markers arrive within it); "
        f"a marker every {args.marker_interval:g} s; a marker not on the wall within "
        f"{args.marker_timeout:.0f} s counts as never (it stays in the percentiles).\n\n"
        "| extra load asked (ev/s) | input achieved (ev/s) | worker applied (ev/s) | markers | "
        "event → wall p50 (ms) | p95 | p99 | lag growth (records/s) | sustained | "
        "KPI records per event | sink rows/s |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n"
        + "\n".join(rows)
        + f"\n\nHighest input rate sustained with flat lag: **{best:,.0f} ev/s**.\n\n"
        "Targets (whole stack on this machine, load generator included):\n\n"
        "| target | measured | verdict |\n|---|---|---|\n" + "\n".join(verdicts) + "\n\n"
        "Where the time goes: seconds from the marker's send to its first appearance on "
        "each hop, median / max over the markers of the step:\n\n"
        "| hop | " + " | ".join(f"+{s.extra_rate:,}" for s in steps) + " |\n"
        "|---|" + "---:|" * len(steps) + "\n" + "\n".join(hop_rows) + "\n\n"
        "The stream worker's one loop (Faust host), share of the step's wall time in each "
        "phase; while one runs, nothing else does (a checkpoint waits for the broker's "
        "acknowledgements and the offset commit):\n\n"
        "| phase | " + " | ".join(f"+{s.extra_rate:,}" for s in steps) + " |\n"
        "|---|"
        + "---:|" * len(steps)
        + "\n"
        + "\n".join(
            f"| {phase} | "
            + " | ".join(f"{100 * s.phases.get(phase, 0.0):.0f} %" for s in steps)
            + " |"
            for phase in ("apply", "publish", "checkpoint", "flush")
        )
        + "\n\n"
        "CPU (% of one core) / peak RSS (MB) per process, per step:\n\n"
        "| process | " + " | ".join(f"+{s.extra_rate:,}" for s in steps) + " |\n"
        "|---|"
        + "---:|" * len(steps)
        + "\n"
        + "\n".join(cpu_rows)
        + (f"\n\n![event → wall]({chart})" if chart else "")
    )
    suffix = "" if broker == "Apache Kafka" else "_tansu"
    # A p95 of a step where some marker never reached the wall is written as "never".
    figures: dict[str, Any] = {f"e2e_max_sustained_events_per_s{suffix}": round(best)}
    by_rate = {s.extra_rate: s for s in steps}
    for rate, key in ((0, "idle"), (5000, "5k")):
        if rate in by_rate and not math.isnan(by_rate[rate].pct(0.95)):
            p95 = by_rate[rate].pct(0.95)
            figures[f"e2e_p95_ms_{key}{suffix}"] = "never" if math.isinf(p95) else round(p95 * 1000)
    for rate, key in ((0, "idle"), (5000, "5k")):
        if rate in by_rate and by_rate[rate].finals_wm_s:
            finals = sorted(by_rate[rate].finals_wm_s)
            p95 = finals[min(len(finals) - 1, math.ceil(0.95 * len(finals)) - 1)]
            figures[f"e2e_final_p95_ms_{key}{suffix}"] = round(p95 * 1000)
    if 0 in by_rate:
        figures[f"kpi_records_per_event_demo{suffix}"] = round(by_rate[0].kpi_per_event, 2)
    cmd = (
        f".venv/bin/python -m benchmarks.bench_e2e --broker {args.broker} "
        f"--engine {args.engine} --steps "
        f"{args.steps} --step-seconds {args.step_seconds:g}"
    )
    record(f"bench_e2e-{args.broker}", cmd, body, figures)
    console.print(f"recorded in {DOC.relative_to(DOC.parent.parent)}")


def _p95(xs: list[float]) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def _verdict(value: float, limit: float, *, at_most: bool, unit: str) -> str:
    if math.isnan(value):
        return "not measured in this run"
    met = value <= limit if at_most else value >= limit
    if met:
        return "met"
    gap = value - limit if at_most else limit - value
    return f"**missed** by {gap:,.0f} {unit}"


def target_rows(steps: list[Step], best: float) -> list[str]:
    """One row per target of the issue this benchmark answers, computed from the steps."""
    by_rate = {s.extra_rate: s for s in steps}
    nan = math.nan

    def p95_ms(rate: int) -> float:
        s = by_rate.get(rate)
        return s.pct(0.95) * 1000 if s and s.lags_s else nan

    def final_ms(rate: int) -> float:
        s = by_rate.get(rate)
        return _p95(s.finals_wm_s) * 1000 if s and s.finals_wm_s else nan

    def per_event(rate: int) -> float:
        s = by_rate.get(rate)
        return s.kpi_per_event if s else nan

    rows = [
        ("event → wall p95, demo alone ≤ 1,500 ms", p95_ms(0), 1500, True, "ms"),
        ("event → wall p95 at +5,000 ev/s ≤ 2,000 ms", p95_ms(5000), 2000, True, "ms"),
        (
            "final record p95 ≤ 2,000 ms after the watermark, demo alone",
            final_ms(0),
            2000,
            True,
            "ms",
        ),
        (
            "final record p95 ≤ 2,000 ms after the watermark, +5,000",
            final_ms(5000),
            2000,
            True,
            "ms",
        ),
        (
            "sustained with flat lag ≥ 10,000 ev/s",
            best if len(steps) > 1 else nan,
            10000,
            False,
            "ev/s",
        ),
        ("KPI records per input event < 1 at +5,000", per_event(5000), 0.999, True, "records"),
    ]
    out = []
    for label, value, limit, at_most, unit in rows:
        shown = (
            "-"
            if math.isnan(value)
            else (f"{value:.2f}" if unit == "records" else f"{value:,.0f} {unit}")
        )
        verdict = _verdict(value, limit, at_most=at_most, unit=unit)
        if unit == "records" and verdict.startswith("**missed"):
            verdict = "**missed**"
        out.append(f"| {label} | {shown} | {verdict} |")
    return out


def _chart(steps: list[Step], broker: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        console.print("matplotlib missing (pip install -e '.[bench]'): no chart")
        return None
    xs = [s.extra_rate for s in steps]
    fig, ax = plt.subplots(figsize=(7, 4))
    for q, style in ((0.5, "o-"), (0.95, "s-"), (0.99, "^-")):
        ys = [min(s.pct(q), 60.0) for s in steps]  # a never-arriving marker plots at 60 s
        ax.plot(xs, ys, style, label=f"p{round(q * 100)}")
    ax.set_xlabel("extra simulator load asked (events/s)")
    ax.set_ylabel("event → wall (s)")
    ax.set_title(f"Sensor to wall, whole stack on one machine ({broker})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    name = f"bench_e2e_{'kafka' if broker == 'Apache Kafka' else 'tansu'}.png"
    fig.tight_layout()
    fig.savefig(DOC.parent / name, dpi=100)
    plt.close(fig)
    return name
