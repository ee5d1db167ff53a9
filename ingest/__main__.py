"""`python -m ingest`: the HTTP and MQTT gateways."""

from __future__ import annotations

import asyncio

from events.logs import configure_logging
from ingest.service import serve
from ingest.settings import IngestSettings

configure_logging("ingest")
asyncio.run(serve(IngestSettings()))
