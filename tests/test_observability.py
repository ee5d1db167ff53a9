"""The shared health shape (events.health), the metric names of every component, and the
local Prometheus of `ioc up --with-prometheus` (ioc.observability)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from events import health
from events.health import Check
from ioc import observability as obs
from ioc.settings import ServiceSettings
from streams.alerts.worker import AlertsSettings, AlertsWorker
from tests.waiting import until, until_sync

# --- events.health -------------------------------------------------------------------


def test_alive_always_200_with_component_and_uptime() -> None:
    answer = health.alive("streams", started_monotonic=100.0, now=112.34)
    assert (answer.status, answer.body) == (
        200,
        {"component": "streams", "status": "alive", "uptime_s": 12.3},
    )
    health.validate(health.HEALTHZ, answer.status, orjson.loads(answer.encoded()))


def test_ready_only_when_every_check_holds() -> None:
    ok = health.ready("ws", [Check("consumer", True, "reading")])
    assert ok.status == 200 and ok.body["status"] == "ready"
    assert ok.body["checks"] == {"consumer": {"ok": True, "detail": "reading"}}
    bad = health.ready("storage", [Check("database", True, "reachable"), Check("sink_raw", False)])
    assert bad.status == 503 and bad.body["status"] == "not_ready"
    assert bad.body["checks"]["sink_raw"] == {"ok": False, "detail": ""}
    for answer in (ok, bad):
        health.validate(health.READYZ, answer.status, orjson.loads(answer.encoded()))
    # No check built yet (still starting) is not ready; a name twice is a bug.
    assert health.ready("x", []).status == 503
    with pytest.raises(ValueError, match="repeat"):
        health.ready("x", [Check("a", True), Check("a", False)])


def test_validate_refuses_other_shapes() -> None:
    bad: list[tuple[str, int, Any]] = [
        (health.HEALTHZ, 200, {"status": "ok"}),  # the old shape
        (health.HEALTHZ, 200, {"component": "x", "status": "alive"}),  # no uptime
        (health.READYZ, 200, {"component": "x", "status": "ready", "checks": {}}),
        (health.READYZ, 200, {"component": "x", "status": "ready", "checks": {"a": {"ok": 1}}}),
        # 200 although a check fails
        (
            health.READYZ,
            200,
            {"component": "x", "status": "ready", "checks": {"a": {"ok": False, "detail": ""}}},
        ),
    ]
    for path, status, body in bad:
        with pytest.raises(ValueError, match=path):
            health.validate(path, status, body)


def test_lag_check_bounds_the_largest_lag() -> None:
    assert not health.lag_check(None, 10).ok  # not measured yet
    assert health.lag_check(10, 10).ok
    late = health.lag_check(11, 10)
    assert not late.ok and "11" in late.detail and "10" in late.detail


async def test_aiohttp_adapter_serves_both_paths() -> None:
    state = {"ok": False}

    async def checks() -> list[Check]:
        return [Check("thing", state["ok"], "the detail")]

    app = web.Application()
    health.add_aiohttp_routes(app, "demo", checks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def get(path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, orjson.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, orjson.loads(err.read())

    try:
        alive = await asyncio.to_thread(get, health.HEALTHZ)
        not_ready = await asyncio.to_thread(get, health.READYZ)
        state["ok"] = True
        ready = await asyncio.to_thread(get, health.READYZ)
    finally:
        await runner.cleanup()
    health.validate(health.HEALTHZ, *alive)
    health.validate(health.READYZ, *not_ready)
    health.validate(health.READYZ, *ready)
    assert (not_ready[0], ready[0]) == (503, 200)


async def test_alerts_worker_is_not_ready_before_recovery() -> None:
    worker = AlertsWorker(AlertsSettings())
    [check] = await worker.readiness()
    assert (check.name, check.ok) == ("recovered", False)
    worker.ready.set()
    [check] = await worker.readiness()
    assert check.ok


# --- metric names ----------------------------------------------------------------------


@pytest.mark.parametrize("component", sorted(obs.REGISTRIES))
def test_metric_names_follow_the_conventions(component: str) -> None:
    registry = obs.REGISTRIES[component]()
    names = obs.exposed_names(registry)
    assert names, component
    assert obs.naming_problems(registry) == []
    # Counters are exposed with _total (prometheus-client adds it to the family name).
    for family in registry.collect():
        if family.type == "counter":
            assert f"{family.name}_total" in names


def test_naming_problems_catches_the_old_names() -> None:
    r = CollectorRegistry()
    Gauge("ws_clients", "no ioc_ prefix", registry=r)
    Gauge("ioc_streams_watermark_ms", "milliseconds", registry=r)
    Histogram("ioc_batch_duration", "no unit", registry=r)
    Gauge("ioc_simulator_events_per_second", "a rate gauge", registry=r)
    Counter("ioc_fine", "fine", registry=r)
    problems = "\n".join(obs.naming_problems(r))
    for name in ("ws_clients", "watermark_ms", "batch_duration", "per_second"):
        assert name in problems
    assert "ioc_fine" not in problems


# --- the local Prometheus ----------------------------------------------------------------

PORTS = {
    "ingest": 1,
    "streams": 2,
    "alerts": 3,
    "storage": 4,
    "ws": 5,
    "simulator": 6,
    "readapi": 8,
}


def test_local_config_keeps_the_jobs_and_points_them_at_local_ports() -> None:
    deploy = obs.load_config()
    local = obs.local_config(deploy, PORTS, "127.0.0.1", [("supervisor", 7)])
    assert deploy["global"] == local["global"]
    assert obs.scrape_jobs(local) == {
        **{name: [f"127.0.0.1:{port}"] for name, port in PORTS.items()},
        "supervisor": ["127.0.0.1:7"],
    }
    assert set(obs.scrape_jobs(deploy)) == set(obs.REGISTRIES)  # one job per component
    with pytest.raises(ValueError, match="no local port"):
        obs.local_config(deploy, {"ingest": 1}, "127.0.0.1")


def test_local_config_is_written_under_the_state_dir(tmp_path: Path) -> None:
    settings = ServiceSettings(state_dir=tmp_path)
    path = obs.write_local_config(settings, PORTS)
    assert path == tmp_path / "prometheus" / "prometheus.yml"
    jobs = obs.scrape_jobs(yaml.safe_load(path.read_text()))
    assert jobs["streams"] == ["127.0.0.1:2"]
    assert jobs["supervisor"] == [f"127.0.0.1:{settings.supervisor_http_port}"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def metrics_target() -> Iterator[int]:
    """A real component registry on /metrics (the simulator's), for Prometheus to scrape."""
    from simulators.metrics import SimulatorMetrics

    metrics = SimulatorMetrics()
    metrics.serve("127.0.0.1", 0)
    assert metrics.port is not None
    yield metrics.port
    metrics.close()


@pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="no `prometheus` on PATH (Debian/Ubuntu: apt-get install prometheus)",
)
def test_prometheus_runs_the_local_config_and_scrapes_a_component(
    tmp_path: Path, metrics_target: int
) -> None:
    settings = ServiceSettings(state_dir=tmp_path)
    ports = {**PORTS, "simulator": metrics_target}
    config = obs.write_local_config(settings, ports)
    web_port = _free_port()
    argv = obs.prometheus_argv(settings, config, web_port)
    assert subprocess.run([argv[0], "--version"], capture_output=True).returncode == 0
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{web_port}/api/v1/query?query=up%7Bjob%3D%22simulator%22%7D%3D%3D1"

        def scraped() -> bool:
            assert proc.poll() is None, "prometheus exited"
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    return bool(orjson.loads(resp.read())["data"]["result"])
            except (OSError, KeyError):
                return False

        until_sync(scraped, "prometheus to scrape the simulator", within=60, every=0.5)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{web_port}/api/v1/targets", timeout=5
        ) as resp:
            targets = orjson.loads(resp.read())["data"]["activeTargets"]
        assert {t["labels"]["job"] for t in targets} == {*PORTS, "supervisor"}
    finally:
        proc.terminate()
        proc.wait(30)


