"""The Events Paybill posts: where they live and what they carry (kube-apiserver's rules, kubectl's lookups)."""

from __future__ import annotations

import datetime

from paybill.handlers.events import COMPONENT, MAX_MESSAGE, event_body, shorten

NOW = datetime.datetime(2026, 11, 30, 9, 0, 1, 250000, tzinfo=datetime.UTC)


def tenant(namespace: str | None = None) -> dict[str, object]:
    meta = {"name": "acme", "uid": "u-1", "resourceVersion": "7", **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "paybill.dev/v1alpha1", "kind": "Tenant", "metadata": meta}


def test_a_cluster_scoped_objects_event_lives_in_default_with_no_namespace_in_the_reference() -> None:
    event = event_body(tenant(), "Warning", "PlanNotFound", "plan pro not found", "op-0", NOW)
    assert event["metadata"]["namespace"] == "default"
    assert event["involvedObject"] == {
        "apiVersion": "paybill.dev/v1alpha1",
        "kind": "Tenant",
        "name": "acme",
        "uid": "u-1",
        "resourceVersion": "7",
    }  # what kubectl describe selects
    assert (event["reportingComponent"], event["source"], event["reportingInstance"]) == (
        COMPONENT,
        {"component": COMPONENT},
        "op-0",
    )
    assert event["eventTime"] == "2026-11-30T09:00:01.250000Z" and event["lastTimestamp"] == "2026-11-30T09:00:01Z"
    assert event["type"] == "Warning" and event["action"] and event["count"] == 1


def test_a_namespaced_objects_event_lives_in_its_namespace() -> None:
    event = event_body(tenant("tenant-acme"), "Normal", "Installed", "ok", "op-0", NOW)
    assert event["metadata"]["namespace"] == event["involvedObject"]["namespace"] == "tenant-acme"
    assert event["metadata"]["name"].startswith("acme.")


def test_long_messages_keep_both_ends_within_the_limit() -> None:
    message = "start " + "x" * 3000 + " end"
    short = shorten(message)
    assert len(short) <= MAX_MESSAGE and short.startswith("start ") and short.endswith(" end") and "..." in short
    assert shorten("short") == "short"
