"""Push-server fan-out: N websocket clients, each subscribed to all KPIs of one district,
each receiving ~10 updates/s; p95 delivery lag (KPI ``computed_at`` → client receive) and
the server's RSS.

The server runs as its own process (`ioc ws serve`, as in `ioc up`) so its memory is its
own; records go through the real broker. The baseline in the same run is a light load
(10 clients) against the same server. Loopback only, bounded duration.

    IOC_BROKER_PORT=... .venv/bin/python -m benchmarks.bench_ws [--clients 1000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from rich.console import Console
from websockets.asyncio.client import ClientConnection, connect

from benchmarks.results import broker_label, machine_note, record
from events import topics
from events.geography import DISTRICTS
from events.kpis import KPI_CATALOGUE
from events.records import KpiRecord
from ioc import services
from ioc.settings import ServiceSettings

console = Console(stderr=True)
UPDATES_PER_S = 10


@dataclass
class Lags:
    samples: list[float] = field(default_factory=list)
    frames: int = 0
    recording: bool = False

    def p(self, q: float) -> float:
        if not self.samples:
            return float("nan")
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def client(url: str, district: str, lags: Lags, ready: asyncio.Event) -> None:
    async with connect(url, max_size=2**22, ping_interval=None) as ws:
        await ws.send('{"op":"auth","token":"wall-viewer"}')
        await ws.recv()
        await ws.send(
            orjson.dumps(
                {
                    "op": "subscribe",
                    "sub": "d",
                    "channel": "kpi",
                    "scopes": [f"district:{district}"],
                }
            ).decode()
        )
        await ws.recv()  # snapshot
        ready.set()
        await receive(ws, lags)


async def receive(ws: ClientConnection, lags: Lags) -> None:
    async for raw in ws:
        now = time.time()
        frame = orjson.loads(raw)
        lags.frames += 1
        if lags.recording:
            for item in frame["items"]:
                sent = datetime.fromisoformat(item["computed_at"]).timestamp()
                lags.samples.append((now - sent) * 1000)


async def produce(bootstrap: str, stop: asyncio.Event) -> int:
    """10 records/s per district (a different KPI each time), stamped with computed_at."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    kpis = list(KPI_CATALOGUE)
    sent = 0
    # Revisions must grow across phases: the server drops stale revisions of a window.
    base_revision = time.time_ns() // 1000
    try:
        tick = 1 / UPDATES_PER_S
        next_at = time.monotonic()
        while not stop.is_set():
            start = datetime.now(UTC).replace(second=0, microsecond=0)
            for code in DISTRICTS:
                rec = KpiRecord(
                    kpis[sent % len(kpis)],
                    f"district:{code}",
                    start,
                    start + timedelta(seconds=60),
                    float(sent % 500),
                    1,
                    revision=base_revision + sent,
                    computed_at=datetime.now(UTC),
                )
                await producer.send(topics.KPI, rec.to_json(), key=rec.scope.encode())
                sent += 1
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        await producer.stop()
    return sent


async def phase(
    url: str, n_clients: int, seconds: float, bootstrap: str, server_pid: int
) -> tuple[Lags, float, float]:
    lags = Lags()
    codes = list(DISTRICTS)
    tasks: list[asyncio.Task[None]] = []
    with console.status(f"connecting {n_clients} clients…") as spin:
        for i in range(0, n_clients, 50):
            batch = [asyncio.Event() for _ in range(min(50, n_clients - i))]
            for j, ev in enumerate(batch):
                tasks.append(
                    asyncio.create_task(client(url, codes[(i + j) % len(codes)], lags, ev))
                )
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in batch)), 60)
            spin.update(f"connecting clients… {i + len(batch)}/{n_clients}")
    stop = asyncio.Event()
    producer = asyncio.create_task(produce(bootstrap, stop))
    await asyncio.sleep(3)  # warm-up
    lags.recording = True
    begin = time.monotonic()
    peak_rss = 0.0
    with console.status(f"measuring {n_clients} clients for {seconds:.0f}s…"):
        while time.monotonic() - begin < seconds:
            await asyncio.sleep(1)
            peak_rss = max(peak_rss, rss_mb(server_pid))
    lags.recording = False
    elapsed = time.monotonic() - begin
    stop.set()
    await producer
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    rate = len(lags.samples) / elapsed / max(n_clients, 1)
    return lags, peak_rss, rate


def row(name: str, lags: Lags, rate: float, rss: float) -> str:
    return (
        f"| {name} | {rate:.1f} | {lags.p(0.5):.1f} | {lags.p(0.95):.1f} | "
        f"{lags.p(0.99):.1f} | {rss:.0f} |"
    )


async def main(args: argparse.Namespace) -> None:
    load_at_start = os.getloadavg()[0]
    settings = ServiceSettings()
    services.up(settings, ("broker",))
    port = free_port()
    env = {
        **os.environ,
        "IOC_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "IOC_WS_PORT": str(port),
        "IOC_WS_MAX_PENDING": "100000",
    }
    env.pop("IOC_DATABASE_URL", None)  # snapshots from memory: this measures fan-out
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_ws_{port}.log"
    with log_path.open("w") as log:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ioc", "ws", "serve", env=env, stdout=log, stderr=log
        )
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        for _ in range(100):
            await asyncio.sleep(0.2)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
        idle_rss = rss_mb(server.pid)
        base, base_rss, base_rate = await phase(url, 10, 8, settings.bootstrap_servers, server.pid)
        console.print(f"baseline 10 clients: p95 {base.p(0.95):.1f} ms")
        load, load_rss, load_rate = await phase(
            url, args.clients, args.seconds, settings.bootstrap_servers, server.pid
        )
    finally:
        server.terminate()
        await server.wait()
    p95 = load.p(0.95)
    broker = broker_label(settings.bootstrap_servers)
    body = f"""
{args.clients} websocket clients (one process, asyncio) against one `ioc ws serve` process;
each client subscribes to all KPIs of one of the {len(DISTRICTS)} districts; a producer
publishes {UPDATES_PER_S} KPI records/s per district to `ioc.kpi` on the {broker} broker, so each
client should receive ~{UPDATES_PER_S} updates/s. Lag = client receive time − the record's
`computed_at` (set just before the produce), so it includes the broker hop. Warm-up 3 s,
then {args.seconds:.0f} s measured. Baseline in the same run: 10 clients, 8 s.

| load | updates/s per client | p50 lag ms | p95 lag ms | p99 lag ms | server RSS MB |
|---|---|---|---|---|---|
{row("baseline, 10 clients", base, base_rate, base_rss)}
{row(f"{args.clients} clients", load, load_rate, load_rss)}

Server RSS idle (before clients): {idle_rss:.0f} MB. Target: p95 < 250 ms —
{"met" if p95 < 250 else "NOT met"}. {machine_note(load_at_start)} The
server, the clients, the broker and the producer all ran on these cores, so these figures are
pessimistic for a dedicated server.
"""
    command = (
        f".venv/bin/python -m benchmarks.bench_ws --clients {args.clients} "
        f"--seconds {args.seconds:g}"
    )
    record(
        "ws",
        command,
        body,
        {
            "ws_p95_lag_ms": round(p95, 1),
            "ws_clients": args.clients,
            "ws_server_rss_mb": round(load_rss, 1),
        },
    )
    console.print(body, soft_wrap=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    asyncio.run(main(parser.parse_args()))
