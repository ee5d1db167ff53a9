"""A bad IOC_* setting ends every component with one line naming the variable
(events.settings), not a pydantic traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from events.errors import ConfigurationError
from events.settings import IocSettings, env_name


class Example(IocSettings):
    model_config = SettingsConfigDict(env_prefix="IOC_EX_", extra="ignore")

    port: int = 1
    tokens: dict[str, str] = Field(default_factory=dict)
    servers: str = Field(
        default="x", validation_alias=AliasChoices("IOC_EX_SERVERS", "IOC_BOOTSTRAP_SERVERS")
    )


def test_the_variable_is_named_with_its_prefix_or_its_alias() -> None:
    assert env_name(Example, "port") == "IOC_EX_PORT"
    assert env_name(Example, "servers") == "IOC_EX_SERVERS"


def test_a_malformed_value_is_one_line_with_what_it_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOC_EX_PORT", "80a")
    with pytest.raises(ConfigurationError) as info:
        Example()
    assert str(info.value) == (
        "bad setting IOC_EX_PORT='80a': Input should be a valid integer, "
        "unable to parse string as an integer"
    )


def test_a_json_setting_that_is_not_json_names_its_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOC_EX_TOKENS", "{bad")
    with pytest.raises(ConfigurationError, match='field "tokens"'):
        Example()


def test_a_check_of_several_settings_is_its_own_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from ws.settings import WsSettings

    monkeypatch.setenv("IOC_WS_REFUSE_DEMO_TOKENS", "true")
    with pytest.raises(ConfigurationError) as info:
        WsSettings()
    assert str(info.value).startswith("bad settings: IOC_WS_TOKENS is not set, and with ")


def test_every_offending_variable_is_named() -> None:
    with pytest.raises(ConfigurationError) as info:
        Example(port="x", tokens=3)
    assert "IOC_EX_PORT='x'" in str(info.value) and "IOC_EX_TOKENS=3" in str(info.value)
    assert "\n" not in str(info.value)


# Each component's own entry point, with a bad value of one of its settings.
ENTRY_POINTS = {
    "ingest": ([sys.executable, "-m", "ingest"], "IOC_INGEST_HTTP_PORT"),
    "storage": ([sys.executable, "-m", "storage"], "IOC_STORAGE_HTTP_PORT"),
    "simulator": ([sys.executable, "-m", "simulators"], "IOC_SIM_RATE"),
    "streams": ([sys.executable, "-m", "ioc", "streams", "worker"], "IOC_STREAMS_HTTP_PORT"),
    "alerts": ([sys.executable, "-m", "ioc", "alerts", "worker"], "IOC_ALERTS_HTTP_PORT"),
    "ws": ([sys.executable, "-m", "ioc", "ws", "serve"], "IOC_WS_PORT"),
    "readapi": ([sys.executable, "-m", "readapi"], "IOC_READAPI_PORT"),
    "log level": ([sys.executable, "-m", "ingest"], "IOC_LOG_LEVEL"),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_a_component_with_a_bad_setting_exits_2_with_one_line(name: str) -> None:
    argv, variable = ENTRY_POINTS[name]
    env = {**os.environ, variable: "8o8o", "IOC_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"bad setting {variable}='8o8o'" in lines[0], done.stderr
