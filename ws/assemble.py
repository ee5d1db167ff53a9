"""What a snapshot frame holds: the database's records merged with the server's memory.

Pure assembly over a :class:`~ws.snapshot.SnapshotSource` and the :class:`~ws.hub.Hub`;
the server (:mod:`ws.server`) bounds the result and sends it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from events.records import AlertRecord, KpiRecord
from ws.hub import Hub, kpi_key, newer_kpi, window_key
from ws.protocol import MAX_HISTORY_HOURS
from ws.session import LoadSnapshot
from ws.snapshot import SnapshotSource, alert_snapshot_order


async def kpi_snapshot(
    source: SnapshotSource, hub: Hub, out: LoadSnapshot
) -> tuple[list[KpiRecord], list[Any]]:
    spec = out.sub.spec
    exact_kpis = list(spec.kpis) if spec.kpis and not any("*" in k for k in spec.kpis) else None
    # Scope patterns go to the database as they are (storage.queries turns "*" into LIKE).
    scopes = list(spec.scopes) if spec.scopes else None
    latest: dict[Any, KpiRecord] = {}
    for rec in await source.latest_kpis(exact_kpis, scopes):
        if out.sub.matches_record(rec):
            latest[kpi_key(rec)] = rec
    for rec in hub.memory_latest(out.sub):
        have = latest.get(kpi_key(rec))
        if have is None or newer_kpi(rec, have):
            latest[kpi_key(rec)] = rec
    items: list[KpiRecord] = []
    if spec.windows_since_ms is not None:
        items = await windows_since(source, hub, out, exact_kpis, scopes, spec.windows_since_ms)
        covered = {window_key(r) for r in items}
        items += [r for r in latest.values() if window_key(r) not in covered]
    else:
        items = list(latest.values())
    since = datetime.now(UTC) - timedelta(hours=spec.history_hours)
    history: list[dict[str, Any]] = []
    for req in spec.history:
        points: dict[datetime, KpiRecord] = {}
        for rec in await source.kpi_history(req.kpi, req.scope, since):
            points[rec.window_start] = rec
        for rec in hub.memory_series(req.kpi, req.scope):
            have = points.get(rec.window_start)
            if rec.window_start >= since and (have is None or rec.revision >= have.revision):
                points[rec.window_start] = rec
        series = [[int(t.timestamp() * 1000), points[t].value] for t in sorted(points)]
        history.append({"kpi": req.kpi, "scope": req.scope, "points": series})
    return items, history


async def windows_since(
    source: SnapshotSource,
    hub: Hub,
    out: LoadSnapshot,
    kpis: list[str] | None,
    scopes: list[str] | None,
    since_ms: int,
) -> list[KpiRecord]:
    """Every 60-s window from ``since_ms`` on (at most 24 h back), the database's merged
    with the server's memory by revision, oldest first."""
    floor = datetime.now(UTC) - timedelta(hours=MAX_HISTORY_HOURS)
    since = max(datetime.fromtimestamp(since_ms / 1000, UTC), floor)
    windows: dict[Any, KpiRecord] = {}
    for rec in await source.kpi_windows(kpis, scopes, since):
        if out.sub.matches_record(rec):
            windows[window_key(rec)] = rec
    for (kpi, scope), series in hub.kpi_series.items():
        if not out.sub.matches_kpi(kpi, scope) or not out.sub.takes_window(60):
            continue  # the series in memory are of 60-s windows
        for rec in series:
            have = windows.get(window_key(rec))
            if rec.window_start >= since and (have is None or rec.revision > have.revision):
                windows[window_key(rec)] = rec
    return sorted(windows.values(), key=lambda r: (r.window_start, r.kpi, r.scope))


async def alert_snapshot(source: SnapshotSource, hub: Hub, out: LoadSnapshot) -> list[AlertRecord]:
    alerts: dict[str, AlertRecord] = {}
    for rec in await source.active_alerts():
        if out.sub.matches_alert(rec):
            alerts[rec.alert_id] = rec
    for rec in hub.memory_alerts(out.sub):
        have = alerts.get(rec.alert_id)
        if have is None or rec.revision >= have.revision:
            alerts[rec.alert_id] = rec
    # The hub knows about clears the database may not have yet.
    for alert_id, rec in list(alerts.items()):
        mem = hub.alerts.get(alert_id)
        if mem is not None and mem.state == "cleared" and mem.revision >= rec.revision:
            del alerts[alert_id]
    return alert_snapshot_order(list(alerts.values()))
