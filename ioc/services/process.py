"""Starting, finding and stopping the processes of our local services.

A service we start writes a pid file in the state directory; ``down`` stops exactly
the processes named by those files, after checking that the pid still runs the same
program (a recycled pid must never be killed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from events.errors import ServiceError

# Popen objects of services started by this process. They are detached on purpose and
# outlive any function; holding them keeps Popen.__del__ from warning that they still run.
_STARTED: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True, slots=True)
class ManagedProcess:
    """A service process that we started, as recorded in its pid file."""

    name: str
    state_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid if the recorded process still runs our program, else None."""
        try:
            pid_text, _, marker = self.pid_file.read_text().partition("\n")
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        child = _STARTED.get(pid)
        if child is not None:
            # Started by this process: ask Popen (right after the fork, before the exec,
            # the command line is still ours, so the marker cannot be checked yet).
            return pid if child.poll() is None else None
        if not _process_matches(pid, marker.strip()):
            return None
        return pid

    def start(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        marker: str | None = None,
    ) -> int:
        """Start ``argv`` detached (own session), logging to the service's log file.

        ``marker`` is a string the running process's command line contains (by default
        the executable's name; a program that execs another, like chroot, needs it).
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        _STARTED[proc.pid] = proc
        # The marker is the executable's base name: enough to tell a recycled pid apart.
        self.pid_file.write_text(f"{proc.pid}\n{marker or Path(argv[0]).name}\n")
        return proc.pid

    def stop(self, timeout: float = 10.0, sig: signal.Signals = signal.SIGTERM) -> bool:
        """Stop the process (``sig``, then SIGKILL); True if something was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        child = _STARTED.pop(pid, None)
        if child is not None:
            child.wait()
        return True

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _process_matches(pid: int, marker: str) -> bool:
    if not _alive(pid):
        return False
    if not marker:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(marker.encode() in part for part in cmdline)


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, what: str, proc: ManagedProcess
) -> None:
    """Poll ``predicate()`` until true; fail with the service log tail on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.pid() is None:
            raise ServiceError(
                f"{proc.name} exited while starting ({what}); log {proc.log_file}:\n"
                f"{proc.log_tail()}"
            )
        time.sleep(0.1)
    raise ServiceError(
        f"{proc.name} did not become ready within {timeout:.0f}s ({what}); "
        f"log {proc.log_file}:\n{proc.log_tail()}"
    )
