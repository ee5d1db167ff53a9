"""`ioc ws serve`: the websocket push server and the wall display."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import typer
from rich.console import Console

from events.errors import ServiceError
from events.logs import configure_logging

app = typer.Typer(help="Websocket push server and wall display.", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def serve(
    host: str | None = typer.Option(None, help="listen address (default IOC_WS_HOST)"),
    port: int | None = typer.Option(None, help="listen port (default IOC_WS_PORT, 8080)"),
) -> None:
    """Serve /ws, the wall page, /healthz and /metrics until SIGINT/SIGTERM."""
    from ws.app import WsApp
    from ws.settings import WsSettings

    configure_logging("ws")
    # One line per HTTP request/handshake from the library is noise at INFO; our own
    # structlog events say what matters (commands, slow clients, snapshot failures).
    logging.getLogger("websockets").setLevel(logging.WARNING)
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["ws_host"] = host
    if port is not None:
        overrides["ws_port"] = port
    settings = WsSettings(**overrides)  # type: ignore[arg-type]

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with console.status("connecting to the broker…"):
            wsapp = WsApp(settings)
            try:
                await wsapp.start()
            except OSError as exc:
                raise ServiceError(
                    f"cannot serve on {settings.ws_host}:{settings.ws_port} ({exc}); "
                    "set IOC_WS_PORT to a free port"
                ) from exc
            except Exception as exc:  # aiokafka's connection errors have no common base
                raise ServiceError(
                    f"cannot reach the broker at {settings.bootstrap_servers} ({exc}); "
                    "start it with `ioc services up` or set IOC_BOOTSTRAP_SERVERS"
                ) from exc
        console.print(f"[bold green]wall display: {wsapp.server.url}[/] (websocket at /ws)")
        try:
            await stop.wait()
        finally:
            with contextlib.suppress(Exception):
                await wsapp.stop()

    asyncio.run(run())
