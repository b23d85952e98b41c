"""The Terraform runner: plan, apply exactly an approved plan, outputs, destroy and drift, per tenant, with
state in PostgreSQL, a bounded number of runs at once, a timeout per run and stale-lock recovery.

Every run gets a fresh working directory (the module, a `pg` backend block, the inputs as tfvars), its own
environment (nothing inherited from the operator but PATH), and one deadline for all its commands.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_terraform import IsFlagged, IsNotFlagged  # type: ignore[import-untyped]

from . import adoption, backend, binary, keeping, recovery
from . import workspaces as records
from .config import RunnerConfig, cli_config
from .connections import Connections
from .errors import (
    AdoptionBlocked,
    DataAtRisk,
    DataKept,
    PlanHashMismatch,
    PlanNotFound,
    PolicyNotSettled,
    RunnerBusy,
    StalePlan,
    StateLocked,
    TerraformError,
    error_lines,
    kept_data,
    redact,
)
from .models import (
    ApplyResult,
    DestroyResult,
    DriftReport,
    LockRecovery,
    ModuleInputs,
    Outputs,
    OutputValue,
    PlanSummary,
)
from .plans import PlanStore, sha256, summarize
from .runrecords import RunRecords
from .wrapper import RunTerraform

BACKEND_FILE = "paybill_backend.tf"
VARIABLES_FILE = "paybill.auto.tfvars.json"
PLAN_FILE = "paybill.tfplan"
LOCK_ERROR = "Error acquiring the state lock"
CREATION_LOCKED = "locked for workspace creation"  # the pg backend's one lock for making any workspace
CREATION_RETRY_S = 0.25
DESTROYED = re.compile(r"(?:Destroy|Apply) complete! Resources: (?:\d+ added, \d+ changed, )?(\d+) destroyed\.")
STALE_PLAN_ERRORS = ("Saved plan is stale", "plan file is stale")
# A cloud adapter's lookup of a tenant's objects (clouds CloudAdapter.tenant_objects), for recovery to adopt from
Finder = Callable[[str], Sequence[adoption.CloudObject]]


@dataclass
class Run:
    """One run in flight: its id, directory, Terraform and the lock recoveries it needed."""

    run_id: str
    tenant_id: str
    workspace: str
    workdir: Path
    terraform: RunTerraform
    secrets: list[str]
    recoveries: list[LockRecovery] = field(default_factory=list)
    adoption: adoption.Adoption | None = None


class TerraformRunner(RunRecords):
    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        self.program = config.program or binary.discover()
        self._slots = threading.BoundedSemaphore(config.concurrency)
        self._guard = threading.Lock()
        self._active: dict[str, str] = {}  # run id -> tenant id
        self._waiting = 0
        for directory in (config.state_dir / "runs", config.plugin_cache, config.state_dir / "home"):
            directory.mkdir(parents=True, exist_ok=True)
        config.cli_config_path.write_text(cli_config(config.plugin_cache, config.provider_mirror))
        self.connections = Connections(config.backend_dsn, kept=config.concurrency)
        self.plans = PlanStore(self.connections)

    # -- what callers see ---------------------------------------------------------------------------------

    @property
    def active_runs(self) -> dict[str, str]:
        with self._guard:
            return dict(self._active)

    @property
    def waiting_runs(self) -> int:
        with self._guard:
            return self._waiting

    def plan(
        self, inputs: ModuleInputs, module: Path, env: Mapping[str, str] | None = None, finder: Finder | None = None
    ) -> PlanSummary:
        """Plan and keep the plan (file and JSON) in PostgreSQL; status holds the returned summary. `env` (here and
        in every run): this run's provider credentials, on top of the configured ones, redacted in errors.
        `finder` (here and in apply): the cloud's lookup of the tenant's objects, for the recovery of an apply
        that never finished (None: the module builds nothing in a cloud)."""
        with self._run(inputs, module, env) as run:
            self._adopt_if_interrupted(run, finder)
            return self._plan(run)[0]

    def apply_plan(
        self,
        inputs: ModuleInputs,
        module: Path,
        plan_hash: str,
        approved_hash: str,
        env: Mapping[str, str] | None = None,
    ) -> ApplyResult:
        """Apply exactly the saved plan `plan_hash`, only when it is the approved one; anything else applies
        nothing. Terraform itself refuses a plan made against a state that has moved since (StalePlan)."""
        if plan_hash != approved_hash:
            raise PlanHashMismatch(approved_hash, plan_hash)
        plan_file = self.plans.plan_file(inputs.tenant_id, plan_hash)
        if plan_file is None:
            raise PlanNotFound(f"no saved plan {plan_hash[:12]} for tenant {inputs.tenant_id}")
        if sha256(plan_file) != approved_hash:
            raise PlanHashMismatch(approved_hash, sha256(plan_file))
        summary = self.plans.summary(inputs.tenant_id, plan_hash)
        self._refuse_if_made_before_an_interruption(inputs, plan_hash)
        with self._run(inputs, module, env) as run:
            (run.workdir / PLAN_FILE).write_bytes(plan_file)
            self._apply_saved(run)
            return ApplyResult(summary, self.state_outputs(inputs.tenant_id, inputs.workspace), tuple(run.recoveries))

    def apply(
        self, inputs: ModuleInputs, module: Path, env: Mapping[str, str] | None = None, finder: Finder | None = None
    ) -> ApplyResult:
        """Plan and apply that very plan file in one run (no approval step). The plan's summary (`show -json`)
        is made while the apply runs, except when the state holds resources with the tenant's data: then the plan
        is read first, and one that deletes or replaces any of them applies nothing (DataAtRisk: only a person's
        approval of that saved plan applies it, through apply_plan)."""
        with self._run(inputs, module, env) as run:
            self._adopt_if_interrupted(run, finder)
            self._plan_file(run)
            if self._holding_data(run):  # the plan is read before anything is applied
                summary, plan_json = self._summarize(run)
                self._refuse_deleting_data(summary, plan_json)
                self._apply_saved(run)
            else:
                with ThreadPoolExecutor(max_workers=1) as side:
                    shown = side.submit(self._summarize, run)
                    self._apply_saved(run)
                    summary, _ = shown.result()
            outputs = self.state_outputs(inputs.tenant_id, inputs.workspace)
            return ApplyResult(summary, outputs, tuple(run.recoveries), run.adoption)

    def outputs(self, inputs: ModuleInputs, module: Path) -> Outputs:
        """`terraform output -json` in a run of its own."""
        with self._run(inputs, module) as run:
            code, out, err = run.terraform.output_cmd(json=IsFlagged, no_color=IsFlagged)
            self._check(run, "output", code, out, err)
            return _outputs(json.loads(out or "{}"))

    def state_outputs(self, tenant_id: str, workspace: str = backend.WORKSPACE) -> Outputs:
        """The outputs as the tenant's state in PostgreSQL holds them (what `terraform output` reads), without
        starting Terraform: how a run reports its outputs."""
        with self.connections.connection() as connection:
            return _outputs(backend.state_outputs(connection, tenant_id, workspace))

    def workspaces(self, tenant_id: str) -> dict[str, records.Workspace]:
        """The tenant's workspaces as PostgreSQL has them: resources in each state, what each was applied with."""
        with self.connections.connection() as connection:
            return records.workspaces(connection, tenant_id)

    def destroy(
        self, inputs: ModuleInputs, module: Path, env: Mapping[str, str] | None = None, finder: Finder | None = None
    ) -> DestroyResult:
        """Destroy what the state holds, and, after an apply that never finished, what that apply made first (each
        object imported into the state, then destroyed with the rest). The resources holding data are first brought
        to `inputs.deletion_policy` (a destroy reads a final snapshot's or force_destroy's setting from the state,
        not the configuration); a bucket the policy keeps the objects of stops the destroy: DataKept says so. Under
        a policy that keeps data, the destroy is planned and read first: one that would delete a resource holding
        data with no copy kept (a type that cannot keep one, a state that says none is made) destroys nothing
        (DataAtRisk names each); otherwise exactly that plan is applied."""
        with self._run(inputs, module, env) as run:
            self._import_if_interrupted(run, finder)
            holding = self._holding_data(run)
            self._settle_deletion_policy(run, holding, inputs, module)
            if holding and inputs.deletion_policy != "destroy":
                self._refuse_losing_data(run, inputs.deletion_policy)
                destroy = functools.partial(run.terraform.apply, PLAN_FILE)  # exactly the destroy plan checked
            else:
                destroy = functools.partial(run.terraform.destroy, force=IsNotFlagged, auto_approve=True)
            code, out, err = self._locking(
                run, lambda: destroy(no_color=IsFlagged, input=False, lock_timeout=self._lock_timeout)
            )
            kept = kept_data(redact(error_lines(err, out), run.secrets), inputs.deletion_policy) if code else None
            if kept is not None:
                raise DataKept("destroy", code, kept)
            self._check(run, "destroy", code, out, err)
            return DestroyResult(inputs.tenant_id, destroyed_count(out), tuple(run.recoveries), run.adoption)

    def drift(self, inputs: ModuleInputs, module: Path, env: Mapping[str, str] | None = None) -> DriftReport:
        """`plan -detailed-exitcode`: exit 2 means applying the configuration would change something, because
        the world (or the recorded state) left it. Differences the provider reports but the configuration
        does not care about (Terraform's "changed outside of Terraform" notes) are no drift."""
        with self._run(inputs, module, env) as run:
            summary, _ = self._plan(run)
            if not summary.has_changes:
                return DriftReport(inputs.tenant_id, False, ())
            return DriftReport(inputs.tenant_id, True, summary.addresses, summary)

    # -- one run ------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _run(self, inputs: ModuleInputs, module: Path, env: Mapping[str, str] | None = None) -> Iterator[Run]:
        self._take_slot()
        run_id = secrets.token_hex(6)
        workdir = self.config.state_dir / "runs" / f"{inputs.tenant_id}-{inputs.workspace}-{run_id}"
        with self._guard:
            self._active[run_id] = inputs.tenant_id
        try:
            self.prepare_workdir(workdir, inputs, module)
            environment = {**self.environment(inputs.tenant_id, run_id, inputs.workspace), **(env or {})}
            terraform = RunTerraform(
                self.program, workdir, environment, time.monotonic() + self.config.timeout, self.config.timeout
            )
            run = Run(
                run_id,
                inputs.tenant_id,
                inputs.workspace,
                workdir,
                terraform,
                backend.dsn_secrets(self.config.backend_dsn)
                + list(self.config.env.values())
                + list((env or {}).values()),
            )
            self._init(run)
            yield run
        finally:
            with self._guard:
                self._active.pop(run_id, None)
            self._slots.release()
            if not self.config.keep_workdirs:
                shutil.rmtree(workdir, ignore_errors=True)

    def _take_slot(self) -> None:
        with self._guard:
            self._waiting += 1
        try:
            if not self._slots.acquire(timeout=self.config.slot_wait):
                raise RunnerBusy(f"all {self.config.concurrency} run slots stayed taken for {self.config.slot_wait}s")
        finally:
            with self._guard:
                self._waiting -= 1

    def prepare_workdir(self, workdir: Path, inputs: ModuleInputs, module: Path) -> None:
        """A run's files: the module's *.tf, the configured extra files, the pg backend block, the inputs."""
        workdir.mkdir(mode=0o700, parents=True)
        for source in sorted(module.iterdir()):
            if source.is_file() and source.name.endswith((".tf", ".tf.json")):
                shutil.copyfile(source, workdir / source.name)
        for name, text in self.config.extra_files.items():
            (workdir / Path(name).name).write_text(text)
        (workdir / BACKEND_FILE).write_text('terraform {\n  backend "pg" {}\n}\n')
        (workdir / VARIABLES_FILE).write_text(json.dumps(inputs.variables()))

    def environment(self, tenant_id: str, run_id: str, workspace: str = backend.WORKSPACE) -> dict[str, str]:
        """All a run's Terraform sees: PATH and nothing else of the operator's environment. `workspace`: which of
        the tenant's states (one per isolation model; `init` makes a new one)."""
        return {
            **({"TF_WORKSPACE": workspace} if workspace != backend.WORKSPACE else {}),
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.config.state_dir / "home"),
            "CHECKPOINT_DISABLE": "1",
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "TF_CLI_CONFIG_FILE": str(self.config.cli_config_path),
            "PG_CONN_STR": backend.terraform_conn_str(self.config.backend_dsn, run_id),
            "PG_SCHEMA_NAME": backend.schema_for(tenant_id),
            **self.config.env,
        }

    def _init(self, run: Run) -> None:
        """`terraform init` once per configuration: its data directory (backend settings, provider links into
        the plugin cache, lock file) does not depend on the tenant, whose schema comes from the environment,
        so later runs start from a copy. A tenant's first run always inits (that makes its state table), then
        gets an empty state row, so that no run of it ever holds the backend's shared creation lock (one for every
        schema of the database, which two new tenants' first inits both take)."""
        template = self.config.state_dir / "init" / self._configuration_key(run.workdir)
        with self.connections.connection() as connection:
            known_tenant = backend.state_table_exists(connection, run.tenant_id)
            if known_tenant:  # a fresh `init` refuses a workspace the backend does not list yet
                backend.ensure_state_row(connection, run.tenant_id, run.workspace)
        if known_tenant and template.is_dir():
            shutil.copytree(template, run.workdir, symlinks=True, dirs_exist_ok=True)
        else:
            code, out, err = self._first_init(run)
            self._check(run, "init", code, out, err)
            if not template.is_dir():
                self._keep_template(run.workdir, template)
        if not known_tenant:  # its init has just made the state table
            with self.connections.connection() as connection:
                backend.ensure_state_row(connection, run.tenant_id, run.workspace)

    def _first_init(self, run: Run) -> tuple[int, str, str]:
        """`init`, again while another init holds the backend's creation lock, for up to the lock timeout: Terraform
        takes that lock without waiting (-lock-timeout does not reach it)."""
        deadline = time.monotonic() + self.config.lock_timeout
        while True:
            with self._plugin_cache_lock():
                code, out, err = run.terraform.init(no_color=IsFlagged, input=False, reconfigure=IsNotFlagged)
            if code == 0 or CREATION_LOCKED not in err + out or time.monotonic() >= deadline:
                return code, out, err
            time.sleep(CREATION_RETRY_S)

    def _configuration_key(self, workdir: Path) -> str:
        """What `init` depends on: the program, the CLI configuration and every configuration file."""
        parts = [" ".join(self.program.argv), self.config.cli_config_path.read_text()]
        for path in sorted(workdir.iterdir()):
            if path.is_file() and path.name.endswith((".tf", ".tf.json")):
                parts += [path.name, path.read_text()]
        return sha256("\0".join(parts).encode())

    @staticmethod
    def _keep_template(workdir: Path, template: Path) -> None:
        staging = template.with_name(f"{template.name}.{secrets.token_hex(4)}")
        staging.mkdir(parents=True)
        shutil.copytree(workdir / ".terraform", staging / ".terraform", symlinks=True)
        if (workdir / ".terraform.lock.hcl").exists():
            shutil.copyfile(workdir / ".terraform.lock.hcl", staging / ".terraform.lock.hcl")
        try:
            staging.rename(template)
        except OSError:  # another run of the same configuration kept its copy first
            shutil.rmtree(staging, ignore_errors=True)

    @contextlib.contextmanager
    def _plugin_cache_lock(self) -> Iterator[None]:
        """Terraform's plugin cache is not safe for concurrent installs: one init at a time installs
        providers (modules on built-ins only have nothing to install and skip the wait)."""
        if self.config.provider_mirror is None:
            yield
            return
        with (self.config.plugin_cache / ".paybill.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _plan(self, run: Run) -> tuple[PlanSummary, dict[str, Any]]:
        self._plan_file(run)
        return self._summarize(run)

    def _plan_file(self, run: Run, **options: Any) -> bool:
        """`plan -out` (with `options`, e.g. target, destroy); whether the plan changes anything."""
        code, out, err = self._locking(
            run,
            lambda: run.terraform.plan(
                out=PLAN_FILE,
                detailed_exitcode=IsFlagged,
                no_color=IsFlagged,
                input=False,
                lock_timeout=self._lock_timeout,
                **options,
            ),
        )
        if code not in (0, 2):
            self._check(run, "plan", code, out, err)
        return code == 2

    def _summarize(self, run: Run) -> tuple[PlanSummary, dict[str, Any]]:
        """`show -json` of the saved plan: its summary, and both kept in PostgreSQL under the file's sha256."""
        code, out, err = run.terraform.show(PLAN_FILE, json=IsFlagged, no_color=IsFlagged)
        self._check(run, "show", code, out, err)
        plan_json = json.loads(out)
        plan_file = (run.workdir / PLAN_FILE).read_bytes()
        summary = summarize(run.tenant_id, plan_json, sha256(plan_file))
        self.plans.save(summary, plan_json, plan_file)
        return summary, plan_json

    def _apply_saved(self, run: Run) -> None:
        """The apply, marked in PostgreSQL while it runs: a mark left behind is an apply that never finished."""
        with self.connections.connection() as connection:
            recovery.mark_applying(connection, run.tenant_id, run.workspace, run.run_id)
        code, out, err = self._locking(
            run,
            lambda: run.terraform.apply(PLAN_FILE, no_color=IsFlagged, input=False, lock_timeout=self._lock_timeout),
        )
        if LOCK_ERROR not in err + out:  # Terraform ran the apply and wrote its state, whatever came of it
            with self.connections.connection() as connection:
                recovery.clear_applying(connection, run.tenant_id, run.workspace)
        self._check(run, "apply", code, out, err)

    # -- after an apply that never finished ---------------------------------------------------------------------

    def _adopt_if_interrupted(self, run: Run, finder: Finder | None) -> None:
        """When an apply of this workspace never finished, the objects it made that the state lacks are written
        into the run as `import {}` blocks before the real plan (adoption.py decides which, naming what it
        cannot map: AdoptionBlocked). A module that builds nothing in a cloud (finder None) has nothing to adopt."""
        with self.connections.connection() as connection:
            since = recovery.interrupted_since(connection, run.tenant_id, run.workspace)
            tracked = recovery.tracked(connection, run.tenant_id, run.workspace) if since else set()
        if since is None or finder is None:
            return
        self._plan_file(run)
        planned = adoption.planned_creates(self._show_json(run))
        if not planned:
            return
        try:
            found = finder(run.tenant_id)
        except Exception as exc:  # Unsupported for the cloud, or a CloudError: nothing is applied blind
            raise AdoptionBlocked("adopt", None, self._blocked(run, f"{type(exc).__name__}: {exc}")) from exc
        result = adoption.adopt(run.tenant_id, found, tracked, planned)
        if result.problems:
            raise AdoptionBlocked("adopt", None, self._blocked(run, "; ".join(result.problems)))
        if result.imports:
            (run.workdir / adoption.IMPORT_FILE).write_text(adoption.import_blocks(result.imports))
        run.adoption = result

    def _import_if_interrupted(self, run: Run, finder: Finder | None) -> None:
        """Before a destroy: the adopted objects imported one by one (`terraform import`; a destroy plans no import
        blocks), then the mark removed: the state knows all there is."""
        self._adopt_if_interrupted(run, finder)
        if run.adoption is None:
            return
        (run.workdir / adoption.IMPORT_FILE).unlink(missing_ok=True)
        for item in run.adoption.imports:
            command = functools.partial(
                run.terraform.cmd,
                "import",
                item.address,
                item.id,
                no_color=IsFlagged,
                input=False,
                lock_timeout=self._lock_timeout,
            )
            code, out, err = self._locking(run, command)
            self._check(run, "import", code, out, err)
        with self.connections.connection() as connection:
            recovery.clear_applying(connection, run.tenant_id, run.workspace)

    def _settle_deletion_policy(self, run: Run, targets: list[str], inputs: ModuleInputs, module: Path) -> None:
        """Before a destroy: an apply targeting the resources that may hold data (`targets`), so that their state
        carries the current deletion policy (skip_final_snapshot, force_destroy, deletion_protection ...) whatever
        the last apply was made with. Only updates in place are applied: a plan that would create or replace
        anything stops the destroy (PolicyNotSettled). When the module changed since its last apply, only updates
        of the deletion settings are: its other changes wait for their own apply (and, under approval manual, a
        person), and the destroy stops until then."""
        if not targets:
            return
        if not self._plan_file(run, target=targets):
            return
        changed = self._changed_since_applied(inputs, module)  # read only when there is something to settle
        beyond = keeping.beyond_policy(self._show_json(run), settings_only=changed)
        if beyond:
            raise PolicyNotSettled(
                "destroy",
                None,
                "the deletion policy could not be carried into the state of the resources holding data without "
                f"more than updating their deletion settings: {', '.join(beyond)}; nothing was applied or destroyed "
                "(apply the module's changes first, or set deletionPolicy destroy)",
            )
        self._apply_saved(run)

    def _changed_since_applied(self, inputs: ModuleInputs, module: Path) -> bool:
        """Whether the module's files differ from those of the workspace's last recorded apply (its inputs but the
        deletion policy are the recorded ones). No record of an apply: nothing to compare, False."""
        found = self.workspaces(inputs.tenant_id).get(inputs.workspace)
        if found is None or found.config_digest is None or found.module is None:
            return False
        try:
            applied = ModuleInputs(**{**found.variables, "tenant_id": inputs.tenant_id, "workspace": inputs.workspace})
        except (TypeError, ValueError):  # a record this operator cannot read: take it as changed
            return True
        digest = records.config_digest(module, applied.variables(), found.credentials_secret, inputs.workspace)
        return digest != found.config_digest

    def _holding_data(self, run: Run) -> list[str]:
        """The addresses of the resources in the run's state that may hold the tenant's data (keeping.holds_data)."""
        with self.connections.connection() as connection:
            found = records.managed_addresses(connection, run.tenant_id, run.workspace)
        return sorted({address for kind, address in found if keeping.holds_data(kind)})

    @staticmethod
    def _refuse_deleting_data(summary: PlanSummary, plan_json: dict[str, Any]) -> None:
        deleted = keeping.deleted(plan_json)
        if deleted:
            raise DataAtRisk(
                "apply",
                f"plan {summary.plan_hash[:12]} deletes or replaces {', '.join(deleted)}, which hold the tenant's "
                "data: nothing was applied; only an approval of exactly this plan applies it",
                summary.plan_hash,
            )

    def _refuse_losing_data(self, run: Run, policy: str) -> None:
        """Before a destroy under a policy that keeps data: the destroy planned into the run's plan file and read;
        one that would delete data with no copy kept destroys nothing (the file is what the destroy then applies)."""
        self._plan_file(run, destroy=IsFlagged)
        lost = keeping.unkept(self._show_json(run))
        if lost:
            raise DataAtRisk(
                "destroy",
                f"deletionPolicy {policy} keeps the tenant's data, and the destroy would delete it with no copy "
                f"kept: {'; '.join(lost)}; nothing was destroyed. Copy out what is needed, then set deletionPolicy "
                "destroy, and the destroy goes on",
            )

    def _blocked(self, run: Run, why: str) -> str:
        return redact(
            f"an apply of {run.workspace} never finished and what it made cannot be adopted without guessing: {why}",
            run.secrets,
        )

    def _show_json(self, run: Run) -> dict[str, Any]:
        code, out, err = run.terraform.show(PLAN_FILE, json=IsFlagged, no_color=IsFlagged)
        self._check(run, "show", code, out, err)
        shown: dict[str, Any] = json.loads(out)
        return shown

    def _refuse_if_made_before_an_interruption(self, inputs: ModuleInputs, plan_hash: str) -> None:
        """A saved plan made before an apply that never finished does not know what that apply made: planned again
        (with the adoption) instead."""
        with self.connections.connection() as connection:
            since = recovery.interrupted_since(connection, inputs.tenant_id, inputs.workspace)
            made = recovery.plan_made_at(connection, inputs.tenant_id, plan_hash) if since else None
        if since is not None and made is not None and made <= since:
            raise StalePlan(
                "apply", None, f"an apply never finished after plan {plan_hash[:12]} was made: it is planned again"
            )

    @property
    def _lock_timeout(self) -> str:
        return f"{self.config.lock_timeout:g}s"

    # -- failures -----------------------------------------------------------------------------------------

    def _locking(self, run: Run, command: Callable[[], tuple[int, str, str]]) -> tuple[int, str, str]:
        """Run a command that takes the state lock; when a stale holder has it, release it once and retry."""
        code, out, err = command()
        if code != 0 and LOCK_ERROR in err + out:
            recovered = self.recover_stale_locks(run.tenant_id, run.workspace)
            if recovered:
                run.recoveries.extend(recovered)
                code, out, err = command()
        return code, out, err

    def recover_stale_locks(self, tenant_id: str, workspace: str = backend.WORKSPACE) -> list[LockRecovery]:
        """Release every lock on this tenant's state that is older than the stale limit and whose holder's run
        is over; locks of live holders and of sessions that are not a runner's stay."""
        with self.connections.connection() as connection:
            holders = backend.lock_holders(connection, backend.state_lock_keys(connection, tenant_id, workspace))
            stale = backend.stale_holders(holders, self.active_runs.keys(), self.config.stale_after)
            return [backend.release(connection, tenant_id, holder, reason) for holder, reason in stale]

    def _check(self, run: Run, command: str, code: int, out: str, err: str) -> None:
        if code == 0:
            return
        message = redact(error_lines(err, out), run.secrets)
        if LOCK_ERROR in err + out:
            raise StateLocked(command, code, message)
        if any(marker in err + out for marker in STALE_PLAN_ERRORS):
            raise StalePlan(command, code, message)
        raise TerraformError(command, code, message)


def _outputs(values: dict[str, Any]) -> Outputs:
    return Outputs({name: OutputValue(spec.get("value"), bool(spec.get("sensitive"))) for name, spec in values.items()})


def destroyed_count(stdout: str) -> int:
    """How many resources a destroy removed: `terraform destroy` says "Destroy complete! Resources: N destroyed.",
    an apply of a saved destroy plan "Apply complete! Resources: 0 added, 0 changed, N destroyed."."""
    for line in stdout.splitlines():
        found = DESTROYED.match(line.strip())
        if found:
            return int(found.group(1))
    return 0
