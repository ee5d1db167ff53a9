"""Writes a benchmark's results into docs/benchmarks.md.

The file has one section per benchmark (between ``<!-- bench:NAME -->`` markers) and ends
with a block of ``name: value`` lines, one figure per line. A benchmark rewrites only its
own section and its own figures, so benchmarks can run in any order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
_HEADER = (
    "# Benchmarks\n\n"
    "Measured on the project's reference machine class (2 cores, 24 GiB, Debian 12), "
    "broker and database on the same machine. Each section names the exact command that "
    "produced it; the block at the end holds one figure per line and is rewritten by the "
    "benchmark that measures each figure.\n"
)
_FIGURES_START = "<!-- figures -->"
_FIGURE_LINE = re.compile(r"^([a-z0-9_]+): (.+)$")


def machine_note(load_at_start: float) -> str:
    """One sentence on the machine a run had, measured rather than assumed: cores and the
    1-minute load average when the run started (anything else running on the machine
    depresses every figure; rows of one run remain comparable with each other)."""
    cores = os.cpu_count() or 1
    busy = "busy" if load_at_start >= 0.5 * cores else "quiet"
    return (
        f"Machine: {cores} cores, {busy} at the start of the run (1-min load average "
        f"{load_at_start:.1f}); compare the rows of one run with each other."
    )


def broker_label(bootstrap_servers: str) -> str:
    """Which broker a benchmark ran on, for its section ("Apache Kafka" or "Tansu")."""
    from events.brokers import is_tansu

    return "Tansu" if is_tansu(bootstrap_servers) else "Apache Kafka"


def record(
    name: str,
    command: str,
    body: str,
    figures: Mapping[str, float | int],
    *,
    doc: Path = DOC,
    header: str = _HEADER,
) -> None:
    """Replace section ``name`` and update ``figures`` in ``doc`` (docs/benchmarks.md)."""
    text = doc.read_text() if doc.exists() else header
    head, _, tail = text.partition(_FIGURES_START)
    existing: dict[str, str] = {}
    # The figure lines right after the marker; anything after them (another tool's
    # section, e.g. `ioc chaos` in docs/reliability.md) is kept as it is.
    lines = tail.splitlines()
    n = 0
    while n < len(lines) and (not lines[n].strip() or _FIGURE_LINE.match(lines[n].strip())):
        m = _FIGURE_LINE.match(lines[n].strip())
        if m:
            existing[m.group(1)] = m.group(2)
        n += 1
    rest = "\n".join(lines[n:]).strip()
    for key, value in figures.items():
        if not _FIGURE_LINE.match(f"{key}: x"):
            raise ValueError(f"figure names are lower_snake_case: {key!r}")
        existing[key] = f"{value:.0f}" if isinstance(value, float) and value >= 100 else str(value)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- bench:{name} -->\n## {name}\n\n"
        f"Command: `{command}` (run {stamp})\n\n{body.strip()}\n<!-- /bench:{name} -->\n"
    )
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->\n", re.S
    )
    head = head.rstrip() + "\n\n"
    head = pattern.sub(lambda _m: section, head) if pattern.search(head) else head + section + "\n"
    figures_block = "\n".join(f"{k}: {v}" for k, v in sorted(existing.items()))
    doc.parent.mkdir(parents=True, exist_ok=True)
    after = f"\n{rest}\n" if rest else ""
    doc.write_text(f"{head.rstrip()}\n\n{_FIGURES_START}\n{figures_block}\n{after}")
