"""``python -m simulators [options]``: the same as ``ioc simulate [options]``."""

from __future__ import annotations

import typer

from events.settings import exit_on_error
from simulators.command import simulate


def main() -> None:
    with exit_on_error("simulator"):
        typer.run(simulate)


if __name__ == "__main__":
    main()
