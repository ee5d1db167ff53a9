"""`ioc up`: the whole demo (services, then every component) until Ctrl-C."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.markup import escape

from ingest.settings import IngestSettings
from ioc import services
from ioc.broker_guard import tansu_guard
from ioc.commands import services as services_cmd
from ioc.commands.ingest import provision_demo_key
from ioc.components import demo_components, wall_display_url
from ioc.supervisor import Supervisor

console = Console(stderr=True)


def up(
    keep_services: bool = typer.Option(
        False, help="leave the services running after Ctrl-C (default: stop those we started)"
    ),
    broker: services_cmd.Broker | None = services_cmd.BROKER_OPTION,
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
    try:
        asyncio.run(Supervisor(components, console, [guard.watch] if guard else []).run())
    finally:
        if started and not keep_services:
            stopped = services.down(settings, tuple(started))
            console.print(f"stopped services: {', '.join(stopped)}")
