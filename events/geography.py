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
"""

from __future__ import annotations

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


_DISTRICTS = (
    District("HD", "Thành phố Hải Dương", "Hai Duong City", 395_000, 1, 2),
    District("CL", "Thành phố Chí Linh", "Chi Linh City", 221_000, 1, 0),
    District("KM", "Thị xã Kinh Môn", "Kinh Mon Town", 205_000, 2, 0),
    District("NS", "Huyện Nam Sách", "Nam Sach District", 115_000, 1, 1),
    District("KT", "Huyện Kim Thành", "Kim Thanh District", 125_000, 2, 1),
    District("TH", "Huyện Thanh Hà", "Thanh Ha District", 125_000, 2, 2),
    District("CG", "Huyện Cẩm Giàng", "Cam Giang District", 130_000, 0, 1),
    District("BG", "Huyện Bình Giang", "Binh Giang District", 105_000, 0, 2),
    District("GL", "Huyện Gia Lộc", "Gia Loc District", 100_000, 1, 3),
    District("TK", "Huyện Tứ Kỳ", "Tu Ky District", 130_000, 2, 3),
    District("NG", "Huyện Ninh Giang", "Ninh Giang District", 125_000, 1, 4),
    District("TM", "Huyện Thanh Miện", "Thanh Mien District", 116_000, 0, 3),
)

DISTRICTS: Mapping[str, District] = MappingProxyType({d.code: d for d in _DISTRICTS})
"""District code -> district, in a stable order (the provincial city first)."""

DISTRICT_CODES: frozenset[str] = frozenset(DISTRICTS)


def district_scope(code: str) -> str:
    """The KPI scope string of a district."""
    return f"district:{code}"
