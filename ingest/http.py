"""HTTP gateway: CloudEvents over HTTP (structured, batch and binary mode) into Kafka.

    POST /events          one CloudEvent (application/cloudevents+json or application/json)
                          or a JSON array (application/cloudevents-batch+json), or in
                          binary mode one event's attributes as ce-* headers and its data
                          as the body (Content-Type application/json, parameters allowed)
    GET  /healthz         200: alive (events.health)
    GET  /readyz          200 when the Kafka producer reaches a broker, else 503
    GET  /metrics         Prometheus
    GET  /openapi.json    OpenAPI 3.1 of these routes (ingest.openapi)
    GET  /schemas/v1/{name}  the JSON Schemas of the contracts (events.contracts);
                          /schemas/v1/index.json lists them

POST /events needs ``Authorization: Bearer <key>`` (ingest.keys): 401 ``missing_key`` or
``unknown_key`` (checked before anything else), 403 ``out_of_scope`` naming each event
(by index) the key may not publish, 429 ``busy`` with ``Retry-After`` while the producer
holds IOC_INGEST_MAX_INFLIGHT_BYTES unacknowledged, 503 ``auth_unavailable`` when the
key list could not be read recently enough (ingest.keystore).
Other answers: 202 ``{"accepted": N}`` once the broker has acknowledged every event; 400 with
``{"error": reason, "detail": ...}`` for a body that is not JSON, or with
``{"error": "invalid_events", "rejected": [{"index", "reason", "detail"}]}`` naming every
invalid item (nothing of such a request is published; an event time further ahead of the
gateway's clock than ``IOC_MAX_FUTURE_SKEW_S`` is ``future_time``); 413 for an oversized
body; 415 for another content type; 503 when Kafka cannot take the events (the client should retry).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from events import health
from events.binding import HTTP_SPECVERSION
from events.contracts import INDEX, all_schemas, dumps
from events.envelope import DATACONTENTTYPE_PATTERN, latest_event_ms
from events.errors import InvalidEventError
from ingest.gateway import (
    BATCH,
    STRUCTURED,
    RejectedRequest,
    out_of_scope,
    parse_binary,
    parse_request,
)
from ingest.keys import IngestKey, bearer_secret
from ingest.keystore import KeyCache, KeysUnavailable
from ingest.metrics import IngestMetrics
from ingest.openapi import SCHEMA_MEDIA, openapi_document
from ingest.publisher import Backpressure, KafkaPublisher
from ingest.settings import IngestSettings

log = structlog.get_logger("ingest.http")
_json_media = re.compile(DATACONTENTTYPE_PATTERN).fullmatch

PUBLISHER: web.AppKey[KafkaPublisher] = web.AppKey("publisher", KafkaPublisher)
METRICS: web.AppKey[IngestMetrics] = web.AppKey("metrics", IngestMetrics)
SETTINGS: web.AppKey[IngestSettings] = web.AppKey("settings", IngestSettings)
KEYS: web.AppKey[KeyCache] = web.AppKey("keys", KeyCache)
# Rendered once per app: the documents are generated from the catalogue, not read from
# the checked-in files, so an installed gateway needs no repository next to it.
CONTRACTS: web.AppKey[dict[str, bytes]] = web.AppKey("contracts", dict)
OPENAPI: web.AppKey[bytes] = web.AppKey("openapi", bytes)


def _error(status: int, reason: str, detail: str) -> web.Response:
    return web.json_response({"error": reason, "detail": detail}, status=status)


def _authenticate(request: web.Request) -> IngestKey | web.Response:
    """The request's key, or the answer refusing it."""
    metrics = request.app[METRICS]
    secret = bearer_secret(request.headers.get("Authorization"))
    if secret is None:
        metrics.refused_requests.labels("missing_key").inc()
        return _unauthorized("missing_key", "send Authorization: Bearer <ingest key>")
    try:
        key = request.app[KEYS].lookup(secret)
    except KeysUnavailable as exc:
        metrics.refused_requests.labels("auth_unavailable").inc()
        log.warning("auth_unavailable", error=str(exc))
        return _error(503, "auth_unavailable", "the ingest keys cannot be checked now; retry")
    if key is None:
        metrics.refused_requests.labels("unknown_key").inc()
        return _unauthorized("unknown_key", "this key is unknown or revoked")
    return key


def _unauthorized(reason: str, detail: str) -> web.Response:
    response = _error(401, reason, detail)
    # RFC 6750: a 401 names the scheme to use, and says "invalid_token" when one was sent
    challenge = 'Bearer realm="ioc-ingest"'
    if reason == "unknown_key":
        challenge += ', error="invalid_token"'
    response.headers["WWW-Authenticate"] = challenge
    return response


def _busy(request: web.Request, why: str) -> web.Response:
    """429: the producer holds IOC_INGEST_MAX_INFLIGHT_BYTES unacknowledged (nothing of the
    request is published; memory stays bounded however many clients send)."""
    request.app[METRICS].refused_requests.labels("busy").inc()
    retry_after = request.app[SETTINGS].ingest_retry_after_s
    response = _error(429, "busy", f"{why}; retry after {retry_after} s")
    response.headers["Retry-After"] = str(retry_after)
    return response


