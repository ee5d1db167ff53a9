"""`ioc services up|down|status`."""

from __future__ import annotations

import enum
import time
from dataclasses import asdict

import orjson
import typer
from rich.console import Console
from rich.table import Table

from ioc import services
from ioc.services.broker import describe_choice as describe_choice
from ioc.settings import ServiceSettings

app = typer.Typer(
    help="Local broker (Apache Kafka or Tansu), TimescaleDB and Mosquitto.", no_args_is_help=True
)
console = Console(stderr=True)


class Broker(enum.StrEnum):
    auto = "auto"
    kafka = "kafka"
    tansu = "tansu"


BROKER_OPTION = typer.Option(
    None,
    "--broker",
    help="auto (default; Apache Kafka when Java is present or installable, else Tansu), "
    "kafka or tansu; same as IOC_BROKER",
    show_default=False,
)


def settings_for(broker: Broker | None) -> ServiceSettings:
    """The service settings, with ``--broker`` (when given) over ``IOC_BROKER``."""
    return ServiceSettings(broker=broker.value) if broker else ServiceSettings()


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
    broker: Broker | None = BROKER_OPTION,
) -> None:
    """Start the services (idempotent: running ones are reused)."""
    settings = settings_for(broker)
    begin = time.monotonic()
    if "broker" in _only(names):
        console.print(describe_choice(settings))
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
    replication: int = typer.Option(
        1,
        "--replication",
        envvar="IOC_TOPIC_REPLICATION",
        min=1,
        help="replication factor of the topics created (3 on a production cluster)",
    ),
) -> None:
    """Create the contract topics with their partitions and configs (idempotent).

    Configs: cleanup policy (compaction for the alert state) and retention. On Apache
    Kafka the configs of existing contract topics are set back to these too.
    `ioc services up` does this for the local broker; use it for a production Kafka.
    """
    from ioc.services.broker import all_topics, create_contract_topics

    create_contract_topics(
        bootstrap_servers, timeout=60, specs=all_topics(), replication=replication
    )
    console.print(f"contract topics present on {bootstrap_servers}")
