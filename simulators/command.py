"""The simulator's command (``python -m simulators``, and ``ioc simulate`` around it):
publish the simulated province's events to the broker.

On a terminal a live line shows the publish rate overall and per domain, the simulated
clock and the active scenario; elsewhere (the demo supervisor, CI) the same figures go
to the log every ten seconds. It lives here, not in the ``ioc`` CLI package, so the
component runs without the CLI; ``ioc simulate`` only adds the local broker's address.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Any

import structlog
import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from events.logs import configure_logging
from events.topics import DOMAINS
from simulators.metrics import SimulatorMetrics
from simulators.runner import Progress, run
from simulators.scenarios import CYCLE, NONE, SCENARIO_NAMES, parse_scenarios
from simulators.settings import SimulatorSettings

console = Console(stderr=True)
log = structlog.get_logger("simulators.command")


class RateMeter:
    """Turns cumulative progress reports into rates since the previous report."""

    def __init__(self) -> None:
        self._t: float | None = None
        self._sent = 0
        self._by_domain: dict[str, int] = {}
        self.rate = 0.0
        self.by_domain: dict[str, float] = {}

    def update(self, p: Progress, min_interval_s: float = 0.9) -> None:
        now = time.monotonic()
        if self._t is not None:
            dt = now - self._t
            # With several workers reports arrive one worker at a time; measuring over
            # at least ~1 s keeps the rate from jumping with each of them.
            if dt < min_interval_s:
                return
            self.rate = (p.sent - self._sent) / dt
            self.by_domain = {
                d: (p.by_domain.get(d, 0) - self._by_domain.get(d, 0)) / dt for d in DOMAINS
            }
        self._t, self._sent, self._by_domain = now, p.sent, dict(p.by_domain)


def _short(n: float) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n / 1000:.0f}k"
    if n >= 1000:
        return f"{n / 1000:.1f}k"
    return f"{n:.0f}"


def render(p: Progress, meter: RateMeter, settings: SimulatorSettings) -> Text:
    text = Text()
    text.append(f"{meter.rate:>9,.0f} ev/s", style="bold green")
    text.append(f"  target {settings.rate:,.0f}  sent {p.sent:,}  acked {p.acked:,}")
    if p.failed:
        text.append(f"  failed {p.failed:,}", style="bold red")
    sim = p.sim_time.strftime("%Y-%m-%d %H:%M:%S") if p.sim_time else "-"
    text.append(f"  sim {sim}Z x{settings.speed:g}  {p.elapsed_s:,.0f}s\n")
    text.append("  ".join(f"{d} {_short(meter.by_domain.get(d, 0.0))}" for d in DOMAINS), "cyan")
    if p.by_kind:
        text.append("\ninjected: " + ", ".join(f"{k} {v:,}" for k, v in sorted(p.by_kind.items())))
    text.append("\nscenario: ")
    text.append(", ".join(p.scenarios) if p.scenarios else "normal operation", "yellow")
    return text


def simulate(
    rate: float | None = typer.Option(None, help="events per second, all domains together"),
    scenario: str | None = typer.Option(
        None, help=f"{', '.join(SCENARIO_NAMES)} (comma-separated), {CYCLE} or {NONE}"
    ),
    duration: float | None = typer.Option(None, help="stop after this many seconds"),
    speed: float | None = typer.Option(None, help="simulated seconds per real second"),
    seed: int | None = typer.Option(None, help="same seed, same province and events"),
    start: datetime | None = typer.Option(
        None, help="simulated start time, UTC unless it has an offset (default: now)"
    ),
    bootstrap_servers: str | None = typer.Option(
        None, help="broker address (default: IOC_BOOTSTRAP_SERVERS or the local broker)"
    ),
    late: float | None = typer.Option(None, help="fraction of events sent too late"),
    late_by: float | None = typer.Option(None, help="how late, in seconds"),
    out_of_order: float | None = typer.Option(None, help="fraction sent 1-30 s out of order"),
    duplicates: float | None = typer.Option(None, help="fraction sent twice"),
    malformed: float | None = typer.Option(None, help="fraction with broken bytes"),
    faults: bool | None = typer.Option(None, help="sensor faults (stuck values, dropouts)"),
    workers: int | None = typer.Option(None, help="publishing processes (0 = automatic)"),
    idempotence: str | None = typer.Option(None, help="auto, on or off"),
    producer: str | None = typer.Option(
        None,
        help="auto (kafka-python up to 10k/s, aiokafka above), kafka-python (idempotent) "
        "or aiokafka (~5x cheaper per record; not idempotent on Tansu)",
    ),
    via: str | None = typer.Option(
        None,
        help="kafka (straight to the topics), http (the ingest gateway) or mqtt (Mosquitto, "
        "as the ingest key's device)",
    ),
    ingest_url: str | None = typer.Option(None, help="the gateway for --via http"),
    ingest_key: str | None = typer.Option(
        None, help="ingest key for --via http (default: IOC_SIM_INGEST_KEY, else the demo's)"
    ),
    ingest_key_name: str | None = typer.Option(
        None, help="the key's name: its MQTT account for --via mqtt (default: demo)"
    ),
    metrics_port: int | None = typer.Option(None, help="serve /healthz, /readyz and /metrics here"),
    live: bool | None = typer.Option(None, help="live progress line (default: on a terminal)"),
) -> None:
    """Simulate the province's sensors and service systems into the ioc.events.* topics."""
    configure_logging("simulator")
    # kafka-python logs every connection at INFO; its warnings are what matters here.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    overrides: dict[str, Any] = {
        "rate": rate,
        "scenario": scenario,
        "duration": duration,
        "speed": speed,
        "seed": seed,
        # A start without an offset is UTC, like every time on the wire.
        "start": None if start is None else start if start.tzinfo else start.replace(tzinfo=UTC),
        "late": late,
        "late_by_s": late_by,
        "out_of_order": out_of_order,
        "duplicates": duplicates,
        "malformed": malformed,
        "faults": faults,
        "workers": workers,
        "idempotence": idempotence,
        "producer": producer,
        "via": via,
        "ingest_url": ingest_url,
        "ingest_key": ingest_key,
        "ingest_key_name": ingest_key_name,
        "metrics_port": metrics_port,
        "bootstrap_servers": bootstrap_servers,
    }
    # A bad option or IOC_* value is a ConfigurationError naming it (events.settings).
    settings = SimulatorSettings(**{k: v for k, v in overrides.items() if v is not None})
    parse_scenarios(settings.scenario)  # a bad name fails before anything starts
    run_simulation(settings, live=console.is_terminal if live is None else live)


