"""What Prometheus scrapes: each component's metric registry, its port, the names its
``/metrics`` exposes, and the local variant of ``deploy/prometheus/prometheus.yml`` that
``ioc up --with-prometheus`` runs.

The deployment config (docker-compose.yml) and the local one differ only in where the
targets are: ``<service>:<port>`` on the compose network, ``127.0.0.1:<port>`` locally
(the ports from the same settings, so an ``IOC_*_PORT`` override is followed).
"""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from ioc.settings import ServiceSettings
from ioc.supervisor import Component

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPLOY_CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
# What a family of each type exposes (prometheus_client names a counter's family without
# its `_total`; every sample adds a suffix, or none).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}
# Units in names (https://prometheus.io/docs/practices/naming/): base units only.
BASE_UNIT_SUFFIXES = ("_seconds", "_bytes", "_records", "_ratio", "_timestamp_seconds")
NOT_BASE_UNITS = re.compile(r"_(ms|millis|milliseconds|us|minutes|hours|kb|mb|per_second)(_|$)")
DURATION_WORDS = re.compile(r"(latency|duration|time|age|elapsed)")


def _storage() -> CollectorRegistry:
    from storage.metrics import SinkMetrics

    registry = CollectorRegistry()
    SinkMetrics.create(registry)
    return registry


def _streams() -> CollectorRegistry:
    from streams.observability import StreamsMetrics

    return StreamsMetrics().registry


def _alerts() -> CollectorRegistry:
    from streams.alerts.worker import AlertsMetrics

    return AlertsMetrics().registry


def _ingest() -> CollectorRegistry:
    from ingest.metrics import IngestMetrics

    return IngestMetrics().registry


def _ws() -> CollectorRegistry:
    from ws.server import Metrics

    return Metrics().registry


def _readapi() -> CollectorRegistry:
    from readapi.app import ReadApiMetrics

    return ReadApiMetrics().registry


def _simulator() -> CollectorRegistry:
    from simulators.metrics import SimulatorMetrics

    return SimulatorMetrics().registry


# Each scraped component: how to build the registry its process serves on /metrics.
REGISTRIES: dict[str, Callable[[], CollectorRegistry]] = {
    "ingest": _ingest,
    "streams": _streams,
    "alerts": _alerts,
    "storage": _storage,
    "ws": _ws,
    "simulator": _simulator,
    "readapi": _readapi,
}


def local_ports() -> dict[str, int]:
    """The HTTP port of every component locally (their settings, environment included)."""
    from ingest.settings import IngestSettings
    from readapi.settings import ReadApiSettings
    from simulators.settings import SimulatorSettings
    from storage.settings import StorageSettings
    from streams.alerts.worker import AlertsSettings
    from streams.settings import StreamsSettings
    from ws.settings import WsSettings

    # `ioc up` gives the simulator 8093 unless IOC_SIM_METRICS_PORT says otherwise
    # (ioc.components); its own default is 0 (off) for one-off runs.
    sim = SimulatorSettings().metrics_port or 8093
    return {
        "ingest": IngestSettings().ingest_http_port,
        "streams": StreamsSettings().http_port,
        "alerts": AlertsSettings().alerts_http_port,
        "storage": StorageSettings().storage_http_port,
        "ws": WsSettings().ws_port,
        "simulator": sim,
        "readapi": ReadApiSettings().readapi_port,
    }


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name ``registry`` can expose, labelled children or not yet."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def naming_problems(registry: CollectorRegistry) -> list[str]:
    """Where a family breaks the naming conventions the project follows: the ``ioc_``
    prefix, snake case, base units only, durations in seconds, a unit on histograms."""
    problems = []
    for family in registry.collect():
        name = family.name
        if not re.fullmatch(r"ioc_[a-z0-9_]+", name):
            problems.append(f"{name}: not ioc_ + snake case")
        if NOT_BASE_UNITS.search(name):
            problems.append(f"{name}: not a base unit")
        if family.type == "histogram" and not name.endswith(BASE_UNIT_SUFFIXES):
            problems.append(f"{name}: a histogram names its unit")
        if DURATION_WORDS.search(name) and not name.endswith("_seconds"):
            problems.append(f"{name}: a duration or time is in seconds")
        if family.type != "counter" and name.endswith("_total"):
            problems.append(f"{name}: _total is for counters")
    return problems


def load_config(path: Path = DEPLOY_CONFIG) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    return config


def scrape_jobs(config: dict[str, Any]) -> dict[str, list[str]]:
    """Job name -> its targets."""
    return {
        job["job_name"]: [t for sc in job.get("static_configs", ()) for t in sc["targets"]]
        for job in config["scrape_configs"]
    }


def local_config(
    config: dict[str, Any],
    ports: dict[str, int],
    host: str = "127.0.0.1",
    extra: Iterable[tuple[str, int]] = (),
) -> dict[str, Any]:
    """The deployment config with each job's targets on ``host`` and the local ports.

    Jobs are the components (job name = component); one without a local port is an
    error, not a silently empty job. ``extra`` adds jobs (the supervisor's broker guard).
    """
    out = copy.deepcopy(config)
    for job in out["scrape_configs"]:
        name = job["job_name"]
        if name not in ports:
            raise ValueError(f"no local port for job {name!r}")
        job["static_configs"] = [{"targets": [f"{host}:{ports[name]}"]}]
    for name, port in extra:
        out["scrape_configs"].append(
            {"job_name": name, "static_configs": [{"targets": [f"{host}:{port}"]}]}
        )
    return out


def write_local_config(settings: ServiceSettings, ports: dict[str, int] | None = None) -> Path:
    """Write the local variant under the state directory; returns its path."""
    chosen = local_ports() if ports is None else ports
    extra = [("supervisor", settings.supervisor_http_port)]
    config = local_config(load_config(), chosen, settings.host, extra)
    path = settings.state_dir / "prometheus" / "prometheus.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def prometheus_argv(settings: ServiceSettings, config: Path, port: int | None = None) -> list[str]:
    """The distribution's ``prometheus`` on ``config``, its data under the state dir."""
    binary = shutil.which("prometheus") or "prometheus"
    data = settings.state_dir / "prometheus" / "data"
    data.mkdir(parents=True, exist_ok=True)
    return [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address={settings.host}:{port or settings.prometheus_port}",
    ]


def prometheus_component(settings: ServiceSettings) -> tuple[Component | None, str]:
    """The supervised local Prometheus for ``ioc up --with-prometheus``, or None and the
    one-line reason it cannot run; the message says where it is (or why not)."""
    if shutil.which("prometheus") is None:
        return None, (
            "--with-prometheus: no `prometheus` on PATH, running without it "
            "(Debian/Ubuntu: apt-get install prometheus)"
        )
    if not DEPLOY_CONFIG.is_file():
        return None, f"--with-prometheus: {DEPLOY_CONFIG} is missing (run from a checkout)"
    config = write_local_config(settings)
    url = f"http://{settings.host}:{settings.prometheus_port}/"
    component = Component("prometheus", prometheus_argv(settings, config))
    return component, f"prometheus: {url} (scrape config {config})"
