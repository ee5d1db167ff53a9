"""`ioc services up|down|status`."""

from __future__ import annotations

import time
from dataclasses import asdict

import orjson
import typer
from rich.console import Console
from rich.table import Table

from ioc import services
from ioc.settings import ServiceSettings

app = typer.Typer(help="Local broker (Tansu), TimescaleDB and Mosquitto.", no_args_is_help=True)
console = Console(stderr=True)


def _only(names: list[str] | None) -> tuple[str, ...]:
    if not names:
        return services.SERVICES
    unknown = [n for n in names if n not in services.SERVICES]
    if unknown:
        raise typer.BadParameter(f"unknown service {unknown[0]!r}; one of {services.SERVICES}")
    return tuple(names)


@app.command()
def up(
    names: list[str] | None = typer.Argument(None, help="broker, timescaledb, mosquitto"),
) -> None:
    """Start the services (idempotent: running ones are reused)."""
    settings = ServiceSettings()
    begin = time.monotonic()
    with console.status("starting services…") as spinner:
        services.up(settings, _only(names), log=lambda msg: spinner.update(msg))
    console.print(f"services up in {time.monotonic() - begin:.1f}s")
    show_status(settings)


@app.command()
def down(
    names: list[str] | None = typer.Argument(None, help="broker, timescaledb, mosquitto"),
) -> None:
    """Stop the services that `up` started (and nothing else)."""
    stopped = services.down(ServiceSettings(), _only(names))
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Each service with its address, version and health."""
    settings = ServiceSettings()
    if as_json:
        typer.echo(orjson.dumps([asdict(s) for s in services.status(settings)]).decode())
        return
    if not show_status(settings):
        raise typer.Exit(1)


def show_status(settings: ServiceSettings) -> bool:
    table = Table(title="IOC services")
    for col in ("service", "address", "health", "version", "detail", "owner"):
        table.add_column(col)
    statuses = services.status(settings)
    for s in statuses:
        health = "[green]healthy[/]" if s.healthy else "[red]down[/]"
        table.add_row(s.name, s.address, health, s.version, s.detail, s.owner)
    Console().print(table)
    return all(s.healthy for s in statuses)


def create_topics(
    bootstrap_servers: str = typer.Option(
        "127.0.0.1:9092", envvar="IOC_BOOTSTRAP_SERVERS", help="any Kafka-compatible broker"
    ),
) -> None:
    """Create the contract topics with their partition counts (idempotent).

    `ioc services up` does this for the local broker; use it for a production Kafka.
    """
    from ioc.services.broker import create_contract_topics

    create_contract_topics(bootstrap_servers, timeout=60)
    console.print(f"contract topics present on {bootstrap_servers}")
