"""``python -m storage``: the storage process (sinks, maintenance, health/metrics)."""

from __future__ import annotations

import asyncio
import signal

from events.logs import configure_logging
from events.settings import exit_on_error
from storage.service import run_storage
from storage.settings import StorageSettings


async def _main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_storage(StorageSettings(), stop)


def main() -> None:
    with exit_on_error("storage"):
        configure_logging("storage")
        asyncio.run(_main())


if __name__ == "__main__":
    main()
