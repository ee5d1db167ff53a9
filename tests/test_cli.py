"""The `ioc` command imports only the module of the command asked for."""

from __future__ import annotations

import ast
import subprocess
import sys

from ioc.cli import COMMANDS

# Run in a fresh interpreter: this test process has imported everything already.
PROBE = """
import sys
sys.argv = ["ioc", *{argv!r}]
from ioc import cli
try:
    cli.main()
except SystemExit:
    pass
heavy = ["aiokafka", "faust", "numpy", "streams.aggregator", "simulators.runner", "ws.server"]
print("LOADED", [m for m in heavy if m in sys.modules])
"""


def _loaded(*argv: str) -> tuple[str, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=list(argv))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    head, _, tail = out.rpartition("LOADED ")
    return head, ast.literal_eval(tail)  # the probe prints a list of module names


def test_a_services_command_does_not_import_the_components() -> None:
    text, loaded = _loaded("services", "--help")
    assert "up" in text and "status" in text
    assert loaded == []


def test_help_lists_every_command() -> None:
    text, loaded = _loaded("--help")
    for name in COMMANDS:
        assert f" {name} " in text, name
    assert "aiokafka" in loaded  # all command modules were imported for the listing


def test_every_command_answers_its_help() -> None:
    for name in COMMANDS:
        text, _ = _loaded(name, "--help")
        assert "Usage:" in text, name
