"""De-duplication on the CloudEvent identity (``source``, ``id``), sans-I/O.

A gateway that resends after a lost ack, an MQTT QoS 1 redelivery, a producer retry: the
same event arrives twice. Stage 1 applies an identity once per source partition (records
are keyed by their source, so the copies of an event meet in one partition) and drops the
repeats, for as long as the event could still change a window: identities are kept in
buckets by the event's pane, and a bucket is dropped with its pane (when the pane is
behind the watermark by more than the grace; a repeat of an older event is too late
anyway).

Memory: an identity is a 128-bit fingerprint (BLAKE2b of ``source`` NUL ``id``), kept in
two aligned numpy arrays per pane, sorted by the first 64 bits: 16 bytes per identity.
A repeat is recognised only when all 128 bits match: two distinct identities that share
the first 64 bits (about 3e-8 for a million identities in one pane) are told apart by the
other 64, and only a full 128-bit collision (about 1e-27) would drop a distinct event.

Checkpoints are incremental: :meth:`IdentityIndex.take_deltas` returns the fingerprints
added since the previous call, one record per (pane, checkpoint sequence number), and
the keys of the records of forgotten panes (tombstones); the cost follows the changes,
not the size of the state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
FINGERPRINT_BYTES = 16
_EMPTY = np.empty(0, dtype=np.uint64)


def fingerprints(identities: Sequence[bytes]) -> U64:
    """(n, 2) uint64: the 128-bit fingerprint of each identity."""
    digest = hashlib.blake2b
    raw = b"".join(digest(i, digest_size=FINGERPRINT_BYTES).digest() for i in identities)
    return np.frombuffer(raw, dtype="<u8").reshape(-1, 2).astype(np.uint64)


def identity(source: str, event_id: str) -> bytes:
    return f"{source}\x00{event_id}".encode(errors="surrogatepass")


def _hits(keys: U64, checks: U64, q1: U64, q2: U64) -> npt.NDArray[np.bool_]:
    """Per query (q1, q2): whether it is in the sorted ``keys`` with its ``checks``."""
    if not len(keys):
        return np.zeros(len(q1), dtype=bool)
    # Sorted queries walk the large array in one direction: far fewer cache misses.
    order = np.argsort(q1)
    pos = np.empty(len(q1), dtype=np.intp)
    pos[order] = np.searchsorted(keys, q1[order])
    at = np.minimum(pos, len(keys) - 1)
    same_key = (pos < len(keys)) & (keys[at] == q1)
    hit: npt.NDArray[np.bool_] = same_key & (checks[at] == q2)
    # Same first 64 bits, other last 64 at the first match: look at every entry with
    # that key (a 64-bit collision; rare enough for a slow path).
    for i in np.flatnonzero(same_key & ~hit):
        j = int(pos[i])
        while j < len(keys) and keys[j] == q1[i]:
            if checks[j] == q2[i]:
                hit[i] = True
                break
            j += 1
    return hit


def _insert(keys: U64, checks: U64, new: U64) -> tuple[U64, U64]:
    """``keys``/``checks`` with the rows of ``new`` (n, 2) merged in, still sorted."""
    new = new[np.argsort(new[:, 0], kind="stable")]
    pos = np.searchsorted(keys, new[:, 0])
    return np.insert(keys, pos, new[:, 0]), np.insert(checks, pos, new[:, 1])


def _without(keys: U64, checks: U64, fp: U64) -> tuple[U64, U64]:
    drop: list[int] = []
    for k1, k2 in fp:
        j = int(np.searchsorted(keys, k1))
        while j < len(keys) and keys[j] == k1:
            if checks[j] == k2:
                drop.append(j)
                break
            j += 1
    return np.delete(keys, drop), np.delete(checks, drop)


@dataclass(slots=True)
class PaneIdentities:
    """The fingerprints applied in one pane: sorted ``keys`` with aligned ``checks``.

    New fingerprints go to a small sorted *recent* run first, merged into the main run
    once it holds an eighth of it: inserting into a large array moves all of it, so the
    merge is amortised over many batches instead of paid by each.
    """

    keys: U64 = field(default_factory=lambda: _EMPTY)
    checks: U64 = field(default_factory=lambda: _EMPTY)
    recent_keys: U64 = field(default_factory=lambda: _EMPTY)
    recent_checks: U64 = field(default_factory=lambda: _EMPTY)
    fresh: list[U64] = field(default_factory=list)  # (n, 2) added since the last delta
    seqs: list[int] = field(default_factory=list)  # checkpoint deltas stored for it

    def __len__(self) -> int:
        return len(self.keys) + len(self.recent_keys)

    @property
    def nbytes(self) -> int:
        return (
            self.keys.nbytes
            + self.checks.nbytes
            + self.recent_keys.nbytes
            + self.recent_checks.nbytes
        )

    def contains(self, fp: U64) -> npt.NDArray[np.bool_]:
        """Per row of ``fp`` (n, 2): whether the identity is here."""
        q1, q2 = fp[:, 0], fp[:, 1]
        hit = _hits(self.keys, self.checks, q1, q2)
        if len(self.recent_keys):
            hit |= _hits(self.recent_keys, self.recent_checks, q1, q2)
        return hit

    def add(self, fp: U64) -> None:
        """Insert rows of ``fp`` (known to be absent and distinct)."""
        if not len(fp):
            return
        self.recent_keys, self.recent_checks = _insert(self.recent_keys, self.recent_checks, fp)
        if len(self.recent_keys) > max(4096, len(self.keys) // 8):
            merged = np.stack([self.recent_keys, self.recent_checks], axis=1)
            self.keys, self.checks = _insert(self.keys, self.checks, merged)
            self.recent_keys = self.recent_checks = _EMPTY
        self.fresh.append(fp)

    def remove(self, fp: U64) -> None:
        """Take rows of ``fp`` out again (a rollback of the identities not yet durable)."""
        self.keys, self.checks = _without(self.keys, self.checks, fp)
        self.recent_keys, self.recent_checks = _without(self.recent_keys, self.recent_checks, fp)


def _first_occurrences(fp: U64) -> npt.NDArray[np.bool_]:
    """Per row: True unless an earlier row has the same 128 bits."""
    n = len(fp)
    if n < 2:
        return np.ones(n, dtype=bool)
    order = np.lexsort((np.arange(n), fp[:, 1], fp[:, 0]))
    s = fp[order]
    repeat = np.zeros(n, dtype=bool)
    repeat[1:] = (s[1:, 0] == s[:-1, 0]) & (s[1:, 1] == s[:-1, 1])
    first = np.ones(n, dtype=bool)
    first[order[repeat]] = False
    return first


class IdentityIndex:
    """The identities applied by one source partition, by pane."""

    def __init__(self) -> None:
        self.panes: dict[int, PaneIdentities] = {}
        self.seq = 0  # sequence number of the last delta taken

    def __len__(self) -> int:
        return sum(len(p) for p in self.panes.values())

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.panes.values())

    def admit(self, panes: Sequence[int], fp: U64) -> npt.NDArray[np.bool_]:
        """Per event (pane, fingerprint), in order: True for the first time an identity is
        seen (it is recorded now), False for a repeat (of an earlier batch or this one)."""
        first = _first_occurrences(fp)
        pane_of = np.asarray(panes, dtype=np.int64)
        distinct = np.unique(pane_of)
        for pane in distinct.tolist():
            idx = np.flatnonzero(pane_of == pane) if len(distinct) > 1 else np.arange(len(fp))
            bucket = self.panes.get(pane)
            if bucket is None:
                bucket = self.panes[pane] = PaneIdentities()
            q = fp[idx]
            known = bucket.contains(q)
            first[idx[known]] = False
            bucket.add(q[first[idx]])
        return first

    def discard_fresh(self) -> None:
        """Forget every identity added since the last delta (not durable yet)."""
        for pane in list(self.panes):
            bucket = self.panes[pane]
            for fp in bucket.fresh:
                bucket.remove(fp)
            bucket.fresh.clear()
            if not len(bucket) and not bucket.seqs:
                del self.panes[pane]

    def take_deltas(self, horizon_ms: int | None) -> list[tuple[int, int, bytes | None]]:
        """(pane, seq, fingerprints or None for a tombstone) to store: the identities added
        since the last call, and tombstones for the panes that end at or before
        ``horizon_ms`` (forgotten now)."""
        out: list[tuple[int, int, bytes | None]] = []
        if horizon_ms is not None:
            for pane in [p for p in self.panes if p < horizon_ms]:
                out.extend((pane, s, None) for s in self.panes.pop(pane).seqs)
        fresh = [(p, b) for p, b in self.panes.items() if b.fresh]
        if fresh:
            self.seq += 1
            for pane, bucket in fresh:
                body = np.concatenate(bucket.fresh).astype("<u8").tobytes()
                bucket.fresh.clear()
                bucket.seqs.append(self.seq)
                out.append((pane, self.seq, body))
        return out

    # -- durable state ------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Which deltas make up the state (the deltas themselves are stored apart)."""
        return {"seq": self.seq, "panes": [[p, b.seqs] for p, b in self.panes.items() if b.seqs]}

    def restore(self, snap: dict[str, Any], deltas: dict[tuple[int, int], bytes]) -> None:
        """From :meth:`snapshot` and the stored deltas ((pane, seq) -> fingerprints)."""
        self.seq = int(snap["seq"])
        self.panes = {}
        for pane, seqs in snap["panes"]:
            parts = [deltas[(int(pane), int(s))] for s in seqs]
            fp = np.frombuffer(b"".join(parts), dtype="<u8").reshape(-1, 2).astype(np.uint64)
            order = np.argsort(fp[:, 0], kind="stable")
            self.panes[int(pane)] = PaneIdentities(
                keys=fp[order, 0].copy(), checks=fp[order, 1].copy(), seqs=[int(s) for s in seqs]
            )
