"""The rows of `ioc chaos` (full) and `ioc chaos --short` (CI, under 3 minutes)."""

from __future__ import annotations

from chaos.faults import (
    Fault,
    KillStorage,
    KillStreams,
    RestartIngest,
    RestartPush,
    StopDatabase,
)
from chaos.run import Config, Scenario


def plan(short: bool, engine: str) -> Config:
    """The rows of a run: the CI version (``short``) or the full one. ``engine`` is the
    stream worker's engine of the rows that do not choose one; the full run kills both
    engines' workers, each in a row of its own."""
    if short:
        return Config(
            scenarios=[
                Scenario(KillStreams(times=2, engine=engine), duration_s=25, rate=40, stations=6),
                Scenario(KillStorage(times=1), duration_s=12, rate=40, stations=6),
            ],
            allowed_lateness_s=20,
            late_grace_s=20,
            idle_timeout_s=5,
            engine=engine,
            settle_timeout_s=120,
            bad_inputs=450,
        )
    return Config(
        scenarios=[
            Scenario(Fault(), duration_s=60, rate=60),
            Scenario(KillStreams(times=10, engine="aiokafka"), duration_s=150, rate=60),
            Scenario(KillStorage(times=3), duration_s=60, rate=60),
            Scenario(RestartIngest(times=3), duration_s=60, rate=60),
            Scenario(StopDatabase(down_s=30), duration_s=75, rate=60),
            Scenario(RestartPush(times=3, clients=50), duration_s=90, rate=60),
            # last: the worker switches engine once (SIGTERM, same group and state) and
            # the Faust-hosted one makes every row's windows final
            Scenario(KillStreams(times=10, engine="faust"), duration_s=150, rate=60),
        ],
        engine=engine,
        bad_inputs=10_000,
    )
