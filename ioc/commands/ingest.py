"""`ioc ingest serve`: HTTP (CloudEvents) and MQTT gateways into Kafka;
`ioc ingest keys add|list|revoke`: who may send what to them."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg
import orjson
import typer
from rich.console import Console
from rich.table import Table

from events.errors import ConfigurationError
from events.logs import configure_logging
from ingest import keystore
from ingest.service import serve as serve_gateways
from ingest.settings import IngestSettings
from ioc.commands.db import run_asyncpg
from ioc.services import mqtt_accounts
from ioc.settings import ServiceSettings
from storage import migrate as migrations

T = TypeVar("T")

app = typer.Typer(help="HTTP and MQTT ingest gateways.", no_args_is_help=True)


@app.command()
def serve(
    port: int | None = typer.Option(None, help="HTTP port (default IOC_INGEST_HTTP_PORT, 8081)"),
    mqtt: bool = typer.Option(True, help="also bridge MQTT (ioc/events/#) into Kafka"),
) -> None:
    """Validate incoming CloudEvents and publish them to their domain topics."""
    settings = IngestSettings()
    if port is not None:
        settings = settings.model_copy(update={"ingest_http_port": port})
    configure_logging("ingest")
    asyncio.run(serve_gateways(settings, mqtt=mqtt))


keys_app = typer.Typer(
    help="Keys of the ingest gateways (Authorization: Bearer <key>), stored hashed in TimescaleDB.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
console = Console()


def _with_db(work: Callable[[asyncpg.Connection], Awaitable[T]], url: str | None = None) -> T:
    """Run ``work`` on the schema-migrated database (by default IOC_DATABASE_URL or our
    TimescaleDB)."""

    async def migrated_then(conn: asyncpg.Connection) -> T:
        # the key table is a migration: apply what is pending (idempotent, locked)
        await migrations.migrate(conn)
        return await work(conn)

    return run_asyncpg(migrated_then, url)


DEMO_KEY = "demo"


def provision_demo_key(settings: ServiceSettings, secret: str) -> bool:
    """The demo's key ``demo`` (any type, any source) with this secret
    (IOC_INGEST_DEMO_KEY) in the services' database, and its MQTT account on their
    Mosquitto, as `ioc up` makes them; True when the key was (re)created."""
    database_url = settings.effective_database_url

    async def work(conn: asyncpg.Connection) -> bool:
        return await keystore.ensure_key(
            conn, DEMO_KEY, secret, ["*"], ["*"], mqtt_accounts.mosquitto_hash
        )

    made = _with_db(work, database_url)
    mqtt_accounts.sync_accounts(settings, database_url)
    return made


@keys_app.command("add")
def keys_add(
    name: str = typer.Argument(..., help="the key's name (also its MQTT account)"),
    types: list[str] = typer.Option(
        ..., "--types", help="event types it may publish: exact or a prefix ending in *"
    ),
    sources: list[str] = typer.Option(
        ..., "--sources", help="sources it may publish: exact or a prefix ending in *"
    ),
) -> None:
    """Create a key; its secret is printed once (only its hash is stored)."""

    async def work(conn: asyncpg.Connection) -> str:
        return await keystore.add_key(
            conn, name, types, sources, mqtt_hash=mqtt_accounts.mosquitto_hash
        )

    secret = _with_db(work)
    # its MQTT account: user NAME, password the secret, topics ioc/events/NAME/#
    mqtt_accounts.sync_accounts(ServiceSettings())
    # the secret alone on stdout (for scripts); the rest on stderr
    Console(stderr=True).print(
        f"key {name!r} created; its secret is shown only now — send it as "
        "'Authorization: Bearer <secret>':"
    )
    typer.echo(secret)


@keys_app.command("list")
def keys_list(
    revoked: bool = typer.Option(False, "--revoked", help="also the revoked keys"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """The keys and what each may publish (never their secrets)."""

    async def work(conn: asyncpg.Connection) -> list[keystore.KeyInfo]:
        return await keystore.list_keys(conn, include_revoked=revoked)

    keys = _with_db(work)
    if as_json:
        typer.echo(
            orjson.dumps([dataclasses.asdict(k) for k in keys], option=orjson.OPT_UTC_Z).decode()
        )
        return
    table = Table(title="ingest keys")
    for col in ("name", "types", "sources", "created (UTC)", "revoked (UTC)"):
        table.add_column(col)
    for k in keys:
        table.add_row(
            k.name,
            ", ".join(k.types),
            ", ".join(k.sources),
            _t(k.created_at),
            _t(k.revoked_at) if k.revoked_at else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(name: str = typer.Argument(..., help="the key's name")) -> None:
    """Revoke a key: the gateways refuse it within IOC_INGEST_KEYS_REFRESH_S (5 s)."""

    async def work(conn: asyncpg.Connection) -> bool:
        return await keystore.revoke_key(conn, name)

    if not _with_db(work):
        raise ConfigurationError(f"no active key named {name!r} (ioc ingest keys list)")
    mqtt_accounts.sync_accounts(ServiceSettings())  # its MQTT account goes too
    console.print(f"key {name!r} revoked")


def _t(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
