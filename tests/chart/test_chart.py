"""The Helm chart as the real helm 3.17 lints and renders it: the values schema refuses what it does not know, each
value set renders what it says, the operator's Pod stays hardened, the CRDs are the generated ones, the webhooks are
the ones the operator serves, and people get per-kind roles."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonschema
import kopf
import pytest
import yaml
from cryptography import x509

import paybill.handlers  # noqa: F401  (registers the admission handlers whose ids the chart names)
from paybill.api import RESOURCES
from paybill.api.crdgen import all_crds
from paybill.handlers.admission import CONFIGURATION, STAMP_ID, VALIDATE_ID, webhook_name, webhook_path
from paybill.workflows.approvals import APPROVE_VERB, APPROVER_ROLE, approver_cluster_role

from .release import MANIFEST, render
from .rendering import CHART, NAMESPACE, RELEASE, find, run_helm, template, values_args

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())

PRODUCTION: dict[str, Any] = {
    "replicaCount": 3,
    "image": {"digest": "sha256:" + "ab" * 32},
    "imagePullSecrets": [{"name": "registry"}],
    "serviceAccount": {"name": "paybill", "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/p"}},
    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "platform", "effect": "NoSchedule"}],
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone"}],
    "priorityClassName": "system-cluster-critical",
    "podDisruptionBudget": {"maxUnavailable": 1},
    "extraEnv": [
        {"name": "PAYBILL_WORKER_LIMIT", "value": "64"},
        {"name": "PAYBILL_TERRAFORM_BACKEND_DSN", "valueFrom": {"secretKeyRef": {"name": "tf", "key": "dsn"}}},
    ],
    "extraEnvFrom": [{"secretRef": {"name": "paybill-clouds"}}],
    "podAnnotations": {"team": "platform"},
    "podLabels": {"tier": "control"},
    "backups": {"claimName": "paybill-backups"},
    "logFormat": "text",
    "webhook": {
        "timeoutSeconds": 5,
        "certManager": {"enabled": True, "issuerRef": {"kind": "ClusterIssuer", "name": "ca"}},
    },
    "networkPolicy": {
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "extraEgress": [{"ports": [{"protocol": "TCP", "port": 6432}]}],
    },
}
MINIMAL: dict[str, Any] = {
    "replicaCount": 1,
    "serviceAccount": {"create": False, "name": "existing"},
    "crds": {"enabled": False},
    "rbac": {"aggregateClusterRoles": False},
    "podDisruptionBudget": {"enabled": False},
    "networkPolicy": {"enabled": False},
}
VALUE_SETS = {"defaults": {}, "production": PRODUCTION, "minimal": MINIMAL}


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of a values file over the chart's values.yaml."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def operator_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = find(docs, "Deployment")
    return dict(deployment["spec"]["template"]["spec"])


@pytest.mark.parametrize("name", VALUE_SETS)
def test_each_value_set_lints_strictly_and_meets_the_schema(name: str) -> None:
    values = VALUE_SETS[name]
    jsonschema.validate(merged(DEFAULTS, values), SCHEMA)
    run_helm("lint", "--strict", str(CHART), *values_args(values))
    assert find(template(values), "Deployment")


REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "unknown key": ({"foo": "bar"}, "Additional property foo is not allowed"),
    "unknown nested key": ({"image": {"name": "x"}}, "Additional property name is not allowed"),
    "replicas as text": ({"replicaCount": "two"}, "Invalid type. Expected: integer"),
    "no replicas": ({"replicaCount": 0}, "replicaCount"),
    "tag as a number": ({"image": {"tag": 1.2}}, "Invalid type"),
    "a tag for a digest": ({"image": {"digest": "latest"}}, "image.digest"),
    "writable root": ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
    "privilege escalation": ({"securityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation"),
    "privileged": ({"securityContext": {"privileged": True}}, "privileged"),
    "capabilities kept": ({"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}, "capabilities.drop"),
    "capabilities added": (
        {"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}},
        "capabilities.add",
    ),
    "root": ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
    "no seccomp": ({"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}}}, "seccompProfile.type"),
    "webhook off": ({"webhook": {"enabled": False}}, "Additional property enabled is not allowed"),
    "unchecked webhook timeout": ({"webhook": {"timeoutSeconds": 60}}, "webhook.timeoutSeconds"),
    "env from nothing": ({"extraEnvFrom": [{"secretRef": {}}]}, "name is required"),
    "env without a name": ({"extraEnv": [{"value": "x"}]}, "name is required"),
    "log format": ({"logFormat": "xml"}, "logFormat"),
    "pull secret as a bare name": ({"imagePullSecrets": ["registry"]}, "imagePullSecrets.0"),
    "a budget allowing no disruption": ({"podDisruptionBudget": {"maxUnavailable": 0}}, "maxUnavailable"),
    "a budget allowing no disruption in percent": ({"podDisruptionBudget": {"maxUnavailable": "0%"}}, "maxUnavailable"),
    "a budget keeping every pod": ({"podDisruptionBudget": {"minAvailable": "100%"}}, "minAvailable"),
    "a budget keeping no pod": ({"podDisruptionBudget": {"minAvailable": "0%"}}, "minAvailable"),
    "a budget of zero pods": ({"podDisruptionBudget": {"minAvailable": 0}}, "minAvailable"),
    "the namespace's default account": (
        {"serviceAccount": {"create": False, "name": "default"}},
        "serviceAccount.name",
    ),
    "a budget with both keys": (
        {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
        "podDisruptionBudget: Must not validate the schema",
    ),
    "a lease without end": ({"leaderElection": {"leaseDurationSeconds": 3600}}, "leaseDurationSeconds"),
    "a tag that is no tag": ({"image": {"tag": "1.0:latest"}}, "image.tag"),
    "a name that is no name": ({"fullnameOverride": "Paybill_Prod"}, "fullnameOverride"),
    "root group": ({"podSecurityContext": {"runAsGroup": 0}}, "podSecurityContext.runAsGroup"),
    "root file system group": ({"podSecurityContext": {"fsGroup": 0}}, "podSecurityContext.fsGroup"),
    "root supplemental group": ({"podSecurityContext": {"supplementalGroups": [10002, 0]}}, "supplementalGroups.1"),
    "container root group": ({"securityContext": {"runAsGroup": 0}}, "securityContext.runAsGroup"),
    "a localhost seccomp profile": (
        {"podSecurityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}},
        "seccompProfile.type",
    ),
    "a container localhost seccomp profile": (
        {"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}},
        "seccompProfile.type",
    ),
    "an unknown terraform executor": ({"terraform": {"executor": "remote"}}, "terraform.executor"),
    "a job image with spaces": ({"terraform": {"job": {"image": "my image"}}}, "terraform.job.image"),
    "a backend secret that is no name": ({"terraform": {"job": {"backendSecret": "Tf_DSN"}}}, "backendSecret"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_unknown_keys_wrong_types_and_weaker_security_are_refused(case: str) -> None:
    values, message = REFUSED[case]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(merged(DEFAULTS, values), SCHEMA)
    result = run_helm("template", RELEASE, str(CHART), *values_args(values), check=False)
    assert result.returncode != 0 and "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def test_set_on_the_command_line_is_checked_too() -> None:
    result = run_helm("template", RELEASE, str(CHART), "--set", "foo=bar", check=False)
    assert result.returncode != 0 and "Additional property foo is not allowed" in result.stderr
    result = run_helm("template", RELEASE, str(CHART), "--set", "replicaCount=two", check=False)
    assert result.returncode != 0 and "Expected: integer" in result.stderr


def test_a_disruption_budget_that_blocks_every_drain_is_refused() -> None:
    result = run_helm("template", RELEASE, str(CHART), "--set", "podDisruptionBudget.minAvailable=2", check=False)
    assert result.returncode != 0 and "must be below replicaCount" in result.stderr
    # a percentage is rounded up: 60% of 2 Pods keeps both
    result = run_helm("template", RELEASE, str(CHART), "--set", "podDisruptionBudget.minAvailable=60%", check=False)
    assert result.returncode != 0 and "must be below replicaCount" in result.stderr


@pytest.mark.parametrize(
    "ports",
    [
        {"webhook": {"port": 8081}},
        {"metrics": {"port": 8080}},
        {"livenessProbe": {"port": 9443}},
    ],
)
def test_ports_that_collide_are_refused(ports: dict[str, Any]) -> None:
    """Two servers of the operator on one port: the second cannot bind (address in use) and the operator crashes."""
    result = run_helm("template", RELEASE, str(CHART), *values_args(ports), check=False)
    assert result.returncode != 0 and "ports collide" in result.stderr, result.stderr
    # --set gives integers where values files give floats: they collide all the same
    result = run_helm("template", RELEASE, str(CHART), "--set", "webhook.port=8080", check=False)
    assert result.returncode != 0 and "ports collide" in result.stderr, result.stderr


def test_a_budget_named_by_max_unavailable_alone_keeps_one_pod_by_default() -> None:
    [budget] = find(template({"podDisruptionBudget": {"maxUnavailable": "50%"}}), "PodDisruptionBudget")
    assert budget["spec"] == {"maxUnavailable": "50%", "selector": budget["spec"]["selector"]}
    [budget] = find(template({"podDisruptionBudget": {"minAvailable": "50%"}}), "PodDisruptionBudget")
    assert budget["spec"] == {"minAvailable": "50%", "selector": budget["spec"]["selector"]}


def test_replicas_without_an_election_are_refused_and_one_is_recreated_never_surged() -> None:
    """Without leader election two replicas (or a surge during a rollout) would both reconcile every object."""
    refused = run_helm("template", RELEASE, str(CHART), "--set", "leaderElection.enabled=false", check=False)
    assert refused.returncode != 0 and "needs leaderElection.enabled" in refused.stderr
    single = {"leaderElection": {"enabled": False}, "replicaCount": 1, "podDisruptionBudget": {"enabled": False}}
    [deployment] = find(template(single), "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_the_release_manifest_can_be_deleted_without_its_crds_or_its_namespace() -> None:
    """README: `kubectl delete -f manifests/paybill.yaml -l 'app.kubernetes.io/component notin (crd,namespace)'`
    keeps the CRDs and the namespace (an outsider's review: the unlabelled Namespace matched `component!=crd`, and
    its deletion took the database URL Secret and the audit checkpoint with it)."""
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    kept = {
        (d["kind"], d["metadata"]["name"])
        for d in docs
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") in ("crd", "namespace")
    }
    assert {k for k in kept if k[0] == "CustomResourceDefinition"} == {
        (d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] == "CustomResourceDefinition"
    }
    assert {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] == "Namespace"} <= kept


def test_the_defaults_run_two_hardened_replicas() -> None:
    docs = template()
    [deployment] = find(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = operator_pod(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    writable = {mount["name"] for mount in container["volumeMounts"] if not mount.get("readOnly")}
    assert writable == {"state", "tmp"}
    assert all("emptyDir" in v for v in pod["volumes"] if v["name"] in writable)
    assert pod["serviceAccountName"] == f"{RELEASE}-operator"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"] == DEFAULTS["resources"]
    [budget] = find(docs, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert "imagePullSecrets" not in pod and "priorityClassName" not in pod


def test_the_production_values_reach_the_pod() -> None:
    docs = template(PRODUCTION)
    [deployment] = find(docs, "Deployment")
    pod = operator_pod(docs)
    [container] = pod["containers"]
    assert deployment["spec"]["replicas"] == 3
    assert container["image"] == "ghcr.io/paybill/paybill@sha256:" + "ab" * 32
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["serviceAccountName"] == "paybill"
    for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints", "priorityClassName"):
        assert pod[key] == PRODUCTION[key], key
    assert container["resources"] == PRODUCTION["resources"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PAYBILL_TERRAFORM_BACKEND_DSN"]["valueFrom"] == {"secretKeyRef": {"name": "tf", "key": "dsn"}}
    assert env["PAYBILL_WORKER_LIMIT"]["value"] == "64"
    assert env["PAYBILL_DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "paybill-database", "key": "DATABASE_URL"}
    }
    assert container["envFrom"] == [{"secretRef": {"name": "paybill-clouds"}}]
    assert "--log-format=text" in container["args"]
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"team": "platform"}
    assert deployment["spec"]["template"]["metadata"]["labels"]["tier"] == "control"
    [state] = [v for v in pod["volumes"] if v["name"] == "state"]
    assert state == {"name": "state", "persistentVolumeClaim": {"claimName": "paybill-backups"}}
    [budget] = find(docs, "PodDisruptionBudget")
    assert budget["spec"] == {"maxUnavailable": 1, "selector": budget["spec"]["selector"]}
    [account] = find(docs, "ServiceAccount", "paybill")
    assert account["metadata"]["annotations"] == PRODUCTION["serviceAccount"]["annotations"]
    for binding in find(docs, "ClusterRoleBinding") + find(docs, "RoleBinding", f"{RELEASE}-operator"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "paybill", "namespace": NAMESPACE}]
    [policy] = find(docs, "NetworkPolicy")
    assert {"from": PRODUCTION["networkPolicy"]["metricsFrom"], "ports": [{"protocol": "TCP", "port": "metrics"}]} in (
        policy["spec"]["ingress"]
    )
    assert PRODUCTION["networkPolicy"]["extraEgress"][0] in policy["spec"]["egress"]
    configurations = find(docs, "ValidatingWebhookConfiguration") + find(docs, "MutatingWebhookConfiguration")
    assert all(w["timeoutSeconds"] == 5 for c in configurations for w in c["webhooks"])


def test_the_minimal_values_leave_out_what_they_turn_off() -> None:
    docs = template(MINIMAL)
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"CustomResourceDefinition", "PodDisruptionBudget", "NetworkPolicy"}
    assert not find(docs, "ServiceAccount", f"{RELEASE}-operator")
    assert operator_pod(docs)["serviceAccountName"] == "existing"
    people = [d["metadata"]["name"] for d in find(docs, "ClusterRole")]
    assert sorted(people) == sorted([f"{RELEASE}-operator", APPROVER_ROLE])


def _env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [container] = operator_pod(docs)["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _jobs_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    [role] = find(docs, "Role", f"{RELEASE}-operator")
    return [rule for rule in role["rules"] if "batch" in rule["apiGroups"]]


def test_terraform_runs_in_the_operator_by_default_with_no_job_rights_or_account() -> None:
    docs = template()
    env = _env(docs)
    assert env["PAYBILL_TERRAFORM_EXECUTOR"] == "local"
    assert not {name for name in env if name.startswith("PAYBILL_TERRAFORM_JOB_")}
    assert not find(docs, "ServiceAccount", f"{RELEASE}-terraform")
    assert _jobs_rules(docs) == []
    assert all("batch" not in r["apiGroups"] for c in find(docs, "ClusterRole") for r in c.get("rules") or [])


def test_the_job_executor_gets_its_env_a_tokenless_account_and_jobs_rights_in_its_namespace_only() -> None:
    """operator/paybill/terraform/jobs.py: each run a Job in the operator's namespace, under an account of its own."""
    docs = template({"terraform": {"executor": "job"}, "imagePullSecrets": [{"name": "registry"}]})
    env = _env(docs)
    [container] = operator_pod(docs)["containers"]
    assert env["PAYBILL_TERRAFORM_EXECUTOR"] == "job"
    assert env["PAYBILL_TERRAFORM_JOB_IMAGE"] == container["image"]
    assert env["PAYBILL_TERRAFORM_JOB_BACKEND_SECRET"] == f"{RELEASE}-terraform-backend"
    assert env["PAYBILL_TERRAFORM_JOB_SERVICE_ACCOUNT"] == f"{RELEASE}-terraform"
    [account] = find(docs, "ServiceAccount", f"{RELEASE}-terraform")
    assert account["metadata"]["namespace"] == NAMESPACE
    assert account["automountServiceAccountToken"] is False
    assert account["imagePullSecrets"] == [{"name": "registry"}]  # the Jobs pull the operator's image
    bound = [s["name"] for b in find(docs, "ClusterRoleBinding") + find(docs, "RoleBinding") for s in b["subjects"]]
    assert f"{RELEASE}-terraform" not in bound  # no rights at all
    assert _jobs_rules(docs) == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "list", "watch", "delete"]}
    ]
    assert all("batch" not in r["apiGroups"] for c in find(docs, "ClusterRole") for r in c.get("rules") or [])

    chosen = {"image": "registry.example/paybill-terraform:1.9", "backendSecret": "tf-state"}
    env = _env(template({"terraform": {"executor": "job", "job": chosen}, "fullnameOverride": "billing"}))
    assert env["PAYBILL_TERRAFORM_JOB_IMAGE"] == chosen["image"]
    assert env["PAYBILL_TERRAFORM_JOB_BACKEND_SECRET"] == "tf-state"
    assert env["PAYBILL_TERRAFORM_JOB_SERVICE_ACCOUNT"] == "billing-terraform"

    shared = {"terraform": {"executor": "job"}, "serviceAccount": {"name": f"{RELEASE}-terraform"}}
    refused = run_helm("template", RELEASE, str(CHART), *values_args(shared), check=False)
    assert refused.returncode != 0 and "the operator needs one of its own" in refused.stderr


