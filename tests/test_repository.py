"""Repository hygiene no other test would notice."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_merge_conflict_markers_in_tracked_files() -> None:
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    found = []
    for name in files:
        path = ROOT / name
        if path.suffix not in {".md", ".py", ".js", ".html", ".css", ".toml", ".yml", ".sh", ""}:
            continue
        try:
            lines = path.read_text().splitlines()
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue
        found += [
            f"{name}:{i}"
            for i, line in enumerate(lines, 1)
            if line.startswith(("<<<<<<< ", ">>>>>>> ")) or line == "======="
        ]
    assert found == [], f"merge conflict markers left in: {found}"
