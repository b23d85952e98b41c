"""Authentication and RBAC of the emulated API server, through real kubectl where a person would look:
401 without a known token, 403 with kube-apiserver's text, ServiceAccount tokens, reviews (`kubectl auth
can-i`, `auth whoami`), impersonation, escalation prevention, and the requester in admission reviews."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from paybill.kube import write_kubeconfig
from paybill.kube.auth import UserInfo
from paybill.kube.rbac import Attributes, escalation_error, request_attributes, rule_allows, uncovered

REPO = Path(__file__).resolve().parents[1]
RBAC = "rbac.authorization.k8s.io/v1"
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


class Kubectl:
    """Real kubectl as one identity (its own kubeconfig: the server's CA and a bearer token)."""

    def __init__(self, cluster: Any, directory: Path, token: str, name: str) -> None:
        self.kubeconfig = write_kubeconfig(
            directory / f"{name}.kubeconfig", cluster.url, cluster.api.access.certificate.certificate_authority, token
        )
        home = directory / f"{name}.home"  # its own discovery cache, as another person's machine
        home.mkdir(exist_ok=True)
        self.env = {"KUBECONFIG": str(self.kubeconfig), "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(home)}

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", *args], env=self.env, input=stdin, capture_output=True, text=True, timeout=60)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self(*args, stdin=stdin)
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout

    def refused(self, *args: str, stdin: str | None = None) -> str:
        result = self(*args, stdin=stdin)
        assert result.returncode != 0, f"kubectl {' '.join(args)} was allowed: {result.stdout}"
        return result.stderr.strip()


@pytest.fixture
def admin(cluster: Any, tmp_path: Path) -> Kubectl:
    return Kubectl(cluster, tmp_path, cluster.api.access.tokens.admin_token, "admin")


@pytest.fixture
def bob(cluster: Any, tmp_path: Path) -> Kubectl:
    """A user with no bindings of his own (only what every authenticated user has)."""
    return Kubectl(cluster, tmp_path, cluster.api.access.tokens.add_user("bob"), "bob")


def apply(kubectl: Kubectl, *manifests: dict[str, Any]) -> None:
    kubectl.ok("apply", "-f", "-", stdin=yaml.safe_dump_all(manifests))


def role(name: str, rules: list[dict[str, Any]], namespace: str | None = "default") -> dict[str, Any]:
    kind = "Role" if namespace else "ClusterRole"
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": RBAC, "kind": kind, "metadata": meta, "rules": rules}


def binding(
    name: str, role_kind: str, role_name: str, subject: dict[str, Any], namespace: str | None = "default"
) -> dict[str, Any]:
    kind = "RoleBinding" if namespace else "ClusterRoleBinding"
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {
        "apiVersion": RBAC,
        "kind": kind,
        "metadata": meta,
        "subjects": [subject],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
    }


BOB = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}


# --- pure decisions ---------------------------------------------------------------------------------------------

USER = UserInfo("u", groups=("system:authenticated",))


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/namespaces/ns/secrets", {}, ("list", "", "secrets", "", "ns", "")),
        ("GET", "/api/v1/namespaces/ns/secrets", {"watch": "true"}, ("watch", "", "secrets", "", "ns", "")),
        ("GET", "/api/v1/namespaces/ns/secrets/s", {}, ("get", "", "secrets", "", "ns", "s")),
        ("DELETE", "/api/v1/namespaces/ns/secrets", {}, ("deletecollection", "", "secrets", "", "ns", "")),
        (
            "PATCH",
            "/apis/paybill.dev/v1alpha1/tenants/acme/status",
            {},
            ("patch", "paybill.dev", "tenants", "status", "", "acme"),
        ),
        ("GET", "/api/v1/namespaces/ns", {}, ("get", "", "namespaces", "", "ns", "ns")),
        ("PUT", "/api/v1/namespaces/ns/finalize", {}, ("update", "", "namespaces", "finalize", "ns", "ns")),
        (
            "POST",
            "/api/v1/namespaces/ns/serviceaccounts/sa/token",
            {},
            ("create", "", "serviceaccounts", "token", "ns", "sa"),
        ),
    ],
)
def test_request_attributes_as_the_apiserver_reads_a_url(
    method: str, path: str, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    attributes = request_attributes(USER, method, path, query)
    assert attributes.resource_request
    assert (
        attributes.verb,
        attributes.api_group,
        attributes.resource,
        attributes.subresource,
        attributes.namespace,
        attributes.name,
    ) == expected


def test_rules_match_verbs_subresources_names_and_paths() -> None:
    status = request_attributes(USER, "PATCH", "/apis/paybill.dev/v1alpha1/tenants/acme/status", {})
    main = request_attributes(USER, "PATCH", "/apis/paybill.dev/v1alpha1/tenants/acme", {})
    status_rule = {"apiGroups": ["paybill.dev"], "resources": ["tenants/status"], "verbs": ["patch"]}
    assert rule_allows(status_rule, status) and not rule_allows(status_rule, main)
    assert rule_allows({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]}, status)
    assert rule_allows({"apiGroups": ["paybill.dev"], "resources": ["*"], "verbs": ["patch"]}, status)
    named = {
        "apiGroups": ["paybill.dev"],
        "resources": ["tenants"],
        "verbs": ["patch", "list"],
        "resourceNames": ["acme"],
    }
    assert rule_allows(named, main)
    assert not rule_allows(named, request_attributes(USER, "PATCH", "/apis/paybill.dev/v1alpha1/tenants/b", {}))
    assert not rule_allows(named, request_attributes(USER, "GET", "/apis/paybill.dev/v1alpha1/tenants", {}))
    discovery = request_attributes(USER, "GET", "/apis/paybill.dev/v1alpha1", {})
    assert not discovery.resource_request and discovery.path == "/apis/paybill.dev/v1alpha1"
    assert rule_allows({"nonResourceURLs": ["/apis/*"], "verbs": ["get"]}, discovery)
    assert not rule_allows({"nonResourceURLs": ["/api/*"], "verbs": ["get"]}, discovery)


