"""docker-compose.yml cannot run here (no Docker engine), so its contract is checked:
every component of the local demo is deployed, every command exists, every IOC_*
variable is one some component reads."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from ingest.settings import IngestSettings
from ioc.components import demo_components
from ioc.settings import ServiceSettings
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
        with pytest.raises(ValueError, match="IOC_WS_PAGE_TOKEN"):
            WsSettings(ws_refuse_demo_tokens=True, ws_tokens=own, ws_page_token=page)
    # the demo itself (no flag) keeps its tokens
    assert WsSettings().ws_page_token == "wall-viewer"
