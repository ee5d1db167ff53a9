"""``python -m simulators [options]``: the same as ``ioc simulate [options]``."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from events.errors import IocError
from ioc.commands.simulate import simulate


def main() -> None:
    try:
        typer.run(simulate)
    except IocError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
