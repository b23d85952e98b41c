"""`python -m paybill.terraform OPERATION --tenant T --module DIR`: one run, as the Kubernetes Job runs it.

The backend DSN comes from PAYBILL_TERRAFORM_BACKEND_DSN (a Secret reference in the Job), provider
credentials from the environment. Prints one JSON line: the summary and the public outputs, never a
sensitive one (those the operator reads from the state into the tenant's Secret). With --run-id, the result (or
Terraform's first error lines, redacted) is also written to the run's record in PostgreSQL (jobruns.py), which is
how the operator learns what a Job did; a failed run exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import jobruns
from .backend import dsn_secrets
from .config import RunnerConfig
from .connections import Connections
from .errors import DataAtRisk, TerraformError, redact
from .job import OPERATIONS
from .models import ModuleInputs
from .runner import TerraformRunner

PROVIDER_PREFIXES = ("AWS_", "ARM_", "GOOGLE_", "OCI_", "IC_", "TF_VAR_")  # the providers' own variables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paybill.terraform")
    parser.add_argument("operation", choices=OPERATIONS)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--module", type=Path, required=True, help="the module's files and paybill.auto.tfvars.json")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--plan-hash")
    parser.add_argument("--workspace", default="default", help="the tenant's state: one per isolation model")
    parser.add_argument("--run-id", help="write the result to this run's record in PostgreSQL")
    args = parser.parse_args(argv)
    if args.operation == "apply" and not args.plan_hash:
        parser.error("apply runs an approved plan: --plan-hash is required")
    variables = json.loads((args.module / "paybill.auto.tfvars.json").read_text())
    inputs = ModuleInputs(**{**variables, "tenant_id": args.tenant, "workspace": args.workspace})
    provider_env = {key: value for key, value in os.environ.items() if key.startswith(PROVIDER_PREFIXES)}
    dsn = os.environ["PAYBILL_TERRAFORM_BACKEND_DSN"]
    succeeded, result, output = True, {}, ""
    try:
        runner = TerraformRunner(
            RunnerConfig(
                backend_dsn=dsn, state_dir=args.state_dir, timeout=args.timeout, concurrency=1, env=provider_env
            )
        )
        result = json.loads(json.dumps(_run(runner, args.operation, inputs, args.module, args.plan_hash), default=list))
        output = json.dumps(result)
    except Exception as exc:  # the run's failure is its record, said in Terraform's own words
        if args.run_id is None:
            raise
        text = exc.message if isinstance(exc, TerraformError) else f"{type(exc).__name__}: {exc}"
        succeeded, output = False, redact(text, dsn_secrets(dsn) + list(provider_env.values()))
        result = {"error": type(exc).__name__, **({"plan_hash": exc.plan_hash} if isinstance(exc, DataAtRisk) else {})}
    if args.run_id is not None:
        run = jobruns.JobRun(args.run_id, args.tenant, args.workspace, args.operation, succeeded, result, output)
        with Connections(dsn, kept=0).connection() as connection:
            jobruns.record(connection, run)
    print(output if succeeded else json.dumps({"error": output}), file=sys.stdout if succeeded else sys.stderr)
    return 0 if succeeded else 1


def _run(
    runner: TerraformRunner, operation: str, inputs: ModuleInputs, module: Path, plan_hash: str | None
) -> dict[str, Any]:
    if operation == "plan":
        return {"summary": asdict(runner.plan(inputs, module))}
    if operation == "apply":
        result = runner.apply_plan(inputs, module, str(plan_hash), str(plan_hash))
        return {
            "summary": asdict(result.summary),
            "outputs": result.outputs.public(),
            "lock_recoveries": [asdict(r) for r in result.lock_recoveries],
        }
    if operation == "plan-apply":
        result = runner.apply(inputs, module)
        return {
            "summary": asdict(result.summary),
            "outputs": result.outputs.public(),
            "lock_recoveries": [asdict(r) for r in result.lock_recoveries],
        }
    if operation == "destroy":
        return asdict(runner.destroy(inputs, module))
    if operation == "drift":
        return asdict(runner.drift(inputs, module))
    return {"outputs": runner.outputs(inputs, module).public()}


if __name__ == "__main__":
    sys.exit(main())
