"""Where the demo's component output goes: log files, a status board, or the terminal.

The supervisor (:mod:`ioc.supervisor`) reports four things about each component: it
started (pid), it printed a line, it exited (code, backoff before the restart), the demo is
stopping. Three receivers:

- :class:`PrefixedLines`: every line on the terminal behind the component's name (the
  ``--verbose`` view, and the tests of the supervisor);
- :class:`LogFiles`: every line into ``<state dir>/logs/<component>.log`` (what ``ioc logs``
  reads), rotated at a size bound so that a demo that runs for weeks cannot fill the disk;
- :class:`StatusBoard`: pure state per component (state, pid, uptime, restarts, lines,
  the last warning or error), rendered by :mod:`ioc.status_view`.

:class:`Tee` hands every report to several receivers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson
from rich.console import Console
from rich.markup import escape

_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan")
LOG_DIR_NAME = "logs"
ROTATE_BYTES = 20 * 1024 * 1024  # per file; one older file (<name>.log.1) is kept


class ComponentOutput(Protocol):
    def started(self, name: str, pid: int) -> None: ...
    def line(self, name: str, text: str) -> None: ...
    def exited(self, name: str, code: int, restart_in_s: float | None) -> None: ...
    def stopping(self) -> None: ...


class PrefixedLines:
    """Every line on the console, behind the component's coloured name; with
    ``problems_only``, only warnings, errors and restarts (the calm view where no live
    board can be drawn: not a terminal)."""

    def __init__(
        self, console: Console, names: Sequence[str], *, problems_only: bool = False
    ) -> None:
        self._console = console
        self._problems_only = problems_only
        width = max((len(n) for n in names), default=4)
        self._prefix = {
            n: f"[{_COLOURS[i % len(_COLOURS)]}]{n:<{width}}[/] |" for i, n in enumerate(names)
        }

    def started(self, name: str, pid: int) -> None:
        return None

    def line(self, name: str, text: str) -> None:
        if self._problems_only and problem_of(text) is None:
            return
        # soft_wrap: a JSON log line stays one line, whatever the terminal width
        self._console.print(f"{self._prefix[name]} {escape(text)}", soft_wrap=True)

    def exited(self, name: str, code: int, restart_in_s: float | None) -> None:
        if restart_in_s is not None:
            self._console.print(
                f"{self._prefix[name]} [red]exited with {code}; "
                f"restarting in {restart_in_s:.0f}s[/]"
            )

    def stopping(self) -> None:
        self._console.print("[bold]stopping components…[/]")


def log_path(state_dir: Path, name: str) -> Path:
    return state_dir / LOG_DIR_NAME / f"{name}.log"


class LogFiles:
    """Each component's full output, one file each, appended across restarts."""

    def __init__(self, state_dir: Path, names: Sequence[str], rotate_bytes: int = ROTATE_BYTES):
        self._rotate = rotate_bytes
        self.directory = state_dir / LOG_DIR_NAME
        self._paths = {n: log_path(state_dir, n) for n in names}
        for path in self._paths.values():
            path.parent.mkdir(parents=True, exist_ok=True)
        self._files = {n: p.open("ab", buffering=0) for n, p in self._paths.items()}

    def _write(self, name: str, text: str) -> None:
        f = self._files[name]
        f.write(text.encode(errors="replace") + b"\n")
        if f.tell() >= self._rotate:
            f.close()
            path = self._paths[name]
            path.replace(path.with_name(path.name + ".1"))
            self._files[name] = path.open("ab", buffering=0)

    def started(self, name: str, pid: int) -> None:
        self._write(name, _supervisor_line("started", pid=pid))

    def line(self, name: str, text: str) -> None:
        self._write(name, text)

    def exited(self, name: str, code: int, restart_in_s: float | None) -> None:
        self._write(name, _supervisor_line("exited", code=code, restart_in_s=restart_in_s))

    def stopping(self) -> None:
        for name in self._files:
            self._write(name, _supervisor_line("stopping"))

    def close(self) -> None:
        for f in self._files.values():
            f.close()


def _supervisor_line(event: str, **fields: object) -> str:
    return orjson.dumps({"event": event, "logger": "ioc.supervisor", **fields}).decode()


@dataclass
class ComponentState:
    name: str
    state: str = "starting"  # starting, running, restarting, stopped
    pid: int | None = None
    started_at: float | None = None  # monotonic
    restarts: int = 0
    lines: int = 0
    warnings: int = 0
    last_problem: str = ""  # the last warning or error line, as a short text
    last_exit: int | None = None


def problem_of(text: str) -> tuple[str, str] | None:
    """(level, short text) of a warning or error line; None for other lines. Components
    log JSON (structlog) when not on a terminal; a traceback's last line is an error."""
    if text.startswith("{"):
        try:
            record = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(record, dict):
            return None
        level = str(record.get("level", "")).lower()
        if level not in ("warning", "error", "critical", "exception"):
            return None
        detail = " ".join(
            f"{k}={v}"
            for k, v in record.items()
            if k not in ("event", "level", "timestamp", "logger", "component")
        )
        return level, f"{record.get('event', '')} {detail}".strip()
    if text.startswith(("Traceback", "error:")) or ": error: " in text:
        return "error", text.strip()
    return None


class StatusBoard:
    """What the status view shows: one row of state per component."""

    def __init__(self, names: Sequence[str]) -> None:
        self.rows = {n: ComponentState(n) for n in names}
        self.stopping_all = False

    def started(self, name: str, pid: int) -> None:
        row = self.rows[name]
        row.state, row.pid, row.started_at = "running", pid, time.monotonic()

    def line(self, name: str, text: str) -> None:
        row = self.rows[name]
        row.lines += 1
        found = problem_of(text)
        if found is not None:
            row.warnings += 1
            level, short = found
            row.last_problem = f"{level}: {short}"[:300]

    def exited(self, name: str, code: int, restart_in_s: float | None) -> None:
        row = self.rows[name]
        row.last_exit, row.pid = code, None
        if restart_in_s is None:
            row.state = "stopped"
        else:
            row.state = "restarting"
            row.restarts += 1
            row.last_problem = f"exited with {code}; restarting in {restart_in_s:.0f}s"

    def stopping(self) -> None:
        self.stopping_all = True


class Tee:
    """Every report to each receiver, in order."""

    def __init__(self, *outputs: ComponentOutput) -> None:
        self._outputs = outputs

    def started(self, name: str, pid: int) -> None:
        for out in self._outputs:
            out.started(name, pid)

    def line(self, name: str, text: str) -> None:
        for out in self._outputs:
            out.line(name, text)

    def exited(self, name: str, code: int, restart_in_s: float | None) -> None:
        for out in self._outputs:
            out.exited(name, code, restart_in_s)

    def stopping(self) -> None:
        for out in self._outputs:
            out.stopping()
