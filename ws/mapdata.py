"""The wall's map data: district cells and station positions, as GeoJSON files in ws/static.

No openly licensed set of Hải Dương's district boundaries could be obtained on this
machine (no downloads but package registries), so the districts are *approximate*: the
Voronoi cell of each district seat (:mod:`events.geography`), clipped to a simplified
outline of the province. A cell holds the places closer to its seat than to any other
seat; real boundaries follow rivers and old commune lines and differ by kilometres. The
file says so (``"approximate": true`` and ``"method"``), and the wall says so under the
map.

Pure Python on purpose (twelve seats do not need scipy): a cell is the province outline
cut by one half-plane per other seat (Sutherland–Hodgman), in an equirectangular
projection around the province's latitude, where distances are close enough to true.

``python -m ws.mapdata`` rewrites ``ws/static/districts.geojson`` and
``ws/static/stations.geojson``; ``--check`` exits 1 if a committed file differs (the tests
run the same comparison).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from events.flood import WATER_STATIONS
from events.geography import DISTRICTS, PROVINCE_NAME_EN, PROVINCE_NAME_VI

Point = tuple[float, float]  # (lon, lat) in degrees, GeoJSON order
STATIC = Path(__file__).resolve().parent / "static"
DISTRICTS_FILE = STATIC / "districts.geojson"
STATIONS_FILE = STATIC / "stations.geojson"

# A simplified outline of Hải Dương province (lon, lat), clockwise from the north of Chí
# Linh, drawn from general knowledge of its borders (Bắc Giang and Quảng Ninh to the north,
# Hải Phòng to the east, Thái Bình to the south across the Luộc river, Hưng Yên and Bắc
# Ninh to the west). About twenty vertices: kilometres off in places, like the cells.
PROVINCE_OUTLINE: tuple[Point, ...] = (
    (106.385, 21.235),
    (106.470, 21.190),
    (106.560, 21.120),
    (106.620, 21.080),
    (106.600, 21.000),
    (106.580, 20.930),
    (106.520, 20.860),
    (106.500, 20.770),
    (106.450, 20.700),
    (106.400, 20.640),
    (106.300, 20.660),
    (106.220, 20.700),
    (106.150, 20.730),
    (106.080, 20.800),
    (106.050, 20.880),
    (106.080, 20.960),
    (106.180, 21.030),
    (106.250, 21.070),
    (106.260, 21.130),
    (106.310, 21.200),
)
METHOD = (
    "Voronoi cells of the district seats (events/geography.py), clipped to a simplified "
    "province outline (ws/mapdata.py); not surveyed boundaries"
)
_LAT0 = math.radians(20.93)  # the province's middle latitude, for the projection


def _project(p: Point) -> Point:
    return p[0] * math.cos(_LAT0), p[1]


def _unproject(p: Point) -> Point:
    return p[0] / math.cos(_LAT0), p[1]


def clip_half_plane(polygon: Sequence[Point], own: Point, other: Point) -> list[Point]:
    """The part of ``polygon`` at least as close to ``own`` as to ``other`` (projected
    coordinates). Sutherland–Hodgman against one half-plane: exact for a convex polygon
    and for the outline here, which the bisectors do not cut into separate pieces."""
    nx, ny = other[0] - own[0], other[1] - own[1]
    mx, my = (own[0] + other[0]) / 2, (own[1] + other[1]) / 2

    def side(p: Point) -> float:  # < 0: on own's side of the bisector
        return (p[0] - mx) * nx + (p[1] - my) * ny

    out: list[Point] = []
    for i, cur in enumerate(polygon):
        prev = polygon[i - 1]
        s_prev, s_cur = side(prev), side(cur)
        if (s_prev <= 0) != (s_cur <= 0):
            k = s_prev / (s_prev - s_cur)
            out.append((prev[0] + k * (cur[0] - prev[0]), prev[1] + k * (cur[1] - prev[1])))
        if s_cur <= 0:
            out.append(cur)
    return out


def voronoi_cells(
    seats: dict[str, Point], outline: Sequence[Point] = PROVINCE_OUTLINE
) -> dict[str, list[Point]]:
    """Seat code -> its cell (lon, lat ring, not closed), clipped to ``outline``."""
    projected = {code: _project(p) for code, p in seats.items()}
    boundary = [_project(p) for p in outline]
    cells: dict[str, list[Point]] = {}
    for code, own in projected.items():
        cell = list(boundary)
        for other_code, other in projected.items():
            if other_code != code:
                cell = clip_half_plane(cell, own, other)
        cells[code] = [_unproject(p) for p in cell]
    return cells


def ring_area(ring: Sequence[Point]) -> float:
    """Signed shoelace area (positive: counter-clockwise), in squared degrees."""
    return (
        sum(ring[i - 1][0] * ring[i][1] - ring[i][0] * ring[i - 1][1] for i in range(len(ring)))
        / 2.0
    )


def centroid(ring: Sequence[Point]) -> Point:
    """The area centroid of a simple polygon: where the wall writes the district's name
    (the seat itself is crowded with the district's station markers)."""
    a = ring_area(ring)
    cx = cy = 0.0
    for i in range(len(ring)):
        (x0, y0), (x1, y1) = ring[i - 1], ring[i]
        cross = x0 * y1 - x1 * y0
        cx += (x0 + x1) * cross
        cy += (y0 + y1) * cross
    return cx / (6.0 * a), cy / (6.0 * a)


def contains(ring: Sequence[Point], p: Point) -> bool:
    """Whether ``p`` lies inside ``ring`` (even-odd rule; a closing vertex is ignored)."""
    inside = False
    for i, (x1, y1) in enumerate(ring):
        x0, y0 = ring[i - 1]
        if (y0 > p[1]) != (y1 > p[1]) and p[0] < x0 + (p[1] - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


def _ring(cell: Sequence[Point]) -> list[list[float]]:
    # RFC 7946: exterior rings counter-clockwise, first point repeated at the end.
    pts = list(cell) if ring_area(cell) > 0 else list(reversed(cell))
    pts.append(pts[0])
    return [[round(x, 5), round(y, 5)] for x, y in pts]


def districts_geojson() -> dict[str, Any]:
    seats = {code: (d.lon, d.lat) for code, d in DISTRICTS.items()}
    cells = voronoi_cells(seats)
    features = [
        {
            "type": "Feature",
            "id": code,
            "properties": {
                "code": code,
                "name_vi": d.name_vi,
                "name_en": d.name_en,
                "seat_vi": d.seat_vi,
                "seat": [d.lon, d.lat],
                "label": [round(c, 5) for c in centroid(cells[code])],
            },
            "geometry": {"type": "Polygon", "coordinates": [_ring(cells[code])]},
        }
        for code, d in DISTRICTS.items()
    ]
    return {
        "type": "FeatureCollection",
        "name": f"{PROVINCE_NAME_VI} / {PROVINCE_NAME_EN}: districts",
        "approximate": True,
        "method": METHOD,
        "source": "district seats and province outline from general knowledge; no licensed "
        "boundary data was available",
        "features": features,
    }


def stations_geojson() -> dict[str, Any]:
    """The stations the wall marks: hydrological (water level) and air quality (AQI)."""
    from simulators.model import build_province  # a build-time input, not a runtime one

    features: list[dict[str, Any]] = [
        {
            "type": "Feature",
            "id": s.station_id,
            "properties": {
                "kind": "water",
                "name": s.name,
                "river": s.river,
                "district": s.district,
            },
            "geometry": {"type": "Point", "coordinates": [s.lon, s.lat]},
        }
        for s in WATER_STATIONS.values()
    ]
    # Air stations and their places do not depend on the seed (ids by district, places
    # hashed from the ids), so one rendering fits every simulated province.
    for site in build_province().air_stations:
        features.append(
            {
                "type": "Feature",
                "id": site.site_id,
                "properties": {"kind": "air", "name": site.site_id, "district": site.district},
                "geometry": {"type": "Point", "coordinates": [site.lon, site.lat]},
            }
        )
    return {"type": "FeatureCollection", "features": features}


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=1) + "\n"


def outputs() -> dict[Path, str]:
    return {DISTRICTS_FILE: render(districts_geojson()), STATIONS_FILE: render(stations_geojson())}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ws.mapdata", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print("stale (run python -m ws.mapdata): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
