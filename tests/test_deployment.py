"""docker-compose.yml cannot run here (no Docker engine), so its contract is checked:
every component of the local demo is deployed, every command exists, every IOC_*
variable is one some component reads."""

from __future__ import annotations

import importlib.util
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
