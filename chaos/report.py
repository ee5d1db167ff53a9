"""docs/reliability.md: the fault table of one `ioc chaos` run and how to read it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from chaos.badinput import KINDS, BadTally
from chaos.run import Config, Result, Row

HEADER = "| fault | injected | events | lost | duplicated | recovery_s |"


def table(rows: Sequence[Row]) -> str:
    lines = [HEADER, "|---|---|---:|---:|---:|---|"]
    for r in rows:
        v = r.verdict
        lines.append(
            f"| {r.fault} | {r.injected} | {v.events:,} | {v.lost} | {v.duplicated} "
            f"| {r.recovery} |"
        )
    return "\n".join(lines)


def details(rows: Sequence[Row]) -> str:
    lines = [
        "| fault | copies acknowledged (kafka / http / mqtt) | duplicates sent "
        "| out of order | too late: sent / dead-lettered `too_late` | misplaced "
        "| recovery ran |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for r in rows:
        v = r.verdict
        ways = " / ".join(f"{r.by_way.get(w, 0):,}" for w in ("kafka", "http", "mqtt"))
        evidence = "; ".join(r.evidence) or "-"
        ran = ("yes: " if r.recovered else "**NO**: ") + evidence
        lines.append(
            f"| {r.fault} | {v.copies:,} ({ways}) | {r.duplicates} | {r.out_of_order} "
            f"| {v.too_late_sent} / {v.too_late_dead_lettered} | {v.misplaced} | {ran} |"
        )
    return "\n".join(lines)


def push_notes(rows: Sequence[Row]) -> str:
    """What lost / duplicated / recovery_s mean for the push server row, and its clients."""
    with_clients = [r for r in rows if r.clients is not None]
    if not with_clients:
        return ""
    lines = [
        "- **push server row**: its events are checked as in every row, and its websocket",
        "  clients on top. Each client subscribes to the row's stations (`kpi` channel,",
        "  `air.pm25.avg`, and `alerts`), applies snapshot and update items by revision,",
        "  and after a restart reconnects with backoff (0.2–2 s, jitter) and subscribes",
        "  with `resume: {epoch, seq}` and `windows_since` (docs/ws-protocol.md). At the end",
        "  every client must hold every final 1-min window of the row's stations with the",
        "  count of the final record on `ioc.kpi`. **lost** adds the (client, window) pairs",
        "  where the client lacks that final window or holds a lower count or a non-final",
        "  revision (a gap); **duplicated** adds the pairs where it holds a higher count;",
        "  **misplaced** adds windows final at a client that are not final on `ioc.kpi` and",
        "  updates whose `seq` did not grow within one server epoch. **recovery_s** is from",
        "  the kill (or SIGTERM) to the new server's `/readyz` answering 200; the time until",
        "  all clients had subscribed again is in the details.",
    ]
    for r in with_clients:
        g = r.clients
        assert g is not None
        lines.append(
            f"- clients of the push server row: {g.clients} clients × {g.windows} final "
            f"windows; gaps {g.missing}, above the final count {g.above}, final at a client "
            f"but not on `ioc.kpi` {g.unknown}, seq going backwards {g.seq_errors}."
        )
    return "\n".join(lines) + "\n"


def bad_ok(bad: BadTally | None) -> bool:
    if bad is None:
        return True
    return (
        bad.crashes == 0
        and not bad.unaccounted
        and bad.handled == bad.total
        and bad.repeats_dropped >= bad.repeats_sent
    )


def bad_section(bad: BadTally | None) -> str:
    if bad is None:
        return "Not part of this run (`--bad-inputs 0`)."
    lines = [
        "| input | sent | refused (HTTP 4xx) | dead-lettered | neither |",
        "|---|---:|---:|---:|---:|",
    ]
    missing = {k: bad.unaccounted.count(k) for k in KINDS}
    for kind in KINDS:
        if kind == "duplicated_id":
            continue
        lines.append(
            f"| {kind} | {bad.sent[kind]:,} | {bad.refused[kind]:,} "
            f"| {bad.dead_lettered[kind]:,} | {missing[kind]} |"
        )
    share = 100.0 * bad.handled / bad.total if bad.total else 0.0
    lines.append(
        f"| **all** | **{bad.total:,}** | {sum(bad.refused.values()):,} "
        f"| {sum(bad.dead_lettered.values()):,} | {len(bad.unaccounted)} |"
    )
    reasons = ", ".join(f"`{r}` {n:,}" for r, n in bad.reasons.most_common())
    return "\n".join(
        [
            *lines,
            "",
            f"- **{share:.1f} %** refused or dead-lettered; crashes (a component that "
            f"exited by itself or was not running at the end): **{bad.crashes}**.",
            f"- Dead-letter reasons seen: {reasons or '-'}.",
            f"- duplicated ids: {bad.repeats_sent:,} valid events each sent twice with the "
            f"same id; the stream worker dropped {bad.repeats_dropped:,} repeats "
            "(`ioc_streams_duplicates_total`; a repeat is not a bad record, so it is not "
            "dead-lettered).",
            f"- sends without an answer: {dict(bad.send_errors) or 'none'}.",
        ]
    )


def markdown(result: Result, cfg: Config, command: str, elapsed_s: float) -> str:
    rows = result.rows
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    ok = all(r.verdict.ok and r.recovered for r in rows) and bad_ok(result.bad)
    engines = " then ".join(f"`{e}`" for e in cfg.engines)
    return f"""## The pipeline under faults (`ioc chaos`)

