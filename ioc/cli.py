"""The `ioc` command.

Only the module of the command asked for is imported: the components pull in aiokafka,
Faust, psycopg and pydantic models, and a second `ioc services up` (everything already
running) should answer in well under a second. `ioc --help` imports them all.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from events.errors import IocError

# name -> (module, attribute, "group" for a Typer app or "command" for a function)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "services": ("ioc.commands.services", "app", "group"),
    "topics": ("ioc.commands.services", "create_topics", "command"),
    "db": ("ioc.commands.db", "app", "group"),
    "query": ("ioc.commands.db", "query_app", "group"),
    "streams": ("ioc.commands.streams", "app", "group"),
    "kpis": ("ioc.commands.catalogue", "kpis", "command"),
    "events": ("ioc.commands.catalogue", "events", "command"),
    "schemas": ("ioc.commands.schemas", "schemas", "command"),
    "ingest": ("ioc.commands.ingest", "app", "group"),
    "ws": ("ioc.commands.ws", "app", "group"),
    "alerts": ("ioc.commands.alerts", "app", "group"),
    "simulate": ("ioc.commands.simulate", "simulate", "command"),
    "chaos": ("ioc.commands.chaos", "chaos", "command"),
    "up": ("ioc.commands.up", "up", "command"),
    "logs": ("ioc.commands.logs", "logs", "command"),
    "bench": ("ioc.commands.bench", "app", "group"),
}
console = Console(stderr=True)


def build_app(only: str | None = None) -> typer.Typer:
    """The CLI with every command, or with ``only`` that one (the others not imported)."""
    app = typer.Typer(
        help="Smart-city IOC backend: local services, components and the demo.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root() -> None:
        """Smart-city IOC backend: local services, components and the demo."""

    for name, (module, attr, kind) in COMMANDS.items():
        if only is not None and name != only:
            continue
        target = getattr(importlib.import_module(module), attr)
        if kind == "group":
            app.add_typer(target, name=name)
        else:
            app.command(name)(target)
    return app


def main() -> None:
    asked = sys.argv[1] if len(sys.argv) > 1 else None
    app = build_app(asked if asked in COMMANDS else None)
    try:
        app()
    except IocError as exc:
        # Our errors are meant for the operator: one line (plus a log tail), no traceback.
        console.print(f"[red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
