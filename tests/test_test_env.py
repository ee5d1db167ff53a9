"""`make test` runs on services of its own (scripts/test-env.sh): its own state directory
and ports, and an Apache Kafka log directory emptied before each run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHOW = 'echo "$IOC_STATE_DIR $IOC_BROKER_PORT $IOC_DB_PORT $IOC_MQTT_PORT"'


def _source(home: Path, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    clean.pop("XDG_DATA_HOME", None)
    out = subprocess.run(
        ["bash", "-c", f". scripts/test-env.sh && {SHOW}"],
        cwd=ROOT,
        env={**clean, "HOME": str(home), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.split()


def test_tests_get_their_own_state_and_ports_and_empty_topics(tmp_path: Path) -> None:
    state = tmp_path / ".local/share/ioc/test-state"
    leftover = state / "kafka" / "data" / "ioc.alerts-0" / "00000000000000000000.log"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"an earlier run's alerts")

    assert _source(tmp_path) == [str(state), "9192", "25432", "1983"]
    assert not (state / "kafka").exists()  # no broker of ours runs there: emptied


def test_settings_given_beforehand_win(tmp_path: Path) -> None:
    own = tmp_path / "mine"
    kept = own / "kafka" / "data" / "x"
    kept.parent.mkdir(parents=True)
    kept.write_text("")
    got = _source(tmp_path, IOC_STATE_DIR=str(own), IOC_BROKER_PORT="19092")
    assert got == [str(own), "19092", "25432", "1983"]
    assert not kept.exists()  # emptied there too: not running
