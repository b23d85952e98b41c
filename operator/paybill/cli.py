"""Paybill: a Kubernetes operator for multi-tenant SaaS, with a default-deny gate for AI agents' SQL.

Plans, Subscriptions and Tenants are custom resources; the operator gives each tenant its namespace, its
database (pooled, bridge or silo) and its access as billing allows. This command runs the operator, a local
demo of the whole stack, the emulated Kubernetes API server, the agent gate's policy checker, and writes the
CRDs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime
import functools
import importlib
import logging
import os
import socket
import textwrap
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from . import __version__, logs

STATE_DIR = Path(".state")

# Every setting the operator reads from its environment (tests/test_cli.py fails when the code reads a
# PAYBILL_* variable that is not listed here).
OPERATOR_ENVIRONMENT: tuple[tuple[str, str], ...] = (
    ("KUBECONFIG", "the cluster to run against, outside a pod (in a pod: its ServiceAccount)"),
    (
        "PAYBILL_DATABASE_URL",
        "PostgreSQL URL of a superuser: tenants' databases and roles, the audit log (unset: "
        "tenants wait, DatabaseReady=False)",
    ),
    (
        "PAYBILL_STATE_DIR",
        "the operator's state directory (default $XDG_STATE_HOME/paybill, else ~/.local/state/paybill)",
    ),
    ("PAYBILL_BACKUP_DIR", "where offboarding backups go, made 0700 (default: backups/ in the state directory)"),
    ("PAYBILL_WORKER_LIMIT", "objects handled at once; the rest queue (default 128)"),
    (
        "PAYBILL_RESYNC_SECONDS",
        "how often every tenant's objects are compared with its plan and drift reverted (default 300)",
    ),
    (
        "PAYBILL_IDLE_TRANSACTION_SECONDS",
        "tenant and agent sessions idle in a transaction longer than this are ended in shared databases (default 60)",
    ),
    (
        "PAYBILL_LOCK_HOLD_SECONDS",
        "a tenant or agent session blocking another tenant (or the operator) in a shared database with a "
        "transaction open longer than this is ended; one holding a SHARE-or-stronger lock on a shared table at "
        "once (default 10)",
    ),
    (
        "PAYBILL_OPERATOR_NAMESPACE",
        "the operator's own namespace, never given to a tenant (default: the ServiceAccount's namespace)",
    ),
    (
        "PAYBILL_WATCH_STALE_SECONDS",
        "the liveness endpoint fails when a watch stream has had no event, bookmark or listing for longer than "
        "this (default 180); a stream waiting for its missing CRD is reported, not failed",
    ),
    ("PAYBILL_WORKFLOW_WORKERS", "AgentWorkflow steps run at once over all tenants (default 4)"),
    (
        "PAYBILL_PEERING",
        "leader election: the ClusterKopfPeering (kopf.dev/v1) the replicas share; the oldest live replica works, "
        "the others stand by (unset: this replica runs alone)",
    ),
    (
        "PAYBILL_PEERING_LIFETIME",
        "seconds a replica's peering record lives without renewal: a killed leader is replaced after at most this "
        "(default 30, at least 10)",
    ),
    (
        "PAYBILL_WEBHOOK_CERT_DIR",
        "tls.crt, tls.key and ca.crt of the AgentWorkflow admission webhook: HTTPS on PAYBILL_WEBHOOK_ADDR "
        "(default 0.0.0.0) port 9443; unset: plain HTTP on 127.0.0.1 only (the emulated API server)",
    ),
    ("PAYBILL_WEBHOOK_ADDR", "the admission webhook's listening address (without certificates: loopback only)"),
    ("PAYBILL_WEBHOOK_PORT", "the admission webhook's port (default 9443 with certificates, else a free port)"),
    (
        "PAYBILL_WEBHOOK_HOST",
        "with PAYBILL_WEBHOOK_CERT_DIR: the operator registers the webhooks at https://HOST:PORT itself "
        "(unset: the chart registers them)",
    ),
    (
        "PAYBILL_WEBHOOK_CLIENT_CA",
        "with PAYBILL_WEBHOOK_CERT_DIR: a PEM CA; only callers with a client certificate it signed (the API "
        "server's admission kubeconfig) reach the webhooks (unset: any caller that reaches the port)",
    ),
    (
        "PAYBILL_WEBHOOK_CLIENT_NAMES",
        "with PAYBILL_WEBHOOK_CLIENT_CA: the client certificates' subject CNs answered, comma separated (unset: any)",
    ),
    ("PAYBILL_WORKFLOW_WORKERS_PER_TENANT", "AgentWorkflow steps run at once for one tenant (default 2)"),
    (
        "PAYBILL_WORKFLOW_RESULTS_RETENTION",
        "seconds a finished AgentWorkflow's results Secret is kept before it is deleted (default 604800, 7 days)",
    ),
    ("PAYBILL_TERRAFORM_CONCURRENCY", "Terraform runs at once over all tenants (default 4)"),
    ("PAYBILL_TERRAFORM_TIMEOUT", "seconds a Terraform run may take before its process group is killed (default 900)"),
    (
        "PAYBILL_TERRAFORM_EXECUTOR",
        "where Terraform runs: local (a process of the operator, default) or job (a Kubernetes Job per run in the "
        "operator's namespace, its result written by the Job to PostgreSQL)",
    ),
    (
        "PAYBILL_TERRAFORM_JOB_IMAGE",
        "executor job: the Jobs' image, which holds `python -m paybill.terraform` and Terraform "
        "(default ghcr.io/paybill/paybill:<version>)",
    ),
    (
        "PAYBILL_TERRAFORM_JOB_BACKEND_SECRET",
        "executor job: the Secret (key dsn) in the operator's namespace the Jobs read the state backend's DSN from "
        "(default paybill-terraform-backend, made from the operator's DSN when missing)",
    ),
    (
        "PAYBILL_TERRAFORM_JOB_SERVICE_ACCOUNT",
        "executor job: the Jobs' ServiceAccount (default paybill-terraform; its token is not mounted)",
    ),
    (
        "PAYBILL_TERRAFORM_MODULES_DIR",
        "where a Plan's spec.provisioning.module override is looked up (unset: only the shipped modules)",
    ),
    (
        "PAYBILL_TERRAFORM_BACKEND_DSN",
        "PostgreSQL URL of the Terraform state backend (default: PAYBILL_DATABASE_URL)",
    ),
    (
        "PAYBILL_TERRAFORM_LOCK_TIMEOUT",
        "seconds a Terraform command waits for a tenant's state lock before the runner looks for a stale holder "
        "(default 30)",
    ),
    (
        "PAYBILL_TERRAFORM_STALE_LOCK_SECONDS",
        "a state lock held this long by a runner that is gone is released and recorded in the audit log "
        "(default: PAYBILL_TERRAFORM_TIMEOUT)",
    ),
    (
        "PAYBILL_TERRAFORM_PROVIDER_MIRROR",
        "a filesystem_mirror directory Terraform installs providers from (unset: built-in providers only); a Plan "
        "on a cloud whose provider it lacks fails its cloud preflight (ProviderMissing)",
    ),
    (
        "PAYBILL_CLOUD_ENDPOINTS",
        "cloud=URL pairs, comma separated (aws=http://127.0.0.1:5000,azure=...): each cloud adapter's API at a "
        "loopback address (a fake or moto, for tests); any other address is refused (unset: the clouds' own APIs)",
    ),
    (
        "PAYBILL_TERRAFORM_OVERRIDES_DIR",
        "*_override.tf files put in every Terraform run, e.g. provider endpoints (unset: none)",
    ),
    (
        "PAYBILL_COMPUTE_CHECK_SECONDS",
        "how often a Suspended tenant's cloud inventory is looked at; an instance found running is stopped again, "
        "with a Warning Event (default 60)",
    ),
    (
        "PAYBILL_ORPHAN_CHECK_SECONDS",
        "how often each Plan on a cloud looks for resources tagged with a tenant that no longer exists: the Plan's "
        "status.orphans and a Warning Event OrphanedResources (default 3600)",
    ),
    (
        "PAYBILL_POLICY_SOURCE",
        "1: the policy engine's compiled modules run from their source (debugging; same decisions, slower)",
    ),
)
# Read by the Terraform Job the operator starts (`python -m paybill.terraform`), not by this command.
TERRAFORM_JOB_ENVIRONMENT: tuple[tuple[str, str], ...] = (
    ("PAYBILL_TERRAFORM_BACKEND_DSN", "PostgreSQL URL of the Terraform state backend (the Job takes it from a Secret)"),
)


def environment_help(
    settings: tuple[tuple[str, str], ...] = OPERATOR_ENVIRONMENT, reader: str = "`paybill operator`"
) -> str:
    return f"environment (read by {reader}):\n" + "\n".join(
        f"  {name}\n" + textwrap.fill(text, 100, initial_indent=" " * 6, subsequent_indent=" " * 6)
        for name, text in settings
    )


def _crds(args: argparse.Namespace) -> int:
    from .api.crdgen import write_all
    from .peering import write_peering_crd

    for path in [*write_all(Path(args.out)), write_peering_crd(Path(args.out))]:
        print(path)
    return 0


EMULATOR_MODULES = ("kmock", "cel", "cryptography")  # the `emulator` extra (pyproject.toml)


def _require_emulator(command: str) -> None:
    """The local API emulator's dependencies are an optional extra: say how to install them when missing."""
    for module in EMULATOR_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            raise SystemExit(
                f"paybill {command}: the local API emulator needs the `emulator` extra ({module} is not "
                "installed): pip install 'paybill[emulator]' (or `make install` in a clone)"
            ) from None


