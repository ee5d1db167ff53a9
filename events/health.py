"""The one shape of ``/healthz`` and ``/readyz``, shared by every component.

``/healthz`` answers whether the process is alive (its HTTP server runs: always 200);
``/readyz`` whether it does its work: 200 when every check passes, 503 otherwise, with
each check named, so an operator (or a compose healthcheck, or a test) sees *why*::

    GET /healthz  200 {"component": "streams", "status": "alive", "uptime_s": 12.3}
    GET /readyz   200 {"component": "streams", "status": "ready",
                       "checks": {"assigned": {"ok": true, "detail": "..."}, ...}}
                  503 {... "status": "not_ready" ...}

Pure: components build their checks and serve the rendered triples with whatever HTTP
server they already run (aiohttp, websockets, http.server); :func:`add_aiohttp_routes`
is the adapter for the aiohttp ones.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # aiohttp is only needed by the components that serve with it
    from aiohttp import web

HEALTHZ = "/healthz"
READYZ = "/readyz"
CONTENT_TYPE = "application/json"


# JSON Schemas of the two bodies (the ingest gateway's OpenAPI document publishes them).
ALIVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["component", "status", "uptime_s"],
    "properties": {
        "component": {"type": "string"},
        "status": {"const": "alive"},
        "uptime_s": {"type": "number", "minimum": 0},
    },
}
READINESS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["component", "status", "checks"],
    "properties": {
        "component": {"type": "string"},
        "status": {"enum": ["ready", "not_ready"]},
        "checks": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "type": "object",
                "required": ["ok", "detail"],
                "additionalProperties": False,
                "properties": {"ok": {"type": "boolean"}, "detail": {"type": "string"}},
            },
        },
    },
}


@dataclass(frozen=True, slots=True)
class Check:
    """One readiness condition: its name, whether it holds, and why (for a human)."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: status code and JSON body."""

    status: int
    body: dict[str, Any]

    def encoded(self) -> bytes:
        return orjson.dumps(self.body)


def alive(component: str, started_monotonic: float, now: float | None = None) -> Answer:
    """``/healthz``: the process answers, so it is alive."""
    uptime = (time.monotonic() if now is None else now) - started_monotonic
    return Answer(
        200, {"component": component, "status": "alive", "uptime_s": round(max(0.0, uptime), 1)}
    )


def ready(component: str, checks: Iterable[Check]) -> Answer:
    """``/readyz``: 200 when every check holds (and there is one), else 503.

    No check at all is *not* ready: a component that has not built its checks yet (still
    starting) must not look ready.
    """
    listed = list(checks)
    names = [c.name for c in listed]
    if len(set(names)) != len(names):
        raise ValueError(f"check names repeat: {names}")
    ok = bool(listed) and all(c.ok for c in listed)
    return Answer(
        200 if ok else 503,
        {
            "component": component,
            "status": "ready" if ok else "not_ready",
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in listed},
        },
    )


def lag_check(max_lag: int | None, bound: int) -> Check:
    """Caught up: the largest consumer lag (records) within ``bound``; None = not measured."""
    if max_lag is None:
        return Check("caught_up", False, "lag not measured yet")
    return Check(
        "caught_up",
        max_lag <= bound,
        f"largest partition lag {max_lag} records (bound {bound})",
    )


def validate(path: str, status: int, body: Any) -> None:
    """Raise ValueError unless ``body`` has the shape of ``path`` (tests of every
    component use it, so the shape cannot drift in one of them)."""
    if not isinstance(body, dict) or not isinstance(body.get("component"), str):
        raise ValueError(f"{path}: no component name in {body!r}")
    if path == HEALTHZ:
        if status != 200 or body.get("status") != "alive":
            raise ValueError(f"{path}: {status} {body!r}")
        if not isinstance(body.get("uptime_s"), int | float):
            raise ValueError(f"{path}: no uptime_s in {body!r}")
        return
    if path != READYZ:
        raise ValueError(f"unknown path {path}")
    checks = body.get("checks")
    if not isinstance(checks, dict) or not checks:
        raise ValueError(f"{path}: no checks in {body!r}")
    for name, check in checks.items():
        if not isinstance(check, dict) or set(check) != {"ok", "detail"}:
            raise ValueError(f"{path}: check {name!r} is {check!r}")
        if not isinstance(check["ok"], bool) or not isinstance(check["detail"], str):
            raise ValueError(f"{path}: check {name!r} is {check!r}")
    every = all(c["ok"] for c in checks.values())
    expected = (200, "ready") if every else (503, "not_ready")
    if (status, body.get("status")) != expected:
        raise ValueError(f"{path}: {status} {body.get('status')!r} with checks {checks!r}")


Checks = Callable[[], Awaitable[Sequence[Check]]]


def add_aiohttp_routes(
    app: web.Application, component: str, checks: Checks, started_monotonic: float | None = None
) -> None:
    """Serve ``/healthz`` and ``/readyz`` of ``component`` on an aiohttp app."""
    from aiohttp import web

    started = time.monotonic() if started_monotonic is None else started_monotonic

    def respond(answer: Answer) -> web.Response:
        return web.Response(body=answer.encoded(), status=answer.status, content_type=CONTENT_TYPE)

    async def healthz(_request: web.Request) -> web.Response:
        return respond(alive(component, started))

    async def readyz(_request: web.Request) -> web.Response:
        return respond(ready(component, await checks()))

    app.router.add_get(HEALTHZ, healthz)
    app.router.add_get(READYZ, readyz)
