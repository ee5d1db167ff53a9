"""The rule catalogue is consistent with the KPI catalogue and with docs/alerts.md."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from events.kpis import KPI_CATALOGUE
from streams.alerts.rules import RULES, ThresholdRule, rules_json, rules_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "alerts.md"


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_every_rule_watches_a_kpi_window_and_scope_the_catalogue_produces(rule: object) -> None:
    spec = KPI_CATALOGUE[rule.kpi]  # type: ignore[attr-defined]
    assert rule.scope in spec.scopes  # type: ignore[attr-defined]
    assert rule.window_seconds in spec.windows  # type: ignore[attr-defined]


def test_rule_ids_are_unique_and_json_round_trips() -> None:
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    assert [d["id"] for d in orjson.loads(orjson.dumps(rules_json()))] == ids


def test_the_doc_table_is_the_generated_one() -> None:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- rules:begin[^>]*-->\n(.*?)<!-- rules:end -->", text, re.S)
    assert match, "docs/alerts.md lacks the rules markers"
    assert match.group(1) == rules_markdown()


def test_a_rule_without_hysteresis_is_refused() -> None:
    with pytest.raises(ValueError, match="hysteresis"):
        ThresholdRule(
            id="x", title_vi="x", title_en="x", kpi="air.aqi.vn", scope="district",
            direction="above", levels=(150.0,), clear_at=150.0, severities=("warning",),
        )  # fmt: skip