def _emulator(args: argparse.Namespace) -> int:
    _require_emulator("emulator")
    from .kube import SYSTEM_NAMESPACES, EmulatedApiServer, StateDirError, serve, write_admin_kubeconfig

    try:
        persisted = EmulatedApiServer.persistent(Path(args.state_dir)) if args.state_dir else None
    except (StateDirError, OSError) as exc:
        raise SystemExit(f"paybill emulator: {exc}") from None

    async def main() -> None:
        async with serve(host="127.0.0.1", port=args.port or None, api=persisted) as (api, url):
            api.load(SYSTEM_NAMESPACES)
            kubeconfig = write_admin_kubeconfig(Path(args.kubeconfig), url, api)
            print(f"Paybill EMULATED Kubernetes API server (not a real cluster) listening on {url}")
            if args.state_dir:
                print(f"  state in {Path(args.state_dir).resolve()} (revision {api.store.revision})")
            print(f"  export KUBECONFIG={kubeconfig.resolve()}")
            print("  Ctrl-C to stop", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


def _emulator_kubeconfig(args: argparse.Namespace) -> int:
    _require_emulator("emulator kubeconfig")
    from .kube import write_service_account_kubeconfig

    namespace, _, name = args.service_account.partition("/")
    if not namespace or not name:
        raise SystemExit("paybill emulator kubeconfig: --service-account must be NAMESPACE/NAME")
    import kubernetes

    from .kubeclient import KubeError

    try:
        path = write_service_account_kubeconfig(
            Path(args.kubeconfig), namespace, name, Path(args.output), args.duration
        )
    except (KubeError, kubernetes.config.ConfigException, OSError) as exc:
        raise SystemExit(
            f"paybill emulator kubeconfig: {exc} (admin kubeconfig {args.kubeconfig}; the demo "
            "writes one in its state directory)"
        ) from None
    print(f"export KUBECONFIG={path.resolve()}  # acts as system:serviceaccount:{namespace}:{name}")
    return 0


def _bound_native_memory(arenas: int = 2, trim_every: float = 5.0) -> None:
    """Keep the operator's resident memory close to what it uses.

    glibc gives each thread that mallocs its own arena, and kopf runs sync handlers in a thread pool; and
    freed memory stays mapped after a burst (resuming thousands of tenants at start). Two arenas (as
    MALLOC_ARENA_MAX=2) plus a periodic malloc_trim give it back. No-ops where libc is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        if "MALLOC_ARENA_MAX" not in os.environ:
            libc.mallopt(-8, arenas)  # M_ARENA_MAX; before the handler threads start
    except (OSError, AttributeError):
        return

    def trim() -> None:
        while True:
            time.sleep(trim_every)
            libc.malloc_trim(0)

    threading.Thread(target=trim, name="paybill-malloc-trim", daemon=True).start()


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (compiled transports and TLS: the webhook's reviews cost less CPU),
    else asyncio's own (None: the Runner's default)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _operator(args: argparse.Namespace) -> int:
    import kopf

    from . import handlers, metrics, peering  # noqa: F401  (importing the handlers registers them)

    _bound_native_memory()
    logs.configure(args.log_format, args.verbose)
    _require_cluster_credentials()
    liveness = liveness_endpoint(args.liveness)
    if liveness:
        logging.getLogger("paybill").info("liveness endpoint at %s", liveness)
    if args.metrics_bind_address:
        host, port = metrics.serve(args.metrics_bind_address).server_address[:2]
        logging.getLogger("paybill").info("metrics at http://%s:%s/metrics, readiness at /readyz", host, port)
    peering.IDENTITY = peering.own_identity(os.environ)  # kopf's peering and the election share it
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        kopf.run(
            clusterwide=True,
            identity=peering.IDENTITY,  # type: ignore[arg-type]
            liveness_endpoint=liveness,
            loop=runner.get_loop(),
        )
    return 0


def _require_cluster_credentials() -> None:
    """Exit at once, saying what to set, when there is neither an in-cluster account nor a kubeconfig
    (kopf would log tracebacks and retry forever)."""
    import kubernetes

    from .kubeclient import load_config

    try:
        load_config()
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise SystemExit(
            f"paybill operator: no Kubernetes credentials ({exc}): set KUBECONFIG, or run in a pod "
            "with a ServiceAccount"
        ) from None


def liveness_endpoint(url: str | None) -> str | None:
    """The URL kopf should serve: port 0 means a free port, chosen here (kopf would read 0 as "none" and bind 80)."""
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.port != 0:
        return url
    with socket.socket() as probe:
        probe.bind((parts.hostname or "127.0.0.1", 0))
        port = probe.getsockname()[1]
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{host}:{port}"))


def bind_address(text: str) -> tuple[str, int]:
    """An argparse type: HOST:PORT, or :PORT for every address."""
    from .metrics import parse_address

    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds greater than zero."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds


def _demo(args: argparse.Namespace) -> int:
    _require_emulator("demo")
    from .demo import REPO, run_demo

    samples = Path(args.samples) if args.samples else REPO / "manifests" / "samples"
    return run_demo(Path(args.state_dir), samples, args.keep, args.port, args.timeout, args.resume)


def _policy_check(args: argparse.Namespace) -> int:
    import sys

    from .policy import PolicyError, Schema, SchemaError
    from .policy.check import load_policy, run_check

    try:
        policy = load_policy(Path(args.policy))
        if args.dsn:
            from .database.agents.catalog import read_schema

            schema = read_schema(args.dsn, args.schema_name)
        elif args.schema:
            schema = Schema.from_ddl(Path(args.schema).read_text(), args.schema_name)
        else:
            raise SchemaError("a schema is needed: a DDL file or a database DSN")
        for line in run_check(policy.spec, args.input, schema, args.tenant, frozenset(args.approve)):
            print(line, flush=False)
    except (ValueError, PolicyError, SchemaError, OSError) as error:
        print(f"paybill policy check: {error}", file=sys.stderr)
        return 2
    return 0


def _audit(args: argparse.Namespace) -> int:
    import sys

    from .audit import commands

    dsn = args.dsn or os.environ.get("PAYBILL_DATABASE_URL")
    if args.audit_command == "verify":
        directory = Path(args.checkpoint) if args.checkpoint else None
        return commands.reported(
            "verify",
            dsn,
            lambda url: commands.verify(
                url, commands.checkpoint_store(directory, args.checkpoint_namespace), sys.stdout
            ),
        )
    if args.audit_command == "replay":
        return commands.reported("replay", dsn, lambda url: commands.replay_decisions(url, sys.stdout, sys.stderr))
    with contextlib.ExitStack() as stack:
        private = functools.partial(os.open, mode=0o600)  # a tenant's records: readable by their owner only
        out = stack.enter_context(open(args.output, "w", opener=private)) if args.output else sys.stdout
        return commands.reported(
            "export", dsn, lambda url: commands.export(url, args.tenant, args.since, args.until, out)
        )


def build_parser() -> argparse.ArgumentParser:
    epilog = (
        environment_help()
        + "\n\n"
        + environment_help(TERRAFORM_JOB_ENVIRONMENT, "the Terraform Job, `python -m paybill.terraform`")
    )
    parser = argparse.ArgumentParser(
        prog="paybill", description=__doc__, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--version", action="version", version=f"paybill {__version__}", help="print the version and exit"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        summary: str,
        description: str = "",
        epilog: str | None = None,
    ) -> argparse.ArgumentParser:
        text = textwrap.fill(f"{summary[0].upper()}{summary[1:]}. {description}".strip(), 100)
        return parent.add_parser(
            name, help=summary, description=text, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
        )

    crds = command(
        commands,
        "crds",
        "write the CRDs generated from the API models (paybill/api)",
        "Reads no environment variables.",
    )
    crds.add_argument("--out", default="crds", help="directory to write one YAML file per CRD into (default: crds)")
    crds.set_defaults(run=_crds)

    emulator = command(
        commands,
        "emulator",
        "run the emulated Kubernetes API server on loopback (not a real cluster) and write an admin kubeconfig for it",
        "HTTPS with a throwaway CA, bearer tokens, RBAC. Reads no environment variables.",
    )
    emulator.add_argument(
        "--port",
        type=int,
        default=8001,
        help="port on 127.0.0.1 to listen on; 0 lets the kernel pick a free one (default 8001)",
    )
    emulator.add_argument(
        "--kubeconfig",
        default=str(STATE_DIR / "kubeconfig"),
        help="where to write the admin kubeconfig, mode 0600 (default .state/kubeconfig)",
    )
    emulator.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="keep the objects, the CA and the tokens in DIR (made 0700; a link or a directory others can "
        "write is refused): restarted on it, the server serves what it held, with larger resourceVersions, "
        "and kubeconfigs stay valid (restart it on the same --port); default: in memory, lost when it stops",
    )
    emulator.set_defaults(run=_emulator)
    emulator_commands = emulator.add_subparsers(dest="emulator_command", metavar="SUBCOMMAND")
    account = command(
        emulator_commands,
        "kubeconfig",
        "write a kubeconfig that acts as a ServiceAccount (token from the TokenRequest API)",
        "Needs a running emulator. Reads no environment variables.",
    )
    account.add_argument(
        "--kubeconfig", default=str(STATE_DIR / "kubeconfig"), help="the admin kubeconfig the running emulator wrote"
    )
    account.add_argument(
        "--service-account",
        required=True,
        metavar="NAMESPACE/NAME",
        help="the ServiceAccount the new kubeconfig acts as",
    )
    account.add_argument("-o", "--output", required=True, help="where to write the kubeconfig (mode 0600)")
    account.add_argument("--duration", type=int, default=86400, help="token lifetime in seconds (at least 600)")
    account.set_defaults(run=_emulator_kubeconfig)

    operator = command(
        commands,
        "operator",
        "run the Paybill operator (kopf) until stopped",
        "It reconciles Plans, Subscriptions, Tenants, AgentPolicies and AgentWorkflows cluster-wide.",
        epilog=environment_help(),
    )
    # No endpoint unless asked: kopf reads port 0 as "no port" and would bind port 80.
    operator.add_argument(
        "--liveness",
        default=None,
        metavar="URL",
        help="serve kopf's liveness probe at URL, e.g. http://0.0.0.0:8080/healthz; port 0 "
        "picks a free port, logged at start (default: no endpoint, no port bound)",
    )
    operator.add_argument(
        "--metrics-bind-address",
        default=None,
        metavar="HOST:PORT",
        type=bind_address,
        help="serve Prometheus metrics at /metrics and readiness at /readyz there, e.g. :8081 (every address); "
        "port 0 picks a free port, logged at start (default: not served)",
    )
    operator.add_argument(
        "--log-format",
        choices=logs.LOG_FORMATS,
        default="text",
        help="text: one line per record, the object as [Kind namespace/name]; json: one JSON "
        "object per line with time, level, logger, message, object (default text)",
    )
    operator.add_argument("--verbose", action="store_true", help="log at DEBUG instead of INFO")
    operator.set_defaults(run=_operator)

    demo = command(
        commands,
        "demo",
        "run the whole stack locally and show tenants converge (what `make demo` runs)",
        "A local PostgreSQL, the emulated API server and the operator (child processes; any one "
        "exiting ends the demo with its last log lines), the samples applied, the agent gate and a "
        "billing walk. Every run starts from nothing unless --resume. Reads no environment variables: "
        "the operator it starts gets the caller's environment without any PAYBILL_* setting, and "
        "the demo's own KUBECONFIG, PAYBILL_DATABASE_URL and PAYBILL_STATE_DIR.",
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="leave the stack running until Ctrl-C or SIGTERM, with a KUBECONFIG line for kubectl and a "
        "PAYBILL_DATABASE_URL line that reads the password from its 0600 file",
    )
    demo.add_argument(
        "--resume",
        action="store_true",
        help="keep the previous run's PostgreSQL data (by default every run starts from nothing)",
    )
    demo.add_argument(
        "--state-dir",
        default=str(STATE_DIR / "demo"),
        help="the demo's directory: logs, kubeconfig, database password, backups; a directory "
        "the demo did not make is refused, and in its own it deletes only what it made; one "
        "demo at a time per directory (default .state/demo)",
    )
    demo.add_argument(
        "--samples",
        default=None,
        metavar="DIR",
        help="manifests to apply (default: manifests/samples of this checkout)",
    )
    demo.add_argument(
        "--port", type=int, default=None, help="port for the emulated API server (default: one the kernel picks)"
    )
    demo.add_argument(
        "--timeout",
        type=positive_seconds,
        default=60,
        metavar="SECONDS",
        help="how long each step may take before the demo fails (default 60)",
    )
    demo.set_defaults(run=_demo)

    policy = command(commands, "policy", "the agent gate's policy engine, offline", "Reads no environment variables.")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")
    check = command(
        policy_commands,
        "check",
        "decide JSONL cases against an AgentPolicy; writes one JSON decision per line",
        "Reads no environment variables.",
    )
    check.add_argument("--policy", required=True, help="AgentPolicy manifest (YAML)")
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument("--schema", help="tenant schema as DDL (CREATE TABLE statements)")
    source.add_argument("--dsn", help="read the tenant schema from this live database instead")
    check.add_argument("--schema-name", default="public", help="the tenant's PostgreSQL schema")
    check.add_argument("--tenant", default=None, help="pooled tenant id: its predicate goes into every statement")
    check.add_argument(
        "--approve",
        action="append",
        default=[],
        metavar="APPROVER",
        help="an approval given to every case (repeatable); input lines cannot approve themselves",
    )
    check.add_argument("--input", required=True, help="cases, one JSON object per line ('-' for stdin)")
    check.set_defaults(run=_policy_check)

    audit = command(
        commands,
        "audit",
        "review the hash-chained audit log in the operator's database (read only)",
        "Reads PAYBILL_DATABASE_URL when --dsn is not given.",
    )
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    verify = command(
        audit_commands,
        "verify",
        "check the hash chain; name the first edited, deleted or reordered record (exit 1)",
    )
    # where the operator keeps the chain's head (finds a deleted tail) and its seal (checks sealed records)
    head = verify.add_mutually_exclusive_group()
    head.add_argument(
        "--checkpoint", metavar="DIR", help="a local operator's checkpoint and seal directory (<state dir>/audit)"
    )
    head.add_argument(
        "--checkpoint-namespace",
        metavar="NAMESPACE",
        help="the operator's namespace in a cluster: its ConfigMap paybill-audit-checkpoint and Secret "
        "paybill-audit-seal (reads KUBECONFIG)",
    )
    replay = command(
        audit_commands,
        "replay",
        "decide every recorded gate decision again under its recorded policy version",
        "Writes one JSON line per decision that differs (exit 1 if any), a summary on stderr.",
    )
    export = command(audit_commands, "export", "write a tenant's records as JSON lines, credentials taken out")
    export.add_argument("--tenant", required=True, help="the Tenant whose records to write")
    export.add_argument("--since", required=True, type=_audit_time, help="ISO 8601 time (UTC without a zone)")
    export.add_argument("--until", type=_audit_time, default=None, help="ISO 8601 time, exclusive (default: now)")
    export.add_argument("-o", "--output", default=None, help="file to write (default: stdout)")
    for sub in (verify, replay, export):
        sub.add_argument("--dsn", default=None, help="PostgreSQL URL of the operator's database")
        sub.set_defaults(run=_audit)
    return parser


def _audit_time(text: str) -> datetime.datetime:
    from .audit.commands import timestamp

    try:
        return timestamp(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))
