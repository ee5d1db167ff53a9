"""`ioc streams ...`: the stream worker (windows, KPIs, dead letters)."""

from __future__ import annotations

import asyncio
import signal

import typer
from rich.console import Console

from events.logs import configure_logging

app = typer.Typer(help="Stream processing: event-time windows and KPIs.", no_args_is_help=True)
console = Console(stderr=True)


async def _run(show_progress: bool, engine: str = "faust") -> None:
    from streams.settings import StreamsSettings
    from streams.worker import Worker

    if engine == "faust":
        from streams.faust_app import FaustStreamsHost

        worker: Worker = FaustStreamsHost(StreamsSettings())
    else:
        worker = Worker(StreamsSettings())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(worker.run(stop))
    if not show_progress:
        await task
        return
    with console.status("streams worker starting…") as status:
        while not task.done():
            await asyncio.wait({task}, timeout=1.0)
            h = worker.progress()
            status.update(
                f"streams worker: {h['events']:,} events · "
                f"{len(h['source_partitions'])} source partitions · "
                f"{int(worker.metrics.kpi_records._value.get()):,} KPI records"
            )
    await task


@app.command()
def worker(
    progress: bool = typer.Option(True, help="show a live progress line on the terminal"),
    engine: str = typer.Option(
        "faust",
        envvar="IOC_STREAMS_ENGINE",
        help="faust: the stages hosted by a faust.App (default); aiokafka: the same stages "
        "behind plain getmany adapters",
    ),
) -> None:
    """Run a stream worker until Ctrl-C (settings from IOC_STREAMS_* and IOC_BOOTSTRAP_SERVERS)."""
    if engine not in ("aiokafka", "faust"):
        raise typer.BadParameter("engine must be 'aiokafka' or 'faust'", param_hint="--engine")
    configure_logging("streams")
    asyncio.run(_run(progress and console.is_terminal, engine))
