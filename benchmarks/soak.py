"""Soak: `ioc up` at the demo rate for a while, sampling memory and disk every minute.

    .venv/bin/python -m benchmarks.soak --broker kafka --minutes 60

Runs the whole demo (services, every component, the simulator at 200 events/s) and
records, every ``--interval`` seconds, the RSS of every process (the broker, TimescaleDB's
processes summed, Mosquitto, each component) and the disk used by the broker's log
directory and the database cluster. The samples go to ``benchmarks/soak/<broker>.jsonl``;
the growth per hour of each series (least squares over the samples after a warm-up) goes
to ``docs/reliability.md``. Not part of CI: it takes as long as it is told to.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.results import machine_note, record
from ioc.services import apache_kafka, timescale
from ioc.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = Path(__file__).resolve().parent / "soak"
DOC = ROOT / "docs" / "reliability.md"
console = Console(stderr=True)


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids[ppid].append(int(entry.name))
    return kids


def _tree(pid: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cmd(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _du_kb(path: Path) -> int:
    if not path.exists():
        return 0
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=False)
    return int(out.stdout.split()[0]) if out.stdout else 0


def _pid_of(settings: ServiceSettings, name: str) -> int | None:
    try:
        return int((settings.state_dir / f"{name}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def process_groups(settings: ServiceSettings, demo_pid: int) -> dict[str, list[int]]:
    """The processes of the running demo by name: the broker, TimescaleDB (every postgres
    process), Mosquitto, each component `ioc up` started (with its children) and `ioc up`
    itself."""
    kids = _children()
    out: dict[str, list[int]] = {}
    for name, label in (("kafka", "broker"), ("broker", "broker"), ("mosquitto", "mosquitto")):
        pid = _pid_of(settings, name)
        if pid is not None and _rss_kb(pid):
            out[label] = _tree(pid, kids)
    services = {_pid_of(settings, n) for n in ("kafka", "broker", "mosquitto", "timescaledb")}
    db = _pid_of(settings, "timescaledb")
    if db is not None:
        out["timescaledb"] = _tree(db, kids)
    for pid in kids.get(demo_pid, ()):
        if pid in services:  # started by `ioc up`, counted above
            continue
        argv = _cmd(pid)
        words = [a for a in argv[1:] if a and not a.startswith("-")]
        name = "-".join(words[1:3]) if words[:1] == ["ioc"] else "-".join(words[:1])
        out[name or str(pid)] = _tree(pid, kids)
    out["ioc_up"] = [demo_pid]
    return out


def sample(settings: ServiceSettings, demo_pid: int) -> dict[str, int]:
    """RSS (kB) of each process group and disk (kB) of each data directory."""
    out: dict[str, int] = {}
    for name, pids in process_groups(settings, demo_pid).items():
        # TimescaleDB: every postgres process, summed: shared buffers are counted once per
        # process that touched them, so this over-states the total; its growth is what
        # matters.
        out[f"rss_{name}_kb"] = sum(_rss_kb(p) for p in pids)
    out["disk_broker_kb"] = _du_kb(apache_kafka.data_dir(settings))
    out["disk_timescaledb_kb"] = _du_kb(
        timescale.rootfs_path(settings) / "var" / "lib" / "ioc" / f"pg-{settings.db_port}"
    )
    out["disk_state_dir_kb"] = _du_kb(settings.state_dir)
    return out


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per second (0 for fewer than 2)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mx) * (v - my) for t, v in points) / var


def slope_per_hour(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, kB) points, in MB per hour."""
    return slope([(t, float(v)) for t, v in points]) * 3600 / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", choices=["kafka", "tansu"], required=True)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--interval", type=float, default=60, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=10, help="minutes left out of the fit")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the report from the samples file"
    )
    args = parser.parse_args()
    if args.report_only:
        report(args, _read_samples(OUT_DIR / f"{args.broker}.jsonl"), load_at_start=None)
        return
    load_at_start = os.getloadavg()[0]
    env = {**os.environ, "IOC_BROKER": args.broker}
    settings = ServiceSettings(broker=args.broker)
    OUT_DIR.mkdir(exist_ok=True)
    samples_file = OUT_DIR / f"{args.broker}.jsonl"
    log_file = OUT_DIR / f"{args.broker}.log"
    with log_file.open("wb") as log:
        demo = subprocess.Popen(
            [sys.executable, "-m", "ioc", "up"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    begin = time.monotonic()
    series: dict[str, list[tuple[float, int]]] = defaultdict(list)
    try:
        with samples_file.open("w") as out:
            while True:
                elapsed = time.monotonic() - begin
                if demo.poll() is not None:
                    raise SystemExit(f"`ioc up` exited ({demo.returncode}); see {log_file}")
                values = sample(settings, demo.pid)
                out.write(json.dumps({"elapsed_s": round(elapsed), **values}) + "\n")
                out.flush()
                for key, value in values.items():
                    series[key].append((elapsed, value))
                console.print(
                    f"{elapsed / 60:5.1f} min  broker RSS "
                    f"{values.get('rss_broker_kb', 0) / 1024:.0f} MB, broker disk "
                    f"{values['disk_broker_kb'] / 1024:.0f} MB, database disk "
                    f"{values['disk_timescaledb_kb'] / 1024:.0f} MB"
                )
                if elapsed >= args.minutes * 60:
                    break
                time.sleep(max(0.0, args.interval - (time.monotonic() - begin - elapsed)))
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    report(args, series, load_at_start)


def _read_samples(path: Path) -> dict[str, list[tuple[float, int]]]:
    series: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key != "elapsed_s":
                series[key].append((float(row["elapsed_s"]), int(value)))
    return series


def report(
    args: argparse.Namespace,
    series: dict[str, list[tuple[float, int]]],
    load_at_start: float | None,
) -> None:
    """Growth per hour of every series into docs/reliability.md."""
    warm = args.warmup * 60
    rows = []
    for key in sorted(series):
        if "/" in key:  # a service process listed as a child of `ioc up` by older samples
            continue
        pts = [(t, v) for t, v in series[key] if t >= warm]
        first, last = series[key][0][1], series[key][-1][1]
        peak = max(v for _, v in series[key])
        rows.append(
            f"| {key.removesuffix('_kb')} | {first / 1024:.0f} | {peak / 1024:.0f} | "
            f"{last / 1024:.0f} | {slope_per_hour(pts):+.1f} |"
        )
    minutes = max(t for pts in series.values() for t, _ in pts) / 60
    machine = machine_note(load_at_start) if load_at_start is not None else ""
    body = (
        f"`ioc up` with `IOC_BROKER={args.broker}` for {minutes:.0f} min, sampled every "
        f"{args.interval:.0f} s; growth is the least-squares slope after the first "
        f"{args.warmup:.0f} min. {machine}\n\n"
        "| series | first (MB) | max (MB) | last (MB) | growth (MB/h) |\n"
        "|---|---|---|---|---|\n"
        + "\n".join(rows)
        + broker_restarts(series, OUT_DIR / f"{args.broker}.log")
        + f"\n\nSamples: `benchmarks/soak/{args.broker}.jsonl`."
    )
    cap = os.environ.get("IOC_TANSU_MAX_RSS_MB") if args.broker == "tansu" else None
    cmd = (f"IOC_TANSU_MAX_RSS_MB={cap} " if cap else "") + (
        f".venv/bin/python -m benchmarks.soak --broker {args.broker} --minutes {minutes:.0f}"
    )
    record(f"soak-{args.broker}", cmd, body, {}, doc=DOC, header=_HEADER)
    console.print(f"recorded in {DOC.relative_to(ROOT)}")


def broker_restarts(series: dict[str, list[tuple[float, int]]], log: Path) -> str:
    """The broker restarts of `ioc up`'s memory cap (Tansu) seen in its log, and the
    broker's RSS sample by sample (the saw-tooth); empty when there was none."""
    text = log.read_text(errors="replace") if log.exists() else ""
    # One JSON line each (an older `ioc up` wrapped them: join the lines first).
    joined = re.sub(r"\n(?!\S+\s+\|)", "", text)
    restarts = [
        json.loads(m.group(1))
        for m in re.finditer(r"broker-guard \| (\{.*\})", joined)
        if '"broker.restarted"' in m.group(1)
    ]
    if not restarts:
        return ""
    took = [r["seconds"] for r in restarts if isinstance(r.get("seconds"), int | float)]
    before = [r["rss_before_mb"] for r in restarts if "rss_before_mb" in r]
    after = [r["rss_after_mb"] for r in restarts if r.get("rss_after_mb") is not None]
    rss = " ".join(f"{v / 1024:.0f}" for _, v in series.get("rss_broker_kb", []))

    def span(values: list[Any], unit: str, fmt: str = "{:.0f}") -> str:
        lo, hi = fmt.format(min(values, default=0)), fmt.format(max(values, default=0))
        return f"{lo} {unit}" if lo == hi else f"{lo}-{hi} {unit}"

    return (
        f"\n\nBroker restarts by the memory cap: {len(restarts)} (broker RSS "
        f"{span(before, 'MB')} before, {span(after, 'MB')} right after; each pause, from "
        f"stopping the components to the broker serving its re-created topics, took "
        f"{span(took, 's', '{:.1f}')}, then the components started again). Broker RSS per "
        f"sample (MB): {rss}."
    )


_HEADER = (
    "# Reliability\n\n"
    "How the demo stays bounded when it runs for weeks. Sections between markers are "
    "rewritten by `benchmarks/soak.py`.\n"
)

if __name__ == "__main__":
    main()
