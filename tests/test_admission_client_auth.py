"""Only the API server reaches the admission webhooks (PAYBILL_WEBHOOK_CLIENT_CA): the validating webhook records
approvals in the audit log with the approver the review's userInfo names, so a review POSTed by anyone else could
forge an approval. With a client CA the webhook server requires a client certificate signed by it (kube-apiserver
presents one from its admission kubeconfig; the emulated API server does too): a forged review fails at TLS and
nothing is recorded."""

from __future__ import annotations

import copy
import shutil
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from kopf.testing import KopfRunner

from chart.webhooks import serve_webhooks_over_tls
from paybill.database.server import LocalPostgres
from paybill.handlers.admission import (
    CLIENT_CA_ENV,
    CLIENT_NAMES_ENV,
    VALIDATE_ID,
    Listening,
    listening,
    server_context,
)
from paybill.handlers.admission_server import caller_allowed
from paybill.kube.tls import ClientCertificate, client_certificate
from paybill.workflows.approvals import APPROVE_PREFIX
from test_approvals_kubectl import AGENT, approval_policy, audited, bind_approver, kubectl_as, submit
from test_tenant_lifecycle import API, login, onboard, wait_phase, wait_policy

FORGED_HASH = "f" * 32


def forged_review(stored: dict[str, Any]) -> bytes:
    """An UPDATE review adding alice's approval of the fix step, as the API server would send it for her."""
    approved = copy.deepcopy(stored)
    approved["metadata"].setdefault("annotations", {})[APPROVE_PREFIX + "fix"] = FORGED_HASH
    gvk = {"group": "paybill.dev", "version": "v1alpha1", "kind": "AgentWorkflow"}
    gvr = {"group": "paybill.dev", "version": "v1alpha1", "resource": "agentworkflows"}
    request = {
        "uid": "forged-1",
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": stored["metadata"]["name"],
        "namespace": stored["metadata"]["namespace"],
        "operation": "UPDATE",
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": approved,
        "oldObject": stored,
        "dryRun": False,
    }
    return orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})


def post(url: str, body: bytes, server_ca: bytes, identity: ClientCertificate | None) -> dict[str, Any]:
    """POST straight to the webhook, trusting its serving CA, presenting `identity` if given."""
    context = ssl.create_default_context(cadata=server_ca.decode())
    if identity is not None:
        identity.load_into(context)
    sent = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(sent, context=context, timeout=30) as response:
        answer: dict[str, Any] = orjson.loads(response.read())
    return answer


@pytest.mark.slow
@pytest.mark.kubectl
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_a_forged_review_without_the_api_servers_client_certificate_records_no_approval(
    cluster: Any, postgres: LocalPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, server_ca = serve_webhooks_over_tls(tmp_path / "webhook", monkeypatch)
    apiserver = client_certificate("kube-apiserver-admission")
    (tmp_path / "client-ca.crt").write_bytes(apiserver.certificate_authority)
    monkeypatch.setenv(CLIENT_CA_ENV, str(tmp_path / "client-ca.crt"))
    monkeypatch.setenv("PAYBILL_WEBHOOK_HOST", "127.0.0.1")  # the operator registers https://HOST:PORT itself
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("PAYBILL_DATABASE_URL", postgres.dsn)
    monkeypatch.setenv("PAYBILL_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("PAYBILL_STATE_DIR", str(tmp_path / "state"))
    cluster.api.admission.identity = apiserver  # as kube-apiserver with an admission kubeconfig
    url = f"https://127.0.0.1:{port}/admission/{VALIDATE_ID}"
    with KopfRunner(["run", "--all-namespaces", "--standalone", "-m", "paybill.handlers"], timeout=90) as runner:
        name = onboard(cluster, "pooled")
        namespace = f"tenant-{name}"
        wait_phase(cluster, name, "Active")
        with login(cluster, name) as conn:
            conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 1, 'c')", (name,))
        cluster.kube.apply(approval_policy(namespace))
        wait_policy(cluster, namespace, "Ready")
        bind_approver(cluster, namespace, {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"})
        agent = kubectl_as(cluster.service_account_kubeconfig(namespace, AGENT), tmp_path)
        submit(agent, namespace, "refund")  # admitted: the API server presented its client certificate
        forged = forged_review(cluster.kube.get(API, "agentworkflows", "refund", namespace))

        for caller in (None, client_certificate("kube-apiserver-admission")):  # no certificate; another CA's
            with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
                post(url, forged, server_ca, caller)
        assert audited(postgres, namespace, "refund", "ApprovalGranted") == 0

        # the same review from the holder of the API server's certificate is one the webhook records: the attack
        # above was a real one, stopped by TLS alone
        answer = post(url, forged, server_ca, apiserver)
        assert answer["response"]["allowed"] is True, answer
        assert audited(postgres, namespace, "refund", "ApprovalGranted") == 1
    assert runner.exit_code == 0, runner.output


def test_a_client_ca_needs_https_and_names_are_read_from_a_comma_list() -> None:
    with pytest.raises(ValueError, match=f"{CLIENT_CA_ENV} needs HTTPS"):
        listening({CLIENT_CA_ENV: "/ca.crt"})
    where = listening(
        {"PAYBILL_WEBHOOK_CERT_DIR": "/certs", CLIENT_CA_ENV: "/ca.crt", CLIENT_NAMES_ENV: " kube-apiserver, ,b "}
    )
    assert where == Listening("0.0.0.0", 9443, Path("/certs"), None, False, Path("/ca.crt"), ("kube-apiserver", "b"))
    assert listening({"PAYBILL_WEBHOOK_CERT_DIR": "/certs"}).client_ca is None


def subject(common_name: str) -> dict[str, Any]:
    return {"subject": ((("organizationName", "x"),), (("commonName", common_name),))}


def test_only_the_named_callers_are_answered() -> None:
    assert caller_allowed(subject("kube-apiserver"), ())  # no names: the CA alone decides
    assert caller_allowed(None, ())  # plain HTTP on loopback, no client CA
    assert caller_allowed(subject("kube-apiserver"), ("kube-apiserver",))
    assert not caller_allowed(subject("mallory"), ("kube-apiserver",))
    assert not caller_allowed(None, ("kube-apiserver",))
    assert not caller_allowed({"subject": ()}, ("kube-apiserver",))


def test_the_webhook_server_context_requires_a_client_certificate_of_that_ca_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, _ = serve_webhooks_over_tls(tmp_path / "webhook", monkeypatch)
    ca = client_certificate()
    (tmp_path / "client-ca.crt").write_bytes(ca.certificate_authority)
    where = Listening("127.0.0.1", port, tmp_path / "webhook", None, False, tmp_path / "client-ca.crt", ())
    context = server_context(where)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1  # that CA alone: not the system's public ones
    assert server_context(Listening("127.0.0.1", port, tmp_path / "webhook", None, False)).verify_mode == (
        ssl.CERT_NONE
    )
