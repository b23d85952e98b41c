"""The demo's AWS part, for real on moto: moto's server on loopback (a watched child), the real AWS provider from a
filesystem mirror, and the operator pointed at both (PAYBILL_TERRAFORM_PROVIDER_MIRROR, an endpoint override in
PAYBILL_TERRAFORM_OVERRIDES_DIR, PAYBILL_CLOUD_ENDPOINTS). A silo tenant on a Plan with `cloud: aws` goes Active
through the operator; boto3, through the AWS adapter, finds what Terraform made by the tenant's tag; suspension
stops its instances, resuming starts them. If moto cannot be installed or started the demo says so and goes on."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..api import API_VERSION
from ..clouds import Cloud, CloudAdapter, tags
from ..clouds.preflight import CONDITION as CLOUD_READY
from ..clouds.preflight import ENDPOINTS_ENV
from ..handlers.apply import OPERATOR_NAMESPACE_ENV
from ..handlers.compute import COMPUTE_CHECK_ENV
from ..handlers.infrastructure import OVERRIDES_DIR_ENV, PROVIDER_MIRROR_ENV
from ..kubeclient import Kube
from . import moto
from .console import say
from .scenarios import wait_for_tenants
from .stack import Stack, start_child, tail
from .waiting import wait_until

Check = Callable[[], None]
Status = dict[str, Any]

NAMESPACE = "paybill-system"  # the demo operator's namespace: the Plan's credentials Secret is there
SECRET = "aws-credentials"
KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")  # the Secret's (every value in it is redacted from messages)
PLAN = "aws-enterprise"
TENANT = "hooli"
COST_CENTER = "aws-sales"
BUILD_TIMEOUT_S = 600.0  # the aws/silo apply in moto: ~35 s of the provider polling RDS, more on a loaded machine
CHECK_SECONDS = 5  # the demo operator's compute check of a Suspended tenant (60 by default)
APP_AMI = "ami-12c6146b"  # one of moto's built-in images
MODULE_KINDS = (
    "aws_vpc",
    "aws_subnet",
    "aws_security_group",
    "aws_db_instance",
    "aws_db_subnet_group",
    "aws_s3_bucket",
    "aws_iam_role",
    "aws_iam_role_policy",
)


@dataclass(frozen=True)
class AwsSim:
    """moto on loopback, and where the operator finds the provider and the endpoint override."""

    url: str
    mirror: Path
    overrides: Path

    def operator_env(self) -> dict[str, str]:
        return {
            PROVIDER_MIRROR_ENV: str(self.mirror),
            OVERRIDES_DIR_ENV: str(self.overrides),
            ENDPOINTS_ENV: f"aws={self.url}",
            OPERATOR_NAMESPACE_ENV: NAMESPACE,
            COMPUTE_CHECK_ENV: str(CHECK_SECONDS),
        }


@dataclass(frozen=True)
class AwsOutcome:
    """What the AWS part did, for the clouds summary."""

    module: str
    added: int
    found: dict[str, int]  # Terraform type -> objects boto3 found by the tenant's tag or name
    databases: int
    stopped: int  # instances the operator stopped on suspension
    stopped_again: int  # started by hand while suspended, stopped again by the periodic check
    started: int  # and started on resume


def start_moto(stack: Stack, state_dir: Path, timeout: float) -> AwsSim | str:
    """moto's virtualenv (installed on first use, pip's progress shown), its server as a watched child once it
    answers, the provider mirror and the override; else the reason (said too) it cannot be had."""
    try:
        if not moto.installed():
            say(f"aws: installing moto and the AWS provider into {moto.VENV} (first run only; minutes)")
        python = moto.ensure_venv(progress=_pip_progress)
        mirror = moto.provider_mirror(python, state_dir / "aws-mirror")
    except (moto.MotoUnavailable, OSError, ValueError) as error:
        return _unavailable(f"moto is not available ({error})")
    except Exception as error:  # venv creation failing (CalledProcessError) and the like: said, never silent
        return _unavailable(f"moto's virtualenv could not be made ({type(error).__name__}: {error})")
    port = moto.free_port()
    log = state_dir / "moto.log"
    child = stack.add(start_child("moto (AWS on loopback)", moto.server_argv(python, port), log))  # stopped however
    url = f"http://127.0.0.1:{port}"
    answered = wait_until(lambda: child.exited() or ("up" if moto.answers(url) else None), timeout)
    if answered != "up":  # its own exit ends only the AWS part: out of the stack's watch
        stack.children.remove(child)
        how = answered or f"no answer within {timeout:.0f}s"
        child.stop()
        return _unavailable(f"moto did not start ({how}: {' | '.join(tail(log, 3)) or '(empty log)'})")
    overrides = state_dir / "aws-overrides"
    overrides.mkdir(exist_ok=True)
    (overrides / "paybill_moto_override.tf").write_text(moto.provider_override(url))
    say(f"moto (AWS on loopback) on {url} (pid {child.pid}); the real AWS provider 3.39 from {mirror}")
    return AwsSim(url, mirror, overrides)


def _unavailable(reason: str) -> str:
    say(f"aws: {reason}; the demo goes on without its AWS part")
    return reason


def _pip_progress(line: str) -> None:
    if line.startswith(("Collecting", "Installing", "Successfully")):
        say(f"  pip: {line if len(line) <= 150 else line[:147] + '...'}")


def apply_aws_plan(kube: Kube) -> None:
    """The credentials Secret (moto's throwaway keys) and a silo Plan with `cloud: aws`: the operator runs its cloud
    preflight against moto while the samples converge."""
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    data = {key: base64.b64encode(moto.CREDENTIALS[key].encode()).decode() for key in KEYS}
    kube.apply(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NAMESPACE}, "data": data}
    )
    provisioning = {"cloud": "aws", "region": moto.REGION, "costCenter": COST_CENTER, "credentialsSecret": SECRET}
    plan = {"tier": PLAN, "isolation": "silo", "provisioning": provisioning}
    applied = kube.apply({"apiVersion": API_VERSION, "kind": "Plan", "metadata": {"name": PLAN}, "spec": plan})
    say(f"  plan/{PLAN} {applied} (cloud: aws, silo, {moto.REGION}; credentials in secret {NAMESPACE}/{SECRET})")


def apply_aws_tenant(check: Check, kube: Kube, timeout: float) -> bool:
    """Once the Plan's cloud preflight has passed (in moto), a Tenant on it: the operator builds it while the demo
    goes on. False (said) if the preflight does not pass."""
    condition = wait_until(lambda: _cloud_ready(kube), max(timeout, BUILD_TIMEOUT_S), check)
    if condition is None:
        said = _plan_condition(kube)
        say(f"FAILED: plan/{PLAN} cloud preflight did not pass ({said.get('reason')}: {said.get('message')})")
        return False
    say(f"aws: plan/{PLAN} cloud preflight passed in moto ({condition.get('message')})")
    tenant = {"planRef": PLAN, "displayName": "Hooli (on AWS)"}
    applied = kube.apply({"apiVersion": API_VERSION, "kind": "Tenant", "metadata": {"name": TENANT}, "spec": tenant})
    say(f"  tenant/{TENANT} {applied}: Terraform builds it in moto while the demo goes on")
    return True


def _plan_condition(kube: Kube) -> dict[str, Any]:
    conditions = ((kube.get(API_VERSION, "plans", PLAN) or {}).get("status") or {}).get("conditions", [])
    found: dict[str, Any] = next((c for c in conditions if c["type"] == CLOUD_READY), {})
    return found


def _cloud_ready(kube: Kube) -> dict[str, Any] | None:
    condition = _plan_condition(kube)
    return condition if condition.get("status") == "True" else None


def aws_walk(check: Check, kube: Kube, sim: AwsSim, timeout: float) -> AwsOutcome | None:
    """Wait for the AWS tenant to be Active, find what was built by its tag, suspend it (its instances stop) and
    resume it (they start); None (said) when a step does not happen."""
    from ..clouds.adapters import adapter  # boto3: the `clouds` extra

    say(f"aws: waiting for tenant {TENANT} (Terraform's aws/silo module, the real provider, in moto)")
    built = wait_for_tenants(check, kube, [TENANT], max(timeout, BUILD_TIMEOUT_S)).get(TENANT, {}).get("status") or {}
    if built.get("phase") != "Active":
        _failed(kube, "Active")
        return None
    run = built.get("infrastructure") or {}
    say(
        f"  {TENANT}: terraform {run.get('module')} {run.get('lastRun')} {run.get('lastResult')}: "
        f"{run.get('adds', 0)} added in moto; outputs in secret tenant-{TENANT}/{run.get('outputsSecret')}"
    )
    aws = adapter(Cloud.AWS, {key: moto.CREDENTIALS[key] for key in KEYS}, moto.REGION, endpoint=sim.url)
    found = Counter(o.type for o in aws.tenant_objects(TENANT))
    say(f"  boto3 (the AWS adapter) finds the tenant's objects by tag paybill.dev/tenant={TENANT}: " + _counts(found))
    app = launch_app_server(sim, aws)
    say(f"  the tenant's app server {app} launched with the tenant's tags (the aws/silo module builds no instances)")
    say(f"  inventory: {_inventory(aws)}")
    stopped = _power(check, kube, aws, True, "Suspended", "stopped", timeout)
    if stopped is None:
        _failed(kube, "Suspended with its instances stopped")
        return None
    if not stopped_again(check, kube, sim, aws, app, timeout):
        return None
    started = _power(check, kube, aws, False, "Active", "running", timeout)
    if started is None:
        _failed(kube, "Active with its instances started")
        return None
    databases = sum(1 for r in aws.inventory(TENANT) if r.kind == "database")
    return AwsOutcome(str(run.get("module")), int(run.get("adds", 0)), dict(found), databases, stopped, 1, started)


def stopped_again(check: Check, kube: Kube, sim: AwsSim, aws: CloudAdapter, app: str, timeout: float) -> bool:
    """The app server started by hand (boto3) while its tenant is Suspended: the operator's periodic check finds it
    running in the inventory and stops it again, with a Warning Event; False (said) if it does not."""
    _ec2(sim).start_instances(InstanceIds=[app])
    say(f"  {app} started by hand while {TENANT} is Suspended; the operator's periodic compute check looks")

    def warned() -> str | None:
        stopped = all(r.state == "stopped" for r in aws.inventory(TENANT) if r.id == app)
        return next((e["message"] for e in _warnings(kube) if app in e["message"]), None) if stopped else None

    message = wait_until(warned, max(timeout, 2 * CHECK_SECONDS + 30), check)
    if message is None:
        _failed(kube, f"Suspended with {app} stopped again")
        return False
    say(f"  stopped again (Warning RunningWhileSuspended: {message}); inventory: {_inventory(aws)}")
    return True


def _warnings(kube: Kube) -> list[dict[str, Any]]:
    return [
        event
        for event in kube.list("v1", "events", "default")  # a cluster-scoped object's Events are in default
        if event.get("involvedObject", {}).get("name") == TENANT and event.get("reason") == "RunningWhileSuspended"
    ]


def _ec2(sim: AwsSim) -> Any:
    import boto3

    keys = {key.lower(): moto.CREDENTIALS[key] for key in KEYS}
    return boto3.client("ec2", endpoint_url=sim.url, region_name=moto.REGION, **keys)


def launch_app_server(sim: AwsSim, aws: CloudAdapter) -> str:
    """An EC2 instance in the tenant's first subnet with the tenant's tags, as its deployment would make it."""
    subnets = sorted(o.id for o in aws.tenant_objects(TENANT) if o.type == "aws_subnet")
    tagged = [{"Key": k, "Value": v} for k, v in tags.tags(Cloud.AWS, TENANT, PLAN, COST_CENTER).items()]
    made = _ec2(sim).run_instances(
        ImageId=APP_AMI,
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [*tagged, {"Key": "Name", "Value": f"{TENANT}-app"}]}],
        **({"SubnetId": subnets[0]} if subnets else {}),
    )
    return str(made["Instances"][0]["InstanceId"])


def _power(
    check: Check, kube: Kube, aws: CloudAdapter, suspended: bool, phase: str, wanted: str, timeout: float
) -> int | None:
    """Suspend (or resume) the tenant and wait until the operator has stopped (started) its instances; how many."""
    kube.merge_patch(API_VERSION, "tenants", TENANT, {"spec": {"suspended": suspended}})

    def done(status: Status) -> bool:
        compute = status.get("compute") or {}
        return status.get("phase") == phase and compute.get("wanted") == wanted and compute.get("result") == "Done"

    status = wait_until(_tenant_status(kube, done), timeout, check)
    if status is None:
        return None
    changed = len(status["compute"].get("changed", []))
    verb = "suspended: the operator stopped" if suspended else "resumed: the operator started"
    say(f"  {TENANT} {verb} {changed} of its instances and databases through the adapter; inventory: {_inventory(aws)}")
    return changed


def _inventory(aws: CloudAdapter) -> str:
    return ", ".join(f"{r.kind} {r.id} {r.state}" for r in aws.inventory(TENANT)) or "nothing"


def _counts(found: Counter[str]) -> str:
    ordered = [kind for kind in MODULE_KINDS if kind in found] + sorted(set(found) - set(MODULE_KINDS))
    return ", ".join(f"{found[kind]} {kind}" for kind in ordered) + f" ({sum(found.values())} objects)"


def _tenant_status(kube: Kube, reached: Callable[[Status], bool]) -> Callable[[], Status | None]:
    def condition() -> Status | None:
        status = (kube.get(API_VERSION, "tenants", TENANT) or {}).get("status") or {}
        return status if reached(status) else None

    return condition


def _failed(kube: Kube, goal: str) -> None:
    status = (kube.get(API_VERSION, "tenants", TENANT) or {}).get("status") or {}
    ready: dict[str, Any] = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
    say(
        f"FAILED: aws tenant {TENANT} did not become {goal} (is {status.get('phase') or 'not reconciled'}: "
        f"{ready.get('reason', '-')}: {ready.get('message', '-')})"
    )


def summary(outcome: AwsOutcome | str) -> str:
    """The clouds summary's aws line (after "aws: "), from what the AWS part did or why it did not."""
    if isinstance(outcome, str):
        return f"not built by this run ({outcome}); the suite builds it on moto (tests/terraform/test_operator_aws.py)"
    return (
        f"built for real on moto (tenant {TENANT}, {outcome.module}: {outcome.added} resources added by the real "
        f"provider, {sum(outcome.found.values())} found by tag with boto3, {outcome.databases} database in the "
        f"inventory, {outcome.stopped} instances and databases stopped on suspension, {outcome.stopped_again} "
        f"started by hand while suspended stopped again, {outcome.started} started on resume)"
    )