def test_escalation_names_each_missing_permission_as_the_apiserver_does() -> None:
    held = [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]},
    ]
    wanted = [{"apiGroups": [""], "resources": ["secrets", "tenants/status"], "verbs": ["get", "list"]}]
    missing = uncovered(held, wanted)
    assert missing == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]
    assert escalation_error(UserInfo("bob", groups=("g1", "system:authenticated")), missing, []) == (
        'user "bob" (groups=["g1" "system:authenticated"]) is attempting to grant RBAC permissions not currently '
        'held:\n{APIGroups:[""], Resources:["secrets"], Verbs:["list"]}'
    )
    assert (
        uncovered(held, [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["one"]}])
        == []
    )


# --- authentication ---------------------------------------------------------------------------------------------


def test_a_request_without_a_known_token_is_unauthorized(cluster: Any, tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(cluster.api.access.certificate.certificate_authority)
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic YWRtaW46YWRtaW4="}):
        answer = requests.get(cluster.url + "/api/v1/namespaces", headers=headers, verify=str(ca), timeout=10)
        assert answer.status_code == 401
        assert answer.json() | {"details": {}} == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
            "details": {},
        }
    with pytest.raises(requests.exceptions.ConnectionError):  # HTTPS only: credentials never cross in clear text
        requests.get(cluster.url.replace("https://", "http://") + "/version", timeout=10)


