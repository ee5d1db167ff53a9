"""The KPI catalogue compiled for the hot path (sans-I/O).

Each :class:`events.kpis.KpiSpec` becomes a :class:`CompiledKpi`: its ``where`` filter,
the function that folds one event into a :class:`~streams.partials.Partial`, and the
function that turns a merged partial into the KPI value. Specs are indexed by event
type so an event only visits the KPIs that can count it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from events.aqi import us_aqi, vn_aqi
from events.catalogue import EVENT_TYPES
from events.errors import ConfigurationError
from streams import folds
from streams.partials import Partial, Updater

if TYPE_CHECKING:
    from events.kpis import KpiSpec

# The KPI the engine produces itself: events that arrived after the allowed lateness.
LATE_KPI_DOMAIN = "pipeline"

Filter = tuple[tuple[str, frozenset[Any]], ...]


def _matches(data: Mapping[str, Any], flt: Filter) -> bool:
    return all(data.get(name) in allowed for name, allowed in flt)


def _compile_filter(where: Mapping[str, tuple[str, ...]] | None) -> Filter:
    return tuple((k, frozenset(v)) for k, v in (where or {}).items())


def _count(p: Partial, data: dict[str, Any], t_ms: int) -> None:
    p.count += 1


def _value_updater(field: str) -> Updater:
    def update(p: Partial, data: dict[str, Any], t_ms: int) -> None:
        v = data.get(field)
        if v is not None:
            p.add_value(v, t_ms)

    return update


def _sample_updater(field: str) -> Updater:
    def update(p: Partial, data: dict[str, Any], t_ms: int) -> None:
        v = data.get(field)
        if v is not None:
            p.add_sample(v, t_ms)

    return update


def _rate_updater(numerator: Filter) -> Updater:
    def update(p: Partial, data: dict[str, Any], t_ms: int) -> None:
        p.count += 1
        if _matches(data, numerator):
            p.hits += 1

    return update


def _ratio_updater(field: str, denominator: str) -> Updater:
    def update(p: Partial, data: dict[str, Any], t_ms: int) -> None:
        v = data.get(field)
        d = data.get(denominator)
        if v is not None and d is not None:
            p.add_value(v, t_ms)
            p.den += d

    return update


def _aqi(p: Partial, data: dict[str, Any], t_ms: int) -> None:
    p.add_pollutants(data)


def _fold(spec: KpiSpec) -> folds.Fold:
    """The batch form of :func:`_updater` (see :mod:`streams.folds`); checked by then."""
    agg = spec.aggregation
    if agg == "count":
        return folds.count_fold
    if agg in ("sum", "mean", "min", "max", "last"):
        return folds.value_fold(str(spec.field))
    if agg == "rate":
        numerator = _compile_filter(spec.numerator)
        return folds.rate_fold(lambda row: _matches(row, numerator))
    if agg == "ratio":
        return folds.ratio_fold(str(spec.field), str(spec.denominator_field))
    if agg == "quantile":
        return folds.sample_fold(str(spec.field))
    return folds.aqi_fold


def _need(value: str | None, spec: KpiSpec, what: str) -> str:
    if not value:
        raise ConfigurationError(f"KPI {spec.id}: aggregation {spec.aggregation} needs {what}")
    return value


def _updater(spec: KpiSpec) -> Updater:
    agg = spec.aggregation
    if agg == "count":
        return _count
    if agg in ("sum", "mean", "min", "max", "last"):
        return _value_updater(_need(spec.field, spec, "a field"))
    if agg == "rate":
        return _rate_updater(_compile_filter(spec.numerator))
    if agg == "ratio":
        return _ratio_updater(
            _need(spec.field, spec, "a field"),
            _need(spec.denominator_field, spec, "a denominator_field"),
        )
    if agg == "quantile":
        if spec.quantile is None or not 0.0 <= spec.quantile <= 1.0:
            raise ConfigurationError(f"KPI {spec.id}: quantile must be within 0..1")
        return _sample_updater(_need(spec.field, spec, "a field"))
    if agg in ("aqi_vn", "aqi_us"):
        return _aqi
    raise ConfigurationError(f"KPI {spec.id}: unknown aggregation {agg!r}")


def _valuer(spec: KpiSpec) -> Callable[[Partial], float | None]:
    agg = spec.aggregation
    if agg == "count":
        return lambda p: float(p.count)
    if agg == "sum":
        return lambda p: p.sum if p.count else None
    if agg == "mean":
        return lambda p: p.sum / p.count if p.count else None
    if agg == "min":
        return lambda p: p.min
    if agg == "max":
        return lambda p: p.max
    if agg == "last":
        return lambda p: p.last_v
    if agg == "rate":
        return lambda p: 100.0 * p.hits / p.count if p.count else None
    if agg == "ratio":
        return lambda p: 100.0 * p.sum / p.den if p.den else None
    if agg == "quantile":
        q = float(spec.quantile or 0.0)

        def quantile(p: Partial) -> float | None:
            return None if p.sketch is None else p.sketch.get_quantile_value(q)

        return quantile
    aqi_fn = vn_aqi if agg == "aqi_vn" else us_aqi

    def aqi(p: Partial) -> float | None:
        result = aqi_fn(p.means())
        return None if result is None else float(result.value)

    return aqi


def _accumulation(spec: KpiSpec) -> tuple[object, ...]:
    """What a KPI accumulates per pane: KPIs with equal accumulations share one partial
    (e.g. air.aqi.vn and air.aqi.us both need the pollutant means; mean/min/max of one
    field need the same count/sum/min/max), so the hot path folds each event once."""
    agg = spec.aggregation
    kind: tuple[object, ...]
    if agg in ("sum", "mean", "min", "max", "last"):
        kind = ("value", spec.field)
    elif agg in ("aqi_vn", "aqi_us"):
        kind = ("aqi",)
    elif agg == "rate":
        kind = ("rate", _compile_filter(spec.numerator))
    elif agg == "ratio":
        kind = ("ratio", spec.field, spec.denominator_field)
    elif agg == "quantile":
        kind = ("sample", spec.field)
    else:
        kind = (agg,)
    return (spec.event_type, _compile_filter(spec.where), tuple(spec.scopes), *kind)


@dataclass(frozen=True, slots=True)
class CompiledKpi:
    id: str
    domain: str
    event_type: str
    aggregation: str
    where: Filter
    scopes: tuple[str, ...]  # subset of ("city", "district", "station")
    windows: tuple[int, ...]  # seconds, as in the catalogue
    update: Updater
    value: Callable[[Partial], float | None]
    # ``update`` over a whole group of a batch, and the ``update`` it is the batch form
    # of: a KPI whose ``update`` was replaced (tests inject failures so) is folded by
    # calling its ``update`` per event (streams.folds.per_event).
    fold: folds.Fold
    fold_of: Updater
    # min/max/sum of the field are meaningful for value aggregations only
    reports_field_stats: bool

    def record_stats(self, p: Partial) -> tuple[float | None, float | None, float | None]:
        if not self.reports_field_stats or not p.count:
            return None, None, None
        return p.min, p.max, p.sum


def compile_kpi(spec: KpiSpec) -> CompiledKpi:
    for scope in spec.scopes:
        if scope not in ("city", "district", "station"):
            raise ConfigurationError(f"KPI {spec.id}: unknown scope {scope!r}")
    update = _updater(spec)
    return CompiledKpi(
        id=spec.id,
        domain=spec.domain,
        event_type=spec.event_type,
        aggregation=spec.aggregation,
        where=_compile_filter(spec.where),
        scopes=tuple(spec.scopes),
        windows=tuple(sorted(set(spec.windows) | {60})),
        update=update,
        value=_valuer(spec),
        fold=_fold(spec),
        fold_of=update,
        reports_field_stats=spec.aggregation
        in ("sum", "mean", "min", "max", "last", "ratio", "quantile"),
    )


@dataclass(frozen=True, slots=True)
class KpiIndex:
    """Compiled KPIs by id and by the event type they count."""

    by_id: Mapping[str, CompiledKpi]
    # per event type, one KPI per distinct accumulation (the others are its aliases)
    by_type: Mapping[str, tuple[CompiledKpi, ...]]
    aliases: Mapping[str, tuple[str, ...]]  # KPI id -> ids that share its pane partials
    key_field: Mapping[str, str]  # event type -> payload field of the source id
    late: CompiledKpi | None  # the pipeline.late.count KPI, if the catalogue has it

    def folds_for(self, event_type: str) -> tuple[tuple[CompiledKpi, folds.Fold], ...]:
        """The KPIs of ``event_type`` with the batch fold of each."""
        return tuple(
            (ck, ck.fold if ck.fold_of is ck.update else folds.per_event(ck.update))
            for ck in self.by_type.get(event_type, ())
        )

    @classmethod
    def build(cls, specs: Iterable[KpiSpec]) -> KpiIndex:
        by_id: dict[str, CompiledKpi] = {}
        by_type: dict[str, list[CompiledKpi]] = {}
        aliases: dict[str, list[str]] = {}
        primary_of: dict[tuple[object, ...], str] = {}
        late: CompiledKpi | None = None
        for spec in specs:
            ck = compile_kpi(spec)
            by_id[ck.id] = ck
            if ck.domain == LATE_KPI_DOMAIN:
                late = ck
                continue
            if ck.event_type not in EVENT_TYPES:
                raise ConfigurationError(f"KPI {ck.id}: unknown event type {ck.event_type}")
            acc = _accumulation(spec)
            primary = primary_of.get(acc)
            if primary is not None:
                aliases[primary].append(ck.id)
                continue
            primary_of[acc] = ck.id
            aliases[ck.id] = []
            by_type.setdefault(ck.event_type, []).append(ck)
        return cls(
            by_id=by_id,
            by_type={t: tuple(v) for t, v in by_type.items()},
            aliases={k: tuple(v) for k, v in aliases.items() if v},
            key_field={t: et.key_field for t, et in EVENT_TYPES.items()},
            late=late,
        )

    @classmethod
    def from_catalogue(cls) -> KpiIndex:
        from events.kpis import KPI_CATALOGUE

        return cls.build(KPI_CATALOGUE.values())
