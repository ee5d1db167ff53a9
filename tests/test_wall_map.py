"""The wall's map data (ws/mapdata.py, ws/static/*.geojson): pure geometry, no services."""

from __future__ import annotations

import json
from typing import Any

import pytest

from events.flood import WATER_STATIONS
from events.geography import DISTRICTS
from simulators.model import build_province
from ws import mapdata
from ws.http import page_config
from ws.mapdata import Point, centroid, clip_half_plane, contains, ring_area


def load(path: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def rings() -> dict[str, list[Point]]:
    doc = load(mapdata.DISTRICTS_FILE)
    return {
        f["id"]: [(x, y) for x, y in f["geometry"]["coordinates"][0][:-1]] for f in doc["features"]
    }


def test_committed_geojson_is_what_the_generator_renders_now() -> None:
    assert mapdata.main(["--check"]) == 0


def test_half_plane_clip_keeps_the_side_of_the_own_point() -> None:
    square = [(0.0, 0.0), (2.0, 0.0), (2.0, 2.0), (0.0, 2.0)]
    left = clip_half_plane(square, (0.5, 1.0), (1.5, 1.0))
    assert sorted(left) == [(0.0, 0.0), (0.0, 2.0), (1.0, 0.0), (1.0, 2.0)]
    assert clip_half_plane(square, (-5.0, 1.0), (-3.0, 1.0)) == []


def test_one_approximate_polygon_per_district_tiling_the_province_outline() -> None:
    doc = load(mapdata.DISTRICTS_FILE)
    assert doc["approximate"] is True and "Voronoi" in doc["method"]
    assert [f["id"] for f in doc["features"]] == list(DISTRICTS)
    for f in doc["features"]:
        assert f["geometry"]["type"] == "Polygon"
        ring = f["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) >= 4
        assert ring_area([(x, y) for x, y in ring[:-1]]) > 0  # RFC 7946: counter-clockwise
        assert f["properties"]["name_vi"] == DISTRICTS[f["id"]].name_vi
    cells = rings()
    # The cells cover the outline without overlapping: their areas add up to its area.
    outline_area = abs(ring_area(mapdata.PROVINCE_OUTLINE))
    assert sum(ring_area(r) for r in cells.values()) == pytest.approx(outline_area, rel=1e-4)
    for code, d in DISTRICTS.items():
        inside = [c for c, r in cells.items() if contains(r, (d.lon, d.lat))]
        assert inside == [code], f"seat of {code} lies in {inside}"
    # The name is written at the cell's centroid, which lies inside the cell.
    for f in doc["features"]:
        assert contains(cells[f["id"]], tuple(f["properties"]["label"]))


def test_centroid_of_a_square_is_its_middle() -> None:
    assert centroid([(0.0, 0.0), (2.0, 0.0), (2.0, 2.0), (0.0, 2.0)]) == (1.0, 1.0)


@pytest.mark.parametrize("seed", [42, 7])
def test_every_site_of_the_province_lies_in_its_district_cell(seed: int) -> None:
    cells = rings()
    outside = [
        (s.site_id, s.district)
        for s in build_province(seed).all_sites()
        if not contains(cells[s.district], (s.lon, s.lat))
    ]
    assert outside == []


def test_page_config_gives_district_seats_and_station_positions() -> None:
    config = page_config("t")
    hd = next(d for d in config["districts"] if d["code"] == "HD")
    assert (hd["seat_vi"], hd["lat"], hd["lon"]) == ("Phường Trần Hưng Đạo", 20.9373, 106.3146)
    assert all({"lat", "lon"} <= set(s) for s in config["water_stations"])


def test_stations_file_marks_every_water_and_air_station_where_the_model_puts_it() -> None:
    doc = load(mapdata.STATIONS_FILE)
    points = {f["id"]: f for f in doc["features"]}
    air = {s.site_id: s for s in build_province().air_stations}
    assert set(points) == set(WATER_STATIONS) | set(air)
    for sid, st in WATER_STATIONS.items():
        assert points[sid]["properties"]["kind"] == "water"
        assert points[sid]["geometry"]["coordinates"] == [st.lon, st.lat]
    for sid, site in air.items():
        assert points[sid]["properties"] == {"kind": "air", "name": sid, "district": site.district}
        assert points[sid]["geometry"]["coordinates"] == [site.lon, site.lat]
