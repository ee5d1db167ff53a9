"""`ioc chaos`: the pipeline under faults against a ledger; writes docs/reliability.md."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import structlog
import typer
from rich.console import Console
from rich.status import Status
from rich.table import Table

from events.logs import configure_logging
from ioc.settings import ServiceSettings

console = Console(stderr=True)
log = structlog.get_logger("chaos")
ROOT = Path(__file__).resolve().parents[2]


def _progress(status: Status, msg: str) -> None:
    status.update(f"chaos: {msg}")
    if not msg.startswith("waiting for "):
        log.info("progress", step=msg)


def chaos(
    short: bool = typer.Option(False, help="the CI version: a few faults, under 3 minutes"),
    engine: str = typer.Option(
        "aiokafka",
        help="stream worker engine (aiokafka or faust) of the rows that do not choose one "
        "(the full run's SIGKILL rows use each engine in turn)",
    ),
    output: Path = typer.Option(
        ROOT / "docs" / "reliability.md", help="where the Markdown report goes"
    ),
    log_dir: Path | None = typer.Option(
        None, help="component logs (default: <IOC_STATE_DIR>/chaos-logs)"
    ),
    ingest_port: int = typer.Option(38081, envvar="IOC_CHAOS_INGEST_PORT"),
    streams_port: int = typer.Option(38091, envvar="IOC_CHAOS_STREAMS_PORT"),
    storage_port: int = typer.Option(38092, envvar="IOC_CHAOS_STORAGE_PORT"),
    ws_port: int = typer.Option(38093, envvar="IOC_CHAOS_WS_PORT", help="push server"),
    bad_inputs: int | None = typer.Option(
        None, help="malformed inputs (hypothesis) after the faults; default 10000, --short 450"
    ),
) -> None:
    """Run the stack, send events through Kafka, HTTP and MQTT with faults injected, and
    check final KPI counts, raw rows and dead letters against the ledger of acks."""
    from dataclasses import replace

    from chaos import report
    from chaos.plans import plan
    from chaos.run import run
    from chaos.stack import Ports

    if engine not in ("aiokafka", "faust"):
        raise typer.BadParameter("engine must be 'aiokafka' or 'faust'", param_hint="--engine")
    configure_logging("chaos", json=True)
    settings = ServiceSettings()
    cfg = plan(short, engine)
    cfg = replace(
        cfg,
        ports=Ports(ingest_port, streams_port, storage_port, ws_port),
        bad_inputs=cfg.bad_inputs if bad_inputs is None else bad_inputs,
    )
    logs = log_dir or settings.state_dir / "chaos-logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with console.status("chaos: starting…") as status:
        result = asyncio.run(run(cfg, settings, logs, lambda msg: _progress(status, msg)))
    elapsed = time.monotonic() - started
    command = (
        "ioc chaos"
        + (" --short" if short else "")
        + (f" --engine {engine}" if engine != "aiokafka" else "")
    )
    report.write_section(output, report.markdown(result, cfg, command, elapsed))
    rows = result.rows
    table = Table(title=f"ioc chaos ({elapsed:.0f} s) → {output}")
    for col in ("fault", "injected", "events", "lost", "duplicated", "misplaced", "recovery_s"):
        table.add_column(col)
    for r in rows:
        v = r.verdict
        table.add_row(
            r.fault,
            r.injected,
            f"{v.events:,}",
            str(v.lost),
            str(v.duplicated),
            str(v.misplaced),
            r.recovery,
        )
    console.print(table)
    if result.bad is not None:
        b = result.bad
        console.print(
            f"bad input: {b.total:,} sent, {sum(b.refused.values()):,} refused, "
            f"{sum(b.dead_lettered.values()):,} dead-lettered, {len(b.unaccounted)} neither, "
            f"{b.crashes} crashes; repeats {b.repeats_dropped}/{b.repeats_sent} dropped"
        )
    if not all(r.verdict.ok and r.recovered for r in rows) or not report.bad_ok(result.bad):
        console.print("[red]mismatches or a recovery that did not run: see the report and logs[/]")
        sys.exit(1)
