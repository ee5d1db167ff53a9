"""Malformed inputs generated with hypothesis, through Kafka, HTTP and MQTT: each one must be
refused (an HTTP 4xx) or dead-lettered with its reason; the components must not crash.

Kinds: truncated JSON, wrong types, huge payloads, unknown types, far-future and far-past
times, invalid UTF-8, NUL bytes, duplicated ids. Every input carries an id of its own
(``bad-<run>-<n>``, first in the object so even a truncated one keeps it when it is cut
after the id) and is matched with its dead letters by that id. A *duplicated id*
is a valid, current event sent a second time with the same id: it is neither refused nor
dead-lettered but dropped as a repeat, which the worker's repeat counter must show.

Needs the ``dev`` extra (hypothesis).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from chaos.traffic import Way

KINDS = (
    "truncated_json",
    "wrong_type",
    "huge",
    "unknown_type",
    "far_future",
    "far_past",
    "invalid_utf8",
    "nul_bytes",
    "duplicated_id",
)


@dataclass(frozen=True, slots=True)
class BadInput:
    n: int
    kind: str
    raw: bytes
    station: str


def _event(run: str, n: int, when: datetime, **over: Any) -> dict[str, Any]:
    station = f"BAD-{run}-{n % 7}"
    event: dict[str, Any] = {
        "id": f"bad-{run}-{n:05d}",
        "specversion": "1.0",
        "source": f"/chaos-bad/{run}/{station}",
        "type": "vn.ioc.air.observed",
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {"station_id": station, "district": "HD", "pm25": 12.5, "pm10": 20.0},
    }
    event.update(over)
    return event


def generate(run: str, count: int, seed: int) -> list[BadInput]:
    """``count`` inputs, the kinds in turn, their details drawn by hypothesis."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    now = datetime.now(UTC)
    out: list[BadInput] = []
    wrong_values = st.one_of(
        st.integers(-(2**63), 2**63 - 1),
        st.booleans(),
        st.none(),
        st.lists(st.integers(0, 9), max_size=3),
        st.floats(allow_nan=False),
        st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2),
    )

    @st.composite
    def mutation(draw: st.DrawFn, kind: str) -> Callable[[dict[str, Any]], bytes]:
        """How to spoil an event of ``kind`` (drawn independently of the event's id)."""
        if kind == "truncated_json":
            frac = draw(st.floats(0, 1, exclude_max=True))

            def truncate(ev: dict[str, Any]) -> bytes:
                raw = orjson.dumps(ev)
                head = len(orjson.dumps({"id": ev["id"]})) - 1  # the id stays whole
                return raw[: head + int(frac * (len(raw) - 1 - head))]

            return truncate
        if kind == "wrong_type":
            where = draw(st.sampled_from(["id", "source", "time", "type", "data", "pm25"]))
            if where == "pm25":
                value = draw(st.one_of(st.text(max_size=5), st.booleans(), st.none()))
            else:
                value = draw(wrong_values)

            def retype(ev: dict[str, Any]) -> bytes:
                if where == "pm25":
                    ev["data"]["pm25"] = value
                elif where == "id":  # the id itself of a wrong type: ours goes elsewhere
                    ev["id"], ev["chaosid"] = value, ev["id"]
                else:
                    ev[where] = value
                return orjson.dumps(ev)

            return retype
        if kind == "huge":
            size = draw(st.integers(70_000, 250_000))
            return lambda ev: orjson.dumps({**ev, "data": {**ev["data"], "note": "x" * size}})
        if kind == "unknown_type":
            name = draw(st.from_regex(r"[a-z]{1,12}", fullmatch=True))
            typ = draw(st.sampled_from([f"vn.ioc.{name}.observed", name, ""]))
            return lambda ev: orjson.dumps({**ev, "type": typ})
        if kind in ("far_future", "far_past"):
            # a day ahead .. year ~9900, or a day back .. year ~0055
            days = draw(st.integers(1, 2_900_000 if kind == "far_future" else 720_000))
            when = now + timedelta(days=days if kind == "far_future" else -days)
            stamp = when.isoformat().replace("+00:00", "Z")
            return lambda ev: orjson.dumps({**ev, "time": stamp})
        if kind == "invalid_utf8":
            bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88"]))

            def spoil(ev: dict[str, Any]) -> bytes:
                raw = orjson.dumps(ev)
                at = raw.index(b'"HD"') + 1  # inside the district string
                return raw[:at] + bad + raw[at:]

            return spoil
        if kind == "nul_bytes":
            where = draw(st.sampled_from(["raw", "station", "type"]))

            def nul(ev: dict[str, Any]) -> bytes:
                if where == "raw":
                    return orjson.dumps(ev).replace(b'"source"', b'"source"\x00', 1)
                if where == "station":
                    ev["data"]["station_id"] += "\x00"
                else:
                    ev["type"] += "\x00"
                return orjson.dumps(ev)

            return nul
        return orjson.dumps  # duplicated_id: a valid event, sent twice

    def collector(kind: str) -> Callable[[], None]:
        @settings(
            max_examples=per_kind,
            database=None,
            derandomize=True,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            deadline=None,
        )
        @given(mutation(kind))
        def collect(spoil: Callable[[dict[str, Any]], bytes]) -> None:
            n = len(out)
            ev = _event(run, n, now)
            station = ev["data"]["station_id"]
            out.append(BadInput(n, kind, spoil(ev), station))

        return collect

    per_kind = -(-count // len(KINDS))
    for kind in KINDS:
        collect = collector(kind)
        made = len(out)
        while len(out) - made < per_kind:  # hypothesis may stop early on small spaces
            collect()
    random.Random(seed).shuffle(out)
    return out[:count]


@dataclass
class BadTally:
    """Per kind: sent, refused over HTTP, dead-lettered, dropped as repeats."""

    sent: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    repeats_sent: int = 0
    repeats_dropped: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    unaccounted: list[str] = field(default_factory=list)
    crashes: int = 0
    send_errors: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    @property
    def handled(self) -> int:
        return sum(self.refused.values()) + sum(self.dead_lettered.values())


async def send_all(
    inputs: list[BadInput], ways: dict[str, Way], tally: BadTally, concurrency: int = 20
) -> dict[int, str]:
    """Sends each input through a way in (in turn); returns what must be dead-lettered
    (input number -> kind). HTTP answers are tallied here."""
    expect: dict[int, str] = {}
    names = ("kafka", "http", "mqtt")
    sem = asyncio.Semaphore(concurrency)

    async def one(b: BadInput) -> None:
        way = names[b.n % 3]
        async with sem:
            if b.kind == "duplicated_id":
                # a valid event first, then the same id again: a repeat, not a bad record;
                # its time is now (the inputs were made before the run: it would be too late)
                event = orjson.loads(b.raw)
                event["time"] = datetime.now(UTC).isoformat(timespec="milliseconds")
                raw = orjson.dumps(event)
                for _ in range(2):
                    await ways[way].send_raw(b.station, raw)
                tally.repeats_sent += 1
                return
            tally.sent[b.kind] += 1
            status = await ways[way].send_raw(b.station, b.raw)
        if way == "http" and isinstance(status, int) and 400 <= status < 500:
            tally.refused[b.kind] += 1
        elif status is None or status is False:
            tally.send_errors[way] += 1
            expect[b.n] = b.kind  # may still be dead-lettered (e.g. an MQTT resend)
        else:
            expect[b.n] = b.kind

    await asyncio.gather(*(one(b) for b in inputs))
    return expect
