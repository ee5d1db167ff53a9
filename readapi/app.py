"""The read API over HTTP (aiohttp): history and current state from TimescaleDB.

    GET /v1/kpis                      the KPI catalogue
    GET /v1/kpis/{id}/windows         one series, downsampled to at most `points`
    GET /v1/kpis/latest               the newest window per (kpi, scope)
    GET /v1/alerts                    alerts by state, changed since
    GET /healthz, /metrics, /openapi.json   (no token)

Parameters are checked by :mod:`readapi.params` (pure); the SQL is
:mod:`storage.series`. ``/v1/`` needs ``Authorization: Bearer <token>`` with a token of
the push server (IOC_WS_TOKENS). Errors are ``{"error", "parameter", "detail"}``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from events.health import Check, add_aiohttp_routes
from events.kpis import KPI_CATALOGUE
from readapi import params as p
from readapi.settings import ReadApiSettings
from storage import series

log = structlog.get_logger("readapi")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool", asyncpg.Pool)
SETTINGS: web.AppKey[ReadApiSettings] = web.AppKey("settings", ReadApiSettings)


class ReadApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ioc_readapi_requests", "Requests answered", ["route", "status"], registry=r
        )
        self.seconds = Histogram(
            "ioc_readapi_request_seconds",
            "Time to answer a request (parsing, query, encoding)",
            ["route"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
            registry=r,
        )
        self.db_errors = Counter("ioc_readapi_db_errors", "Queries that failed", registry=r)


METRICS: web.AppKey[ReadApiMetrics] = web.AppKey("metrics", ReadApiMetrics)


def _json(body: Any, status: int = 200) -> web.Response:
    # OPT_UTC_Z: times as 2026-12-04T08:00:00Z, like every record of the project.
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_UTC_Z),
        status=status,
        content_type="application/json",
    )


def error(status: int, code: str, detail: str, parameter: str | None = None) -> web.Response:
    return _json({"error": code, "parameter": parameter, "detail": detail}, status)


def _query(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters as a dict; unknown and repeated ones are refused."""
    query = request.query
    p.check_known(dict.fromkeys(query.keys(), ""), allowed)
    for key in query:
        if len(query.getall(key)) > 1:
            raise p.ParamError(key, "given more than once")
    return {k: query[k] for k in query}


_CATALOGUE = orjson.dumps({"kpis": [spec.to_dict() for spec in KPI_CATALOGUE.values()]})


async def get_kpis(request: web.Request) -> web.Response:
    _query(request, ())
    return web.Response(body=_CATALOGUE, content_type="application/json")


async def get_kpi_windows(request: web.Request) -> web.Response:
    q = _query(request, ("scope", "since", "until", "points"))
    spec = p.kpi_spec(request.match_info["id"])
    scope = p.check_scope(spec, q.get("scope", "city"))
    since, until = p.parse_range(q.get("since"), q.get("until"), datetime.now(UTC))
    points = p.parse_int("points", q.get("points"), p.DEFAULT_POINTS, 1, p.MAX_POINTS)
    plan = p.plan_series(since, until, points)
    items = await series.kpi_series(request.app[POOL], spec.id, scope, plan)
    return _json(
        {
            "kpi": spec.id,
            "scope": scope,
            "since": plan.start,
            "until": plan.end,
            "source": plan.source,
            "bucket_s": plan.bucket_s,
            "items": items,
        }
    )


async def get_latest(request: web.Request) -> web.Response:
    q = _query(request, ("kpi", "scope", "window", "limit"))
    limit = p.parse_int("limit", q.get("limit"), p.MAX_LIMIT, 1, p.MAX_LIMIT)
    items = await series.latest_windows(
        request.app[POOL],
        kpis=p.parse_kpi_list(q.get("kpi")),
        scopes=p.parse_scope_patterns(q.get("scope")),
        window_s=p.parse_window(q.get("window")),
        limit=limit,
    )
    return _json({"items": items, "truncated": len(items) == limit})


