"""docker-compose.yml cannot run here (no Docker engine), so its contract is checked:
every component of the local demo is deployed, every command exists, every IOC_*
variable is one some component reads, every component's healthcheck asks its /readyz,
Prometheus scrapes each one and Grafana gets the checked-in provisioning and dashboards."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from events.errors import ConfigurationError
from ingest.settings import IngestSettings
from ioc import observability as obs
from ioc.components import demo_components
from ioc.settings import ServiceSettings
from readapi.settings import ReadApiSettings
from simulators.settings import SimulatorSettings
from storage.settings import StorageSettings
from streams.alerts.worker import AlertsSettings
from streams.settings import StreamsSettings
from ws.settings import WsSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
COMPONENTS = {name: spec for name, spec in COMPOSE["services"].items() if spec.get("build") == "."}


def _env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for name, info in cls.model_fields.items():
        names.add(f"{prefix}{name}".upper())
        alias = info.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
    return names


def test_every_demo_component_is_deployed() -> None:
    local = {c.name for c in demo_components(ServiceSettings())}
    assert local <= set(COMPONENTS), f"missing in docker-compose.yml: {local - set(COMPONENTS)}"


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_component_commands_exist(name: str) -> None:
    spec = COMPONENTS[name]
    entrypoint = spec.get("entrypoint")
    if entrypoint:
        assert entrypoint[:2] == ["python", "-m"]
        assert importlib.util.find_spec(f"{entrypoint[2]}.__main__") is not None
        return
    argv = [sys.executable, "-m", "ioc", *spec["command"], "--help"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_every_ioc_variable_is_read_by_a_component() -> None:
    known: set[str] = set()
    for cls in (
        ServiceSettings,
        IngestSettings,
        SimulatorSettings,
        StorageSettings,
        StreamsSettings,
        AlertsSettings,
        WsSettings,
        ReadApiSettings,
    ):
        known |= _env_names(cls)
    used = {
        var
        for spec in COMPONENTS.values()
        for var in (spec.get("environment") or {})
        if var.startswith("IOC_")
    }
    assert used, "components get their addresses from IOC_* variables"
    assert used <= known, f"unknown variables: {used - known}"


# --- observability: healthchecks, Prometheus, Grafana ------------------------------------

OBSERVED = {  # component -> the settings field holding its HTTP port, and its default
    "ingest": IngestSettings.model_fields["ingest_http_port"].default,
    "streams": StreamsSettings.model_fields["http_port"].default,
    "alerts": AlertsSettings.model_fields["alerts_http_port"].default,
    "storage": StorageSettings.model_fields["storage_http_port"].default,
    "ws": WsSettings.model_fields["ws_port"].default,
    "readapi": ReadApiSettings.model_fields["readapi_port"].default,
    # the simulator's port is off unless set: compose sets it
    "simulator": int(COMPONENTS["simulator"]["environment"]["IOC_SIM_METRICS_PORT"]),
}


def test_every_long_running_component_is_observed() -> None:
    one_shot = {"topics"}
    assert set(OBSERVED) == set(COMPONENTS) - one_shot == set(obs.REGISTRIES)


@pytest.mark.parametrize("name", sorted(OBSERVED))
def test_component_healthcheck_asks_its_readyz(name: str) -> None:
    check = COMPONENTS[name]["healthcheck"]
    command = " ".join(check["test"])
    assert f"http://127.0.0.1:{OBSERVED[name]}/readyz" in command
    # urlopen raises on a 503, so the probe fails while the component is not ready
    assert check["test"][:3] == ["CMD", "python", "-c"] and "urlopen" in command
    assert check["retries"] >= 1 and check["start_period"]


def test_prometheus_scrapes_every_component_on_its_port() -> None:
    jobs = obs.scrape_jobs(obs.load_config())
    assert jobs == {name: [f"{name}:{port}"] for name, port in OBSERVED.items()}
    # and each listens beyond its container's loopback
    for name in OBSERVED:
        env = COMPONENTS[name]["environment"]
        assert "0.0.0.0" in [v for k, v in env.items() if k.endswith("HOST")], name


def test_prometheus_and_grafana_are_deployed_with_the_checked_in_files() -> None:
    services = COMPOSE["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in prometheus["volumes"] if "./" in v}
    assert mounts == {"./deploy/prometheus/prometheus.yml": "/etc/prometheus/prometheus.yml"}
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"] if "./" in v}
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    dashboards_dir = ROOT / "deploy" / "grafana" / "dashboards"
    assert mounts == {
        "./deploy/grafana/provisioning": "/etc/grafana/provisioning",
        "./deploy/grafana/dashboards": "/var/lib/grafana/dashboards",
    }
    for local in mounts:
        assert (ROOT / local).exists(), local
    provider = yaml.safe_load((provisioning / "dashboards" / "ioc.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    sources = yaml.safe_load((provisioning / "datasources" / "ioc.yml").read_text())
    by_uid = {d["uid"]: d for d in sources["datasources"]}
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"
    assert by_uid["timescaledb"]["url"] == "timescaledb:5432"
    assert by_uid["timescaledb"]["jsonData"]["database"] == "ioc"
    # The password Grafana interpolates is given to it; its own admin password is settable.
    assert "IOC_DB_PASSWORD" in grafana["environment"]
    assert "IOC_GRAFANA_PASSWORD" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert prometheus["ports"] == ["127.0.0.1:9090:9090"]
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    assert obs.load_config()["global"]["scrape_interval"] == "5s"
    # Two dashboards, each using only the provisioned datasources.
    names = sorted(p.stem for p in dashboards_dir.glob("*.json"))
    assert names == ["city", "pipeline"]
    for path in dashboards_dir.glob("*.json"):
        text = path.read_text()
        uids = set(re.findall(r'"uid":\s*"([^"]+)"', text)) - {f"ioc-{path.stem}"}
        assert uids <= set(by_uid), (path.name, uids)


def _ws_serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IOC_WS_")}
    argv = [sys.executable, "-m", "ioc", "ws", "serve"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**clean, **env})


def test_the_deployment_accepts_no_demo_secret() -> None:
    """docker-compose.yml: compose itself stops without IOC_WS_TOKENS, the push server
    refuses the demo tokens, the ingest gateway the demo key (tests/test_ingest_auth.py)."""
    ws_env = {k: str(v) for k, v in COMPONENTS["ws"]["environment"].items()}
    assert ws_env.pop("IOC_WS_TOKENS").startswith("${IOC_WS_TOKENS:?")
    assert ws_env["IOC_WS_REFUSE_DEMO_TOKENS"] == "true"
    assert COMPONENTS["ingest"]["environment"]["IOC_INGEST_REFUSE_DEMO_KEY"] == "true"
    unset = _ws_serve(ws_env)
    assert unset.returncode == 2
    assert "IOC_WS_TOKENS is not set" in " ".join(unset.stderr.split())
    demo = _ws_serve(
        {**ws_env, "IOC_WS_TOKENS": '{"wall-operator": "operator:op", "x1": "viewer"}'}
    )
    assert demo.returncode == 2
    assert "demo token(s) ['wall-operator'] are published and refused" in " ".join(
        demo.stderr.split()
    )
    # tokens of its own: valid, and the page has no token unless one of them is named
    own = {"v-8f3a91c2": "viewer:wall", "o-77d0e4b1": "operator:alice"}
    settings = WsSettings(ws_refuse_demo_tokens=True, ws_tokens=own)
    assert settings.ws_page_token == ""
    named = WsSettings(ws_refuse_demo_tokens=True, ws_tokens=own, ws_page_token="v-8f3a91c2")
    assert named.ws_page_token == "v-8f3a91c2"
    for page in ("wall-viewer", "not-a-token"):
        with pytest.raises(ConfigurationError, match="IOC_WS_PAGE_TOKEN"):
            WsSettings(ws_refuse_demo_tokens=True, ws_tokens=own, ws_page_token=page)
    # the demo itself (no flag) keeps its tokens
    assert WsSettings().ws_page_token == "wall-viewer"
