"""Runs the demo's components as child processes: prefixed logs, restarts, clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape

_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan")


@dataclass(frozen=True, slots=True)
class Component:
    """One long-running process of the demo."""

    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)


class Supervisor:
    """Starts components, prefixes their output, restarts them with backoff when they
    die unexpectedly, and stops them all (SIGTERM, then SIGKILL) on shutdown."""

    def __init__(self, components: Sequence[Component], console: Console) -> None:
        self._components = list(components)
        self._console = console
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        width = max((len(c.name) for c in self._components), default=4)
        self._prefix = {
            c.name: f"[{_COLOURS[i % len(_COLOURS)]}]{c.name:<{width}}[/] |"
            for i, c in enumerate(self._components)
        }

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)
        tasks = [asyncio.create_task(self._keep_running(c)) for c in self._components]
        await self._stopping.wait()
        self._console.print("[bold]stopping components…[/]")
        await self._stop_all()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _keep_running(self, component: Component) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *component.argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **component.env},
                start_new_session=True,
            )
            self._procs[component.name] = proc
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                # soft_wrap: a JSON log line stays one line, whatever the terminal width
                self._console.print(
                    f"{self._prefix[component.name]} {escape(line)}", soft_wrap=True
                )
            code = await proc.wait()
            if self._stopping.is_set():
                return
            # A component that ran for a while gets a fresh backoff; a crash loop backs off.
            backoff = 1.0 if time.monotonic() - started > 30 else min(backoff * 2, 30.0)
            self._console.print(
                f"{self._prefix[component.name]} [red]exited with {code}; "
                f"restarting in {backoff:.0f}s[/]"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff)

    async def _stop_all(self, grace_s: float = 15.0) -> None:
        live = [p for p in self._procs.values() if p.returncode is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in live)), grace_s)
        except TimeoutError:
            for proc in live:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.gather(*(p.wait() for p in live))


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]
