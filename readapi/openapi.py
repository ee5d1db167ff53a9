"""OpenAPI 3.1 descriptions of the read API's routes (readapi.app.ROUTES), merged into
the one document of the project's HTTP APIs by :func:`ingest.openapi.openapi_document`.

Each read path carries its own ``servers`` entry (OpenAPI 3.1 path-item servers): the
read API listens on its own port (IOC_READAPI_PORT, 8082), the ingest gateway on 8081.
Pure data: no aiohttp or database import, so ``ioc schemas`` and the gateway can render
it.
"""

from __future__ import annotations

from typing import Any

from events.contracts import all_schemas
from events.kpis import KPI_CATALOGUE, WINDOWS
from readapi.params import ALERT_STATES, DEFAULT_LIMIT, DEFAULT_POINTS, MAX_LIMIT, MAX_POINTS

Document = dict[str, Any]

TAG = "read API"
SERVERS = [
    {
        "url": "http://127.0.0.1:8082",
        "description": "the read API (python -m readapi; IOC_READAPI_HOST/IOC_READAPI_PORT)",
    }
]
SECURITY: list[dict[str, list[str]]] = [{"pushServerToken": []}]
SECURITY_SCHEMES = {
    "pushServerToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "a token of the push server (IOC_WS_TOKENS); any role may read",
    }
}

_TIME = {
    "type": "string",
    "description": "epoch milliseconds (1764806400000) or ISO 8601 with a UTC offset "
    "(2026-12-04T08:00:00Z, 2026-12-04T15:00:00+07:00)",
    "examples": ["2026-12-04T08:00:00Z", "1764806400000"],
}


def _ok(schema: str, description: str) -> Document:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _responses(ok: Document, *, not_found: bool = False) -> Document:
    responses = {
        "200": ok,
        "400": _ok("ReadError", "a bad parameter (`bad_parameter`), named in `parameter`"),
        "401": _ok("ReadError", "no valid `Authorization: Bearer <token>` (`unauthorized`)"),
        "503": _ok("ReadError", "the database cannot answer now (`unavailable`); retry"),
    }
    if not_found:
        responses["404"] = _ok("ReadError", "a KPI id the catalogue lacks (`unknown_kpi`)")
    return responses


def _query(name: str, schema: Document, description: str) -> Document:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


def _get(operation_id: str, summary: str, description: str, **rest: Any) -> Document:
    return {
        "servers": SERVERS,
        "get": {
            "operationId": operation_id,
            "tags": [TAG],
            "summary": summary,
            "description": description,
            "security": SECURITY,
            **rest,
        },
    }


_SCOPE_PATTERNS = _query(
    "scope",
    {"type": "string"},
    "comma-separated scopes, `*` a wildcard (`city`, `district:*`, `station:HD-AQ-*`); default all",
)

# (method, path) -> path item (with its servers) of the read API.
READ_PATHS: dict[tuple[str, str], Document] = {
    ("GET", "/v1/kpis"): _get(
        "listKpis",
        "The KPI catalogue",
        "Every KPI the stream workers compute, as `ioc kpis --json` prints it.",
        responses=_responses(_ok("KpiCatalogue", "the catalogue")),
    ),
    ("GET", "/v1/kpis/{id}/windows"): _get(
        "kpiWindows",
        "History of one KPI in one scope, downsampled to at most `points` points",
        "Reads the 60 s windows, or the hourly or daily rollup when one point covers at "
        "least an hour or a day: the coarsest source whose grain fits span/points. The "
        "range is widened to that grain (UTC minutes, hours, days) and cut by "
        "`time_bucket` into buckets of a multiple of the grain; a point is the mean of "
        "the 60 s window values in its bucket, min and max over them, count and sum "
        "summed. Buckets without windows are absent. The rollups are refreshed every "
        "IOC_MAINTENANCE_INTERVAL_S (300 s), so their newest bucket may lag.",
        parameters=[
            {
                "name": "id",
                "in": "path",
                "required": True,
                "schema": {"enum": list(KPI_CATALOGUE)},
            },
            _query(
                "scope",
                {"type": "string", "default": "city"},
                "one scope of the KPI: `city`, `district:<code>` or `station:<id>`",
            ),
            _query("since", _TIME, "start (inclusive); default `until` − 24 h"),
            _query("until", _TIME, "end (exclusive); default now"),
            _query(
                "points",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_POINTS,
                    "default": DEFAULT_POINTS,
                },
                "at most this many points",
            ),
        ],
        responses=_responses(_ok("KpiSeries", "the series"), not_found=True),
    ),
    ("GET", "/v1/kpis/latest"): _get(
        "latestKpis",
        "The newest window per (kpi, scope)",
        "From `kpi_latest`, which the KPI sink keeps in step with the windows.",
        parameters=[
            _query("kpi", {"type": "string"}, "comma-separated KPI ids; default all"),
            _SCOPE_PATTERNS,
            _query("window", {"enum": list(WINDOWS), "default": 60}, "window length (s)"),
            _query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": MAX_LIMIT},
                "at most this many windows",
            ),
        ],
        responses=_responses(_ok("KpiWindows", "windows ordered by kpi, scope")),
    ),
    ("GET", "/v1/alerts"): _get(
        "listAlerts",
        "Alerts (their current state) by state, most recently changed first",
        "From the `alerts` table (one row per alert, its highest revision).",
        parameters=[
            _query(
                "state",
                {"type": "string", "default": "active"},
                f"`active` (all but cleared), `all`, or comma-separated of "
                f"{', '.join(ALERT_STATES)}",
            ),
            _query("since", _TIME, "only alerts changed at or after this time"),
            _query(
                "limit",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_LIMIT,
                    "default": DEFAULT_LIMIT,
                },
                "at most this many alerts",
            ),
        ],
        responses=_responses(_ok("Alerts", "alerts")),
    ),
}