@needs_kubectl
def test_whoami_for_the_admin_a_user_and_a_service_account_token(
    admin: Kubectl, bob: Kubectl, cluster: Any, tmp_path: Path
) -> None:
    whoami = admin.ok("auth", "whoami", "-o", "json")
    assert json.loads(whoami)["status"]["userInfo"] == {
        "username": "kubernetes-admin",
        "groups": ["system:masters", "system:authenticated"],
    }
    assert bob.ok("auth", "whoami").splitlines()[1:] == ["Username    bob", "Groups      [system:authenticated]"]
    admin.ok("create", "serviceaccount", "robot")
    token = admin.ok("create", "token", "robot").strip()
    robot = Kubectl(cluster, tmp_path, token, "robot")
    info = json.loads(robot.ok("auth", "whoami", "-o", "json"))["status"]["userInfo"]
    uid = admin.ok("get", "serviceaccount", "robot", "-o", "jsonpath={.metadata.uid}")
    assert info == {
        "username": "system:serviceaccount:default:robot",
        "uid": uid,
        "groups": ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"],
    }
    assert "may not specify a duration less than 10 minutes" in admin.refused(
        "create", "token", "robot", "--duration=1m"
    )
    admin.ok("delete", "serviceaccount", "robot")
    assert "Unauthorized" in robot.refused("auth", "whoami")  # a bound token dies with its ServiceAccount
    admin.ok("create", "serviceaccount", "robot")
    assert "Unauthorized" in robot.refused("auth", "whoami")  # ... and stays dead for a new one of that name


KUBECTL_RELEASES = sorted(Path(shutil.which("kubectl") or "/nonexistent").resolve().parent.glob("kubectl.1.*"))