Written by `{command}` ({when}, {elapsed_s:.0f} s, stream engine {engines},
allowed lateness {cfg.allowed_lateness_s:.0f} s, late grace {cfg.late_grace_s:.0f} s,
idle timeout {cfg.idle_timeout_s:.0f} s). Result: **{"all rows exact" if ok else "MISMATCHES"}**.

{table(rows)}

- **events**: distinct events that a way in acknowledged (Kafka producer ack with
  `acks=all`, HTTP `202`, MQTT QoS 1 `PUBACK`), through all three ways in, each with a
  unique id, on stations unique to the run and the row.
- **lost**: acknowledged but missing — from its final 1-min `air.pm25.avg` window of
  `station:<id>` (the window count is below the number of distinct acknowledged on-time
  events in it), from the raw `events` table, or (a too-late event) from `ioc.deadletter`
  with reason `too_late`.
- **duplicated**: counted more than once — a final window count above the number of
  distinct events *sent* into it (a send whose answer was lost may still arrive once), or
  a raw row stored twice.
- **recovery_s**: from the fault to the component working again, as its own log says
  (stream worker: `stage1.assigned` with its state restored; storage: its sinks started;
  database: the sink's `database back; resumed`, from the database's start); the median
  and the maximum when a fault is injected several times.
{push_notes(rows)}
### Details

{details(rows)}

- **misplaced**: an event counted where it does not belong: a too-late event in a window,
  an on-time event dead-lettered, a raw row or a window that no sent event explains. It is
  0 in an exact run.
- Too-late events are counted in no window, are dead-lettered `too_late` by the stream
  worker and are still stored in the raw `events` table: that table archives every valid
  event that was accepted, whatever its lateness (docs/storage.md).

### Bad input

{bad_section(result.bad)}

Each input goes through one way in, in turn (Kafka topic `ioc.events.air`, HTTP
`POST /events`, MQTT `ioc/events/demo/air/<station>`), and is matched with its dead letters
by its id `bad-<run>-<n>` (kept even by truncated and retyped inputs; a gateway re-encodes
an event it accepted, so the bytes in a later dead letter may differ). Far-past events with a
representable time are valid CloudEvents: the gateways accept them and the stream worker
dead-letters them as `too_late`; a time before 1970 or from year 9000 on is `bad_time`.

### How the run works

1. The services (broker, TimescaleDB, Mosquitto) are started if they are not running
   (`IOC_BROKER_PORT`, `IOC_DB_PORT`, `IOC_MQTT_PORT`, `IOC_STATE_DIR` as for
   `ioc services up`), then the ingest gateway (HTTP + MQTT), the stream worker and storage
   as child processes with consumer groups and internal topics of their own (`chaos-*`), so
   a broker that holds earlier runs does not disturb this one. The harness restarts a
   component at once after a fault kills it, as `ioc up`'s supervisor does. When a row
   needs it, the push server (`ioc ws serve`) runs too. A row may choose the stream
   worker's engine: before it, the worker is stopped (SIGTERM) and started with that
   engine, with the same consumer group, state and partials topics, so it goes on from
   the other engine's checkpoints (the full run's last row is the Faust-hosted worker's).
2. Each row sends events for its own stations at a fixed rate, each through a way in
   chosen at random; all along 5 % are sent a second time (the same bytes, through any
   way in), 5 % carry a time up to half the allowed lateness back (out of order) and 1 %
   are 15 minutes old, of a station whose on-time events were already acknowledged, so
   they are behind their partition's watermark by more than the grace (too late). A
   client retries a send until it is acknowledged; every try is a copy.
3. Meanwhile the row's fault runs at random points of the row (seeded).
4. One current event per partition of `ioc.events.air` every second, from a source of
   its own, keeps every partition's watermark at the clock, so the last windows become
   final about *allowed lateness* after their end.
5. The harness tails `ioc.kpi` and `ioc.deadletter` and queries the raw `events` table
   until every acknowledged window is final, every acknowledged event has its row and
   every too-late one its dead letter, or the deadline passes; then it compares.

`ioc chaos --short` is the CI version (a few faults, under 3 minutes): it shortens the
allowed lateness and grace to 20 s (`IOC_STREAMS_ALLOWED_LATENESS_S`,
`IOC_STREAMS_LATE_GRACE_S`) so windows become final within a minute instead of three;
the too-late events (15 minutes old) are too late either way.
"""


_START, _END = "<!-- chaos -->", "<!-- /chaos -->"


def write_section(path: Path, section: str) -> None:
    """Put ``section`` between the chaos markers of ``path`` (appended the first time):
    the rest of docs/reliability.md (the soak figures) belongs to other commands."""
    text = path.read_text() if path.exists() else "# Reliability\n"
    block = f"{_START}\n{section.rstrip()}\n{_END}\n"
    if _START in text and _END in text:
        before, rest = text.split(_START, 1)
        after = rest.split(_END, 1)[1].lstrip("\n")
        text = before + block + (("\n" + after) if after else "")
    else:
        text = text.rstrip() + "\n\n" + block
    path.write_text(text)
