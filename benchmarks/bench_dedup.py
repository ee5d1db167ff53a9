"""The seen-identities state of stage 1 (``streams/dedup.py``) at a given event rate.

Simulates ``--seconds`` of events at ``--rate`` events/s spread over ``--partitions``
source partitions (one :class:`~streams.dedup.IdentityIndex` each), event times at the
wall-clock pace, 5 % of them repeats, a checkpoint (``take_deltas``) every second with
the panes behind the horizon (lateness + grace) forgotten, exactly as the stage-1 adapter
does. It reports the look-up cost per event (``admit`` with the fingerprinting) against a
baseline doing comparable work with a Python ``set`` of 128-bit ints (a ceiling on speed,
not on memory), the bytes held per identity inside the horizon, and the size and time of
each checkpoint. Every sample counts; none is dropped.

    .venv/bin/python -m benchmarks.bench_dedup --rate 20000 --seconds 360
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

from benchmarks.results import machine_note, record
from streams.dedup import IdentityIndex, fingerprints, identity

PANE_MS = 60_000
HORIZON_MS = 240_000 + PANE_MS  # lateness + grace (defaults) + the pane itself


def run(rate: int, seconds: int, partitions: int, batch: int) -> dict[str, float]:
    rng = random.Random(7)
    indexes = [IdentityIndex() for _ in range(partitions)]
    baseline: list[set[int]] = [set() for _ in range(partitions)]
    t0 = 1_800_000_000_000
    n = 0
    admit_s = base_s = 0.0
    ckpt_ms: list[float] = []
    ckpt_bytes: list[int] = []
    peak_identities = peak_bytes = 0
    for second in range(seconds):
        now = t0 + second * 1000
        for _ in range(rate // batch):
            part = rng.randrange(partitions)
            ids: list[bytes] = []
            panes: list[int] = []
            for _ in range(batch):
                repeat = n > 0 and rng.random() < 0.05
                k = rng.randrange(max(1, n - rate)) if repeat else n
                if not repeat:
                    n += 1
                t = now - rng.randrange(1000)
                ids.append(identity(f"/sensors/s{k % 500}", f"sim-{k}"))
                panes.append(t - t % PANE_MS)
            start = time.perf_counter()
            indexes[part].admit(panes, fingerprints(ids))
            admit_s += time.perf_counter() - start
            start = time.perf_counter()
            seen = baseline[part]
            for ident in ids:
                h = int.from_bytes(ident[:16].ljust(16, b"\0"))  # comparable: an int per id
                if h not in seen:
                    seen.add(h)
            base_s += time.perf_counter() - start
        start = time.perf_counter()
        size = 0
        for idx in indexes:
            for _pane, _seq, body in idx.take_deltas(now - HORIZON_MS + 1):
                size += len(body or b"")
        ckpt_ms.append((time.perf_counter() - start) * 1000)
        ckpt_bytes.append(size)
        identities = sum(len(i) for i in indexes)
        if identities > peak_identities:
            peak_identities = identities
            peak_bytes = sum(i.nbytes for i in indexes)
    events = seconds * (rate // batch) * batch
    steady = ckpt_bytes[HORIZON_MS // 1000 :] or ckpt_bytes
    return {
        "events": events,
        "admit_us_per_event": admit_s / events * 1e6,
        "set_us_per_event": base_s / events * 1e6,
        "identities": peak_identities,
        "bytes_per_identity": peak_bytes / max(1, peak_identities),
        "checkpoint_kb": statistics.median(steady) / 1024,
        "checkpoint_ms_p50": statistics.median(ckpt_ms),
        "checkpoint_ms_max": max(ckpt_ms),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=20_000)
    ap.add_argument("--seconds", type=int, default=360)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    r = run(args.rate, args.seconds, args.partitions, args.batch)
    command = ".venv/bin/python -m benchmarks.bench_dedup " + " ".join(sys.argv[1:])
    body = f"""
{machine_note(load)}

{r["events"]:,} events at {args.rate:,}/s over {args.seconds} s (event times at wall-clock
pace, 5 % repeats, {args.partitions} source partitions, batches of {args.batch}), a
checkpoint every second with the panes behind lateness + grace forgotten.

| what | value |
|---|---|
| look-up + record, per event (fingerprint, vectorised `admit`) | {r["admit_us_per_event"]:.2f} µs |
| baseline: Python `set` of ints, per event (a ceiling on speed, | {r["set_us_per_event"]:.2f} µs |
| not on memory: ~60 bytes or more per entry) | |
| identities held at the peak (inside the horizon) | {r["identities"]:,.0f} |
| bytes per identity held | {r["bytes_per_identity"]:.1f} |
| checkpoint size (median, steady state) | {r["checkpoint_kb"]:.0f} KiB |
| checkpoint time (`take_deltas`, all partitions), median | {r["checkpoint_ms_p50"]:.2f} ms |
| checkpoint time, max | {r["checkpoint_ms_max"]:.2f} ms |
"""
    record(
        "dedup",
        command,
        body,
        {
            "dedup_bytes_per_identity": round(r["bytes_per_identity"], 1),
            "dedup_admit_us_per_event": round(r["admit_us_per_event"], 2),
            "dedup_checkpoint_kb_at_rate": round(r["checkpoint_kb"]),
            "dedup_checkpoint_ms_p50": round(r["checkpoint_ms_p50"], 2),
        },
    )
    print(body)


if __name__ == "__main__":
    main()