@pytest.mark.parametrize("binary", KUBECTL_RELEASES or [None], ids=lambda b: b.name if b else "none")
def test_reviews_and_token_requests_from_every_kubectl_release(
    binary: Path | None, admin: Kubectl, cluster: Any, tmp_path: Path
) -> None:
    """kubectl 1.32+ sends these bodies as protobuf, earlier releases as JSON: both are read."""
    if binary is None:
        pytest.skip("no versioned kubectl binaries next to kubectl")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(binary), *args], env=admin.env, capture_output=True, text=True, timeout=60)

    admin.ok("create", "serviceaccount", "robot")
    assert run("auth", "can-i", "list", "secrets").stdout.strip() == "yes"
    denied = run("auth", "can-i", "list", "secrets", "--as", "system:serviceaccount:default:robot")
    assert (denied.returncode, denied.stdout.strip()) == (1, "no"), denied.stderr
    token = run("create", "token", "robot", "--duration=15m")
    assert token.returncode == 0, token.stderr
    robot = Kubectl(cluster, tmp_path, token.stdout.strip(), "robot")
    assert (
        robot.ok("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
        == "system:serviceaccount:default:robot"
    )
    whoami = run("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert whoami.stdout == "kubernetes-admin", whoami.stderr


# --- RBAC -------------------------------------------------------------------------------------------------------


@needs_kubectl
def test_forbidden_with_the_apiservers_text(admin: Kubectl, bob: Kubectl) -> None:
    assert bob.refused("get", "secrets") == (
        'Error from server (Forbidden): secrets is forbidden: User "bob" cannot '
        'list resource "secrets" in API group "" in the namespace "default"'
    )
    admin.ok("apply", "-f", str(REPO / "crds"))
    assert bob.refused("get", "tenants") == (
        'Error from server (Forbidden): tenants.paybill.dev is forbidden: User "bob" cannot list resource '
        '"tenants" in API group "paybill.dev" at the cluster scope'
    )
    admin.ok("create", "secret", "generic", "one", "--from-literal=k=v")
    admin.ok("create", "secret", "generic", "two", "--from-literal=k=v")
    apply(
        admin,
        role("read-one", [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["one"]}]),
        binding("bob-reads-one", "Role", "read-one", BOB),
    )
    assert bob.ok("get", "secret", "one", "-o", "jsonpath={.metadata.name}") == "one"
    assert bob.refused("get", "secret", "two") == (
        'Error from server (Forbidden): secrets "two" is forbidden: User "bob" cannot get resource "secrets" in '
        'API group "" in the namespace "default"'
    )
    assert 'in the namespace "kube-system"' in bob.refused("get", "secret", "one", "-n", "kube-system")
    assert bob.refused("get", "--raw", "/metrics") == (
        'Error from server (Forbidden): forbidden: User "bob" cannot get path "/metrics"'
    )


@needs_kubectl
def test_status_subresource_watch_and_deletecollection_are_their_own_grants(
    admin: Kubectl, bob: Kubectl, cluster: Any, tmp_path: Path
) -> None:
    admin.ok("apply", "-f", str(REPO / "crds"))
    apply(
        admin,
        {
            "apiVersion": "paybill.dev/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": "acme"},
            "spec": {"planRef": "pro"},
        },
    )
    apply(
        admin,
        role(
            "status-writer",
            [
                {"apiGroups": ["paybill.dev"], "resources": ["tenants/status"], "verbs": ["get", "patch"]},
                {"apiGroups": ["paybill.dev"], "resources": ["tenants"], "verbs": ["get", "list"]},
            ],
            namespace=None,
        ),
        binding("bob-status", "ClusterRole", "status-writer", BOB, namespace=None),
    )
    bob.ok("patch", "tenant", "acme", "--subresource=status", "--type=merge", "-p", '{"status":{"phase":"Active"}}')
    assert bob.refused("patch", "tenant", "acme", "--type=merge", "-p", '{"spec":{"displayName":"x"}}') == (
        'Error from server (Forbidden): tenants.paybill.dev "acme" is forbidden: User "bob" cannot patch resource '
        '"tenants" in API group "paybill.dev" at the cluster scope'
    )
    # kubectl prints "Forbidden: unknown (get tenants.paybill.dev)" for a refused watch; the server's text is exact.
    assert "Error from server (Forbidden)" in bob.refused("get", "tenants", "--watch", "--request-timeout=5s")
    assert cluster.api.access.denied[-1][1] == (
        'tenants.paybill.dev is forbidden: User "bob" cannot watch resource '
        '"tenants" in API group "paybill.dev" at the cluster scope'
    )
    ca = tmp_path / "ca.crt"
    ca.write_bytes(cluster.api.access.certificate.certificate_authority)
    token = bob.kubeconfig.read_text().split("token: ")[1].split()[0]
    answer = requests.delete(
        cluster.url + "/apis/paybill.dev/v1alpha1/tenants",
        verify=str(ca),
        timeout=10,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 403 and answer.json()["reason"] == "Forbidden"
    assert answer.json()["message"] == (
        'tenants.paybill.dev is forbidden: User "bob" cannot deletecollection '
        'resource "tenants" in API group "paybill.dev" at the cluster scope'
    )
    assert answer.json()["details"] == {"group": "paybill.dev", "kind": "tenants"}


@needs_kubectl
def test_discovery_and_self_reviews_need_no_binding(bob: Kubectl) -> None:
    resources = bob.ok("api-resources", "-o", "name")
    assert "namespaces" in resources.split() and "roles.rbac.authorization.k8s.io" in resources.split()
    assert bob("auth", "can-i", "create", "selfsubjectaccessreviews.authorization.k8s.io").stdout.strip() == "yes"
    assert bob.ok("version", "-o", "json")


@needs_kubectl
def test_can_i_answers_yes_and_no_and_lists_rules(admin: Kubectl, bob: Kubectl) -> None:
    apply(
        admin,
        role("reader", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]),
        binding("bob-reader", "Role", "reader", BOB),
    )
    yes = bob("auth", "can-i", "list", "configmaps")
    assert (yes.returncode, yes.stdout.strip()) == (0, "yes")
    no = bob("auth", "can-i", "delete", "configmaps")
    assert (no.returncode, no.stdout.strip()) == (1, "no")
    assert bob("auth", "can-i", "list", "configmaps", "-n", "kube-system").stdout.strip() == "no"
    listed = bob.ok("auth", "can-i", "--list")
    assert any(line.split()[:1] == ["configmaps"] and "[get list]" in line for line in listed.splitlines())
    assert admin("auth", "can-i", "*", "*").stdout.strip() == "yes"
    # SubjectAccessReview: an admin asks about someone else; bob may not.
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": "bob",
            "resourceAttributes": {"namespace": "default", "verb": "get", "resource": "configmaps"},
        },
    }
    answered = json.loads(admin.ok("create", "-f", "-", "-o", "json", stdin=json.dumps(review)))
    assert answered["status"] == {
        "allowed": True,
        "reason": 'RBAC: allowed by RoleBinding "bob-reader/default" of Role "reader" to User "bob"',
    }
    assert (
        'cannot create resource "subjectaccessreviews" in API group "authorization.k8s.io" at the cluster '
        "scope" in bob.refused("create", "-f", "-", stdin=json.dumps(review))
    )


