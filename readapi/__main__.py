"""``python -m readapi``: serve the read API until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog

from events.logs import configure_logging
from events.settings import exit_on_error
from readapi.app import ReadApi
from readapi.settings import ReadApiSettings

log = structlog.get_logger("readapi")


async def _main(settings: ReadApiSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ReadApi(settings) as api:
        log.info("readapi_listening", url=api.url)
        await stop.wait()


def main() -> None:
    with exit_on_error("readapi"):
        configure_logging("readapi")
        settings = ReadApiSettings()
    try:
        asyncio.run(_main(settings))
    except OSError as exc:  # the port is taken: say which setting moves it
        print(
            f"cannot serve on {settings.readapi_host}:{settings.readapi_port} ({exc}); "
            "set IOC_READAPI_PORT to a free port",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
