"""The chart's side of metrics, readiness and leader election, rendered by the real helm: /metrics and /readyz on
their own port with a readiness probe apart from liveness, the election on by default (kopf's peering CRD with the
CRDs), and, when asked, a ServiceMonitor that reaches the metrics port and the Grafana dashboard's ConfigMap."""

from __future__ import annotations

import json
from typing import Any

from chart.rendering import CHART, find, template


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = find(docs, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_metrics_and_readiness_have_a_port_and_a_probe_apart_from_liveness() -> None:
    container = operator_container(template())
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert f"--metrics-bind-address=:{ports['metrics']}" in container["args"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert ports["metrics"] != ports["health"]


def test_leader_election_is_on_by_default_and_the_peering_crd_comes_with_the_crds() -> None:
    docs = template()
    [deployment] = find(docs, "Deployment")
    env = env_of(operator_container(docs))
    assert deployment["spec"]["replicas"] == 2
    assert env["PAYBILL_PEERING"] == deployment["metadata"]["name"]
    assert env["PAYBILL_PEERING_LIFETIME"] == "30"
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert find(docs, "CustomResourceDefinition", "clusterkopfpeerings.kopf.dev")
    # one replica without an election (more are refused), and no budget (it would keep that one)
    single = {"leaderElection": {"enabled": False}, "replicaCount": 1, "podDisruptionBudget": {"enabled": False}}
    alone = env_of(operator_container(template(single)))
    assert "PAYBILL_PEERING" not in alone and "POD_ID" not in alone


def test_nothing_for_prometheus_or_grafana_unless_asked() -> None:
    docs = template()
    assert not find(docs, "ServiceMonitor")
    assert not [d for d in find(docs, "Service") if d["metadata"]["name"].endswith("-metrics")]
    assert not [d for d in find(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]


def test_the_service_monitor_reaches_the_metrics_port_and_the_dashboard_is_loaded() -> None:
    values = {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}, "interval": "15s"},
            "grafanaDashboard": {"enabled": True},
        }
    }
    docs = template(values)
    [monitor] = find(docs, "ServiceMonitor")
    [service] = [d for d in find(docs, "Service") if d["metadata"]["name"].endswith("-metrics")]
    [deployment] = find(docs, "Deployment")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["interval"] == "15s"
    [port] = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert port["targetPort"] in {p["name"] for p in operator_container(docs)["ports"]}
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    [dashboard] = [d for d in find(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["paybill.json"]) == json.loads((CHART / "dashboards/paybill.json").read_text())