def test_the_network_policy_denies_all_but_the_webhook_dns_api_and_database() -> None:
    [policy] = find(template(), "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"ports": [{"protocol": "TCP", "port": "webhook"}]}]  # no metrics peers by default
    ports = sorted((p["protocol"], p["port"]) for rule in spec["egress"] for p in rule["ports"])
    assert ports == [("TCP", 53), ("TCP", 443), ("TCP", 5432), ("TCP", 6443), ("UDP", 53)]


def test_the_webhook_can_be_opened_to_the_control_plane_only() -> None:
    control_plane = [{"ipBlock": {"cidr": "10.0.0.0/28"}}]
    [policy] = find(template({"networkPolicy": {"webhookFrom": control_plane}}), "NetworkPolicy")
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": "webhook"}], "from": control_plane}]


def test_terraform_job_pods_get_a_policy_of_their_own_no_ingress_and_only_dns_https_and_postgres_out() -> None:
    """jobs.py labels each run's Pod app.kubernetes.io/name=paybill-terraform: a run holding cloud credentials is
    reachable by nothing, and reaches only what a run needs."""
    docs = template({"terraform": {"executor": "job"}, "networkPolicy": {"extraEgress": [{"ports": [{"port": 6432}]}]}})
    [runs] = find(docs, "NetworkPolicy", f"{RELEASE}-terraform")
    spec = runs["spec"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "paybill-terraform"
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["ingress"] == []
    ports = sorted((p.get("protocol", "TCP"), p["port"]) for rule in spec["egress"] for p in rule["ports"])
    assert ports == [("TCP", 53), ("TCP", 443), ("TCP", 5432), ("TCP", 6432), ("UDP", 53)]
    assert not find(template(), "NetworkPolicy", f"{RELEASE}-terraform")  # the local executor runs no Pods


def test_the_chart_crds_are_the_generated_ones_upgraded_with_the_release_and_kept() -> None:
    rendered = {d["metadata"]["name"]: d for d in find(template(), "CustomResourceDefinition")}
    generated = {crd["metadata"]["name"]: crd for crd in all_crds()}
    shipped = {
        yaml.safe_load(path.read_text())["metadata"]["name"] for path in (CHART / "files" / "crds").glob("*.yaml")
    }
    assert rendered.keys() == shipped and generated.keys() <= shipped  # every file there, Paybill's own among them
    for name, crd in generated.items():
        assert rendered[name]["spec"] == crd["spec"], f"{name}: run make crds"
        assert rendered[name]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert "helm.sh/hook" not in rendered[name]["metadata"]["annotations"]  # a template: upgraded with the release
    dropped = find(template({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert dropped and all("helm.sh/resource-policy" not in (d["metadata"].get("annotations") or {}) for d in dropped)
    assert not (CHART / "crds").exists(), "Helm installs a chart's crds/ once and never upgrades them"


def _operations(handler_id: str) -> list[str]:
    registry = kopf.get_default_registry()
    [handler] = [h for h in registry._webhooks.get_all_handlers() if h.id == handler_id]
    return list(handler.operations or [])


def test_the_webhooks_are_the_ones_the_operator_serves() -> None:
    docs = template()
    [service] = find(docs, "Service", f"{RELEASE}-webhook")
    assert service["spec"]["ports"] == [{"name": "webhook", "port": 443, "targetPort": "webhook"}]
    expected = {
        "MutatingWebhookConfiguration": STAMP_ID,
        "ValidatingWebhookConfiguration": VALIDATE_ID,
    }
    [secret] = find(docs, "Secret", f"{RELEASE}-webhook-tls")
    ca_bundle = secret["data"]["ca.crt"]
    for kind, handler_id in expected.items():
        [configuration] = find(docs, kind)
        assert configuration["metadata"]["name"] == CONFIGURATION
        [webhook] = configuration["webhooks"]
        assert webhook["name"] == webhook_name(handler_id)
        # it records approvals and charges (an outsider's review: it declared None), but never for a dry run
        assert webhook["failurePolicy"] == "Fail" and webhook["sideEffects"] == "NoneOnDryRun"
        assert webhook["clientConfig"] == {
            "service": {
                "name": f"{RELEASE}-webhook",
                "namespace": NAMESPACE,
                "path": webhook_path(handler_id),
                "port": 443,
            },
            "caBundle": ca_bundle,
        }
        assert webhook["rules"] == [
            {
                "apiGroups": ["paybill.dev"],
                "apiVersions": ["v1alpha1"],
                "resources": ["agentworkflows"],
                "operations": _operations(handler_id),
            }
        ]
    [container] = operator_pod(docs)["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PAYBILL_WEBHOOK_CERT_DIR"] == "/etc/paybill/webhook" and env["PAYBILL_WEBHOOK_PORT"] == "9443"
    assert "PAYBILL_WEBHOOK_HOST" not in env  # the chart registers the configurations, never the operator
    assert {"name": "webhook", "containerPort": 9443} in container["ports"]
    certificate = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    authority = x509.load_pem_x509_certificate(base64.b64decode(ca_bundle))
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert f"{RELEASE}-webhook.{NAMESPACE}.svc" in names
    certificate.verify_directly_issued_by(authority)


def test_cert_manager_issues_the_webhook_certificate_when_asked() -> None:
    docs = template({"webhook": {"certManager": {"enabled": True}}})
    assert not find(docs, "Secret")  # no key material in the release
    [certificate] = find(docs, "Certificate")
    assert certificate["spec"]["secretName"] == f"{RELEASE}-webhook-tls"
    assert f"{RELEASE}-webhook.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"] == {"kind": "Issuer", "name": f"{RELEASE}-webhook"}
    assert find(docs, "Issuer", f"{RELEASE}-webhook")[0]["spec"] == {"selfSigned": {}}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        [configuration] = find(docs, kind)
        annotation = configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        assert annotation == f"{NAMESPACE}/{RELEASE}-webhook"
        assert all("caBundle" not in w["clientConfig"] for w in configuration["webhooks"])


def _grants(role: dict[str, Any]) -> set[tuple[str, str]]:
    return {(resource, verb) for rule in role["rules"] for resource in rule["resources"] for verb in rule["verbs"]}


def test_people_get_per_kind_viewer_and_editor_roles_and_the_approver_role() -> None:
    roles = {d["metadata"]["name"]: d for d in find(template(), "ClusterRole")}
    aggregated = {"view", "edit", "admin"}
    for resource in RESOURCES:
        kind, plural = resource.crd.kind.lower(), resource.crd.plural
        viewer, editor = roles[f"paybill-{kind}-viewer"], roles[f"paybill-{kind}-editor"]
        assert _grants(viewer) == {(plural, "get"), (plural, "list"), (plural, "watch"), (f"{plural}/status", "get")}
        writes = {"create", "update", "patch", "delete"}
        assert {(plural, verb) for verb in writes} <= _grants(editor)
        assert not {g for g in _grants(editor) if g[0].endswith("/status") and g[1] != "get"}, (
            "status is the operator's"
        )
        labels = viewer["metadata"]["labels"]
        assert {
            a for a in aggregated if labels.get(f"rbac.authorization.k8s.io/aggregate-to-{a}") == "true"
        } == aggregated

    def aggregated_to(name: str) -> set[str]:
        labels = roles[name]["metadata"]["labels"]
        return {a for a in aggregated if labels.get(f"rbac.authorization.k8s.io/aggregate-to-{a}") == "true"}

    assert aggregated_to("paybill-agentworkflow-editor") == {"edit", "admin"}
    assert aggregated_to("paybill-agentpolicy-editor") == {"admin"}  # an access policy, as a RoleBinding
    for billing in ("plan", "subscription", "tenant"):
        assert aggregated_to(f"paybill-{billing}-editor") == set()
    approver = roles[APPROVER_ROLE]
    assert approver["rules"] == approver_cluster_role()["rules"]
    assert aggregated_to(APPROVER_ROLE) == set()  # bound per tenant namespace, never by aggregation
    for name, role in roles.items():
        verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
        assert "*" not in verbs, name
        assert (APPROVE_VERB in verbs) == (name == APPROVER_ROLE), name


def test_the_release_manifest_is_fresh() -> None:
    assert MANIFEST.exists(), "run make manifests"
    assert MANIFEST.read_text() == render(), "manifests/paybill.yaml is stale: run make manifests"
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Deployment"} <= kinds
    assert {"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "Certificate"} <= kinds
    assert "Secret" not in kinds, "a committed release file must carry no private key"
    assert not [d for d in docs if "helm.sh/hook" in (d["metadata"].get("annotations") or {})]


def test_helm_test_checks_every_replica_is_ready_with_a_read_only_look_at_the_deployment() -> None:
    docs = template()
    hooks = [d for d in docs if (d["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"]
    [pod] = find(hooks, "Pod")
    [role] = find(hooks, "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "verbs": ["get"],
            "resourceNames": [f"{RELEASE}-operator"],
        }
    ]
    [binding] = find(hooks, "RoleBinding")
    assert binding["subjects"][0]["name"] == pod["spec"]["serviceAccountName"] == role["metadata"]["name"]
    [container] = pod["spec"]["containers"]
    [operator] = operator_pod(docs)["containers"]
    assert container["image"] == operator["image"] and container["securityContext"] == operator["securityContext"]
    script = container["args"][0]
    assert "read_namespaced_deployment_status" in script and "ready_replicas" in script and "wanted = 2" in script
    [deployment] = find(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"].items()
    assert not selector <= pod["metadata"]["labels"].items(), "the operator's selectors must not pick the test Pod"
