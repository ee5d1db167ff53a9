"""`ioc kpis` and `ioc events`: print the KPI and event catalogues (tables or JSON)."""

from __future__ import annotations

import sys
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from events.catalogue import EVENT_TYPES
from events.kpis import KPI_CATALOGUE, catalogue_json

console = Console()


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def kpis(
    as_json: bool = typer.Option(False, "--json", help="print the catalogue as JSON"),
) -> None:
    """List the KPIs the stream workers compute."""
    if as_json:
        _print_json(catalogue_json())
        return
    table = Table(title=f"{len(KPI_CATALOGUE)} KPIs")
    for column in ("id", "title", "unit", "aggregation", "event type", "scopes", "windows"):
        table.add_column(column)
    for spec in KPI_CATALOGUE.values():
        table.add_row(
            spec.id,
            spec.title_vi,
            spec.unit,
            spec.aggregation,
            spec.event_type,
            ", ".join(spec.scopes),
            ", ".join(str(w) for w in spec.windows),
        )
    console.print(table)


def events(
    as_json: bool = typer.Option(False, "--json", help="print the catalogue as JSON"),
) -> None:
    """List the event types (CloudEvents) of the ten domains."""
    if as_json:
        _print_json(
            [
                {
                    "type": et.type,
                    "domain": et.domain,
                    "topic": et.topic,
                    "key_field": et.key_field,
                    "description": et.description,
                    "fields": [
                        {
                            "name": f.name,
                            "kind": f.kind,
                            "unit": f.unit,
                            "minimum": f.minimum,
                            "maximum": f.maximum,
                            "required": f.required,
                            "choices": None if f.choices is None else list(f.choices),
                            "description": f.description,
                        }
                        for f in et.fields
                    ],
                    "example": et.example,
                }
                for et in EVENT_TYPES.values()
            ]
        )
        return
    table = Table(title=f"{len(EVENT_TYPES)} event types")
    for column in ("type", "topic", "key", "required fields"):
        table.add_column(column)
    for et in EVENT_TYPES.values():
        required = ", ".join(f.name for f in et.fields if f.required)
        table.add_row(et.type, et.topic, et.key_field, required)
    console.print(table)
