"""The Grafana dashboards query only what exists: every PromQL metric of the pipeline
dashboard is exposed by a scraped component, every SQL query of the city dashboard runs
on the migrated TimescaleDB (tables, views and columns)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

from ioc import observability as obs
from tests.db_helpers import migrated

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
# Series Prometheus makes itself for each scrape, not a component.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# PromQL words that look like a metric name but are not one.
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
PROMQL_WORDS |= {"unless", "offset", "bool", "inf", "nan"}


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DASHBOARDS / f"{name}.json").read_text())
    return loaded


def _targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for panel in dashboard["panels"] for t in panel.get("targets", ())]


def promql_metrics(expr: str) -> set[str]:
    """The metric names an expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"(?<![A-Za-z0-9_:])\d[\w.]*", "", expr)  # numbers and durations
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        rest = expr[m.end() :].lstrip()
        if rest.startswith("("):
            continue  # a function or an aggregation
        if m.group() in PROMQL_WORDS:
            continue
        names.add(m.group())
    return names


def test_promql_metrics_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (sink, le) (rate(ioc_sink_batch_seconds_bucket{sink="raw"}'
        "[5m]))) + time() - max without (x) (ioc_a) and on (y) ioc_b offset 5m"
    )
    assert promql_metrics(expr) == {"ioc_sink_batch_seconds_bucket", "ioc_a", "ioc_b"}


def test_pipeline_dashboard_queries_only_exposed_metrics() -> None:
    dashboard = _load("pipeline")
    jobs = obs.scrape_jobs(obs.load_config())
    exposed: dict[str, set[str]] = {
        name: obs.exposed_names(build()) for name, build in obs.REGISTRIES.items() if name in jobs
    }
    everything = set().union(*exposed.values())
    queried: set[str] = set()
    for target in _targets(dashboard):
        assert target["datasource"]["uid"] == "prometheus"
        queried |= promql_metrics(target["expr"])
    unknown = queried - everything - PROMETHEUS_SERIES
    assert not unknown, f"not exposed by any scraped component: {sorted(unknown)}"
    # What the issue asks the pipeline dashboard to show.
    for wanted in (
        "ioc_streams_input_events_total",  # events in by domain
        "ioc_streams_events_total",  # applied
        "ioc_streams_dead_letters_total",  # dead letters by reason
        "ioc_streams_lag_records",  # lag per partition
        "ioc_streams_kpi_records_total",  # KPI records out
        "ioc_sink_rows_total",  # sink rows
        "ioc_sink_batch_seconds_bucket",  # sink latency
        "ioc_ws_clients",  # push-server clients
        "ioc_ws_frames_sent_total",  # frames
        "ioc_ws_slow_disconnects_total",  # drops
    ):
        assert wanted in queried, wanted


def test_the_registries_are_what_a_running_component_serves() -> None:
    """The inventory above is the component's real /metrics (the simulator's, served)."""
    import urllib.request

    from simulators.metrics import SimulatorMetrics
    from simulators.runner import Progress

    metrics = SimulatorMetrics()
    metrics.update(Progress(sent=1, acked=1, failed=1, by_domain=Counter(air=1)))
    metrics.update(Progress(sent=2, acked=1, failed=1, by_domain=Counter(air=2)))
    metrics.injected.labels("late").inc()
    metrics.serve("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics") as resp:
            text = resp.read().decode()
    finally:
        metrics.close()
    served = {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert served == obs.exposed_names(obs.REGISTRIES["simulator"]())


# --- the city dashboard on TimescaleDB -------------------------------------------------


def _sql_for_postgres(sql: str) -> str:
    """Grafana's macros and variables as plain SQL (what Grafana sends, near enough)."""
    sql = re.sub(
        r"\$__timeGroupAlias\(([^,]+),\s*'([^']+)'\)",
        r"time_bucket(interval '\2', \1) AS time",
        sql,
    )
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)", r"\1 BETWEEN now() - interval '6 hours' AND now()", sql
    )
    sql = sql.replace("$district", "'HD', 'CL'")
    assert "$" not in sql, f"a macro or variable left: {sql}"
    return sql


def _city_queries() -> list[str]:
    dashboard = _load("city")
    queries = [t["rawSql"] for t in _targets(dashboard)]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return queries


def test_city_dashboard_reads_timescaledb_by_district() -> None:
    dashboard = _load("city")
    assert all(t["datasource"]["uid"] == "timescaledb" for t in _targets(dashboard))
    [district] = dashboard["templating"]["list"]
    assert district["name"] == "district"
    by_district = [q for q in _city_queries() if "$district" in q]
    assert len(by_district) >= 6


async def test_every_city_query_runs_on_the_migrated_database(database_url: str) -> None:
    conn = await asyncpg.connect(await migrated(database_url))
    try:
        for sql in _city_queries():
            for table in re.findall(r"\b(?:FROM|JOIN)\s+([a-z_][a-z0-9_.]*)", sql, re.I):
                exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
                assert exists, f"{table} does not exist (query: {sql})"
            # Planning it checks every column, function and type as well.
            await conn.execute(f"EXPLAIN {_sql_for_postgres(sql)}")
    finally:
        await conn.close()
