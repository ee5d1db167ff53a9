"""`ioc bench`: the benchmarks in `benchmarks/` (a source checkout: they are not installed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from events.errors import IocError

app = typer.Typer(help="Benchmarks (whole system); results go to docs/benchmarks.md.")
ROOT = Path(__file__).resolve().parents[2]


@app.command(
    "e2e",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def e2e(
    ctx: typer.Context,
    broker: str = typer.Option("kafka", help="kafka or tansu"),
) -> None:
    """Sensor to wall under growing load: `python -m benchmarks.bench_e2e` (options pass
    through, e.g. --steps 0,1000,5000 --step-seconds 60)."""
    if not (ROOT / "benchmarks" / "bench_e2e.py").exists():
        raise IocError(f"the benchmarks live in a source checkout; none at {ROOT}")
    argv = [sys.executable, "-m", "benchmarks.bench_e2e", "--broker", broker, *ctx.args]
    raise typer.Exit(subprocess.run(argv, cwd=ROOT, check=False).returncode)
