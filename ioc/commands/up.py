"""`ioc up`: the whole demo (services, then every component) until Ctrl-C."""

from __future__ import annotations

import asyncio
import time

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from ingest.settings import IngestSettings
from ioc import services
from ioc.broker_guard import tansu_guard
from ioc.commands import services as services_cmd
from ioc.commands.ingest import provision_demo_key
from ioc.component_output import ComponentOutput, LogFiles, PrefixedLines, StatusBoard, Tee
from ioc.components import demo_components, metrics_urls, wall_display_url
from ioc.observability import prometheus_component
from ioc.status_view import MetricsProbe, render
from ioc.supervisor import Guard, Supervisor

console = Console(stderr=True)


def up(
    keep_services: bool = typer.Option(
        False, help="leave the services running after Ctrl-C (default: stop those we started)"
    ),
    broker: services_cmd.Broker | None = services_cmd.BROKER_OPTION,
    with_prometheus: bool = typer.Option(
        False,
        help="also run the distribution's Prometheus (when installed) on the scrape config "
        "of deploy/prometheus/prometheus.yml, pointed at the local ports",
    ),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="every component line on the terminal (default: a status board; the full "
        "logs are in files, `ioc logs NAME`)",
    ),
) -> None:
    """Run the whole demo: services, then every component, until Ctrl-C."""
    settings = services_cmd.settings_for(broker)
    # Which broker and why, in one line (Apache Kafka needs Java; Tansu needs nothing).
    console.print(services_cmd.describe_choice(settings))
    with console.status("starting services…") as spinner:
        started = services.up(settings, log=lambda msg: spinner.update(msg))
    services_cmd.show_status(settings)
    # The demo's ingest key (the README names it): HTTP and MQTT senders need a key.
    ingest = IngestSettings()
    provision_demo_key(settings, ingest.ingest_demo_key)
    console.print(
        f"HTTP ingest: http://127.0.0.1:{ingest.ingest_http_port}/events with 'Authorization: "
        f"Bearer {escape(ingest.ingest_demo_key)}' (key 'demo', IOC_INGEST_DEMO_KEY; "
        "`ioc ingest keys` for others)"
    )
    components = demo_components(settings)
    if with_prometheus:
        prometheus, message = prometheus_component(settings)
        console.print(message)
        if prometheus is not None:
            components.append(prometheus)
    url = wall_display_url(settings)
    if url:
        console.print(f"[bold green]wall display: {url}[/]")
    console.print(
        f"running {len(components)} component(s): "
        f"{', '.join(c.name for c in components) or 'none yet'} — Ctrl-C stops"
    )
    # Our Tansu holds every record in memory: restart it when it passes its cap.
    guard = tansu_guard(
        settings,
        # soft_wrap: one JSON line stays one line, whatever the terminal width
        lambda line: console.print(f"broker-guard | {escape(line)}", soft_wrap=True),
    )
    if guard is not None:
        console.print(
            f"Tansu memory cap: {settings.tansu_max_rss_mb} MiB (IOC_TANSU_MAX_RSS_MB); "
            "passing it restarts the broker and the components"
        )
    names = [c.name for c in components]
    files = LogFiles(settings.state_dir, names)
    console.print(f"component logs: {files.directory}/<component>.log (ioc logs NAME -f)")
    board = StatusBoard(names)
    guards: list[Guard] = [guard.watch] if guard else []
    if verbose:
        output: ComponentOutput = Tee(PrefixedLines(console, names), files)
    elif console.is_terminal:
        output = Tee(board, files)
        guards.append(live_board(console, board, MetricsProbe(metrics_urls())))
    else:  # no board to redraw: the problems and restarts only, as lines
        output = Tee(PrefixedLines(console, names, problems_only=True), board, files)
    try:
        asyncio.run(Supervisor(components, console, guards, output).run())
    finally:
        files.close()
        if started and not keep_services:
            stopped = services.down(settings, tuple(started))
            console.print(f"stopped services: {', '.join(stopped)}")


def live_board(console: Console, board: StatusBoard, probe: MetricsProbe) -> Guard:
    """A supervisor guard that redraws the status board every second until the stop."""

    async def watch(_: Supervisor) -> None:
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while True:
                await probe.poll()
                live.update(render(board, probe, time.monotonic(), console.width))
                await asyncio.sleep(1.0)

    return watch
