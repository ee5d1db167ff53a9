"""Runs the HTTP and MQTT gateways in one process until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog
from aiohttp import web

from events.errors import ConfigurationError
from ingest.http import build_app
from ingest.keystore import KeyCache
from ingest.metrics import IngestMetrics
from ingest.mqtt import MqttBridge
from ingest.publisher import KafkaPublisher
from ingest.settings import DEFAULT_DEMO_KEY, IngestSettings

log = structlog.get_logger("ingest")


def demo_secrets(settings: IngestSettings) -> tuple[str, ...]:
    return (DEFAULT_DEMO_KEY, settings.ingest_demo_key)


def check_deployment_keys(keys: KeyCache) -> None:
    """A deployment's gateway starts only with keys of its own (IOC_INGEST_REFUSE_DEMO_KEY)."""
    if keys.refused_names:
        raise ConfigurationError(
            f"the ingest key(s) {keys.refused_names} have the demo's published secret, which "
            "IOC_INGEST_REFUSE_DEMO_KEY refuses: revoke them (`ioc ingest keys revoke NAME`)"
        )
    if keys.last_error and not keys.keys:
        raise ConfigurationError(f"the ingest keys cannot be read: {keys.last_error}")
    if not keys.keys:
        raise ConfigurationError(
            "no ingest key: create one with `ioc ingest keys add NAME --types 'vn.ioc.air.*' "
            "--sources '/sensors/air/*'` (in docker compose: `docker compose run --rm ingest "
            "ingest keys add ...`); IOC_INGEST_REFUSE_DEMO_KEY refuses to run without"
        )


async def serve(
    settings: IngestSettings, *, mqtt: bool = True, stop: asyncio.Event | None = None
) -> None:
    """Serve until ``stop`` is set (by default: until SIGINT/SIGTERM)."""
    metrics = IngestMetrics()
    keys = KeyCache(
        settings.database_url,
        settings.ingest_keys_refresh_s,
        settings.ingest_keys_max_stale_s,
        refused_secrets=demo_secrets(settings) if settings.ingest_refuse_demo_key else (),
    )
    # A first load before the port opens, so that a healthy gateway knows its keys (when
    # the database is away, requests get 503 until a later reload succeeds).
    if not await keys.reload():
        log.warning("ingest_keys_not_loaded", error=keys.last_error)
    if settings.ingest_refuse_demo_key:
        try:
            check_deployment_keys(keys)
        except ConfigurationError:
            await keys.close()
            raise
    publisher = KafkaPublisher(
        settings.bootstrap_servers, max_inflight_bytes=settings.ingest_max_inflight_bytes
    )
    await publisher.start()
    runner = web.AppRunner(build_app(settings, publisher, metrics, keys), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.ingest_http_host, settings.ingest_http_port)
    await site.start()
    log.info(
        "ingest_ready",
        http=f"http://{settings.ingest_http_host}:{settings.ingest_http_port}/events",
        mqtt=f"{settings.mqtt_host}:{settings.mqtt_port}" if mqtt else None,
    )
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    key_reloads = asyncio.create_task(keys.run())
    bridge = (
        asyncio.create_task(MqttBridge(settings, publisher, metrics, keys.by_name).run())
        if mqtt
        else None
    )
    try:
        await stop.wait()
    finally:
        if bridge is not None:
            bridge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bridge
        await runner.cleanup()
        await publisher.stop()
        key_reloads.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await key_reloads
