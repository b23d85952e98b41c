"""The chart's Grafana dashboard reads what the operator exposes: every metric a query names is one of
paybill/metrics.py's (or the process collector's), and every controller-runtime and Paybill metric has a panel."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from paybill import metrics

DASHBOARD = Path(__file__).resolve().parents[1] / "charts" / "paybill" / "dashboards" / "paybill.json"
OURS = ("controller_runtime_", "workqueue_", "leader_election_", "paybill_")
PROMQL_WORDS = {"sum", "by", "rate", "increase", "max", "histogram_quantile", "le", "namespace", "without"}


def exposed() -> set[str]:
    """Every series name the operator's registry can expose (histogram and counter suffixes included)."""
    names = {metrics.LEADER_METRIC, metrics.TENANTS_METRIC, metrics.AUDIT_METRIC}
    for family in metrics.REGISTRY.collect():
        names |= {family.name, *(sample.name for sample in family.samples)}
        if family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"}
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def queried(dashboard: dict[str, Any]) -> set[str]:
    """The metric names the dashboard's queries read (identifiers followed by a selector or a range)."""
    found = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found |= set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", target["expr"])) - PROMQL_WORDS
    return found


def base(name: str) -> str:
    return re.sub(r"_(bucket|count|sum)$", "", name)


def test_every_query_reads_a_metric_the_operator_exposes() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert queried(dashboard) - exposed() == set()
    assert queried(dashboard)  # the reader finds names at all


def test_every_operator_metric_has_a_panel() -> None:
    ours = {name for name in exposed() if name.startswith(OURS)}
    families = {base(name) for name in ours}
    shown = {base(name) for name in queried(json.loads(DASHBOARD.read_text()))}
    shown |= {f"{name}_total" for name in shown} | {name.removesuffix("_total") for name in shown}
    assert families - shown == set()


def test_the_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] and dashboard["title"]
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "namespace"}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all('namespace=~"$namespace"' in t["expr"] for t in panel["targets"]), panel["title"]
