"""Checks of `ioc query kpi` arguments against the catalogue, with suggestions.

An unknown KPI id, scope or window used to print an empty table, which reads as "no data
yet". Each is now an error naming the closest valid values.
"""

from __future__ import annotations

import difflib

from events.geography import DISTRICTS
from events.kpis import KPI_CATALOGUE


class QueryArgumentError(ValueError):
    """An argument of `ioc query` that the catalogue does not know; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def _closest(word: str, choices: list[str]) -> str:
    near = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(near)}?" if near else ""


def check_kpi_query(kpi: str, scope: str, window_s: int) -> None:
    spec = KPI_CATALOGUE.get(kpi)
    if spec is None:
        raise QueryArgumentError(
            "kpi",
            f"unknown KPI {kpi!r}{_closest(kpi, sorted(KPI_CATALOGUE))} (`ioc kpis` lists them)",
        )
    if window_s not in spec.windows:
        windows = ", ".join(str(w) for w in spec.windows)
        raise QueryArgumentError(
            "--window", f"{kpi} has no {window_s} s windows; it has: {windows}"
        )
    if scope == "*":
        return
    kind, _, name = scope.partition(":")
    if kind not in spec.scopes or (kind == "city") != (name == ""):
        valid = ", ".join("city" if k == "city" else f"{k}:<id>" for k in spec.scopes)
        raise QueryArgumentError("--scope", f"{kpi} has no scope {scope!r}; its scopes: {valid}")
    if kind == "district" and "*" not in name and name not in DISTRICTS:
        raise QueryArgumentError(
            "--scope",
            f"unknown district {name!r}{_closest(name, sorted(DISTRICTS))} "
            f"(districts: {', '.join(sorted(DISTRICTS))})",
        )