def run_simulation(settings: SimulatorSettings, *, live: bool) -> Progress:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    meter = RateMeter()
    metrics = SimulatorMetrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_host, settings.metrics_port)
    last_log = [0.0]

    def log_line(p: Progress) -> None:
        if p.done or time.monotonic() - last_log[0] >= 10.0:
            last_log[0] = time.monotonic()
            log.info(
                "simulator_progress",
                events_per_s=round(meter.rate),
                sent=p.sent,
                acked=p.acked,
                failed=p.failed,
                sim_time=p.sim_time.isoformat() if p.sim_time else None,
                scenarios=list(p.scenarios),
                per_domain={d: round(v) for d, v in meter.by_domain.items()},
            )

    try:
        if live:
            with Live(Text("connecting…"), console=console, refresh_per_second=4) as view:

                def show(p: Progress) -> None:
                    meter.update(p)
                    metrics.update(p)
                    view.update(render(p, meter, settings))

                total = run(settings, on_progress=show, should_stop=stop.is_set)
        else:

            def report(p: Progress) -> None:
                meter.update(p)
                metrics.update(p)
                log_line(p)

            total = run(settings, on_progress=report, should_stop=stop.is_set)
    finally:
        metrics.close()
    average = total.sent / total.elapsed_s if total.elapsed_s else 0.0
    console.print(
        f"sent {total.sent:,} events in {total.elapsed_s:,.1f}s ({average:,.0f}/s), "
        f"acked {total.acked:,}, failed {total.failed:,}; "
        f"{settings.effective_workers} x {settings.effective_producer} producer "
        + (
            f"{'idempotent' if total.idempotent else 'NOT idempotent'}, acks=all"
            if settings.via == "kafka"
            # a gateway's 202 / Mosquitto's PUBACK; a resent event is dropped by its id
            else f"acknowledged by the {'gateway' if settings.via == 'http' else 'MQTT broker'}"
        ),
        soft_wrap=True,
    )
    if total.failed:
        raise typer.Exit(1)
    return total
