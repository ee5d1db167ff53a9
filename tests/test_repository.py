"""Repository hygiene no other test would notice."""

from __future__ import annotations

import ast
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


# The components; `ioc` is the command-line package that runs them, never the reverse.
COMPONENT_PACKAGES = ("events", "simulators", "ingest", "streams", "storage", "ws", "readapi")


def test_components_do_not_import_the_cli_package() -> None:
    found = []
    for package in COMPONENT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                found += [
                    f"{path.relative_to(ROOT)}:{node.lineno} imports {n}"
                    for n in names
                    if n == "ioc" or n.startswith("ioc.")
                ]
    assert found == []
