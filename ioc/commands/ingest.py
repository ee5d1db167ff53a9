"""`ioc ingest serve`: HTTP (CloudEvents) and MQTT gateways into Kafka."""

from __future__ import annotations

import asyncio

import typer

from events.logs import configure_logging
from ingest.service import serve as serve_gateways
from ingest.settings import IngestSettings

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