async def get_alerts(request: web.Request) -> web.Response:
    q = _query(request, ("state", "since", "limit"))
    states = p.parse_states(q.get("state"))
    since = p.parse_time("since", q["since"]) if "since" in q else None
    limit = p.parse_int("limit", q.get("limit"), p.DEFAULT_LIMIT, 1, p.MAX_LIMIT)
    items = await series.alerts(request.app[POOL], states=states, since=since, limit=limit)
    return _json({"items": items, "truncated": len(items) == limit})


# The served API routes; readapi/openapi.py describes exactly these (tests/test_readapi.py).
ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/v1/kpis", get_kpis),
    ("GET", "/v1/kpis/latest", get_latest),
    ("GET", "/v1/kpis/{id}/windows", get_kpi_windows),
    ("GET", "/v1/alerts", get_alerts),
)


async def database_check(pool: asyncpg.Pool) -> Check:
    """Ready: the database answers (the reads need it; the catalogue does not)."""
    try:
        async with asyncio.timeout(2.0):
            await pool.fetchval("SELECT 1")
    except Exception as exc:  # any failure means "cannot answer queries now"
        return Check("database", False, str(exc) or type(exc).__name__)
    return Check("database", True, "answers")


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


async def openapi(request: web.Request) -> web.Response:
    """The project's one OpenAPI document (docs/openapi.json), as the gateway serves it."""
    global _OPENAPI
    if _OPENAPI is None:
        from events.contracts import dumps
        from ingest.http import ROUTES as INGEST_ROUTES
        from ingest.openapi import openapi_document

        _OPENAPI = dumps(openapi_document((m, path) for m, path, _ in INGEST_ROUTES))
    return web.Response(body=_OPENAPI, content_type="application/json")


_OPENAPI: bytes | None = None


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Token check on /v1/, error mapping, and the per-route metrics."""
    started = time.perf_counter()
    info = request.match_info.route.resource
    route = info.canonical if info is not None else "unmatched"
    response: web.StreamResponse
    if request.path.startswith("/v1/") and not _authorized(request):
        response = error(401, "unauthorized", "send Authorization: Bearer <token>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="ioc"'
    else:
        try:
            response = await handler(request)
        except p.ParamError as exc:
            response = _json(exc.to_dict(), exc.status)
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            request.app[METRICS].db_errors.inc()
            log.warning("query_failed", route=route, error=str(exc))
            response = error(503, "unavailable", f"database: {exc or type(exc).__name__}")
        except web.HTTPException as exc:
            response = error(
                exc.status, "not_found" if exc.status == 404 else "bad_request", exc.reason
            )
    if request.path.startswith("/v1/"):  # the API's reads, not scrapes and health checks
        m = request.app[METRICS]
        m.requests.labels(route, str(response.status)).inc()
        m.seconds.labels(route).observe(time.perf_counter() - started)
    return response


def _authorized(request: web.Request) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and token.strip() in request.app[SETTINGS].ws_tokens


def create_app(settings: ReadApiSettings, pool: asyncpg.Pool) -> web.Application:
    app = web.Application(middlewares=[guard])
    app[POOL] = pool
    app[SETTINGS] = settings
    app[METRICS] = ReadApiMetrics()
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)

    async def checks() -> list[Check]:
        return [await database_check(pool)]

    add_aiohttp_routes(app, "readapi", checks)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    return app


class ReadApi:
    """``async with ReadApi(settings) as api:`` serves until the block ends. The pool
    connects lazily (``min_size=0``): the API starts while the database is down and
    answers 503 until it is up."""

    def __init__(self, settings: ReadApiSettings) -> None:
        self.settings = settings
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        s = self.settings
        self._pool = await asyncpg.create_pool(
            s.database_url,
            min_size=0,
            max_size=s.readapi_pool_size,
            command_timeout=s.readapi_statement_timeout_s,
            server_settings={"application_name": "ioc-readapi"},
        )
        self.app = create_app(s, self._pool)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, s.readapi_host, s.readapi_port)
        await self._site.start()

    @property
    def port(self) -> int:
        assert self._runner is not None
        addresses = self._runner.addresses
        return int(addresses[0][1])

    @property
    def url(self) -> str:
        return f"http://{self.settings.readapi_host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._pool is not None:
            await self._pool.close()

    async def __aenter__(self) -> ReadApi:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
