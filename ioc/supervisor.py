"""Runs the demo's components as child processes: prefixed logs, restarts, clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape

from ioc.component_output import ComponentOutput, PrefixedLines


@dataclass(frozen=True, slots=True)
class Component:
    """One long-running process of the demo."""

    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    # Takes input from outside (simulator, gateways): stopped first by a pause.
    source: bool = False


Guard = Callable[["Supervisor"], Awaitable[None]]


class Supervisor:
    """Starts components, prefixes their output, restarts them with backoff when they
    die unexpectedly, and stops them all (SIGTERM, then SIGKILL) on shutdown.

    ``guards`` run beside the components for as long as the supervisor does (e.g. the
    broker's memory cap); one may :meth:`pause` every component around an action.
    ``output`` receives the components' lines, starts and exits (default: every line on
    ``console`` behind the component's name)."""

    def __init__(
        self,
        components: Sequence[Component],
        console: Console,
        guards: Sequence[Guard] = (),
        output: ComponentOutput | None = None,
    ) -> None:
        self._components = list(components)
        self._console = console
        self._guards = list(guards)
        self._output = output or PrefixedLines(console, [c.name for c in components])
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._resume = asyncio.Event()  # cleared while paused
        self._resume.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)
        tasks = [asyncio.create_task(self._keep_running(c)) for c in self._components]
        tasks += [asyncio.create_task(self._guarded(g)) for g in self._guards]
        try:
            await self._stopping.wait()
            self._output.stopping()
            for task in tasks[len(self._components) :]:
                task.cancel()  # the guards first: no pause may start during the stop
            await self._stop_all()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def stop(self) -> None:
        """Stop every component and return from :meth:`run` (as SIGTERM does)."""
        self._stopping.set()

    def pid(self, name: str) -> int | None:
        """The pid of the component's current process, None when it does not run."""
        proc = self._procs.get(name)
        return proc.pid if proc is not None and proc.returncode is None else None

    async def _guarded(self, guard: Guard) -> None:
        try:
            await guard(self)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken guard must not take the demo down with it
            self._console.print(f"[red]guard failed: {escape(repr(exc))}[/]")

    async def pause(self, action: Callable[[], Awaitable[None]]) -> None:
        """Stop every component, run ``action``, then start them all again.

        The sources (``Component.source``) are stopped first and waited for, then the
        others: once no new input arrives, the consumers' graceful stop still finishes
        the batch they hold (storage writes it, the stream worker checkpoints). Components
        start again only after ``action`` (even if it failed), each as on first start; a
        stop for a pause is not a crash (no backoff, no "exited" line)."""
        self._resume.clear()
        try:
            sources = {c.name for c in self._components if c.source}
            await self._stop([p for n, p in self._procs.items() if n in sources])
            await self._stop([p for n, p in self._procs.items() if n not in sources])
            await action()
        finally:
            self._resume.set()

    async def _keep_running(self, component: Component) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            await self._resume.wait()
            if self._stopping.is_set():
                return
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *component.argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **component.env},
                start_new_session=True,
            )
            self._procs[component.name] = proc
            self._output.started(component.name, proc.pid)
            if not self._resume.is_set():  # a pause began while it was being started
                await self._stop([proc])
            assert proc.stdout is not None
            async for raw in proc.stdout:
                self._output.line(component.name, raw.decode(errors="replace").rstrip())
            code = await proc.wait()
            if self._stopping.is_set() or not self._resume.is_set():
                self._output.exited(component.name, code, None)
            if self._stopping.is_set():
                return
            if not self._resume.is_set():
                backoff = 1.0  # stopped by a pause: started again when it ends
                continue
            # A component that ran for a while gets a fresh backoff; a crash loop backs off.
            backoff = 1.0 if time.monotonic() - started > 30 else min(backoff * 2, 30.0)
            self._output.exited(component.name, code, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff)

    async def _stop_all(self, grace_s: float = 15.0) -> None:
        self._resume.set()  # a pause in progress: its waiters see the stop and return
        await self._stop(list(self._procs.values()), grace_s)

    @staticmethod
    async def _stop(procs: list[asyncio.subprocess.Process], grace_s: float = 15.0) -> None:
        live = [p for p in procs if p.returncode is None]
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
