"""The components `ioc up` runs, in start order.

Each component issue adds its long-running processes here; they all get the service
addresses through their environment, never through globals.
"""

from __future__ import annotations

import os

from ioc.broker_guard import restarts_file
from ioc.services.mqtt_accounts import GATEWAY_USER, gateway_password
from ioc.settings import ServiceSettings
from ioc.supervisor import Component, python_module


def component_env(settings: ServiceSettings) -> dict[str, str]:
    """The addresses every component needs, as its own settings' environment variables."""
    return {
        "IOC_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "IOC_DATABASE_URL": settings.effective_database_url,
        "IOC_MQTT_HOST": settings.host,
        "IOC_MQTT_PORT": str(settings.mqtt_port),
        # the ingest gateway's account on our Mosquitto (ioc/services/mqtt_accounts.py)
        "IOC_MQTT_USERNAME": GATEWAY_USER,
        "IOC_MQTT_PASSWORD": gateway_password(settings),
    }


def metrics_urls() -> dict[str, str]:
    """Where each component serves /metrics locally (the ports from its own settings, the
    same IOC_* variables the component reads)."""
    from ioc.observability import local_ports

    return {name: f"http://127.0.0.1:{port}/metrics" for name, port in local_ports().items()}


def demo_components(settings: ServiceSettings) -> list[Component]:
    env = component_env(settings)
    components: list[Component] = []
    # Later issues append their processes here (simulators, stream workers, sinks,
    # the push server) with `python_module(...)` argv and `env`.
    # HTTP (IOC_INGEST_HTTP_PORT, 8081) and MQTT (ioc/events/#) gateways into Kafka.
    components.append(
        Component("ingest", python_module("ioc", "ingest", "serve"), env, source=True)
    )
    # Stream worker: ioc.events.* -> windows/KPIs on ioc.kpi, bad records on ioc.deadletter
    # (health + Prometheus metrics on IOC_STREAMS_HTTP_PORT, 8091). Faust-hosted unless
    # IOC_STREAMS_ENGINE=aiokafka.
    components.append(
        Component("streams", python_module("ioc", "streams", "worker", "--no-progress"), env)
    )
    # Alerts: ioc.kpi + ioc.alerts.commands -> ioc.alerts (single instance; see docs/alerts.md).
    components.append(Component("alerts", python_module("ioc", "alerts", "worker"), env))
    # Push server + wall display (reads ioc.kpi/ioc.alerts itself; IOC_WS_* settings). It
    # shows a notice after the supervisor restarted the broker (ioc/broker_guard.py).
    ws_env = {**env, "IOC_WS_BROKER_RESTARTS_FILE": str(restarts_file(settings))}
    components.append(Component("ws", python_module("ioc", "ws", "serve"), ws_env))
    # Storage: migrations, then the raw-event, KPI and alert sinks into TimescaleDB and the
    # retention/rollup job (health + Prometheus metrics on IOC_STORAGE_HTTP_PORT, 8092).
    components.append(Component("storage", python_module("storage"), env))
    # Read API: KPI history, latest windows and alerts from TimescaleDB over HTTP
    # (IOC_READAPI_PORT, 8082; the push server's tokens; docs/readapi.md).
    components.append(Component("readapi", python_module("readapi"), env))
    # Simulated province at a demo rate, cycling through the scenarios so the wall shows
    # alerts (health + Prometheus metrics on IOC_SIM_METRICS_PORT, 8093).
    components.append(
        Component(
            "simulator",
            python_module("simulators", "--rate", "200", "--scenario", "cycle", "--no-live"),
            # (an IOC_SIM_METRICS_PORT of the caller wins: two demos side by side)
            {"IOC_SIM_METRICS_PORT": os.environ.get("IOC_SIM_METRICS_PORT", "8093"), **env},
            source=True,
        )
    )
    return components


def wall_display_url(settings: ServiceSettings) -> str | None:
    """The wall display's address (the push server serves it; IOC_WS_HOST/IOC_WS_PORT)."""
    from ws.settings import WsSettings

    ws = WsSettings()
    return f"http://{ws.ws_host}:{ws.ws_port}/"
