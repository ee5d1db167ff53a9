"""The `ioc up` supervisor with real child processes: a component that exits is restarted
with a doubling backoff (fresh after a run of over 30 s) and the restart is logged;
SIGTERM stops every component."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs the real Supervisor (as `ioc up` does) over two components: `crashy` exits with code
# 3 at once, every time (recording each start), `steady` runs until it is stopped.
_SUPERVISOR = """
import asyncio, sys
from rich.console import Console
from ioc.supervisor import Component, Supervisor

crashy, steady = sys.argv[1], sys.argv[2]
components = [
    Component("crashy", [sys.executable, crashy]),
    Component("steady", [sys.executable, steady]),
]
asyncio.run(Supervisor(components, Console(width=200)).run())
"""

_CRASHY = """
import sys, time
with open(sys.argv[0] + ".starts", "a") as f:
    f.write(f"{time.time()}\\n")
print("crashy is up", flush=True)
sys.exit(3)
"""

_STEADY = """
import os, sys, time
with open(sys.argv[0] + ".pid", "w") as f:
    f.write(str(os.getpid()))
print("steady is up", flush=True)
time.sleep(3600)
"""


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)  # polling interval of the condition above


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too (its parent, the supervisor, may be gone already)
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_a_component_that_exits_is_restarted_with_doubling_backoff_and_all_stop_on_sigterm(
    tmp_path: Path,
) -> None:
    crashy, steady, out = tmp_path / "crashy.py", tmp_path / "steady.py", tmp_path / "out"
    crashy.write_text(_CRASHY)
    steady.write_text(_STEADY)
    starts, pid_file = tmp_path / "crashy.py.starts", tmp_path / "steady.py.pid"
    with out.open("wb") as sink:
        sup = subprocess.Popen(
            [sys.executable, "-c", _SUPERVISOR, str(crashy), str(steady)],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        # Three starts of the crashing component = two restarts (2 s, then 4 s later).
        _wait(
            lambda: starts.exists() and len(starts.read_text().split()) >= 3,
            timeout=30,
            what="the third start of the crashing component",
        )
        _wait(lambda: pid_file.exists() and pid_file.read_text() != "", 10, "steady's pid")
        steady_pid = int(pid_file.read_text())
        assert _alive(steady_pid)
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=30) == 0
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
    times = [float(t) for t in starts.read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # The first restart waits 2 s, the next 4 s (crash loop: the backoff doubles); the
    # start-up of a python process (more on a busy machine) adds to each gap, never enough
    # to reach the next step.
    assert 2.0 <= gaps[0] < 3.9, gaps
    assert 4.0 <= gaps[1] < 7.9, gaps
    log = out.read_text(errors="replace")
    lines = log.splitlines()
    assert lines.count("crashy | crashy is up") >= 3, log
    assert "crashy | exited with 3; restarting in 2s" in lines, log
    assert "crashy | exited with 3; restarting in 4s" in lines, log
    assert lines.index("crashy | exited with 3; restarting in 2s") < lines.index(
        "crashy | exited with 3; restarting in 4s"
    )
    assert lines.count("steady | steady is up") == 1, log  # never restarted
    assert "stopping components…" in lines, log
    # SIGTERM went to the component's process group: nothing is left running.
    _wait(lambda: not _alive(steady_pid), 10, "the steady component to be gone")


# One component, `slow`: its first run lasts 31 s (over the supervisor's 30-s threshold),
# every later run exits at once.
_SUPERVISOR_ONE = """
import asyncio, sys
from rich.console import Console
from ioc.supervisor import Component, Supervisor

asyncio.run(Supervisor([Component("slow", [sys.executable, sys.argv[1]])], Console()).run())
"""

_SLOW_FIRST = """
import sys, time
with open(sys.argv[0] + ".starts", "a") as f:
    f.write(f"{time.time()}\\n")
with open(sys.argv[0] + ".starts") as f:
    first = len(f.read().split()) == 1
print("slow is up", flush=True)
if first:
    time.sleep(31)
    sys.exit(4)
sys.exit(3)
"""


def test_a_component_that_ran_for_a_while_gets_a_fresh_backoff(tmp_path: Path) -> None:
    slow, out = tmp_path / "slow.py", tmp_path / "out"
    slow.write_text(_SLOW_FIRST)
    starts = tmp_path / "slow.py.starts"
    with out.open("wb") as sink:
        sup = subprocess.Popen(
            [sys.executable, "-c", _SUPERVISOR_ONE, str(slow)],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait(
            lambda: starts.exists() and len(starts.read_text().split()) >= 3,
            timeout=60,
            what="the third start",
        )
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=30) == 0
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
    times = [float(t) for t in starts.read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 31 s of running, then 1 s (fresh backoff); then a quick crash doubles it to 2 s.
    assert 32.0 <= gaps[0] < 33.9, gaps
    assert 2.0 <= gaps[1] < 3.9, gaps
    lines = out.read_text(errors="replace").splitlines()
    restarts = [line for line in lines if "restarting in" in line]
    assert restarts[:2] == [
        "slow | exited with 4; restarting in 1s",
        "slow | exited with 3; restarting in 2s",
    ], lines
