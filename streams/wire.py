"""Wire forms of the internal records (partials topic, state topic). JSON via orjson."""

from __future__ import annotations

from typing import Any

import orjson

from streams.aggregator import PaneUpdate, WatermarkReport
from streams.partials import Partial

WATERMARK_KEY = b"~watermarks"


def pane_key(u: PaneUpdate) -> bytes:
    # All panes of one (kpi, scope) meet in one partials partition, where the windows
    # that span several panes (hopping, hourly) are assembled.
    return f"{u.kpi}|{u.scope}".encode()


def encode_pane(u: PaneUpdate) -> bytes:
    return orjson.dumps(
        {
            "t": "pane",
            "src": u.source,
            "v": u.version,
            "kpi": u.kpi,
            "scope": u.scope,
            "pane": u.pane_ms,
            "state": u.partial.to_dict(),
        }
    )


def encode_watermarks(reports: list[WatermarkReport]) -> bytes:
    return orjson.dumps(
        {
            "t": "wm",
            "marks": [
                [r.source, r.version, r.watermark_ms, r.idle, r.topic_partitions] for r in reports
            ],
        }
    )


def decode_internal(raw: bytes) -> PaneUpdate | list[WatermarkReport]:
    d: dict[str, Any] = orjson.loads(raw)
    if d["t"] == "pane":
        return PaneUpdate(
            d["src"],
            int(d["v"]),
            d["kpi"],
            d["scope"],
            int(d["pane"]),
            Partial.from_dict(d["state"]),
        )
    return [WatermarkReport(s, int(v), wm, bool(idle), int(n)) for s, v, wm, idle, n in d["marks"]]


def stage1_state_key(source: str) -> bytes:
    return f"events|{source}".encode()


def stage1_ids_prefix(source: str) -> bytes:
    return f"events|{source}|ids|".encode()


def stage1_ids_key(source: str, pane: int, seq: int) -> bytes:
    """The key of one delta of seen identities (see :mod:`streams.dedup`)."""
    return stage1_ids_prefix(source) + f"{pane}|{seq}".encode()


def is_ids_key(key: bytes) -> bool:
    return b"|ids|" in key


def parse_ids_key(key: bytes, prefix: bytes) -> tuple[int, int]:
    pane, seq = key[len(prefix) :].split(b"|")
    return int(pane), int(seq)


def stage2_prefix(group: str, partition: int) -> bytes:
    return f"merge|{group}|{partition}|".encode()


def stage2_meta_key(group: str, partition: int) -> bytes:
    return stage2_prefix(group, partition) + b"meta"


def stage2_cell_key(group: str, partition: int, kpi: str, scope: str, pane: int) -> bytes:
    return stage2_prefix(group, partition) + f"cell|{kpi}|{scope}|{pane}".encode()
