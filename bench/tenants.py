"""Onboarding throughput: N pooled tenants from apply to Active, and the operator's memory when idle.

Three processes, as in production: the emulated API server, the operator (`paybill operator`) and a
throwaway PostgreSQL server; this process applies Tenants and watches them turn Active.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes
import urllib3

from paybill.api.crdgen import all_crds
from paybill.database.server import LocalPostgres
from paybill.kubeclient import Kube

API = "paybill.dev/v1alpha1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class Stack:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.postgres = LocalPostgres(directory / "postgres")
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> Kube:
        self.postgres.start()
        port = _free_port()
        kubeconfig = self.directory / "kubeconfig"
        self.processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "paybill", "emulator", "--port", str(port), "--kubeconfig", str(kubeconfig)],
                stdout=(self.directory / "emulator.log").open("wb"),
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        )
        deadline = time.monotonic() + 30
        while not kubeconfig.exists() or not kubeconfig.stat().st_size:  # written, not only created
            if time.monotonic() > deadline:
                raise RuntimeError("the emulated API server did not start")
            time.sleep(0.1)
        self.kubeconfig = kubeconfig
        self.kube = Kube(kubernetes.config.new_client_from_config(config_file=str(kubeconfig)))
        for crd in all_crds():
            self.kube.apply(crd)
        return self.kube

    def start_operator(self) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PAYBILL_DATABASE_URL": self.postgres.dsn,
            "PAYBILL_BACKUP_DIR": str(self.directory / "backups"),
        }
        operator = subprocess.Popen(
            [sys.executable, "-m", "paybill", "operator"],
            env=env,
            stdout=(self.directory / "operator.log").open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.processes.append(operator)
        return operator

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.postgres.stop()


class ActiveWatch(threading.Thread):
    """Records when each tenant is first seen Active, from a watch on the API server."""

    def __init__(self, kubeconfig: Path) -> None:
        super().__init__(daemon=True)
        self.api = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(str(kubeconfig)))
        self.active: dict[str, float] = {}
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            stream = kubernetes.watch.Watch().stream(
                self.api.list_cluster_custom_object, "paybill.dev", "v1alpha1", "tenants", timeout_seconds=5
            )
            try:
                for event in stream:
                    obj: dict[str, Any] = event["object"]
                    if (obj.get("status") or {}).get("phase") == "Active":
                        self.active.setdefault(obj["metadata"]["name"], time.monotonic())
                    if self.stopping:
                        return
            except (urllib3.exceptions.HTTPError, OSError):
                time.sleep(0.2)  # the server went away (shutdown) or dropped the stream: watch again


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, quiet: float = 8.0, timeout: float = 1800) -> float:
    """Seconds until the process has used under 2% CPU for `quiet` seconds in a row."""
    start = time.monotonic()
    last, calm_since = _cpu_seconds(pid), time.monotonic()
    while time.monotonic() - start < timeout:
        time.sleep(1)
        used = _cpu_seconds(pid)
        if used - last > 0.02:
            calm_since = time.monotonic()
        last = used
        if time.monotonic() - calm_since >= quiet:
            return calm_since - start
    return float("nan")


def onboarding(count: int, idle: int) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(prefix="paybill-bench-tenants-"))
    os.chmod(directory, 0o755)
    stack = Stack(directory)
    try:
        kube = stack.start()
        kube.apply(
            {
                "apiVersion": API,
                "kind": "Plan",
                "metadata": {"name": "bench"},
                "spec": {"tier": "bench", "isolation": "pooled"},
            }
        )
        operator = stack.start_operator()
        wait_idle(operator.pid, quiet=2)  # started and settled before the clock runs
        baseline = _rss_mib(operator.pid)[0]
        watch = ActiveWatch(stack.kubeconfig)
        watch.start()
        applied: dict[str, float] = {}
        start = time.monotonic()
        for n in range(count):
            name = f"bench-{n:05d}"
            kube.create({"apiVersion": API, "kind": "Tenant", "metadata": {"name": name}, "spec": {"planRef": "bench"}})
            applied[name] = time.monotonic()
        while len(watch.active) < count and time.monotonic() - start < 600:
            time.sleep(0.1)
        total = max(watch.active.values()) - start if len(watch.active) == count else float("nan")
        latencies = sorted(watch.active[n] - applied[n] for n in applied if n in watch.active)
        rss_after_onboarding = _rss_mib(operator.pid)

        # Idle: Tenant objects that exist and are settled, so the operator only holds what it watches.
        operator.terminate()
        operator.wait(timeout=30)
        for n in range(count, idle):
            kube.create(
                {
                    "apiVersion": API,
                    "kind": "Tenant",
                    "metadata": {"name": f"bench-{n:05d}"},
                    "spec": {"planRef": "bench"},
                }
            )
        operator = stack.start_operator()
        settled = wait_idle(operator.pid)
        idle_rss = _rss_mib(operator.pid)
        watch.stopping = True
        return {
            "baseline_mib": baseline,
            "count": count,
            "total_s": total,
            "p50_s": statistics.median(latencies),
            "p95_s": latencies[int(0.95 * (len(latencies) - 1))],
            "rss_onboarding_mib": rss_after_onboarding[0],
            "peak_onboarding_mib": rss_after_onboarding[1],
            "idle": idle,
            "idle_active": len(watch.active),
            "idle_settle_s": settled,
            "idle_rss_mib": idle_rss[0],
            "idle_peak_mib": idle_rss[1],
        }
    finally:
        stack.stop()
        shutil.rmtree(directory, ignore_errors=True)


def run(quick: bool = False) -> str:
    result = onboarding(100 if quick else 1000, 200 if quick else 10000)
    return "\n".join(
        [
            "## Tenant onboarding (issue 5)",
            "",
            f"{result['count']:.0f} pooled Tenants applied back to back to the emulated API server, "
            "each taken to Active",
            "by the operator (namespace, 2 ServiceAccounts, 2 Roles, 2 RoleBindings, ResourceQuota, LimitRange,",
            "NetworkPolicy, credentials Secret, login role, tenant mapping and row-level security on local",
            "PostgreSQL, status, Events, audit record). Operator, emulated API server and PostgreSQL are separate",
            "processes sharing the machine. Time-to-Active is from this process's create call to the watch event.",
            "",
            "| tenants | apply → all Active | time-to-Active p50 | p95 | operator RSS after | operator peak RSS |",
            "|---|---|---|---|---|---|",
            f"| {result['count']:.0f} | {result['total_s']:.1f} s | {result['p50_s']:.1f} s | "
            f"{result['p95_s']:.1f} s | "
            f"{result['rss_onboarding_mib']:.0f} MiB | {result['peak_onboarding_mib']:.0f} MiB |",
            "",
            f"Idle: with the operator stopped, {result['idle'] - result['count']:.0f} more Tenants were created; "
            f"the operator was started over all {result['idle']:.0f} (resuming {result['count']:.0f}, "
            "onboarding the rest: "
            f"{result['idle_active']:.0f} Active) and left until",
            f"its CPU stayed quiet ({result['idle_settle_s']:.0f} s). Operator RSS then, idle: "
            f"**{result['idle_rss_mib']:.0f} MiB** (peak {result['idle_peak_mib']:.0f} MiB",
            f"during the burst; {result['baseline_mib']:.0f} MiB right after start with no tenants).",
            "Goals: 1,000 under 60 s; RSS at most 300 MB.",
        ]
    )
