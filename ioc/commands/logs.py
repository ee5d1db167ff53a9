"""`ioc logs COMPONENT [-f]`: a demo component's full log (what `ioc up` wrote to
``<state dir>/logs/<component>.log``)."""

from __future__ import annotations

import difflib
import sys
import time
from pathlib import Path
from typing import TextIO

import typer

from events.errors import ConfigurationError
from ioc.component_output import LOG_DIR_NAME, log_path
from ioc.settings import ServiceSettings


def logs(
    component: str = typer.Argument(..., help="ingest, streams, alerts, ws, storage, ..."),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing new lines"),
    lines: int = typer.Option(50, "--lines", "-n", help="how many of the last lines (0: all)"),
) -> None:
    """Print a demo component's log (written by `ioc up`); -f follows it."""
    state_dir = ServiceSettings().state_dir
    path = log_path(state_dir, component)
    if not path.exists():
        known = sorted(p.stem for p in (state_dir / LOG_DIR_NAME).glob("*.log"))
        close = difflib.get_close_matches(component, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigurationError(
            f"no log of {component!r} under {state_dir / LOG_DIR_NAME} "
            f"(known: {', '.join(known) or 'none: has `ioc up` run?'}){hint}"
        )
    out = sys.stdout
    for line in last_lines(path, lines):
        out.write(line)
    out.flush()
    if follow:
        try:
            follow_file(path, out)
        except KeyboardInterrupt:
            return


def last_lines(path: Path, n: int) -> list[str]:
    """The last ``n`` lines (all when n is 0), reading only the file's tail."""
    with path.open("rb") as f:
        if n <= 0:
            return [b.decode(errors="replace") for b in f.readlines()]
        f.seek(0, 2)
        end, size, data = f.tell(), 64 * 1024, b""
        while True:
            start = max(0, end - size)
            f.seek(start)
            data = f.read(end - start)
            if start == 0 or data.count(b"\n") > n:
                break
            size *= 2
    return [b.decode(errors="replace") for b in data.splitlines(keepends=True)[-n:]]


def follow_file(path: Path, out: TextIO, poll_s: float = 0.25) -> None:
    """Print what is appended to ``path`` until interrupted; when it is rotated (the file
    at ``path`` is a new one), go on with the new file from its start."""
    f = path.open("rb")
    f.seek(0, 2)
    inode = path.stat().st_ino
    while True:
        chunk = f.readline()
        if chunk:
            out.write(chunk.decode(errors="replace"))
            out.flush()
            continue
        try:
            if path.stat().st_ino != inode:  # rotated: read the new file
                f.close()
                f = path.open("rb")
                inode = path.stat().st_ino
                continue
        except FileNotFoundError:
            pass
        time.sleep(poll_s)  # polling interval of a file without new lines
