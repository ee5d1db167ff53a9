"""OpenAPI 3.1 of the ingest gateway's HTTP API, generated from its route table.

:func:`openapi_document` takes the routes the gateway registers (``ingest.http.ROUTES``)
and looks up the description of each in :data:`OPERATIONS`: a route without one fails
the generation, and a description without a route is never emitted, so the document's
paths are the served routes. Request bodies use the generated CloudEvent schema
(events.contracts); ``ioc schemas`` writes the document to ``docs/openapi.json`` and the
gateway serves it at ``/openapi.json``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from events import health
from events.contracts import ENVELOPE, all_schemas, envelope_schema
from events.envelope import MAX_EVENT_BYTES
from readapi import openapi as readapi_openapi

TITLE = "IOC HTTP APIs: ingest gateway and read API"
API_VERSION = "1.0.0"
SCHEMA_MEDIA = "application/schema+json"
TAG = "ingest"
# The gateway's own address; the read API's paths override it with their own `servers`.
SERVERS = [
    {
        "url": "http://127.0.0.1:8081",
        "description": "the ingest gateway (IOC_INGEST_HTTP_HOST/IOC_INGEST_HTTP_PORT)",
    }
]

Document = dict[str, Any]


def _json(ref_or_schema: Any, description: str) -> Document:
    schema = {"$ref": f"#/components/schemas/{ref_or_schema}"}
    if isinstance(ref_or_schema, dict):
        schema = ref_or_schema
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> Document:
    return _json("Error", description)


_EVENT = {"$ref": "#/components/schemas/CloudEvent"}

OPERATIONS: dict[tuple[str, str], Document] = {
    ("POST", "/events"): {
        "operationId": "postEvents",
        "summary": "Publish CloudEvents (structured, batch or binary mode) to their domain topics",
        "security": [{"ingestKey": []}],
        "description": "Needs an ingest key (`ioc ingest keys add`), which may publish only "
        "the event types and sources it was created for. "
        "Every event is validated as `schemas/v1/cloudevent.json` states, "
        f"and at most {MAX_EVENT_BYTES} bytes with a time at most IOC_MAX_FUTURE_SKEW_S "
        "(300 s) ahead of the gateway's clock. All or nothing: one invalid event refuses "
        "the request. A batch holds at most IOC_INGEST_MAX_BATCH (5000) events, a body "
        "at most IOC_INGEST_MAX_BODY_BYTES (4 MiB). Binary mode (CloudEvents HTTP "
        "binding): a `ce-specversion` header, the other attributes as `ce-<attribute>` "
        "headers (percent-encoded; extensions too), the data as the body and its type as "
        "Content-Type (application/json, parameters allowed; else 415).",
        "parameters": [
            {
                "name": f"ce-{name}",
                "in": "header",
                "required": False,
                "description": f"binary mode: the `{name}` attribute"
                + (" (its presence selects binary mode)" if name == "specversion" else ""),
                "schema": {"type": "string"},
            }
            for name in ("specversion", "id", "source", "type", "time")
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/cloudevents+json": {"schema": _EVENT},
                "application/json": {
                    "schema": {
                        "anyOf": [
                            _EVENT,
                            {"type": "object", "description": "binary mode: the event's data"},
                        ]
                    }
                },
                "application/cloudevents-batch+json": {
                    "schema": {"type": "array", "items": _EVENT}
                },
            },
        },
        "responses": {
            "202": _json("Accepted", "every event acknowledged by the broker"),
            "400": {
                "description": "a body that is not JSON (Error), or invalid events "
                "(InvalidEvents, naming each one); nothing was published",
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/Error"},
                                {"$ref": "#/components/schemas/InvalidEvents"},
                            ]
                        }
                    }
                },
            },
            "401": {
                **_error(
                    "no `Authorization: Bearer` key (`missing_key`) or an unknown or revoked "
                    "one (`unknown_key`); checked before anything else"
                ),
                "headers": {
                    "WWW-Authenticate": {
                        "description": 'the scheme to use: `Bearer realm="ioc-ingest"`',
                        "schema": {"type": "string"},
                    }
                },
            },
            "403": _json(
                "OutOfScope",
                "events the key may not publish (their type or source is outside its scope), "
                "each named by index; nothing was published",
            ),
            "413": _error("body too large (`oversize`)"),
            "415": _error(
                "another content type, or in binary mode data that is not JSON "
                "(`unsupported_media_type`)"
            ),
            "429": {
                **_error(
                    "the gateway holds IOC_INGEST_MAX_INFLIGHT_BYTES of events the broker has "
                    "not yet acknowledged (`busy`); nothing was published, retry after "
                    "Retry-After seconds"
                ),
                "headers": {
                    "Retry-After": {
                        "description": "seconds to wait before retrying",
                        "schema": {"type": "integer", "minimum": 1},
                    }
                },
            },
            "503": _error(
                "the broker did not take the events (`unavailable`) or the keys could not be "
                "checked (`auth_unavailable`); retry"
            ),
        },
    },
    ("GET", "/healthz"): {
        "operationId": "health",
        "summary": "Liveness of the gateway (the shape every component shares: events.health)",
        "responses": {"200": _json("Alive", "it is up")},
    },
    ("GET", "/readyz"): {
        "operationId": "ready",
        "summary": "Readiness: the Kafka producer reaches a broker",
        "responses": {
            "200": _json("Readiness", "ready: every check holds"),
            "503": _json("Readiness", "not ready: a check fails (named, with its detail)"),
        },
    },
    ("GET", "/metrics"): {
        "operationId": "metrics",
        "summary": "Prometheus metrics: accepted, rejected by reason, publish errors",
        "responses": {
            "200": {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    },
    ("GET", "/openapi.json"): {
        "operationId": "openapi",
        "summary": "This document",
        "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
    },
    ("GET", "/schemas/v1/{name}"): {
        "operationId": "schema",
        "summary": "A JSON Schema (2020-12) of the v1 contracts; index.json lists them",
        "parameters": [
            {
                "name": "name",
                "in": "path",
                "required": True,
                "schema": {"enum": list(all_schemas())},
            }
        ],
        "responses": {
            "200": {
                "description": "the schema (index.json: the list, as application/json)",
                "content": {
                    SCHEMA_MEDIA: {"schema": {"type": "object"}},
                    "application/json": {"schema": {"type": "object"}},
                },
            },
            "404": _error("no such schema (`unknown_schema`)"),
        },
    },
}


def _components() -> Document:
    # The envelope keeps its $defs; its own $id and dialect stay too (OpenAPI 3.1 schema
    # objects are JSON Schema 2020-12), so its local $refs resolve inside it.
    return {
        "securitySchemes": {
            **readapi_openapi.SECURITY_SCHEMES,
            "ingestKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "an ingest key's secret (`ioc ingest keys add NAME --types "
                "... --sources ...`; the demo's key `demo` is IOC_INGEST_DEMO_KEY, "
                "`demo-ingest-key` by default)",
            },
        },
        "schemas": {
            **readapi_openapi.schemas(),
            "CloudEvent": envelope_schema(),
            "Accepted": {
                "type": "object",
                "required": ["accepted"],
                "properties": {"accepted": {"type": "integer", "minimum": 0}},
            },
            "Alive": health.ALIVE_SCHEMA,
            "Readiness": health.READINESS_SCHEMA,
            "Error": {
                "type": "object",
                "required": ["error", "detail"],
                "properties": {
                    "error": {"type": "string", "description": "a stable reason code"},
                    "detail": {"type": "string", "description": "for people"},
                },
            },
            "Rejection": {
                "type": "object",
                "required": ["index", "reason", "detail"],
                "properties": {
                    "index": {"type": "integer", "minimum": 0, "description": "in the batch"},
                    "reason": {"type": "string", "description": "validation reason code"},
                    "detail": {"type": "string"},
                },
            },
            "OutOfScope": {
                "type": "object",
                "required": ["error", "detail", "rejected"],
                "properties": {
                    "error": {"const": "out_of_scope"},
                    "detail": {"type": "string"},
                    "rejected": {
                        "type": "array",
                        "minItems": 1,
                        "description": "reason `type_not_allowed` or `source_not_allowed`",
                        "items": {"$ref": "#/components/schemas/Rejection"},
                    },
                },
            },
            "InvalidEvents": {
                "type": "object",
                "required": ["error", "rejected"],
                "properties": {
                    "error": {"const": "invalid_events"},
                    "rejected": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"$ref": "#/components/schemas/Rejection"},
                    },
                },
            },
        },
    }


def openapi_document(routes: Iterable[tuple[str, str]]) -> Document:
    """The OpenAPI 3.1 document of the given (method, path) routes of the gateway, and of
    the read API's routes (``readapi.openapi.READ_PATHS``, each path with its own
    ``servers``: the read API has its own port)."""
    paths: Document = {}
    for method, path in routes:
        try:
            operation = OPERATIONS[(method, path)]
        except KeyError:
            raise ValueError(f"route {method} {path} has no OpenAPI description") from None
        # a copy: a caller that edits the document must not edit the next one
        paths.setdefault(path, {})[method.lower()] = {"tags": [TAG], **copy.deepcopy(operation)}
    for (_method, path), item in readapi_openapi.READ_PATHS.items():
        if path in paths:
            raise ValueError(f"{path} is a route of the gateway and of the read API")
        paths[path] = copy.deepcopy(item)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": API_VERSION,
            "description": "CloudEvents over HTTP into the IOC event bus (the ingest "
            "gateway, tag `ingest`), and the history and current state of the KPIs and "
            "alerts (the read API, tag `read API`, on its own port: see each path's "
            "`servers`). The JSON Schemas "
            f"of the events are served under /schemas/v1/ ({ENVELOPE} for any event).",
        },
        "servers": SERVERS,
        "tags": [
            {"name": TAG, "description": "ingest gateway (ioc ingest serve), port 8081"},
            {
                "name": readapi_openapi.TAG,
                "description": "read API (python -m readapi), "
                "port 8082, with the push server's tokens; docs/readapi.md",
            },
        ],
        "paths": paths,
        "components": _components(),
    }
