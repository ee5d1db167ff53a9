"""`python -m ingest`: the HTTP and MQTT gateways."""

from __future__ import annotations

import asyncio

from ingest.service import serve
from ingest.settings import IngestSettings
from ioc.logs import configure_logging

configure_logging("ingest")
asyncio.run(serve(IngestSettings()))
