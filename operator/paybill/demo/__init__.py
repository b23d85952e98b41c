"""`paybill demo`: the whole stack on one machine (emulated API server + local PostgreSQL + operator).

`run_demo` (what the CLI calls) owns the state directory and the signals, starts the stack (`stack`), shows the
scenarios (`scenarios`), and stops every child however it ends. Every wait is `waiting.wait_until`."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from ..database.server import PASSWORD_FILE, PostgresError
from ..kubeclient import Kube, KubeError
from ..lifecycle.conditions import is_true
from . import aws
from .console import DemoError, say
from .scenarios import (
    agent_gate,
    agent_workflows,
    apply_samples,
    billing_walk,
    check_samples,
    cloud_lines,
    infrastructure_lines,
    summary,
    terraform_outputs,
    wait_for_tenants,
)
from .stack import (
    ChildExited,
    Interrupted,
    Stack,
    client_for,
    database_hint,
    register_crds,
    start_emulator,
    start_operator,
    start_postgres,
    tail,
)
from .state import agents_already_ran, claim_state_dir, fresh_state, lock_state_dir, record_agents_ran
from .waiting import wait_until

REPO = Path(__file__).resolve().parents[3]


def run_demo(state_dir: Path, samples: Path, keep: bool, port: int | None, timeout: float, resume: bool = False) -> int:
    """The whole demo; every way out (success, failure, a child exiting, SIGTERM, Ctrl-C) stops every child."""
    state_dir = state_dir.resolve()
    stack = Stack()
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    lock = None
    try:
        check_samples(samples)
        claim_state_dir(state_dir)
        lock = lock_state_dir(state_dir)
        kept = fresh_state(state_dir, resume)
        say("Paybill demo: emulated Kubernetes API + local PostgreSQL + the Paybill operator")
        if kept:
            say(f"  left alone in {state_dir} (not the demo's): {', '.join(kept)}")
        return _run(stack, state_dir, samples, keep, port, timeout, resume)
    except ChildExited as exited:
        say(f"FAILED: the {exited} -- last lines of {exited.child.log}:")
        print("\n".join(f"  | {line}" for line in tail(exited.child.log)) or "  | (empty)", flush=True)
        return 1
    except (DemoError, PostgresError, KubeError) as error:
        say(f"FAILED: {error}")
        return 1
    except Interrupted as interrupted:
        say(f"{interrupted}: stopping")
        return 128 + interrupted.signum
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        if stopped := stack.stop():
            say(f"stopped: {', '.join(stopped)}")
        if lock is not None:
            os.close(lock)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def _run(
    stack: Stack, state_dir: Path, samples: Path, keep: bool, port: int | None, timeout: float, resume: bool
) -> int:
    postgres, database_url = start_postgres(stack, state_dir, resume)
    kubeconfig = start_emulator(stack, state_dir, port, timeout)
    try:
        kube = Kube(client_for(kubeconfig))
        register_crds(kube)
        sim = aws.start_moto(stack, state_dir, timeout)  # the AWS part's moto, or why there is none
        start_operator(
            stack, state_dir, kubeconfig, database_url, sim.operator_env() if isinstance(sim, aws.AwsSim) else None
        )
        return _converge(
            stack,
            kube,
            samples,
            keep,
            timeout,
            kubeconfig,
            database_url,
            postgres.data_dir / PASSWORD_FILE,
            resume,
            sim,
        )
    except Exception:
        stack.blame()
        raise


def _converge(
    stack: Stack,
    kube: Kube,
    samples: Path,
    keep: bool,
    timeout: float,
    kubeconfig: Path,
    database_url: str,
    password_file: Path,
    resume: bool,
    sim: aws.AwsSim | str,
) -> int:
    manifests = check_samples(samples)
    apply_samples(kube, manifests)
    if isinstance(sim, aws.AwsSim):
        aws.apply_aws_plan(kube)  # its cloud preflight runs in moto while the samples converge
    names = [m["metadata"]["name"] for m in manifests if m["kind"] == "Tenant"]
    say(f"waiting for {len(names)} tenants to become Ready")
    tenants = wait_for_tenants(stack.check, kube, names, timeout)
    print("\n".join(summary(tenants)), flush=True)
    provisioned = infrastructure_lines(tenants, terraform_outputs(kube, tenants))
    if provisioned:
        say("infrastructure built by Terraform (module per isolation model, state in PostgreSQL):")
        print("\n".join(provisioned), flush=True)
    ready = sum(is_true((t.get("status") or {}).get("conditions", []), "Ready") for t in tenants.values())
    if ready != len(names):
        say(f"FAILED: {ready}/{len(names)} tenants Ready after {timeout:.0f}s; see {kubeconfig.parent}/operator.log")
        return 1
    say(f"all {ready} tenants Ready")
    if isinstance(sim, aws.AwsSim) and not aws.apply_aws_tenant(stack.check, kube, timeout):
        return 1
    state_dir = kubeconfig.parent
    if agents_already_ran(state_dir, resume):
        say(
            "agent gate and workflows: already ran on this data (again, they would refund an order twice); "
            "skipped. Run without --resume to see them"
        )
    elif agent_gate(stack.check, kube, database_url, samples / "agents", timeout) and agent_workflows(
        stack.check, kube, samples / "agents", timeout
    ):
        record_agents_ran(state_dir)
    else:
        return 1
    if not billing_walk(stack.check, kube, "acme", timeout):
        return 1
    outcome = aws.aws_walk(stack.check, kube, sim, timeout) if isinstance(sim, aws.AwsSim) else sim
    say("clouds:")
    print("\n".join(cloud_lines(tenants, aws.summary(outcome or "its AWS part failed"))), flush=True)
    if outcome is None:
        return 1
    if keep:
        say(f"stack left running. In another shell:  export KUBECONFIG={kubeconfig}; kubectl get paybill")
        say(
            f"  its database (the password stays in {password_file}, mode 0600):  "
            f"{database_hint(database_url, password_file)}"
        )
        say("press Ctrl-C (or send SIGTERM) to stop everything")
        wait_until(lambda: None, float("inf"), stack.check)
    return 0
