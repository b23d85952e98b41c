"""The `paybill` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import threading
import time
from pathlib import Path

from . import __version__

STATE_DIR = Path(".state")


def _crds(args: argparse.Namespace) -> int:
    from .api.crdgen import write_all

    for path in write_all(Path(args.out)):
        print(path)
    return 0


def _emulator(args: argparse.Namespace) -> int:
    from .kube import SYSTEM_NAMESPACES, serve, write_admin_kubeconfig

    async def main() -> None:
        async with serve(host="127.0.0.1", port=args.port or None) as (api, url):
            api.load(SYSTEM_NAMESPACES)
            kubeconfig = write_admin_kubeconfig(Path(args.kubeconfig), url, api)
            print(f"Paybill EMULATED Kubernetes API server (not a real cluster) listening on {url}")
            print(f"  export KUBECONFIG={kubeconfig.resolve()}")
            print("  Ctrl-C to stop", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


def _emulator_kubeconfig(args: argparse.Namespace) -> int:
    from .kube import write_service_account_kubeconfig

    namespace, _, name = args.service_account.partition("/")
    if not namespace or not name:
        raise SystemExit("paybill emulator kubeconfig: --service-account must be NAMESPACE/NAME")
    path = write_service_account_kubeconfig(Path(args.kubeconfig), namespace, name, Path(args.output), args.duration)
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


def _operator(args: argparse.Namespace) -> int:
    import kopf

    from . import handlers  # noqa: F401  (registers the handlers)

    _bound_native_memory()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        kopf.run(clusterwide=True, standalone=True, liveness_endpoint=args.liveness)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import REPO, run_demo

    samples = Path(args.samples) if args.samples else REPO / "manifests" / "samples"
    return run_demo(Path(args.state_dir), samples, args.keep, args.port, args.timeout, args.resume)


def _policy_check(args: argparse.Namespace) -> int:
    import sys

    from .policy import PolicyError, SchemaError
    from .policy.check import run_check

    try:
        for line in run_check(Path(args.policy), args.input, Path(args.schema) if args.schema else None, args.dsn,
                              args.schema_name, args.tenant, frozenset(args.approve)):
            print(line, flush=False)
    except (ValueError, PolicyError, SchemaError, OSError) as error:
        print(f"paybill policy check: {error}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paybill", description=__doc__)
    parser.add_argument("--version", action="version", version=f"paybill {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    crds = commands.add_parser("crds", help="generate CRDs from the API models")
    crds.add_argument("--out", default="crds")
    crds.set_defaults(run=_crds)

    emulator = commands.add_parser("emulator", help="run the emulated Kubernetes API server on loopback")
    emulator.add_argument("--port", type=int, default=8001)
    emulator.add_argument("--kubeconfig", default=str(STATE_DIR / "kubeconfig"))
    emulator.set_defaults(run=_emulator)
    emulator_commands = emulator.add_subparsers(dest="emulator_command")
    account = emulator_commands.add_parser(
        "kubeconfig", help="write a kubeconfig that acts as a ServiceAccount (token from the TokenRequest API)")
    account.add_argument("--kubeconfig", default=str(STATE_DIR / "kubeconfig"),
                         help="the admin kubeconfig the running emulator wrote")
    account.add_argument("--service-account", required=True, metavar="NAMESPACE/NAME")
    account.add_argument("-o", "--output", required=True, help="where to write the kubeconfig (mode 0600)")
    account.add_argument("--duration", type=int, default=86400, help="token lifetime in seconds (at least 600)")
    account.set_defaults(run=_emulator_kubeconfig)

    operator = commands.add_parser("operator", help="run the operator (kopf) against the current kubeconfig")
    # No endpoint unless asked: kopf reads port 0 as "no port" and would bind port 80.
    operator.add_argument("--liveness", default=None,
                          help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz (none by default)")
    operator.add_argument("--verbose", action="store_true")
    operator.set_defaults(run=_operator)

    demo = commands.add_parser("demo", help="run the whole stack locally and show tenants converge")
    demo.add_argument("--keep", action="store_true", help="leave the stack running until Ctrl-C")
    demo.add_argument("--resume", action="store_true",
                      help="keep the previous run's PostgreSQL data (by default every run starts from nothing)")
    demo.add_argument("--state-dir", default=str(STATE_DIR / "demo"))
    demo.add_argument("--samples", default=None)
    demo.add_argument("--port", type=int, default=None)
    demo.add_argument("--timeout", type=float, default=60)
    demo.set_defaults(run=_demo)

    policy = commands.add_parser("policy", help="the agent gate's policy engine")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser(
        "check", help="decide JSONL cases against an AgentPolicy; writes one JSON decision per line")
    check.add_argument("--policy", required=True, help="AgentPolicy manifest (YAML)")
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument("--schema", help="tenant schema as DDL (CREATE TABLE statements)")
    source.add_argument("--dsn", help="read the tenant schema from this live database instead")
    check.add_argument("--schema-name", default="public", help="the tenant's PostgreSQL schema")
    check.add_argument("--tenant", default=None, help="pooled tenant id: its predicate goes into every statement")
    check.add_argument("--approve", action="append", default=[], metavar="APPROVER",
                       help="an approval given to every case (repeatable); input lines cannot approve themselves")
    check.add_argument("--input", required=True, help="cases, one JSON object per line ('-' for stdin)")
    check.set_defaults(run=_policy_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))