async def post_events(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    # Who sends comes first: a client without a valid key learns nothing about the rest.
    key = _authenticate(request)
    if isinstance(key, web.Response):
        return key
    if request.app[PUBLISHER].inflight.saturated:  # refused before its body is even read
        return _busy(request, "the producer's in-flight bound is reached")
    content_type = request.headers.get("Content-Type", "application/json")
    media = content_type.split(";", 1)[0].strip().lower()
    # Binary mode (CloudEvents HTTP binding): a ce-specversion header; the content type
    # is then the data's, and our events' data is JSON.
    binary = HTTP_SPECVERSION in request.headers
    if binary and _json_media(content_type) is None:
        metrics.rejected.labels("http", "unsupported_media_type").inc()
        return _error(
            415, "unsupported_media_type", f"{content_type!r}; binary mode takes JSON data"
        )
    if not binary and media not in (*STRUCTURED, BATCH):
        metrics.rejected.labels("http", "unsupported_media_type").inc()
        return _error(415, "unsupported_media_type", f"{media!r}; send {STRUCTURED[0]} or {BATCH}")
    if (request.content_length or 0) > settings.ingest_max_body_bytes:
        metrics.rejected.labels("http", "oversize").inc()
        return _error(413, "oversize", f"body larger than {settings.ingest_max_body_bytes} bytes")
    body = await request.content.read(settings.ingest_max_body_bytes + 1)
    if len(body) > settings.ingest_max_body_bytes:
        metrics.rejected.labels("http", "oversize").inc()
        return _error(413, "oversize", f"body larger than {settings.ingest_max_body_bytes} bytes")
    try:
        latest = latest_event_ms(time.time(), settings.max_future_skew_s)
        if binary:
            records = parse_binary(request.headers.items(), body, latest)
        else:
            records = parse_request(body, content_type, settings.ingest_max_batch, latest)
    except InvalidEventError as exc:
        metrics.rejected.labels("http", exc.reason).inc()
        return _error(400, exc.reason, exc.detail)
    except RejectedRequest as exc:
        for rejection in exc.rejections:
            metrics.rejected.labels("http", rejection.reason).inc()
        return web.json_response(
            {"error": "invalid_events", "rejected": [r.to_dict() for r in exc.rejections]},
            status=400,
        )
    refused = out_of_scope(key, records)
    if refused:
        metrics.refused_requests.labels("out_of_scope").inc()
        return web.json_response(
            {
                "error": "out_of_scope",
                "detail": f"key {key.name!r} may not publish {len(refused)} of the events; "
                "nothing was published",
                "rejected": [r.to_dict() for r in refused],
            },
            status=403,
        )
    try:
        await request.app[PUBLISHER].publish(records)
    except Backpressure as exc:
        return _busy(request, str(exc))
    except Exception as exc:  # Kafka unavailable: tell the sender to retry, lose nothing
        metrics.publish_errors.labels("http").inc()
        log.warning("publish_failed", error=str(exc), events=len(records))
        return _error(503, "unavailable", "the event bus did not take the events; retry")
    metrics.accepted.labels("http").inc(len(records))
    return web.json_response({"accepted": len(records)}, status=202)


STARTED: web.AppKey[float] = web.AppKey("started", float)


def _answer(answer: health.Answer) -> web.Response:
    return web.Response(
        body=answer.encoded(), status=answer.status, content_type=health.CONTENT_TYPE
    )


async def healthz(request: web.Request) -> web.Response:
    return _answer(health.alive("ingest", request.app[STARTED]))


async def readyz(request: web.Request) -> web.Response:
    ok, detail = await request.app[PUBLISHER].reachable()
    return _answer(health.ready("ingest", [health.Check("producer", ok, detail)]))


async def metrics_endpoint(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), content_type="text/plain")


async def openapi_endpoint(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def schema_endpoint(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = request.app[CONTRACTS].get(name)
    if body is None:
        return _error(404, "unknown_schema", f"{name!r}; /schemas/v1/index.json lists them")
    # the index lists schemas, it is not one
    return web.Response(
        body=body, content_type="application/json" if name == INDEX else SCHEMA_MEDIA
    )


Handler = Callable[[web.Request], Awaitable[web.Response]]

# Every route of the gateway; build_app registers exactly these and the OpenAPI document
# is generated from them, so the two cannot differ.
ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("POST", "/events", post_events),
    ("GET", health.HEALTHZ, healthz),
    ("GET", health.READYZ, readyz),
    ("GET", "/metrics", metrics_endpoint),
    ("GET", "/openapi.json", openapi_endpoint),
    ("GET", "/schemas/v1/{name}", schema_endpoint),
)


def build_app(
    settings: IngestSettings, publisher: KafkaPublisher, metrics: IngestMetrics, keys: KeyCache
) -> web.Application:
    # aiohttp's own limit sits above ours so that we can answer 413 with a reason.
    app = web.Application(client_max_size=settings.ingest_max_body_bytes + 1024)
    app[SETTINGS] = settings
    app[PUBLISHER] = publisher
    app[METRICS] = metrics
    app[STARTED] = time.monotonic()
    app[KEYS] = keys
    # read when /metrics is rendered: the producer's unacknowledged bytes right now
    metrics.inflight_bytes.set_function(lambda: publisher.inflight.bytes)
    app[CONTRACTS] = {name: dumps(schema) for name, schema in all_schemas().items()}
    app[OPENAPI] = dumps(openapi_document((method, path) for method, path, _ in ROUTES))
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    return app
