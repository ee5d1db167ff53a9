"""Waiting on a condition, the one way the tests do it (never a fixed sleep).

:func:`until` polls ``condition`` (sync or async) until it returns something truthy and
returns that; past ``within`` seconds it fails the test with ``what`` (a text, or a
callable giving one, e.g. the state that was missing). :func:`until_sync` is the same for
plain functions and threads.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
Describe = str | Callable[[], object]


def _text(what: Describe) -> str:
    return what if isinstance(what, str) else str(what())


async def until(
    condition: Callable[[], T | Awaitable[T]],
    what: Describe,
    within: float = 30.0,
    every: float = 0.05,
) -> T:
    """The first truthy value of ``condition()``; an AssertionError naming ``what`` when
    none comes within ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {_text(what)}")
        await asyncio.sleep(every)  # the polling interval of the condition


def until_sync(
    condition: Callable[[], T], what: Describe, within: float = 30.0, every: float = 0.05
) -> T:
    """:func:`until` for code that is not async."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {_text(what)}")
        time.sleep(every)  # the polling interval of the condition
