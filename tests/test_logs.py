"""Every line a component writes is structured, and libraries speak from WARNING up."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from events.errors import ConfigurationError
from events.logs import LogSettings, configure_logging

SCRIPT = """
import logging, structlog
from events.logs import configure_logging
configure_logging("streams", json=True)
logging.getLogger("aiokafka.consumer.group_coordinator").info("Joined group 'x' (generation 1)")
logging.getLogger("faust.tables.recovery").info("[^--Recovery]: Worker ready")
logging.getLogger("faust.transport.drivers.aiokafka").warning("Stream is slow\\n\\nline two")
logging.getLogger("streams.worker").info("a stdlib record of ours")
structlog.get_logger().info("stage1.assigned", partitions=4)
"""


def _run(**env: str) -> list[dict[str, object]]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = out.stderr.splitlines()
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_library_info_is_hidden_and_every_line_is_json() -> None:
    records = _run()
    events = [r["event"] for r in records]
    assert events == ["Stream is slow\n\nline two", "a stdlib record of ours", "stage1.assigned"]
    slow = records[0]
    assert slow["logger"] == "faust.transport.drivers.aiokafka"
    assert slow["level"] == "warning" and slow["component"] == "streams"
    assert records[2]["partitions"] == 4 and "timestamp" in records[2]


def test_library_level_can_be_lowered() -> None:
    loggers = [r.get("logger") for r in _run(IOC_LIBRARY_LOG_LEVEL="INFO")]
    assert "aiokafka.consumer.group_coordinator" in loggers
    assert "faust.tables.recovery" in loggers


def test_our_level_hides_our_info() -> None:
    assert [r["event"] for r in _run(IOC_LOG_LEVEL="WARNING")] == ["Stream is slow\n\nline two"]


def test_a_bad_level_names_the_variable() -> None:
    with pytest.raises(
        ConfigurationError,
        match=re.escape("bad setting IOC_LOG_LEVEL='loud': Value error, use one of DEBUG, INFO"),
    ):
        configure_logging("x", LogSettings(log_level="loud"))
    assert LogSettings(log_level="debug").log_level == "DEBUG"
