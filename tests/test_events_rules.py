"""Domain rules of the contract against reference values: VN_AQI, US AQI, flood alarm levels,
dossier timeliness. Each expected value shows its arithmetic."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from events import aqi
from events.dossier import is_on_time, is_online, is_overdue_open, timeliness
from events.errors import InvalidEventError
from events.flood import WATER_STATIONS, alarm_level, classify
from events.geography import DISTRICTS

# ---- VN_AQI (Decision 1459/QĐ-TCMT, Table 1) ---------------------------------------------


@pytest.mark.parametrize(
    ("pollutant", "conc", "expected"),
    [
        # I = (I_hi - I_lo) / (BP_hi - BP_lo) * (C - BP_lo) + I_lo
        ("pm25", 42.3, 84.6),  # 50/25 * (42.3 - 25) + 50 = 2 * 17.3 + 50
        ("pm25", 25.0, 50.0),  # a breakpoint maps to its level
        ("pm25", 80.0, 150.0),
        ("pm25", 115.0, 175.0),  # 50/70 * (115 - 80) + 150
        ("pm25", 180.0, 230.0),  # 100/100 * (180 - 150) + 200
        ("pm25", 400.0, 433.3333333333333),  # 100/150 * (400 - 350) + 400
        ("pm10", 68.0, 59.0),  # 50/100 * (68 - 50) + 50
        ("pm10", 385.0, 250.0),  # 100/70 * (385 - 350) + 200
        ("o3", 250.0, 125.0),  # 50/100 * (250 - 200) + 100
        ("no2", 150.0, 75.0),  # 50/100 * (150 - 100) + 50
        ("so2", 450.0, 125.0),  # 50/200 * (450 - 350) + 100
        ("co", 20_000.0, 75.0),  # 50/20000 * (20000 - 10000) + 50
        ("pm25", 0.0, 0.0),
        ("pm25", 600.0, 500.0),  # beyond the table: 500
    ],
)
def test_vn_sub_indices(pollutant: str, conc: float, expected: float) -> None:
    assert aqi.vn_sub_index(pollutant, conc) == pytest.approx(expected)


def test_vn_aqi_is_the_rounded_maximum_with_its_band() -> None:
    result = aqi.vn_aqi({"pm25": 42.3, "pm10": 68.0, "no2": 35.2, "co": 1150.0})
    assert result is not None
    assert (result.value, result.dominant) == (85, "pm25")  # max(84.6 -> 85, 59, 18, 3)
    assert (result.band.name_vi, result.band.colour) == ("Trung bình", "yellow")
    episode = aqi.vn_aqi({"pm25": 115.0, "pm10": 220.0, "o3": 250.0})
    assert episode is not None
    # pm25 175, pm10 50/100 * (220 - 150) + 100 = 135, o3 125
    assert (episode.value, episode.dominant, episode.band.name_vi) == (175, "pm25", "Xấu")


def test_vn_aqi_needs_particulates() -> None:
    assert aqi.vn_aqi({"o3": 250.0, "no2": 150.0}) is None  # decision: PM10 or PM2.5 needed
    assert aqi.vn_aqi({}) is None
    only_pm10 = aqi.vn_aqi({"pm10": 68.0, "o3": 250.0})
    assert only_pm10 is not None
    assert (only_pm10.value, only_pm10.dominant) == (125, "o3")
    assert aqi.vn_aqi({"pm25": float("nan"), "pm10": -1.0}) is None


@pytest.mark.parametrize(
    ("value", "name_vi", "colour"),
    [
        (0, "Tốt", "green"),
        (50, "Tốt", "green"),
        (51, "Trung bình", "yellow"),
        (100, "Trung bình", "yellow"),
        (101, "Kém", "orange"),
        (151, "Xấu", "red"),
        (200, "Xấu", "red"),
        (201, "Rất xấu", "purple"),
        (300, "Rất xấu", "purple"),
        (301, "Nguy hại", "maroon"),
        (500, "Nguy hại", "maroon"),
    ],
)
def test_vn_bands(value: int, name_vi: str, colour: str) -> None:
    band = aqi.vn_band(value)
    assert (band.name_vi, band.colour) == (name_vi, colour)
    assert band.lo <= value <= band.hi


def test_bands_cover_0_to_500_without_gaps() -> None:
    for bands in (aqi.VN_BANDS, aqi.US_BANDS):
        assert bands[0].lo == 0
        assert bands[-1].hi == 500
        assert all(b.lo == a.hi + 1 for a, b in itertools.pairwise(bands))
        assert [b.colour for b in bands] == ["green", "yellow", "orange", "red", "purple", "maroon"]


# ---- US EPA AQI (2024 PM2.5 breakpoints) -------------------------------------------------


@pytest.mark.parametrize(
    ("conc", "expected"),
    [
        (9.0, 50),
        (9.05, 50),  # truncated to 9.0
        (9.1, 51),
        (12.0, 56),  # 49/26.3 * (12.0 - 9.1) + 51 = 56.4 (was 50 before 2024)
        (35.4, 100),
        (35.5, 101),
        (42.3, 118),  # 49/19.9 * (42.3 - 35.5) + 101 = 117.74
        (55.5, 151),
        (125.5, 201),
        (225.5, 301),
        (325.4, 500),
        (400.0, 500),
    ],
)
def test_us_pm25_2024_breakpoints(conc: float, expected: int) -> None:
    result = aqi.us_aqi({"pm25": conc})
    assert result is not None
    assert result.value == expected


def test_us_gases_are_converted_to_ppb_and_truncated() -> None:
    # CO 1150 µg/m³ * 24.45 / 28.01 = 1003.8 ppb -> 1.0 ppm; 50/4.4 * 1.0 = 11.4
    assert aqi.us_sub_index("co", 1150.0) == pytest.approx(11.3636, abs=1e-3)
    # NO2 35.2 µg/m³ * 24.45 / 46.01 = 18.7 ppb -> 18; 50/53 * 18 = 17.0
    assert aqi.us_sub_index("no2", 35.2) == pytest.approx(16.981, abs=1e-3)
    # SO2 12 µg/m³ * 24.45 / 64.07 = 4.58 ppb -> 4; 50/35 * 4 = 5.7
    assert aqi.us_sub_index("so2", 12.0) == pytest.approx(5.714, abs=1e-3)
    # O3 137.5 µg/m³ * 24.45 / 48 = 70.04 ppb -> 0.070 ppm: top of Moderate (8 h)
    assert aqi.us_sub_index("o3", 137.5) == pytest.approx(100.0)
    # O3 0.300 ppm: 8 h table capped at 0.200 -> 300; 1 h 99/0.199*0.095+201 = 248; max 300
    assert aqi.us_sub_index("o3", 589.0) == pytest.approx(300.0)
    # O3 0.500 ppm: 1 h table 199/0.199 * (0.500 - 0.405) + 301 = 396
    assert round(aqi.us_sub_index("o3", 982.0)) == 396


def test_us_aqi_overall_and_band() -> None:
    result = aqi.us_aqi({"pm25": 42.3, "pm10": 68.0, "co": 1150.0})
    assert result is not None
    # pm25 118; pm10 49/99 * (68 - 55) + 51 = 57.4; co 11
    assert (result.value, result.dominant) == (118, "pm25")
    assert result.band.name_en == "Unhealthy for Sensitive Groups"
    assert aqi.us_aqi({}) is None
    gases = aqi.us_aqi({"no2": 35.2})
    assert gases is not None
    assert gases.value == 17


# ---- flood alarm levels (Decision 05/2020/QĐ-TTg) ---------------------------------------


@pytest.mark.parametrize(
    ("station", "level", "expected"),
    [
        # Hải Dương hydro-meteorological bulletins, typhoon Yagi, 11-14 Sept 2024
        ("HD-TV-PL", 6.25, 3),  # Phả Lại "cao hơn báo động III 0,25 m"
        ("HD-TV-PL", 5.83, 2),  # "dưới báo động 3: 0,17m"
        ("HD-TV-PL", 5.40, 2),  # "trên mức báo động II 0,4 m"
        ("HD-TV-CK", 5.20, 3),  # Cát Khê "trên báo động 3: 0,20m"
        ("HD-TV-BB", 4.94, 3),  # Bến Bình "cao hơn báo động III 0,44 m"
        ("HD-TV-BB", 4.41, 2),  # "dưới báo động 3: 0,09m"
        ("HD-TV-BN", 3.18, 3),  # Bá Nha "cao hơn báo động III 0,48 m"
        ("HD-TV-BN", 2.64, 2),  # "dưới báo động 3: 0,06m"
        ("HD-TV-AP", 3.09, 3),  # An Phụ "trên báo động 3: 0,19m"
        ("HD-TV-QD", 3.38, 3),  # Quảng Đạt "cao hơn báo động III 0,48 m"
        ("HD-TV-QD", 2.82, 2),  # "dưới báo động 3: 0,08m"
        ("HD-TV-LT", 4.72, 2),  # La Tiến "trên báo động 2: 0,02m"
        ("HD-TV-LT", 4.70, 2),  # "4,70m (ở mức BĐ2)": reaching a level counts
        ("HD-TV-PL", 3.99, 0),
        ("HD-TV-PL", 4.00, 1),
        ("HD-TV-PL", -0.5, 0),
    ],
)
def test_alarm_levels_match_bulletins(station: str, level: float, expected: int) -> None:
    assert alarm_level(station, level) == expected
    assert WATER_STATIONS[station].alarm_level(level) == expected


def test_station_registry_is_consistent() -> None:
    assert len(WATER_STATIONS) >= 5
    for station in WATER_STATIONS.values():
        one, two, three = station.alarm_levels
        assert one < two < three
        assert station.district in DISTRICTS
        assert station.river.startswith("sông ")
        # each threshold starts its level, and the level just below stays one lower
        for expected, threshold in enumerate(station.alarm_levels, start=1):
            assert station.alarm_level(threshold) == expected
            assert station.alarm_level(threshold - 0.01) == expected - 1


def test_alarm_level_of_unknown_station() -> None:
    with pytest.raises(InvalidEventError) as info:
        alarm_level("HN-TV-LB", 9.0)
    assert info.value.reason == "bad_value"
    assert classify((1.0, 2.0, 3.0), 2.5) == 2


# ---- public-service dossiers ------------------------------------------------------------

ICT = timezone(timedelta(hours=7))


def test_on_time_and_overdue() -> None:
    due = datetime(2026, 3, 5, 17, 0, tzinfo=ICT)
    assert is_on_time(due, due)  # the deadline itself is on time
    assert is_on_time(due, datetime(2026, 3, 5, 10, 0, tzinfo=UTC))  # = 17:00 ICT
    assert not is_on_time(due, datetime(2026, 3, 5, 10, 0, 1, tzinfo=UTC))
    assert timeliness(due, due + timedelta(days=1)) == "overdue"
    assert timeliness(due, due - timedelta(days=1)) == "on_time"
    assert is_overdue_open(due, due + timedelta(minutes=1))
    assert not is_overdue_open(due, due)


def test_online_or_in_person() -> None:
    assert is_online("online")
    assert not is_online("offline")
    with pytest.raises(InvalidEventError):
        is_online("fax")
