"""Conformance of the emulated API server with the apiserver behaviours Paybill depends on."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from paybill.kube import EmulatedApiServer, serve_in_thread, tables
from paybill.kube.store import Store

TENANTS = "/apis/paybill.dev/v1alpha1/tenants"
SECRETS = "/api/v1/namespaces/default/secrets"
MERGE = {"Content-Type": "application/merge-patch+json"}


def tenant(name: str = "acme", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "paybill.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"planRef": "pro", **spec},
    }


def secret(name: str = "s1", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, **meta}, "data": {"k": "dg=="}}


class Http:
    """HTTPS as the cluster's admin: a bearer token, the server's CA trusted (as a kubeconfig has them)."""

    def __init__(self, url: str, api: EmulatedApiServer, directory: Path) -> None:
        self.url, self.token = url, api.access.tokens.admin_token
        self.verify = directory / "ca.crt"
        self.verify.write_bytes(api.access.certificate.certificate_authority)

    def __call__(self, method: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return requests.request(
            method, self.url + path, json=body, timeout=10, headers=headers, verify=str(self.verify), **kwargs
        )

    def watch(self, path: str, **params: str) -> Iterator[dict[str, Any]]:
        response = self("GET", path, params={"watch": "true", **params}, stream=True)
        for line in response.iter_lines():
            if line:
                yield json.loads(line)


@pytest.fixture
def http(cluster: Any, tmp_path: Path) -> Http:
    return Http(cluster.url, cluster.api, tmp_path)


def test_discovery_lists_core_groups_and_registered_crds(http: Http) -> None:
    assert http("GET", "/version").json()["gitVersion"].endswith("emulated")
    assert http("GET", "/api").json()["versions"] == ["v1"]
    core = {r["name"] for r in http("GET", "/api/v1").json()["resources"]}
    assert {
        "namespaces",
        "namespaces/status",
        "secrets",
        "configmaps",
        "serviceaccounts",
        "resourcequotas",
        "limitranges",
        "events",
    } <= core
    groups = {g["name"] for g in http("GET", "/apis").json()["groups"]}
    assert {
        "paybill.dev",
        "rbac.authorization.k8s.io",
        "networking.k8s.io",
        "batch",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
        "admissionregistration.k8s.io",
    } <= groups
    paybill = {r["name"]: r for r in http("GET", "/apis/paybill.dev/v1alpha1").json()["resources"]}
    assert paybill["tenants"]["kind"] == "Tenant" and paybill["tenants"]["namespaced"] is False
    assert paybill["agentpolicies"]["namespaced"] is True
    assert "tenants/status" in paybill and paybill["tenants"]["categories"] == ["paybill"]
    assert paybill["tenants"]["shortNames"] == ["tn"]


def test_unknown_resource_is_a_404_status(http: Http) -> None:
    response = http("GET", "/apis/paybill.dev/v1alpha1/nothings")
    assert response.status_code == 404 and response.json()["kind"] == "Status"


def test_create_stamps_identity_and_namespaced_urls_work(http: Http) -> None:
    created = http("POST", SECRETS, secret())
    assert created.status_code == 201
    meta = created.json()["metadata"]
    assert meta["uid"] and meta["resourceVersion"].isdigit() and meta["generation"] == 1
    assert meta["creationTimestamp"].endswith("Z") and meta["namespace"] == "default"
    fetched = http("GET", f"{SECRETS}/s1").json()
    assert fetched["metadata"]["uid"] == meta["uid"]
    assert [i["metadata"]["name"] for i in http("GET", SECRETS).json()["items"]] == ["s1"]
    assert http("GET", "/api/v1/namespaces/default").json()["status"]["phase"] == "Active"
    assert http("POST", SECRETS, secret()).json()["reason"] == "AlreadyExists"
    missing_ns = http("POST", "/api/v1/namespaces/nowhere/secrets", secret())
    assert missing_ns.status_code == 404 and 'namespaces "nowhere" not found' in missing_ns.json()["message"]


def test_resource_versions_increase_and_stale_writes_conflict(http: Http) -> None:
    first = http("POST", TENANTS, tenant()).json()
    updated = http("PUT", f"{TENANTS}/acme", {**first, "spec": {**first["spec"], "displayName": "A"}})
    assert updated.status_code == 200
    assert int(updated.json()["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert updated.json()["metadata"]["generation"] == 2
    stale = http("PUT", f"{TENANTS}/acme", {**first, "spec": {**first["spec"], "displayName": "B"}})
    assert stale.status_code == 409 and stale.json()["reason"] == "Conflict"
    stale_patch = http(
        "PATCH",
        f"{TENANTS}/acme",
        {"metadata": {"resourceVersion": first["metadata"]["resourceVersion"]}, "spec": {"displayName": "C"}},
        headers=MERGE,
    )
    assert stale_patch.status_code == 409
    no_version = http("PUT", f"{TENANTS}/acme", tenant(displayName="D"))
    assert no_version.status_code == 422 and "resourceVersion" in no_version.json()["message"]


def test_status_subresource_is_separate_from_spec(http: Http) -> None:
    http("POST", TENANTS, {**tenant(), "status": {"phase": "Smuggled"}})
    assert "status" not in http("GET", f"{TENANTS}/acme").json()  # status on create is dropped
    written = http(
        "PATCH", f"{TENANTS}/acme/status", {"status": {"phase": "Active"}, "spec": {"planRef": "x"}}, headers=MERGE
    ).json()
    assert written["status"]["phase"] == "Active"
    assert written["spec"]["planRef"] == "pro" and written["metadata"]["generation"] == 1
    spec_write = http(
        "PATCH", f"{TENANTS}/acme", {"spec": {"displayName": "Acme"}, "status": {"phase": "X"}}, headers=MERGE
    ).json()
    assert spec_write["status"]["phase"] == "Active" and spec_write["metadata"]["generation"] == 2


def test_schema_validation_answers_422_with_field_paths(http: Http) -> None:
    response = http("POST", TENANTS, tenant(planRef="Bad_Name", deletionPolicy="shred", suspended="yes"))
    assert response.status_code == 422
    body = response.json()
    assert body["reason"] == "Invalid" and body["details"]["kind"] == "Tenant"
    fields = {cause["field"]: cause["reason"] for cause in body["details"]["causes"]}
    assert fields == {
        "spec.planRef": "FieldValueInvalid",
        "spec.deletionPolicy": "FieldValueNotSupported",
        "spec.suppended".replace("pp", "sp"): "FieldValueTypeInvalid",
    }
    required = http("POST", TENANTS, {**tenant(), "spec": {}}).json()
    assert required["details"]["causes"] == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.planRef"}
    ]


def test_defaults_are_applied_and_unknown_fields_pruned_or_refused(http: Http) -> None:
    created = http("POST", TENANTS, {**tenant(), "spec": {"planRef": "pro", "colour": "blue"}}).json()
    assert created["spec"] == {
        "planRef": "pro",
        "displayName": "",
        "suspended": False,
        "deletionPolicy": "snapshot",
        "offboard": False,
    }
    strict = http("POST", TENANTS + "?fieldValidation=Strict", tenant("b", colour="blue"))
    assert strict.status_code == 400 and 'unknown field "spec.colour"' in strict.json()["message"]


def test_cel_rules_including_transition_rules(http: Http) -> None:
    http("POST", TENANTS, tenant(namespace="tenant-one"))
    moved = http("PATCH", f"{TENANTS}/acme", {"spec": {"namespace": "tenant-two"}}, headers=MERGE)
    assert moved.status_code == 422 and "namespace is fixed when the Tenant is created" in moved.json()["message"]
    policy = {
        "apiVersion": "paybill.dev/v1alpha1",
        "kind": "AgentPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "subjects": [{"serviceAccount": "tenant-agent", "agent": "agent:a"}],
            "rules": [
                {"id": "r", "effect": "allow", "actions": ["select"], "tables": ["t"]},
                {"id": "r", "effect": "deny", "actions": ["delete"], "tables": ["t"]},
            ],
        },
    }
    duplicate = http("POST", "/apis/paybill.dev/v1alpha1/namespaces/default/agentpolicies", policy)
    assert duplicate.status_code == 422 and duplicate.json()["message"].endswith(
        'spec.rules[1]: Duplicate value: map[string]interface {}{"id":"r"}'
    )


def test_patch_flavours(http: Http) -> None:
    http("POST", SECRETS, secret(labels={"a": "1", "b": "2"}))
    merged = http("PATCH", f"{SECRETS}/s1", {"metadata": {"labels": {"a": None, "c": "3"}}}, headers=MERGE)
    assert merged.json()["metadata"]["labels"] == {"b": "2", "c": "3"}
    ops = [{"op": "add", "path": "/metadata/labels/d", "value": "4"}, {"op": "remove", "path": "/data/k"}]
    patched = http("PATCH", f"{SECRETS}/s1", ops, headers={"Content-Type": "application/json-patch+json"})
    assert patched.json()["metadata"]["labels"]["d"] == "4" and patched.json()["data"] == {}
    failing = http(
        "PATCH",
        f"{SECRETS}/s1",
        [{"op": "test", "path": "/type", "value": "nope"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert failing.status_code == 422
    http(
        "POST",
        "/apis/batch/v1/namespaces/default/jobs",
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j"},
            "spec": {
                "template": {"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}}
            },
        },
    )
    strategic = http(
        "PATCH",
        "/apis/batch/v1/namespaces/default/jobs/j",
        {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "y:2"}]}}}},
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    ).json()
    assert [(c["name"], c["image"]) for c in strategic["spec"]["template"]["spec"]["containers"]] == [
        ("a", "x:1"),
        ("b", "y:2"),
    ]


def test_dry_run_validates_but_persists_nothing(http: Http) -> None:
    assert http("POST", TENANTS + "?dryRun=All", tenant()).status_code == 201
    assert http("GET", f"{TENANTS}/acme").status_code == 404
    assert http("POST", TENANTS + "?dryRun=All", tenant(planRef="BAD")).status_code == 422
    http("POST", TENANTS, tenant())
    assert http("DELETE", f"{TENANTS}/acme?dryRun=All").status_code == 200
    assert http("GET", f"{TENANTS}/acme").status_code == 200


def test_dry_run_in_delete_options_deletes_nothing(http: Http) -> None:
    """kubectl sends dryRun in the DeleteOptions body, not in the query string."""
    http("POST", TENANTS, tenant())
    http("POST", SECRETS, secret())
    options = {"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"]}
    assert http("DELETE", f"{TENANTS}/acme", options).json()["metadata"]["name"] == "acme"
    assert [s["metadata"]["name"] for s in http("DELETE", SECRETS, options).json()["items"]] == ["s1"]
    assert http("GET", f"{TENANTS}/acme").status_code == 200
    assert http("GET", f"{SECRETS}/s1").status_code == 200
    refused = http("DELETE", f"{TENANTS}/acme", {**options, "dryRun": ["Some"]})
    assert refused.status_code == 422 and refused.json()["message"] == (
        'DeleteOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: []string{"Some"}: supported values: "All"'
    )
    assert http("POST", TENANTS + "?dryRun=Some", tenant("other")).status_code == 422
    assert http("DELETE", SECRETS, {"kind": "DeleteOptions", "apiVersion": "v1"}).status_code == 200
    assert http("GET", f"{SECRETS}/s1").status_code == 404


def test_immortal_namespaces_refuse_deletion_even_in_a_collection(http: Http) -> None:
    refused = http("DELETE", "/api/v1/namespaces/default")
    assert refused.status_code == 403 and refused.json()["reason"] == "Forbidden"
    assert refused.json()["message"] == 'namespaces "default" is forbidden: this namespace may not be deleted'
    assert refused.json()["details"] == {"name": "default", "kind": "namespaces"}
    assert http("DELETE", "/api/v1/namespaces", {"dryRun": ["All"]}).status_code == 403
    assert http("GET", "/api/v1/namespaces/default").json()["status"]["phase"] == "Active"


def test_finalizers_hold_deletion_until_removed(http: Http) -> None:
    http("POST", TENANTS, {**tenant(), "metadata": {"name": "acme", "finalizers": ["paybill.dev/finalizer"]}})
    marked = http("DELETE", f"{TENANTS}/acme").json()
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["generation"] == 2
    assert http("GET", f"{TENANTS}/acme").status_code == 200
    refused = http(
        "PATCH", f"{TENANTS}/acme", {"metadata": {"finalizers": ["a", "paybill.dev/finalizer"]}}, headers=MERGE
    )
    assert refused.status_code == 422 and "no new finalizers" in refused.json()["message"]
    http("PATCH", f"{TENANTS}/acme", {"metadata": {"finalizers": None}}, headers=MERGE)
    assert http("GET", f"{TENANTS}/acme").status_code == 404


def test_namespace_deletion_removes_contents_and_waits_for_their_finalizers(http: Http) -> None:
    http("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t1"}})
    http("POST", "/api/v1/namespaces/t1/secrets", secret("plain"))
    http("POST", "/api/v1/namespaces/t1/secrets", secret("held", finalizers=["x/y"]))
    deleting = http("DELETE", "/api/v1/namespaces/t1").json()
    assert deleting["status"]["phase"] == "Terminating"
    assert http("GET", "/api/v1/namespaces/t1/secrets/plain").status_code == 404
    assert http("POST", "/api/v1/namespaces/t1/secrets", secret("late")).status_code == 403
    assert http("GET", "/api/v1/namespaces/t1").status_code == 200
    http("PATCH", "/api/v1/namespaces/t1/secrets/held", {"metadata": {"finalizers": []}}, headers=MERGE)
    assert http("GET", "/api/v1/namespaces/t1").status_code == 404


def test_owner_references_cascade(http: Http) -> None:
    owner = http("POST", TENANTS, tenant()).json()
    ref = {"apiVersion": "paybill.dev/v1alpha1", "kind": "Tenant", "name": "acme", "uid": owner["metadata"]["uid"]}
    http(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant-acme", "ownerReferences": [ref]}},
    )
    http(
        "POST",
        "/api/v1/namespaces/tenant-acme/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
    )
    http("DELETE", f"{TENANTS}/acme")
    assert http("GET", "/api/v1/namespaces/tenant-acme").status_code == 404
    assert http("GET", "/api/v1/namespaces/tenant-acme/configmaps/c").status_code == 404


def test_metadata_limits(http: Http) -> None:
    big = http("POST", SECRETS, secret(annotations={"a": "x" * 300_000}))
    assert big.status_code == 422 and big.json()["details"]["causes"][0]["field"] == "metadata.annotations"
    bad_name = http("POST", SECRETS, secret("Not_Valid"))
    assert bad_name.status_code == 422 and bad_name.json()["details"]["causes"][0]["field"] == "metadata.name"


def test_watch_replays_from_a_resource_version_then_streams(http: Http) -> None:
    start = http("POST", TENANTS, tenant("a")).json()["metadata"]["resourceVersion"]
    http("POST", TENANTS, tenant("b"))
    http("PATCH", f"{TENANTS}/a", {"spec": {"displayName": "A"}}, headers=MERGE)
    http("DELETE", f"{TENANTS}/b")
    events = http.watch(TENANTS, resourceVersion=start, timeoutSeconds="5")
    seen = [(e["type"], e["object"]["metadata"]["name"]) for _, e in zip(range(3), events, strict=False)]
    assert seen == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    later = threading.Timer(0.3, lambda: http("POST", TENANTS, tenant("c")))
    later.start()
    assert next(events)["object"]["metadata"]["name"] == "c"


def test_watch_without_version_lists_first_and_honours_field_selectors(http: Http) -> None:
    http("POST", TENANTS, tenant("a"))
    http("POST", TENANTS, tenant("b"))
    events = http.watch(TENANTS, fieldSelector="metadata.name=b", timeoutSeconds="1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b")]


def test_watch_bookmarks_and_expired_versions(tmp_path: Path) -> None:
    with serve_in_thread(api=EmulatedApiServer(bookmark_interval=0.2, store=Store(history=2))) as (api, url):
        http = Http(url, api, tmp_path)
        for name in ("a", "b", "c", "d"):
            http("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        events = list(
            http.watch("/api/v1/namespaces", resourceVersion="2", allowWatchBookmarks="true", timeoutSeconds="1")
        )
        assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410
        live = list(
            http.watch(
                "/api/v1/namespaces",
                resourceVersion=str(api.store.revision),
                allowWatchBookmarks="true",
                timeoutSeconds="1",
            )
        )
        assert live and all(e["type"] == "BOOKMARK" for e in live)
        assert live[-1]["object"]["metadata"]["resourceVersion"] == str(api.store.revision)


def test_crd_registration_serves_and_removes_kinds(http: Http) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 1}}}
                            },
                        }
                    },
                }
            ],
        },
    }
    created = http("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd).json()
    assert {c["type"] for c in created["status"]["conditions"]} == {"Established", "NamesAccepted"}
    widgets = "/apis/example.com/v1/namespaces/default/widgets"
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 0}}
    assert http("POST", widgets, widget).status_code == 422
    assert http("POST", widgets, {**widget, "spec": {"size": 2}}).status_code == 201
    http("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
    assert http("GET", widgets).status_code == 404


class _Webhook(BaseHTTPRequestHandler):
    reviews: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        self.reviews.append({**request, "path": self.path})
        response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
        if self.path == "/validate" and request["object"]["spec"].get("displayName") == "forbidden":
            response = {"uid": request["uid"], "allowed": False, "status": {"code": 403, "message": "no way"}}
        if self.path == "/mutate":
            patch = [{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}]
            response.update(patchType="JSONPatch", patch=base64.b64encode(json.dumps(patch).encode()).decode())
        body = json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Webhook.reviews = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _configuration(kind: str, name: str, url: str, failure: str = "Fail") -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": f"{name}.paybill.dev",
                "clientConfig": {"url": url},
                "failurePolicy": failure,
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 2,
                "rules": [
                    {
                        "apiGroups": ["paybill.dev"],
                        "apiVersions": ["*"],
                        "resources": ["tenants"],
                        "operations": ["CREATE", "UPDATE"],
                        "scope": "*",
                    }
                ],
            }
        ],
    }


def test_validating_webhooks_are_called_and_can_deny(http: Http, webhook: str) -> None:
    http(
        "POST",
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        _configuration("ValidatingWebhookConfiguration", "v", f"{webhook}/validate"),
    )
    assert http("POST", TENANTS, tenant("ok")).status_code == 201
    denied = http("POST", TENANTS, tenant("no", displayName="forbidden"))
    assert denied.status_code == 403
    assert denied.json()["message"] == 'admission webhook "v.paybill.dev" denied the request: no way'
    assert not denied.json().get("reason")  # the webhook gave none (kubectl: "Error from server: ...")
    assert [r["operation"] for r in _Webhook.reviews] == ["CREATE", "CREATE"]
    assert _Webhook.reviews[0]["object"]["spec"]["deletionPolicy"] == "snapshot"  # after defaulting
    http("PATCH", f"{TENANTS}/ok", {"spec": {"displayName": "x"}}, headers=MERGE)
    assert (
        _Webhook.reviews[-1]["operation"] == "UPDATE" and _Webhook.reviews[-1]["oldObject"]["spec"]["displayName"] == ""
    )


def test_mutating_webhooks_patch_the_object(http: Http, webhook: str) -> None:
    http(
        "POST",
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
        _configuration("MutatingWebhookConfiguration", "m", f"{webhook}/mutate"),
    )
    assert http("POST", TENANTS, tenant()).json()["metadata"]["labels"] == {"mutated": "yes"}


def test_a_generated_name_is_made_between_the_mutating_and_the_validating_webhooks(http: Http, webhook: str) -> None:
    """As kube-apiserver: mutating webhooks see a generateName create without a name (the name is made, and
    metadata validated, when the object is about to be stored), validating webhooks see the name made."""
    for kind, name, path in (("Mutating", "m", "mutate"), ("Validating", "v", "validate")):
        http(
            "POST",
            f"/apis/admissionregistration.k8s.io/v1/{kind.lower()}webhookconfigurations",
            _configuration(f"{kind}WebhookConfiguration", name, f"{webhook}/{path}"),
        )
    body = tenant()
    body["metadata"] = {"generateName": "gen-"}
    created = http("POST", TENANTS, body)
    assert created.status_code == 201, created.text
    made = created.json()["metadata"]["name"]
    mutating, validating = _Webhook.reviews
    assert mutating["path"] == "/mutate" and not mutating["object"]["metadata"].get("name")
    assert validating["path"] == "/validate" and validating["object"]["metadata"]["name"] == made
    assert made.startswith("gen-") and len(made) == len("gen-") + 5


@pytest.mark.parametrize(
    "key",
    ["a/b/c", "bad key", "paybill.dev/approve-x.", "paybill.dev/" + "n" * 64, "Upper.Case/x", "/x"],
)
def test_label_and_annotation_keys_are_qualified_names(http: Http, key: str) -> None:
    for field in ("annotations", "labels"):
        body = tenant(f"keys-{field}")
        body["metadata"][field] = {key: "v"}
        refused = http("POST", TENANTS, body)
        assert refused.status_code == 422 and f"metadata.{field}" in refused.text, (field, key, refused.text)
    assert (
        http(
            "POST",
            TENANTS,
            {
                **tenant("keys-ok"),
                "metadata": {
                    "name": "keys-ok",
                    "annotations": {
                        "paybill.dev/approve-fix.alice": "x",
                        "kopf.zalando.org/last-handled-configuration": "{}",
                    },
                },
            },
        ).status_code
        == 201
    )


def test_a_long_generate_name_is_cut_to_leave_a_name_of_63(http: Http) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "p" * 100}}
    created = http("POST", "/api/v1/namespaces/default/configmaps", body)
    assert created.status_code == 201, created.text
    assert len(created.json()["metadata"]["name"]) == 63


def test_a_create_of_a_name_taken_is_refused_after_the_webhooks(http: Http, webhook: str) -> None:
    """kube-apiserver asks every webhook before the store says the name is taken (409): a webhook with side effects
    sees creates that are then refused."""
    http(
        "POST",
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        _configuration("ValidatingWebhookConfiguration", "v", f"{webhook}/validate"),
    )
    assert http("POST", TENANTS, tenant("taken")).status_code == 201
    again = http("POST", TENANTS, tenant("taken"))
    assert again.status_code == 409 and again.json()["reason"] == "AlreadyExists"
    assert [r["operation"] for r in _Webhook.reviews] == ["CREATE", "CREATE"]


def test_webhook_failure_policy(http: Http) -> None:
    dead = "http://127.0.0.1:9/validate"
    http(
        "POST",
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        _configuration("ValidatingWebhookConfiguration", "ignore", dead, failure="Ignore"),
    )
    assert http("POST", TENANTS, tenant("a")).status_code == 201
    http(
        "POST",
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        _configuration("ValidatingWebhookConfiguration", "fail", dead, failure="Fail"),
    )
    failed = http("POST", TENANTS, tenant("b"))
    assert failed.status_code == 500 and 'failed calling webhook "fail.paybill.dev"' in failed.json()["message"]
    assert http("GET", f"{TENANTS}/b").status_code == 404


def test_webhooks_only_reach_loopback(http: Http) -> None:
    http(
        "POST",
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        _configuration("ValidatingWebhookConfiguration", "far", "https://203.0.113.7/validate"),
    )
    refused = http("POST", TENANTS, tenant())
    assert refused.status_code == 500 and "not a loopback address" in refused.json()["message"]


def test_openapi_documents_describe_the_crds(http: Http) -> None:
    root = http("GET", "/openapi/v3").json()["paths"]
    document = http("GET", root["apis/paybill.dev/v1alpha1"]["serverRelativeURL"]).json()
    schema = document["components"]["schemas"]["dev.paybill.v1alpha1.Tenant"]
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": "paybill.dev", "version": "v1alpha1", "kind": "Tenant"}
    ]
    assert schema["properties"]["spec"]["properties"]["planRef"]["description"]
    patch_op = document["paths"]["/apis/paybill.dev/v1alpha1/tenants/{name}"]["patch"]
    assert {"name": "fieldValidation", "in": "query"}.items() <= patch_op["parameters"][0].items()
    v2 = http("GET", "/openapi/v2", headers={"Accept": "application/json"}).json()
    assert "dev.paybill.v1alpha1.Plan" in v2["definitions"]


def test_server_side_printing_uses_printer_columns(http: Http) -> None:
    http("POST", TENANTS, tenant())
    http(
        "PATCH",
        f"{TENANTS}/acme/status",
        {
            "status": {
                "phase": "Active",
                "isolation": "pooled",
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "R", "message": "", "lastTransitionTime": ""}
                ],
            }
        },
        headers=MERGE,
    )
    table = http("GET", TENANTS, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}).json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Plan", "Isolation", "Phase", "Ready", "Age"]
    assert table["rows"][0]["cells"][:5] == ["acme", "pro", "pooled", "Active", "True"]


def test_table_rows_carry_what_include_object_asks_for(http: Http) -> None:
    http("POST", TENANTS, tenant())
    as_table = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    for query, kind in (
        ("", "PartialObjectMetadata"),
        ("?includeObject=Metadata", "PartialObjectMetadata"),
        ("?includeObject=Object", "Tenant"),
    ):
        for path in (TENANTS, f"{TENANTS}/acme"):
            table = http("GET", path + query, headers=as_table).json()
            assert table["kind"] == "Table" and len(table["rows"]) == 1, path + query
            row = table["rows"][0]
            assert row["object"]["kind"] == kind and row["object"]["metadata"]["name"] == "acme"
            assert ("spec" in row["object"]) == (kind == "Tenant")
    assert "object" not in http("GET", f"{TENANTS}?includeObject=None", headers=as_table).json()["rows"][0]
    refused = http("GET", f"{TENANTS}/acme?includeObject=Everything", headers=as_table)
    assert refused.status_code == 400 and refused.json()["message"] == 'unrecognized includeObject value: "Everything"'
    assert http("GET", f"{TENANTS}/acme").json()["kind"] == "Tenant"


def test_events_select_and_print_under_both_api_groups(http: Http) -> None:
    regarding = {"apiVersion": "paybill.dev/v1alpha1", "kind": "Tenant", "name": "acme", "uid": "u-1"}
    http(
        "POST",
        "/api/v1/namespaces/default/events",
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "core"},
            "involvedObject": regarding,
            "type": "Warning",
            "reason": "PlanNotFound",
            "message": "plan pro not found",
            "count": 3,
            "source": {"component": "paybill"},
            "lastTimestamp": "2026-01-01T00:00:00Z",
        },
    )
    http(
        "POST",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "v1"},
            "regarding": regarding,
            "type": "Normal",
            "reason": "Active",
            "note": "tenant is active",
            "action": "Reconcile",
            "reportingController": "paybill.dev/operator",
            "reportingInstance": "op-1",
            "eventTime": "2026-01-01T00:00:00.000000Z",
        },
    )
    as_table = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    core = http("GET", "/api/v1/events?fieldSelector=involvedObject.uid%3Du-1,source%3Dpaybill", headers=as_table)
    assert [c["name"] for c in core.json()["columnDefinitions"]][:4] == ["Last Seen", "Type", "Reason", "Object"]
    assert core.json()["rows"][0]["cells"][1:9] == [
        "Warning",
        "PlanNotFound",
        "tenant/acme",
        "",
        "paybill",
        "plan pro not found",
        "<unknown>",
        3,
    ]
    v1 = http(
        "GET",
        "/apis/events.k8s.io/v1/events?fieldSelector=regarding.name%3Dacme,reportingController%3Dpaybill.dev/operator",
        headers=as_table,
    ).json()
    assert v1["rows"][0]["cells"][1:7] == [
        "Normal",
        "Active",
        "tenant/acme",
        "",
        "paybill.dev/operator, op-1",
        "tenant is active",
    ]
    refused = http("GET", "/apis/events.k8s.io/v1/events?fieldSelector=involvedObject.name%3Dacme")
    assert refused.status_code == 400 and refused.json()["message"] == "field label not supported: involvedObject.name"


def test_core_and_events_k8s_io_events_are_one_collection(http: Http) -> None:
    core_events, v1_events = "/api/v1/namespaces/default/events", "/apis/events.k8s.io/v1/namespaces/default/events"
    regarding = {"apiVersion": "paybill.dev/v1alpha1", "kind": "Tenant", "name": "acme", "uid": "u-1"}
    http(
        "POST",
        core_events,
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "a"},
            "involvedObject": regarding,
            "message": "from kopf",
            "count": 2,
            "source": {"component": "kopf"},
            "firstTimestamp": "2026-01-01T00:00:00Z",
        },
    )
    seen = http("GET", f"{v1_events}/a").json()
    assert seen["apiVersion"] == "events.k8s.io/v1" and seen["regarding"] == regarding
    assert (seen["note"], seen["deprecatedCount"], seen["deprecatedSource"]) == ("from kopf", 2, {"component": "kopf"})
    assert seen["deprecatedFirstTimestamp"] == "2026-01-01T00:00:00Z" and "message" not in seen
    http(
        "POST",
        v1_events,
        {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "b"},
            "regarding": regarding,
            "note": "from client-go",
            "reportingController": "paybill.dev/op",
            "reportingInstance": "op-1",
            "action": "Reconcile",
            "type": "Normal",
            "reason": "Synced",
            "eventTime": "2026-01-01T00:00:00.000000Z",
        },
    )
    core = http("GET", f"{core_events}/b").json()
    assert core["apiVersion"] == "v1" and core["message"] == "from client-go"
    assert core["involvedObject"] == regarding and core["reportingComponent"] == "paybill.dev/op"
    assert http("PATCH", f"{v1_events}/a", {"note": "edited"}, headers=MERGE).json()["note"] == "edited"
    assert http("GET", f"{core_events}/a").json()["message"] == "edited"
    by_core = http("GET", "/api/v1/events?fieldSelector=reportingComponent%3Dpaybill.dev/op").json()["items"]
    by_v1 = http("GET", "/apis/events.k8s.io/v1/events?fieldSelector=source%3Dkopf").json()["items"]
    assert [e["metadata"]["name"] for e in by_core] == ["b"] and [e["metadata"]["name"] for e in by_v1] == ["a"]
    assert by_v1[0]["apiVersion"] == "events.k8s.io/v1" and by_v1[0]["note"] == "edited"
    http("DELETE", f"{v1_events}/b")
    assert http("GET", f"{core_events}/b").status_code == 404


def test_events_are_validated_as_kube_apiserver_does(http: Http) -> None:
    core_events = "/api/v1/namespaces/{}/events"
    tenant_ref = {"apiVersion": "paybill.dev/v1alpha1", "kind": "Tenant", "name": "acme", "uid": "u-1"}
    http("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})

    def post(namespace: str, name: str, **fields: Any) -> requests.Response:
        return http(
            "POST",
            core_events.format(namespace),
            {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name}, **fields},
        )

    assert post("default", "legacy", involvedObject=tenant_ref, reason="R").status_code == 201
    elsewhere = post("team", "elsewhere", involvedObject=tenant_ref, reason="R")
    assert elsewhere.status_code == 422 and elsewhere.json()["message"] == (
        'Event "elsewhere" is invalid: involvedObject.namespace: Invalid value: "": does not match event.namespace'
    )
    kopf_like = {
        "involvedObject": {**tenant_ref, "namespace": "default"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingComponent": "kopf",
        "reportingInstance": "dev",
        "action": "Action?",
        "reason": "R",
    }
    assert post("default", "kopf", **kopf_like).status_code == 201
    unreported = post("default", "unreported", **{**kopf_like, "reportingComponent": "", "action": ""})
    assert unreported.status_code == 422
    assert [c["field"] for c in unreported.json()["details"]["causes"]] == ["reportingComponent", "action"]
    strict = http(
        "POST",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "strict"},
            "regarding": tenant_ref,
            "reportingController": "paybill.dev/operator",
            "reportingInstance": "op-1",
            "action": "Reconcile",
            "reason": "R",
            "type": "Odd",
            "deprecatedCount": 2,
        },
    )
    assert strict.status_code == 422 and strict.json()["message"].startswith('Event.events.k8s.io "strict" is invalid')
    assert {c["field"] for c in strict.json()["details"]["causes"]} == {"eventTime", "type", "deprecatedCount"}


@pytest.mark.parametrize(
    ("seconds", "printed"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (200, "3m20s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (5 * 3600 + 600, "5h10m"),
        (20 * 3600, "20h"),
        (3 * 86400, "3d"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (30 * 86400, "30d"),
        (2 * 365 * 86400 + 10 * 86400, "2y10d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_ages_print_as_apimachinery_human_duration(seconds: int, printed: str) -> None:
    assert tables.human_duration(seconds) == printed


def test_kmock_reactions_inject_faults_ahead_of_the_emulation(cluster: Any, http: Http) -> None:
    cluster.api["get /apis/paybill.dev/v1alpha1/tenants"] << 503
    assert http("GET", TENANTS).status_code == 503
    assert http("GET", "/apis/paybill.dev/v1alpha1/plans").status_code == 200


def test_emulator_keeps_time_and_memory_bounded_for_idle_watchers(http: Http) -> None:
    started = time.monotonic()
    assert list(http.watch(TENANTS, timeoutSeconds="1")) == []
    assert time.monotonic() - started < 5  # the stream ends at the server-side timeout instead of hanging
