"""benchmarks/results.py rewrites its own section and figures and nothing else."""

from __future__ import annotations

from pathlib import Path

from benchmarks.results import record


def test_record_keeps_what_another_tool_wrote_after_the_figures(tmp_path: Path) -> None:
    doc = tmp_path / "reliability.md"
    doc.write_text(
        "# R\n\n<!-- bench:a -->\n## a\nold\n<!-- /bench:a -->\n\n"
        "<!-- figures -->\nx_y: 1\n\n<!-- chaos -->\n## chaos\nrows\n"
    )
    record("a", "cmd", "new body", {"z_w": 2}, doc=doc)
    text = doc.read_text()
    assert "new body" in text and "old" not in text
    assert "x_y: 1\nz_w: 2\n" in text
    assert text.endswith("<!-- chaos -->\n## chaos\nrows\n")  # the chaos report survives
