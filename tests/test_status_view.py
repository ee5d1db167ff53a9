"""The calm view of `ioc up` (ioc/component_output.py, ioc/status_view.py) and `ioc logs`:
the board's state per component, rates and lag from real Prometheus pages, log files
with rotation, the supervisor feeding them from real processes, and `ioc logs -f`."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from rich.console import Console

from ioc.component_output import LogFiles, PrefixedLines, StatusBoard, Tee, problem_of
from ioc.status_view import MetricsProbe, render
from ioc.supervisor import Component, Supervisor
from tests.waiting import until

WARNING = orjson.dumps(
    {"event": "dead_letters", "level": "warning", "count": 3, "timestamp": "t", "logger": "x"}
).decode()
INFO = orjson.dumps({"event": "worker.started", "level": "info"}).decode()


def test_warnings_errors_and_tracebacks_are_problems_info_is_not() -> None:
    assert problem_of(WARNING) == ("warning", "dead_letters count=3")
    assert problem_of(INFO) is None
    assert problem_of("Traceback (most recent call last):") is not None
    assert problem_of("ingest: error: bad setting IOC_X='1'") is not None
    assert problem_of("plain text") is None and problem_of("{not json") is None


def test_the_board_follows_starts_lines_and_restarts() -> None:
    board = StatusBoard(["streams", "ws"])
    board.started("streams", 101)
    board.line("streams", INFO)
    board.line("streams", WARNING)
    row = board.rows["streams"]
    assert (row.state, row.pid, row.lines, row.warnings) == ("running", 101, 2, 1)
    assert row.last_problem == "warning: dead_letters count=3"
    board.exited("streams", 1, 2.0)
    assert (row.state, row.restarts, row.pid) == ("restarting", 1, None)
    assert row.last_problem == "exited with 1; restarting in 2s"
    board.exited("ws", 0, None)
    assert board.rows["ws"].state == "stopped" and board.rows["ws"].restarts == 0


def _page(events: float, lag: dict[str, float]) -> str:
    registry = CollectorRegistry()
    Counter("ioc_streams_events", "e", registry=registry).inc(events)
    g = Gauge("ioc_streams_lag_records", "l", ["source"], registry=registry)
    for source, value in lag.items():
        g.labels(source).set(value)
    return generate_latest(registry).decode()


def test_rate_and_lag_come_from_the_component_metrics_page() -> None:
    probe = MetricsProbe({})
    probe.apply("streams", _page(1000, {"0": 5, "1": 7}), now=10.0)
    assert "streams" not in probe.rate and probe.lag["streams"] == 12
    probe.apply("streams", _page(3000, {"0": 0, "1": 1}), now=12.0)
    assert probe.rate["streams"] == 1000.0 and probe.lag["streams"] == 1
    # A restart resets the counter: no negative rate, the next scrape measures again.
    probe.apply("streams", _page(10, {}), now=13.0)
    assert probe.rate["streams"] == 1000.0


def test_the_board_fits_80_columns() -> None:
    board = StatusBoard(["ingest", "streams", "simulator"])
    board.started("streams", 4242)
    board.line("streams", WARNING.replace("dead_letters", "x" * 200))
    probe = MetricsProbe({})
    probe.rate["streams"], probe.lag["streams"] = 12345.0, 3.0
    out = io.StringIO()
    now = time.monotonic() + 75
    Console(file=out, width=80, color_system=None).print(render(board, probe, now, 80))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    streams = next(line for line in lines if line.startswith("streams"))
    assert "running" in streams and "12.3k ev/s" in streams and "warning: xxx" in streams
    assert " 1m15s " in streams and streams.endswith("…")


def test_without_a_terminal_only_problems_are_printed() -> None:
    out = io.StringIO()
    lines = PrefixedLines(Console(file=out, width=200), ["streams"], problems_only=True)
    lines.line("streams", INFO)
    lines.line("streams", WARNING)
    lines.exited("streams", 1, 4.0)
    printed = out.getvalue().splitlines()
    assert len(printed) == 2 and "dead_letters" in printed[0], printed
    assert printed[1] == "streams | exited with 1; restarting in 4s"


def test_log_files_keep_every_line_and_rotate_at_their_bound(tmp_path: Path) -> None:
    files = LogFiles(tmp_path, ["ws"], rotate_bytes=1000)
    for i in range(30):
        files.line("ws", f"line {i:03d} " + "." * 40)
    files.close()
    path = tmp_path / "logs" / "ws.log"
    older = path.with_name("ws.log.1").read_text().splitlines()
    newer = path.read_text().splitlines()
    assert older[-1].startswith("line 019") and newer[0].startswith("line 020")
    assert newer[-1].startswith("line 029")


_CRASHY = (
    "import sys; print('up', flush=True); print('Traceback (most recent call last):'); sys.exit(3)"
)


async def test_the_supervisor_feeds_the_board_and_the_log_files(tmp_path: Path) -> None:
    board = StatusBoard(["crashy"])
    files = LogFiles(tmp_path, ["crashy"])
    sup = Supervisor(
        [Component("crashy", [sys.executable, "-c", _CRASHY])],
        Console(file=io.StringIO()),
        output=Tee(board, files),
    )
    run = asyncio.create_task(sup.run())
    try:
        await until(lambda: board.rows["crashy"].restarts >= 2, "two restarts")
    finally:
        sup.stop()
        await run
        files.close()
    log = (tmp_path / "logs" / "crashy.log").read_text().splitlines()
    assert log.count("up") >= 2
    exits = [orjson.loads(line) for line in log if '"exited"' in line]
    assert exits[0]["code"] == 3 and exits[0]["restart_in_s"] == 2.0  # a crash loop doubles
    assert board.rows["crashy"].warnings >= 2  # the traceback lines


def _ioc(*args: str) -> list[str]:
    return [sys.executable, "-m", "ioc", *args]


def test_ioc_logs_prints_the_tail_and_names_a_close_component(tmp_path: Path) -> None:
    env = {**os.environ, "IOC_STATE_DIR": str(tmp_path)}
    files = LogFiles(tmp_path, ["streams"])
    for i in range(5):
        files.line("streams", f"old {i}")
    files.close()
    run = {"env": env, "capture_output": True, "text": True, "timeout": 60}
    done = subprocess.run(_ioc("logs", "streams", "-n", "2"), **run)  # type: ignore[call-overload]
    assert done.stdout.splitlines() == ["old 3", "old 4"], done.stderr
    wrong = subprocess.run(_ioc("logs", "stream"), **run)  # type: ignore[call-overload]
    assert wrong.returncode == 2 and "did you mean streams?" in wrong.stderr


async def test_ioc_logs_follows_through_a_rotation(tmp_path: Path) -> None:
    env = {**os.environ, "IOC_STATE_DIR": str(tmp_path)}
    files = LogFiles(tmp_path, ["streams"], rotate_bytes=400)
    files.line("streams", "old 4")
    proc = await asyncio.create_subprocess_exec(
        *_ioc("logs", "streams", "-f", "-n", "1"), env=env, stdout=asyncio.subprocess.PIPE
    )
    seen: list[str] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            seen.append(raw.decode().rstrip())

    reader = asyncio.create_task(read())
    try:
        await until(lambda: "old 4" in seen, "the existing line")
        for i in range(40):  # 40 x 18 bytes: past the 400-byte bound, a rotation
            files.line("streams", f"new {i:02d} " + "-" * 10)
            await until(lambda i=i: any(s.startswith(f"new {i:02d}") for s in seen), f"new {i}")
        assert (tmp_path / "logs" / "streams.log.1").exists()
    finally:
        proc.terminate()
        await proc.wait()
        reader.cancel()
        files.close()
