"""`ioc alerts worker|rules`."""

from __future__ import annotations

import asyncio
import signal

import orjson
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Alert rules and the alerts worker.", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def rules(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    markdown: bool = typer.Option(False, "--markdown", help="the table of docs/alerts.md"),
) -> None:
    """The alert rule catalogue."""
    from streams.alerts.rules import RULES, rules_json, rules_markdown

    if as_json:
        typer.echo(orjson.dumps(rules_json(), option=orjson.OPT_INDENT_2).decode())
        return
    if markdown:
        typer.echo(rules_markdown(), nl=False)
        return
    table = Table("rule", "kind", "KPI", "scope", "title")
    for r in RULES:
        table.add_row(r.id, r.kind, r.kpi, r.scope, r.title_en)
    Console().print(table)


@app.command()
def worker() -> None:
    """Run the alerts worker until SIGINT/SIGTERM (ioc.kpi + commands -> ioc.alerts)."""
    from events.logs import configure_logging
    from streams.alerts.worker import AlertsSettings, AlertsWorker

    settings = AlertsSettings()
    configure_logging("alerts")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        w = AlertsWorker(settings)
        with console.status("alerts worker: recovering state…") as status:
            task = asyncio.create_task(w.run(stop))
            ready = asyncio.create_task(w.ready.wait())
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            status.stop()
        if not task.done():
            console.print(
                f"[green]alerts worker ready[/] on {settings.bootstrap_servers}; "
                f"health http://{settings.alerts_http_host}:{w.http_port}/healthz"
            )
        ready.cancel()
        await task

    asyncio.run(main())