@needs_kubectl
def test_a_binding_to_a_missing_role_is_named_in_the_denial(admin: Kubectl, bob: Kubectl) -> None:
    apply(admin, binding("dangling", "ClusterRole", "nope", BOB, namespace=None))
    assert bob.refused("get", "configmaps").endswith(
        'in the namespace "default": RBAC: clusterrole.rbac.authorization.k8s.io "nope" not found'
    )


@needs_kubectl
def test_aggregated_cluster_roles_gain_the_rules_of_labelled_ones(admin: Kubectl, bob: Kubectl) -> None:
    admin.ok("apply", "-f", str(REPO / "crds"))
    apply(admin, binding("bob-views", "ClusterRole", "view", BOB))
    assert bob("auth", "can-i", "list", "configmaps").stdout.strip() == "yes"
    assert bob("auth", "can-i", "list", "tenants.paybill.dev").stdout.strip() == "no"
    apply(
        admin,
        {
            **role(
                "tenant-viewer",
                [{"apiGroups": ["paybill.dev"], "resources": ["tenants"], "verbs": ["get", "list", "watch"]}],
                namespace=None,
            ),
            "metadata": {"name": "tenant-viewer", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        },
    )
    assert bob("auth", "can-i", "list", "tenants.paybill.dev").stdout.strip() == "yes"
    apply(admin, binding("bob-admin", "ClusterRole", "admin", BOB, namespace="kube-public"))
    assert bob("auth", "can-i", "list", "tenants.paybill.dev", "-n", "kube-public").stdout.strip() == "yes"


# --- impersonation ----------------------------------------------------------------------------------------------


@needs_kubectl
def test_impersonation_needs_the_impersonate_verb(admin: Kubectl, bob: Kubectl, cluster: Any) -> None:
    # kubectl's discovery prints "Forbidden: unknown" for a refused impersonation; the server's text is exact.
    assert "Error from server (Forbidden)" in bob.refused("get", "configmaps", "--as", "alice")
    assert cluster.api.access.denied[-1][1] == (
        'users "alice" is forbidden: User "bob" cannot impersonate resource '
        '"users" in API group "" at the cluster scope'
    )
    apply(
        admin,
        role(
            "impersonate-alice",
            [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["alice"]}],
            namespace=None,
        ),
        binding("bob-as-alice", "ClusterRole", "impersonate-alice", BOB, namespace=None),
    )
    info = json.loads(bob.ok("auth", "whoami", "--as", "alice", "-o", "json"))["status"]["userInfo"]
    assert info == {"username": "alice", "groups": ["system:authenticated"]}
    assert 'User "alice" cannot list resource "configmaps"' in bob.refused("get", "configmaps", "--as", "alice")
    bob.refused("get", "configmaps", "--as", "alice", "--as-group", "ops")
    assert cluster.api.access.denied[-1][1] == (
        'groups "ops" is forbidden: User "bob" cannot impersonate resource '
        '"groups" in API group "" at the cluster scope'
    )
    bob.refused("get", "pods", "--as", "system:serviceaccount:default:robot")
    assert cluster.api.access.denied[-1][1] == (
        'serviceaccounts "robot" is forbidden: User "bob" cannot impersonate resource "serviceaccounts" in API '
        'group "" in the namespace "default"'
    )
    # The admin impersonates anyone; a ServiceAccount gets its groups.
    info = json.loads(admin.ok("auth", "whoami", "--as", "system:serviceaccount:default:robot", "-o", "json"))
    assert info["status"]["userInfo"]["groups"] == [
        "system:serviceaccounts",
        "system:serviceaccounts:default",
        "system:authenticated",
    ]
    as_bob = admin("auth", "can-i", "list", "secrets", "--as", "bob")
    assert as_bob.stdout.strip() == "no", as_bob.stderr
    with_group = admin("auth", "can-i", "list", "secrets", "--as", "bob", "--as-group", "system:masters")
    assert with_group.stdout.strip() == "yes"