_NUMBER = {"type": ["number", "null"]}
_STAMP = {"type": "string", "format": "date-time"}


def schemas() -> Document:
    """The components the read paths refer to (records as their JSON Schemas, kept
    whole with their $id, as the gateway's CloudEvent is)."""
    contracts = all_schemas()
    return {
        **_SCHEMAS,
        "KpiWindow": contracts["kpi-window.json"],
        "Alert": contracts["alert.json"],
    }


_SCHEMAS: Document = {
    "ReadError": {
        "type": "object",
        "required": ["error", "parameter", "detail"],
        "properties": {
            "error": {"enum": ["bad_parameter", "unknown_kpi", "unauthorized", "unavailable"]},
            "parameter": {"type": ["string", "null"], "description": "the bad parameter"},
            "detail": {"type": "string", "description": "for people"},
        },
    },
    "KpiCatalogue": {
        "type": "object",
        "required": ["kpis"],
        "properties": {"kpis": {"type": "array", "items": {"$ref": "#/components/schemas/Kpi"}}},
    },
    "Kpi": {
        "type": "object",
        "required": ["id", "title_en", "unit", "domain", "aggregation", "scopes", "windows"],
        "properties": {
            "id": {"type": "string"},
            "title_vi": {"type": "string"},
            "title_en": {"type": "string"},
            "unit": {"type": "string"},
            "domain": {"type": "string"},
            "aggregation": {"type": "string"},
            "scopes": {"type": "array", "items": {"type": "string"}},
            "windows": {"type": "array", "items": {"type": "integer"}},
            "higher_is_worse": {"type": "boolean"},
        },
    },
    "KpiSeries": {
        "type": "object",
        "required": ["kpi", "scope", "since", "until", "source", "bucket_s", "items"],
        "properties": {
            "kpi": {"type": "string"},
            "scope": {"type": "string"},
            "since": {**_STAMP, "description": "the range read: since rounded down to the grain"},
            "until": {**_STAMP, "description": "until rounded up to the grain"},
            "source": {"enum": ["windows", "hourly", "daily"]},
            "bucket_s": {"type": "integer", "description": "seconds one point covers"},
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["start", "end", "value", "count", "windows"],
                    "properties": {
                        "start": _STAMP,
                        "end": _STAMP,
                        "value": {**_NUMBER, "description": "mean of the window values"},
                        "min": _NUMBER,
                        "max": _NUMBER,
                        "sum": _NUMBER,
                        "count": {"type": "integer", "description": "events"},
                        "windows": {"type": "integer", "description": "60 s windows"},
                    },
                },
            },
        },
    },
    "KpiWindows": {
        "type": "object",
        "required": ["items", "truncated"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/KpiWindow"}},
            "truncated": {"type": "boolean", "description": "`limit` items were returned"},
        },
    },
    "Alerts": {
        "type": "object",
        "required": ["items", "truncated"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}},
            "truncated": {"type": "boolean", "description": "`limit` items were returned"},
        },
    },
}
