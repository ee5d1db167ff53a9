"""The province the operations center watches: Hải Dương and its twelve district-level units.

These are the district-level units of Hải Dương province as they stood from 2019 (when
Kinh Môn became a town) until the 2025 administrative reorganisation: two cities, one
town and nine rural districts. Populations are approximate, rounded to the thousand, and
add up to the province's 2019 census total (1.89 million); nothing on the wire depends on
them, the simulators use them to size sensor networks and citizen activity.

Each district has a short uppercase code built from the initials of its name. The code is
what travels in every event (``data["district"]``) and in KPI scopes (``district:<code>``).

``map_x``/``map_y`` place the district on a schematic grid map for the wall display
(column, row; row 0 is the north). It keeps neighbours next to each other, it is not to scale:

    x:   0    1    2
    y0        CL   KM
    y1   CG   NS   KT
    y2   BG   HD   TH
    y3   TM   GL   TK
    y4        NG

``seat_vi``/``lat``/``lon`` are the district's seat (the town or ward where its people's
committee sits) in WGS 84 degrees, approximate (about a kilometre: they were written from
general knowledge of the province, not surveyed) but real: the wall draws its map from them
(``ws.mapdata``), and every sensor of the simulated province stands near its district's seat
(:func:`place_near_seat`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

PROVINCE_NAME_VI = "Tỉnh Hải Dương"
PROVINCE_NAME_EN = "Hai Duong Province"
PROVINCE_CODE = "HD"


@dataclass(frozen=True, slots=True)
class District:
    code: str
    name_vi: str
    name_en: str
    population: int
    map_x: int
    map_y: int
    seat_vi: str
    lat: float
    lon: float


_DISTRICTS = (
    District(
        "HD",
        "Thành phố Hải Dương",
        "Hai Duong City",
        395_000,
        1,
        2,
        "Phường Trần Hưng Đạo",
        20.9373,
        106.3146,
    ),
    District(
        "CL",
        "Thành phố Chí Linh",
        "Chi Linh City",
        221_000,
        1,
        0,
        "Phường Sao Đỏ",
        21.1113,
        106.3923,
    ),
    District(
        "KM",
        "Thị xã Kinh Môn",
        "Kinh Mon Town",
        205_000,
        2,
        0,
        "Phường An Lưu",
        21.0300,
        106.5050,
    ),
    District(
        "NS",
        "Huyện Nam Sách",
        "Nam Sach District",
        115_000,
        1,
        1,
        "Thị trấn Nam Sách",
        21.0000,
        106.3400,
    ),
    District(
        "KT",
        "Huyện Kim Thành",
        "Kim Thanh District",
        125_000,
        2,
        1,
        "Thị trấn Phú Thái",
        20.9670,
        106.5170,
    ),
    District(
        "TH",
        "Huyện Thanh Hà",
        "Thanh Ha District",
        125_000,
        2,
        2,
        "Thị trấn Thanh Hà",
        20.8955,
        106.4286,
    ),
    District(
        "CG",
        "Huyện Cẩm Giàng",
        "Cam Giang District",
        130_000,
        0,
        1,
        "Thị trấn Lai Cách",
        20.9370,
        106.2450,
    ),
    District(
        "BG",
        "Huyện Bình Giang",
        "Binh Giang District",
        105_000,
        0,
        2,
        "Thị trấn Kẻ Sặt",
        20.9050,
        106.1480,
    ),
    District(
        "GL",
        "Huyện Gia Lộc",
        "Gia Loc District",
        100_000,
        1,
        3,
        "Thị trấn Gia Lộc",
        20.8680,
        106.2970,
    ),
    District(
        "TK",
        "Huyện Tứ Kỳ",
        "Tu Ky District",
        130_000,
        2,
        3,
        "Thị trấn Tứ Kỳ",
        20.8180,
        106.4040,
    ),
    District(
        "NG",
        "Huyện Ninh Giang",
        "Ninh Giang District",
        125_000,
        1,
        4,
        "Thị trấn Ninh Giang",
        20.7300,
        106.3900,
    ),
    District(
        "TM",
        "Huyện Thanh Miện",
        "Thanh Mien District",
        116_000,
        0,
        3,
        "Thị trấn Thanh Miện",
        20.7900,
        106.2380,
    ),
)

DISTRICTS: Mapping[str, District] = MappingProxyType({d.code: d for d in _DISTRICTS})
"""District code -> district, in a stable order (the provincial city first)."""

DISTRICT_CODES: frozenset[str] = frozenset(DISTRICTS)


def district_scope(code: str) -> str:
    """The KPI scope string of a district."""
    return f"district:{code}"


# Sensors stand within this distance of their district's seat: less than half the distance
# between the two closest seats (Hải Dương and Nam Sách, about 7 km), so each one lies in
# its own district's cell of the wall's map, whose cells are built from the seats.
SITE_RADIUS_KM = 3.0
_KM_PER_DEGREE_LAT = 111.32


def place_near_seat(code: str, key: str) -> tuple[float, float]:
    """(lat, lon) of the site ``key`` of district ``code``: near its seat, deterministic.

    The offset comes from a hash of the key, not from a random generator, so a site keeps
    its place whatever else the province model draws (and whatever the seed).
    """
    d = DISTRICTS[code]
    digest = hashlib.sha256(f"{code}|{key}".encode()).digest()
    angle = int.from_bytes(digest[:4], "big") / 2**32 * 2.0 * math.pi
    # Between 0.4 km and the radius; sqrt spreads the sites evenly over the disc.
    share = int.from_bytes(digest[4:8], "big") / 2**32
    km = 0.4 + (SITE_RADIUS_KM - 0.4) * math.sqrt(share)
    dlat = km * math.sin(angle) / _KM_PER_DEGREE_LAT
    dlon = km * math.cos(angle) / (_KM_PER_DEGREE_LAT * math.cos(math.radians(d.lat)))
    return round(d.lat + dlat, 5), round(d.lon + dlon, 5)
