"""Plain HTTP beside the websocket: the wall page and its assets and /config.json (the
catalogues the page needs; /healthz, /readyz and /metrics are answered by ws.server).
Pure functions from a path to a response triple, so they are testable without a socket."""

from __future__ import annotations

import mimetypes
from dataclasses import asdict
from importlib import resources
from typing import Any

import orjson

STATIC_PACKAGE = "ws.static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


def static_file(path: str) -> tuple[int, str, bytes] | None:
    """(status, content type, body) of a file under ws/static, or None if absent."""
    name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/static/")
    if name == path or "/" in name or name.startswith(".") or not name:
        return None
    resource = resources.files(STATIC_PACKAGE).joinpath(name)
    if not resource.is_file():
        return None
    suffix = "." + name.rsplit(".", 1)[-1]
    ctype = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return 200, ctype, resource.read_bytes()


def page_config(page_token: str) -> dict[str, Any]:
    """Everything the wall page needs from the shared catalogues, in one document."""
    from events import aqi, flood, geography, kpis

    return {
        "province": {"vi": geography.PROVINCE_NAME_VI, "en": geography.PROVINCE_NAME_EN},
        "districts": [asdict(d) for d in geography.DISTRICTS.values()],
        "kpis": {
            k: {
                "title_vi": s.title_vi,
                "title_en": s.title_en,
                "unit": s.unit,
                "domain": s.domain,
                "higher_is_worse": s.higher_is_worse,
            }
            for k, s in kpis.KPI_CATALOGUE.items()
        },
        "aqi_bands": [asdict(b) for b in aqi.VN_BANDS],
        "water_stations": [
            {**asdict(s), "alarm_levels": list(s.alarm_levels)}
            for s in flood.WATER_STATIONS.values()
        ],
        "token": page_token,
        "ws_path": "/ws",
    }


def config_body(page_token: str) -> bytes:
    return orjson.dumps(page_config(page_token))
