"""`ioc schemas`: write (or check) the machine-readable contracts of the repository.

    schemas/v1/*.json     JSON Schemas of the events and records (events.contracts)
    docs/openapi.json     OpenAPI 3.1 of the ingest HTTP API (ingest.openapi)

Both are generated from the code; `--check` (and tests/test_contracts.py) fails when the
committed files differ from a fresh rendering.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from events.contracts import VERSION, all_schemas, dumps
from ingest.http import ROUTES
from ingest.openapi import openapi_document

console = Console(stderr=True)
SCHEMA_DIR = f"schemas/{VERSION}"
OPENAPI_PATH = "docs/openapi.json"


def render_contracts() -> dict[str, bytes]:
    """Path relative to the repository root -> the bytes it must hold."""
    files = {f"{SCHEMA_DIR}/{name}": dumps(schema) for name, schema in all_schemas().items()}
    files[OPENAPI_PATH] = dumps(openapi_document((method, path) for method, path, _ in ROUTES))
    return files


def stale_files(root: Path) -> list[str]:
    """Committed files that differ from the rendering, are missing, or are left over in
    the schema directory (e.g. of a removed event type)."""
    files = render_contracts()
    stale = [name for name, body in files.items() if _read(root / name) != body]
    schema_dir = root / SCHEMA_DIR
    if schema_dir.is_dir():
        stale += sorted(
            str(p.relative_to(root))
            for p in schema_dir.iterdir()
            if str(p.relative_to(root)) not in files
        )
    return stale


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def schemas(
    root: Path = typer.Option(Path("."), help="repository root to write into"),
    check: bool = typer.Option(False, "--check", help="only report files that are stale"),
) -> None:
    """Generate the JSON Schemas (schemas/v1/) and the OpenAPI document (docs/openapi.json)."""
    stale = stale_files(root)
    if check:
        for name in stale:
            console.print(f"stale: {name}")
        raise typer.Exit(1 if stale else 0)
    files = render_contracts()
    for name in stale:
        path = root / name
        if name in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(files[name])
        else:
            path.unlink()
        console.print(f"wrote {name}" if name in files else f"removed {name}")
    if not stale:
        console.print(f"{len(files)} files up to date")