def test_with_prometheus_says_so_in_one_line_when_it_is_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus here
    component, message = obs.prometheus_component(ServiceSettings(state_dir=tmp_path))
    assert component is None
    assert "no `prometheus` on PATH" in message and "\n" not in message


def test_with_prometheus_runs_it_supervised_on_the_local_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin" / "prometheus"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    settings = ServiceSettings(state_dir=tmp_path / "state", prometheus_port=19090)
    component, message = obs.prometheus_component(settings)
    assert component is not None and component.name == "prometheus"
    config = tmp_path / "state" / "prometheus" / "prometheus.yml"
    assert component.argv[0] == str(fake)
    assert f"--config.file={config}" in component.argv
    assert "--web.listen-address=127.0.0.1:19090" in component.argv
    assert config.is_file() and "http://127.0.0.1:19090/" in message


async def test_streams_readiness_needs_partitions_and_a_bounded_lag(
    bootstrap_servers: str,
) -> None:
    from aiokafka import TopicPartition

    from streams.settings import StreamsSettings
    from streams.worker import Worker

    # (never started: the broker is only asked what it is, for the producer's options)
    worker = Worker(StreamsSettings(bootstrap_servers=bootstrap_servers, ready_max_lag=100))
    try:
        checks = {c.name: c for c in await worker.readiness()}
        assert set(checks) == {"assigned", "restored", "caught_up"}
        assert not any(c.ok for c in checks.values())  # not started: nothing assigned
        worker.events.lags = {TopicPartition("ioc.events.air", 0): 101}
        assert not {c.name: c for c in await worker.readiness()}["caught_up"].ok
        worker.events.lags = {TopicPartition("ioc.events.air", 0): 100}
        assert {c.name: c for c in await worker.readiness()}["caught_up"].ok
    finally:
        await worker.events.consumer.stop()
        await worker.merge.consumer.stop()
        await worker.producer.stop()


async def test_storage_is_alive_and_says_why_not_ready_while_the_database_is_not_there() -> None:
    from storage.service import run_storage
    from storage.settings import StorageSettings

    port = _free_port()
    settings = StorageSettings(
        database_url=f"postgresql://postgres@127.0.0.1:{_free_port()}/nothing",
        storage_http_port=port,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_storage(settings, stop))

    def get(path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, orjson.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, orjson.loads(err.read())

    try:

        async def serving() -> tuple[int, Any] | None:
            try:
                return await asyncio.to_thread(get, health.HEALTHZ)
            except OSError:
                return None  # not listening yet

        alive = await until(serving, "storage to serve /healthz", every=0.1)
        ready = await asyncio.to_thread(get, health.READYZ)
    finally:
        stop.set()
        with pytest.raises(Exception, match="stopped before the database was reachable"):
            await task
    health.validate(health.HEALTHZ, *alive)
    health.validate(health.READYZ, *ready)
    assert ready[0] == 503
    assert not ready[1]["checks"]["database"]["ok"]
    assert "not started" in ready[1]["checks"]["sinks"]["detail"]
