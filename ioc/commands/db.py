"""`ioc db migrate|status` and `ioc query kpi|alerts|events` (storage/ on the command line)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import orjson
import psycopg
import typer
from rich.console import Console
from rich.table import Table

from events.errors import ConfigurationError, ServiceError
from events.records import AlertRecord, KpiRecord, format_time
from ioc.commands.query_args import QueryArgumentError, check_kpi_query
from ioc.settings import ServiceSettings
from storage import migrate as migrations
from storage import queries

app = typer.Typer(help="The TimescaleDB schema (migrations).", no_args_is_help=True)
query_app = typer.Typer(help="Read KPI history, alerts and raw events.", no_args_is_help=True)
console = Console()
T = TypeVar("T")

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``1h``/``30m``/``7d`` ago, or an RFC 3339 time."""
    ref = now or datetime.now(UTC)
    m = _DURATION.match(text.strip())
    if m:
        return ref - timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)])
    try:
        ts = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{text!r}: use a duration like 1h, 30m, 7d or an RFC 3339 time"
        ) from exc
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _database_url() -> str:
    return ServiceSettings().effective_database_url


def _run_pg(work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
    async def go() -> T:
        try:
            conn = await psycopg.AsyncConnection.connect(_database_url(), autocommit=True)
        except psycopg.OperationalError as exc:
            raise ServiceError(
                f"cannot reach TimescaleDB ({str(exc).strip().splitlines()[0]}); "
                "start it with `ioc services up` or set IOC_DATABASE_URL"
            ) from exc
        async with conn:
            try:
                return await work(conn)
            except psycopg.errors.UndefinedTable as exc:
                raise ConfigurationError(
                    "the IOC schema is missing in this database: run `ioc db migrate`"
                ) from exc

    return asyncio.run(go())


def run_asyncpg(work: Callable[[asyncpg.Connection], Awaitable[T]], url: str | None = None) -> T:
    """Run ``work`` on one asyncpg connection to ``url`` (default: IOC_DATABASE_URL or our
    TimescaleDB); an unreachable database is a ServiceError saying what to do."""

    async def go() -> T:
        try:
            conn = await asyncpg.connect(url or _database_url(), timeout=5)
        except (OSError, asyncpg.PostgresError) as exc:
            raise ServiceError(
                f"cannot reach TimescaleDB ({exc}); start it with `ioc services up` "
                "or set IOC_DATABASE_URL"
            ) from exc
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


@app.command()
def migrate() -> None:
    """Apply pending migrations (idempotent; safe while sinks start)."""
    with console.status("applying migrations…"):
        applied = run_asyncpg(migrations.migrate)
    if applied:
        for m in applied:
            console.print(f"applied {m.version:04d}_{m.name}")
    else:
        console.print("schema up to date")


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """The TimescaleDB edition and the state of every migration."""
    edition, states = run_asyncpg(migrations.status)
    if as_json:
        typer.echo(
            orjson.dumps(
                {
                    "edition": edition,
                    "migrations": [
                        {"version": s.version, "name": s.name, "state": s.state} for s in states
                    ],
                }
            ).decode()
        )
        return
    table = Table(title=f"migrations (timescaledb {edition} edition)")
    for col in ("version", "name", "state"):
        table.add_column(col)
    for s in states:
        colour = {"applied": "green", "pending": "yellow"}.get(s.state, "dim")
        table.add_row(f"{s.version:04d}", s.name, f"[{colour}]{s.state}[/]")
    console.print(table)


def _t(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:,.2f}"


@query_app.command("kpi")
def query_kpi(
    kpi: str = typer.Argument(..., help="KPI id, e.g. air.aqi.vn"),
    scope: str = typer.Option("*", "--scope", help="scope or pattern with *, e.g. 'district:*'"),
    since: str | None = typer.Option(None, help="history from (1h, 30m, 7d or RFC 3339)"),
    until: str | None = typer.Option(None, help="history until (default now)"),
    window: int = typer.Option(60, "--window", help="window size in seconds"),
    max_points: int = typer.Option(300, help="downsample each scope's history to this"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    wide: bool = typer.Option(False, "--wide", help="also window end, min, max, revision"),
) -> None:
    """Latest value per scope, or with --since the (downsampled) history of each scope."""
    try:
        check_kpi_query(kpi, scope, window)
    except QueryArgumentError as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.param) from None
    start = parse_since(since) if since else None
    end = parse_since(until) if until else None

    async def work(conn: psycopg.AsyncConnection[Any]) -> list[KpiRecord]:
        latest = await queries.latest_kpis(conn, kpis=[kpi], scopes=[scope], window_s=window)
        if start is None:
            return latest
        out: list[KpiRecord] = []
        for rec in latest:
            out += await queries.kpi_history(
                conn,
                kpi=kpi,
                scope=rec.scope,
                since=start,
                until=end,
                max_points=max_points,
                window_s=window,
            )
        return out

    records = _run_pg(work)
    if as_json:
        typer.echo(orjson.dumps([r.to_dict() for r in records]).decode())
        return
    title = f"{kpi} · {scope} · {window}s windows" + (
        f" since {format_time(start)}" if start else " (latest)"
    )
    console.print(_kpi_table(title, records, wide))
    if not records:
        console.print("[yellow]no KPI windows match[/]")


def _kpi_table(title: str, records: list[KpiRecord], wide: bool) -> Table:
    # Fits 80 columns by default (an operator's terminal): the window's start without the
    # year, no end, min, max or revision; --wide shows everything.
    table = Table(title=title)
    numeric = ("value", "count", "min", "max", "rev") if wide else ("value", "count")
    start_col = "window (UTC)" if wide else "window (UTC, MM-DD)"
    cols = (
        ("scope", start_col, "to", *numeric, "final")
        if wide
        else ("scope", start_col, *numeric, "final")
    )
    for col in cols:
        table.add_column(col, justify="right" if col in numeric else "left", no_wrap=True)
    for r in records:
        start = _t(r.window_start)
        if wide:
            table.add_row(
                r.scope,
                start,
                _t(r.window_end)[11:],
                _num(r.value),
                str(r.count),
                _num(r.min),
                _num(r.max),
                str(r.revision),
                "✓" if r.final else "",
            )
        else:
            table.add_row(r.scope, start[5:16], _num(r.value), str(r.count), "✓" if r.final else "")
    return table


def _alerts_table(title: str, alerts: list[AlertRecord]) -> Table:
    table = Table(title=title)
    for col in ("updated", "alert", "state", "severity", "lvl", "subject", "title", "value"):
        table.add_column(col)
    for a in alerts:
        table.add_row(
            _t(a.updated_at),
            a.alert_id,
            a.state,
            a.severity,
            str(a.level),
            a.subject,
            a.title,
            _num(a.value),
        )
    return table


@query_app.command("alerts")
def query_alerts(
    history: bool = typer.Option(False, "--history", help="transitions instead of active alerts"),
    since: str | None = typer.Option(None, help="history from (1h, 7d or RFC 3339)"),
    limit: int = typer.Option(200, help="at most this many transitions"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Active alerts (default) or the history of transitions."""
    start = parse_since(since) if since else None

    async def work(conn: psycopg.AsyncConnection[Any]) -> list[AlertRecord]:
        if history:
            return await queries.alert_history(conn, since=start, limit=limit)
        return await queries.active_alerts(conn)

    alerts = _run_pg(work)
    if as_json:
        typer.echo(orjson.dumps([a.to_dict() for a in alerts]).decode())
        return
    console.print(_alerts_table("alert transitions" if history else "active alerts", alerts))


@query_app.command("events")
def query_events(
    source: str = typer.Argument(..., help="event source, e.g. /sensors/air/HD-AQ-001"),
    since: str = typer.Option("1h", help="from (1h, 30m, 7d or RFC 3339)"),
    until: str | None = typer.Option(None, help="until (default now)"),
    limit: int = typer.Option(1000, help="at most this many events"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Raw events of one source in a time range."""
    start = parse_since(since)
    end = parse_since(until) if until else datetime.now(UTC)

    async def work(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
        return await queries.raw_events(conn, source=source, since=start, until=end, limit=limit)

    events = _run_pg(work)
    if as_json:
        typer.echo(orjson.dumps(events, option=orjson.OPT_UTC_Z).decode())
        return
    table = Table(title=f"events of {source}")
    for col in ("time", "type", "id", "data"):
        table.add_column(col)
    for e in events:
        table.add_row(_t(e["time"]), e["type"], e["id"], orjson.dumps(e["data"]).decode())
    console.print(table)