# --- escalation prevention --------------------------------------------------------------------------------------


@needs_kubectl
def test_roles_and_bindings_cannot_grant_what_the_writer_does_not_hold(
    admin: Kubectl, bob: Kubectl, cluster: Any
) -> None:
    apply(
        admin,
        role(
            "rbac-writer",
            [
                {
                    "apiGroups": ["rbac.authorization.k8s.io"],
                    "resources": ["roles", "rolebindings"],
                    "verbs": ["create", "get", "patch", "update"],
                },
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
            ],
        ),
        binding("bob-writes-rbac", "Role", "rbac-writer", BOB),
    )
    denials = len(cluster.api.access.denied)
    bob.ok("create", "role", "cm-reader", "--verb=get", "--resource=configmaps")  # held: allowed
    assert len(cluster.api.access.denied) == denials  # no escalate, but nothing was refused either
    assert bob.refused("create", "role", "secret-reader", "--verb=get,list", "--resource=secrets") == (
        'Error from server (Forbidden): roles.rbac.authorization.k8s.io "secret-reader" is forbidden: user "bob" '
        '(groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held:\n'
        '{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}'
    )
    assert cluster.api.access.denied[-1][1].startswith('roles.rbac.authorization.k8s.io "secret-reader" is forbidden')
    carol = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "carol"}
    assert 'rolebindings.rbac.authorization.k8s.io "bob-admin" is forbidden: user "bob"' in bob.refused(
        "apply", "-f", "-", stdin=yaml.safe_dump(binding("bob-admin", "ClusterRole", "cluster-admin", BOB))
    )
    apply(bob, binding("carol-cm", "Role", "cm-reader", carol))  # holds what it grants
    assert (
        'rolebindings.rbac.authorization.k8s.io "x" is forbidden: roles.rbac.authorization.k8s.io "ghost" '
        "not found" in bob.refused("apply", "-f", "-", stdin=yaml.safe_dump(binding("x", "Role", "ghost", carol)))
    )
    # bind (on named roles) and escalate lift the check, as on a real server.
    apply(
        admin,
        role(
            "binder",
            [
                {
                    "apiGroups": ["rbac.authorization.k8s.io"],
                    "resources": ["clusterroles"],
                    "verbs": ["bind"],
                    "resourceNames": ["view"],
                },
                {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate"]},
            ],
        ),
        binding("bob-binds", "Role", "binder", BOB),
    )
    apply(bob, binding("carol-views", "ClusterRole", "view", carol))
    assert "is forbidden" in bob.refused(
        "apply", "-f", "-", stdin=yaml.safe_dump(binding("carol-admin", "ClusterRole", "admin", carol))
    )
    bob.ok("create", "role", "secret-reader", "--verb=get,list", "--resource=secrets")
    assert bob("auth", "can-i", "get", "secrets").stdout.strip() == "no"  # escalate wrote it; bob still lacks it


# --- admission sees the requester -------------------------------------------------------------------------------


@pytest.fixture
def recording_webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    reviews: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reviews.append(review["request"])
            body = json.dumps(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "response": {"uid": review["request"]["uid"], "allowed": True},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/validate", reviews
    server.shutdown()


@needs_kubectl
def test_admission_reviews_carry_the_requesters_user_info(
    admin: Kubectl, cluster: Any, tmp_path: Path, recording_webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, reviews = recording_webhook
    apply(
        admin,
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "record"},
            "webhooks": [
                {
                    "name": "record.paybill.dev",
                    "clientConfig": {"url": url},
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["configmaps"],
                        }
                    ],
                }
            ],
        },
    )
    admin.ok("create", "serviceaccount", "robot")
    apply(
        admin,
        role("cm-maker", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}]),
        binding("robot-makes", "Role", "cm-maker", {"kind": "ServiceAccount", "name": "robot", "namespace": "default"}),
    )
    robot = Kubectl(cluster, tmp_path, admin.ok("create", "token", "robot").strip(), "robot")
    robot.ok("create", "configmap", "from-robot")
    admin.ok("create", "configmap", "from-admin", "--as", "alice", "--as-group", "system:masters")
    by_name = {review["name"]: review["userInfo"] for review in reviews}
    uid = admin.ok("get", "serviceaccount", "robot", "-o", "jsonpath={.metadata.uid}")
    assert by_name["from-robot"] == {
        "username": "system:serviceaccount:default:robot",
        "uid": uid,
        "groups": ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"],
    }
    assert by_name["from-admin"] == {"username": "alice", "groups": ["system:masters", "system:authenticated"]}


