"""`python -m ingest`: the HTTP and MQTT gateways."""

from __future__ import annotations

import asyncio

from events.logs import configure_logging
from events.settings import exit_on_error
from ingest.service import serve
from ingest.settings import IngestSettings


def main() -> None:
    with exit_on_error("ingest"):
        configure_logging("ingest")
        asyncio.run(serve(IngestSettings()))


if __name__ == "__main__":
    main()
