"""Air-quality indices: VN_AQI (Vietnam) and US EPA AQI, from concentrations in µg/m³.

VN_AQI — Decision 1459/QĐ-TCMT of 12 Nov 2019 (Tổng cục Môi trường), "Hướng dẫn kỹ thuật
tính toán và công bố chỉ số chất lượng không khí Việt Nam (VN_AQI)", Table 1 (breakpoints
BP_i per index level I_i; µg/m³; PM for 24 h, gases for 1 h averages):

    I_i      0    50    100    150    200    300     400     500
    O3 1h    0   160    200    300    400    800    1000    1200
    CO 1h    0 10000  30000  45000  60000  90000  120000  150000
    SO2 1h   0   125    350    550    800   1600    2100    2630
    NO2 1h   0   100    200    700   1200   2350    3100    3850
    PM10     0    50    150    250    350    420     500     600
    PM2.5    0    25     50     80    150    250     350     500

Sub-index by linear interpolation between the enclosing breakpoints,
``I = (I_{i+1} - I_i) / (BP_{i+1} - BP_i) × (C - BP_i) + I_i``, rounded to an integer;
the overall VN_AQI is the maximum sub-index, and the decision requires at least one of
PM10 and PM2.5 (without either we return None). Concentrations above the last breakpoint
give 500. Bands (Table 2): 0–50 Tốt (green), 51–100 Trung bình (yellow), 101–150 Kém
(orange), 151–200 Xấu (red), 201–300 Rất xấu (purple), 301–500 Nguy hại (maroon).

US EPA AQI — 40 CFR Part 58 Appendix G as revised in February 2024 (PM2.5 breakpoints
0–9.0, 9.1–35.4, 35.5–55.4, 55.5–125.4, 125.5–225.4, 225.5–325.4 µg/m³). Gases are
converted from µg/m³ to ppb/ppm at 25 °C and 1 atm (ppb = µg/m³ × 24.45 / molar mass)
and truncated as EPA prescribes (PM2.5 to 0.1, PM10 to 1 µg/m³, O3 to 0.001 ppm, CO to
0.1 ppm, NO2 and SO2 to 1 ppb). O3 uses the 8-hour table up to 0.200 ppm and the higher of
the 8-hour and 1-hour indices above (EPA: 8-hour O3 does not define AQI values ≥ 301).

The windows feed both with window means (1 min or 1 h), so these are "current" indices in
the sense of the dashboards, not the regulatory 24-hour averages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

POLLUTANTS: tuple[str, ...] = ("pm25", "pm10", "o3", "no2", "so2", "co")
AQI_MAX = 500


@dataclass(frozen=True, slots=True)
class AqiBand:
    lo: int
    hi: int
    name_vi: str
    name_en: str
    colour: str  # colour name of the band (green ... maroon)
    rgb: str = ""  # hex colour for displays


@dataclass(frozen=True, slots=True)
class AqiResult:
    value: int
    dominant: str  # pollutant with the highest sub-index
    band: AqiBand


_RGB = {
    "green": "#00e400",
    "yellow": "#ffff00",
    "orange": "#ff7e00",
    "red": "#ff0000",
    "purple": "#8f3f97",
    "maroon": "#7e0023",
}


def _band(lo: int, hi: int, vi: str, en: str, colour: str) -> AqiBand:
    return AqiBand(lo, hi, vi, en, colour, _RGB[colour])


VN_BANDS: tuple[AqiBand, ...] = (
    _band(0, 50, "Tốt", "Good", "green"),
    _band(51, 100, "Trung bình", "Moderate", "yellow"),
    _band(101, 150, "Kém", "Poor", "orange"),
    _band(151, 200, "Xấu", "Bad", "red"),
    _band(201, 300, "Rất xấu", "Very bad", "purple"),
    _band(301, 500, "Nguy hại", "Hazardous", "maroon"),
)

US_BANDS: tuple[AqiBand, ...] = (
    _band(0, 50, "Tốt", "Good", "green"),
    _band(51, 100, "Trung bình", "Moderate", "yellow"),
    _band(101, 150, "Kém với nhóm nhạy cảm", "Unhealthy for Sensitive Groups", "orange"),
    _band(151, 200, "Xấu", "Unhealthy", "red"),
    _band(201, 300, "Rất xấu", "Very Unhealthy", "purple"),
    _band(301, 500, "Nguy hại", "Hazardous", "maroon"),
)


def _find_band(bands: Sequence[AqiBand], aqi: float) -> AqiBand:
    for band in bands:
        if aqi <= band.hi:
            return band
    return bands[-1]


def vn_band(aqi: float) -> AqiBand:
    """The VN_AQI band of an index value (values above 500 are Nguy hại)."""
    return _find_band(VN_BANDS, aqi)


def us_band(aqi: float) -> AqiBand:
    return _find_band(US_BANDS, aqi)


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


# ---- VN_AQI ---------------------------------------------------------------------------

_VN_LEVELS: tuple[int, ...] = (0, 50, 100, 150, 200, 300, 400, 500)
_VN_BREAKPOINTS: Mapping[str, tuple[float, ...]] = {
    "o3": (0, 160, 200, 300, 400, 800, 1000, 1200),
    "co": (0, 10_000, 30_000, 45_000, 60_000, 90_000, 120_000, 150_000),
    "so2": (0, 125, 350, 550, 800, 1600, 2100, 2630),
    "no2": (0, 100, 200, 700, 1200, 2350, 3100, 3850),
    "pm10": (0, 50, 150, 250, 350, 420, 500, 600),
    "pm25": (0, 25, 50, 80, 150, 250, 350, 500),
}


def vn_sub_index(pollutant: str, conc: float) -> float:
    """The unrounded VN_AQI sub-index of one pollutant (µg/m³), capped at 500."""
    bps = _VN_BREAKPOINTS[pollutant]
    if conc <= 0:
        return 0.0
    for i in range(1, len(bps)):
        if conc <= bps[i]:
            lo, hi = bps[i - 1], bps[i]
            i_lo, i_hi = _VN_LEVELS[i - 1], _VN_LEVELS[i]
            return (i_hi - i_lo) / (hi - lo) * (conc - lo) + i_lo
    return float(AQI_MAX)


def _usable(conc: Mapping[str, float], name: str) -> float | None:
    value = conc.get(name)
    if value is None or not isinstance(value, int | float) or math.isnan(value) or value < 0:
        return None
    return float(value)


def vn_aqi(conc: Mapping[str, float]) -> AqiResult | None:
    """VN_AQI of concentrations in µg/m³ (keys among pm25, pm10, o3, no2, so2, co).

    None when neither PM2.5 nor PM10 is usable (the decision requires one of them).
    """
    if _usable(conc, "pm25") is None and _usable(conc, "pm10") is None:
        return None
    best_value, best_name = -1, ""
    for name in POLLUTANTS:
        c = _usable(conc, name)
        if c is None:
            continue
        value = _round_half_up(vn_sub_index(name, c))
        if value > best_value:
            best_value, best_name = value, name
    return AqiResult(best_value, best_name, vn_band(best_value))


# ---- US EPA AQI -------------------------------------------------------------------------

# (C_lo, C_hi, I_lo, I_hi) in the unit EPA tabulates; discrete (gapped) breakpoints.
Row = tuple[float, float, int, int]
_US_TABLES: Mapping[str, tuple[Row, ...]] = {
    "pm25": (  # µg/m³, 24 h, 2024 revision
        (0.0, 9.0, 0, 50), (9.1, 35.4, 51, 100), (35.5, 55.4, 101, 150),
        (55.5, 125.4, 151, 200), (125.5, 225.4, 201, 300), (225.5, 325.4, 301, 500),
    ),
    "pm10": (  # µg/m³, 24 h
        (0, 54, 0, 50), (55, 154, 51, 100), (155, 254, 101, 150),
        (255, 354, 151, 200), (355, 424, 201, 300), (425, 604, 301, 500),
    ),
    "o3": (  # ppm, 8 h
        (0.000, 0.054, 0, 50), (0.055, 0.070, 51, 100), (0.071, 0.085, 101, 150),
        (0.086, 0.105, 151, 200), (0.106, 0.200, 201, 300),
    ),
    "o3_1h": (  # ppm, 1 h (only defined from 101 upwards)
        (0.125, 0.164, 101, 150), (0.165, 0.204, 151, 200),
        (0.205, 0.404, 201, 300), (0.405, 0.604, 301, 500),
    ),
    "co": (  # ppm, 8 h
        (0.0, 4.4, 0, 50), (4.5, 9.4, 51, 100), (9.5, 12.4, 101, 150),
        (12.5, 15.4, 151, 200), (15.5, 30.4, 201, 300), (30.5, 50.4, 301, 500),
    ),
    "so2": (  # ppb, 1 h (24 h above 304 ppb)
        (0, 35, 0, 50), (36, 75, 51, 100), (76, 185, 101, 150),
        (186, 304, 151, 200), (305, 604, 201, 300), (605, 1004, 301, 500),
    ),
    "no2": (  # ppb, 1 h
        (0, 53, 0, 50), (54, 100, 51, 100), (101, 360, 101, 150),
        (361, 649, 151, 200), (650, 1249, 201, 300), (1250, 2049, 301, 500),
    ),
}  # fmt: skip

# molar mass (g/mol) for µg/m³ -> ppb at 25 °C, 1 atm (molar volume 24.45 L)
_MOLAR_MASS = {"o3": 48.00, "no2": 46.01, "so2": 64.07, "co": 28.01}
_MOLAR_VOLUME = 24.45


def _truncate(value: float, decimals: int) -> float:
    scale: float = 10.0**decimals
    # The epsilon keeps 0.3 * 10 = 2.9999999999999996 from truncating to 2.
    return math.floor(value * scale + 1e-9) / scale


def _interpolate(table: Sequence[Row], c: float) -> float | None:
    if c > table[-1][1]:
        return float(AQI_MAX)
    for c_lo, c_hi, i_lo, i_hi in table:
        if c_lo <= c <= c_hi:
            return (i_hi - i_lo) / (c_hi - c_lo) * (c - c_lo) + i_lo
    return None  # below the first row (only for the 1-hour O3 table)


def us_concentration(pollutant: str, conc_ug_m3: float) -> float:
    """The concentration in EPA's unit and precision (µg/m³, ppm or ppb)."""
    if pollutant == "pm25":
        return _truncate(conc_ug_m3, 1)
    if pollutant == "pm10":
        return _truncate(conc_ug_m3, 0)
    ppb = conc_ug_m3 * _MOLAR_VOLUME / _MOLAR_MASS[pollutant]
    if pollutant == "o3":
        return _truncate(ppb / 1000, 3)
    if pollutant == "co":
        return _truncate(ppb / 1000, 1)
    return _truncate(ppb, 0)


def us_sub_index(pollutant: str, conc_ug_m3: float) -> float:
    """The unrounded US AQI sub-index of one pollutant given in µg/m³."""
    c = us_concentration(pollutant, max(conc_ug_m3, 0.0))
    if pollutant != "o3":
        return _interpolate(_US_TABLES[pollutant], c) or 0.0
    eight_hour = _interpolate(_US_TABLES["o3"], min(c, 0.200)) or 0.0
    one_hour = _interpolate(_US_TABLES["o3_1h"], c) if c > 0.200 else None
    return max(eight_hour, one_hour or 0.0)


def us_aqi(conc: Mapping[str, float]) -> AqiResult | None:
    """US EPA AQI of concentrations in µg/m³; None if no pollutant is usable."""
    best_value, best_name = -1, ""
    for name in POLLUTANTS:
        c = _usable(conc, name)
        if c is None:
            continue
        value = _round_half_up(us_sub_index(name, c))
        if value > best_value:
            best_value, best_name = value, name
    if best_value < 0:
        return None
    return AqiResult(best_value, best_name, us_band(best_value))