# --- kubeconfigs from `paybill emulator` --------------------------------------------------------------------------


@needs_kubectl
def test_paybill_emulator_writes_a_service_account_kubeconfig(admin: Kubectl, tmp_path: Path) -> None:
    admin.ok("create", "namespace", "ops")
    admin.ok("create", "serviceaccount", "deployer", "-n", "ops")
    out = tmp_path / "deployer.kubeconfig"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "paybill",
            "emulator",
            "kubeconfig",
            "--kubeconfig",
            str(admin.kubeconfig),
            "--service-account",
            "ops/deployer",
            "-o",
            str(out),
        ],
        check=True,
        timeout=60,
    )
    assert out.stat().st_mode & 0o777 == 0o600
    env = {**admin.env, "KUBECONFIG": str(out)}
    whoami = subprocess.run(
        ["kubectl", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert whoami.stdout == "system:serviceaccount:ops:deployer", whoami.stderr
    denied = subprocess.run(["kubectl", "get", "secrets"], env=env, capture_output=True, text=True, timeout=60)
    assert (
        'User "system:serviceaccount:ops:deployer" cannot list resource "secrets" in API group "" in the '
        'namespace "ops"' in denied.stderr
    )
    for wrong in (["--service-account", "ops/nobody"], ["--service-account", "ops/deployer", "--duration", "10"]):
        refused = subprocess.run(
            [
                sys.executable,
                "-m",
                "paybill",
                "emulator",
                "kubeconfig",
                "--kubeconfig",
                str(admin.kubeconfig),
                *wrong,
                "-o",
                str(tmp_path / "x"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode != 0 and "HTTP 4" in refused.stderr and "Traceback" not in refused.stderr


def test_denied_requests_are_recorded(cluster: Any) -> None:
    before = len(cluster.api.access.denied)
    token = cluster.api.access.tokens.add_user("eve")
    ca = cluster.kubeconfig.parent / "ca.crt"
    ca.write_bytes(cluster.api.access.certificate.certificate_authority)
    requests.get(
        cluster.url + "/api/v1/secrets", headers={"Authorization": f"Bearer {token}"}, verify=str(ca), timeout=10
    )
    attributes, message = cluster.api.access.denied[before]
    assert isinstance(attributes, Attributes) and attributes.user.username == "eve"
    assert (
        message == 'secrets is forbidden: User "eve" cannot list resource "secrets" in API group "" at the '
        "cluster scope"
    )


def test_impersonating_a_group_without_a_user_is_refused(cluster: Any) -> None:
    ca = cluster.kubeconfig.parent / "ca.crt"
    ca.write_bytes(cluster.api.access.certificate.certificate_authority)
    answer = requests.get(
        cluster.url + "/api/v1/namespaces",
        verify=str(ca),
        timeout=10,
        headers={
            "Authorization": f"Bearer {cluster.api.access.tokens.admin_token}",
            "Impersonate-Group": "system:masters",
        },
    )
    assert answer.status_code == 500
    assert answer.json()["message"].endswith("without impersonating a user")
