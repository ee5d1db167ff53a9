"""docs/scaling.md quotes benchmark figures by name; each must be what docs/benchmarks.md
holds now (its closing block of `name: value` lines), so the sizing moves with them."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def benchmark_figures() -> dict[str, str]:
    figures = {}
    for line in (DOCS / "benchmarks.md").read_text().splitlines():
        found = re.fullmatch(r"([a-z0-9_]+): (\S+)", line)
        if found:
            figures[found[1]] = found[2]
    return figures


def test_every_figure_the_scaling_page_quotes_is_the_benchmarks_one() -> None:
    page = (DOCS / "scaling.md").read_text()
    figures = benchmark_figures()
    table = re.findall(r"^\| `([a-z0-9_]+)` \| (\S+) \|", page, re.MULTILINE)
    assert len(table) >= 8
    for name, value in table:
        assert figures.get(name) == value, (name, value, figures.get(name))
    # In the prose: `name` (value)
    quoted = re.findall(r"`([a-z0-9_]+)` \((\d+)\)", page)
    assert quoted
    for name, value in quoted:
        assert figures.get(name) == value, (name, value, figures.get(name))


def test_the_derived_worker_count_follows_the_figure() -> None:
    page = (DOCS / "scaling.md").read_text()
    per_worker = int(benchmark_figures()["streams_events_per_s_kafka"])
    busy = round(300_000 / per_worker)
    assert f"300,000 / {per_worker:,} = {busy} busy processes" in page
    assert f"at half load for headroom, {2 * busy}." in page
