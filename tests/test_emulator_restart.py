"""The emulated API server across restarts: its objects persist in its state directory (as a kube-apiserver's
in etcd), resourceVersions never go back, and a watch or list from a version it cannot serve is answered
410 Gone, never with silence (issue 13, item 3)."""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from paybill.api.crdgen import all_crds
from paybill.kube import SYSTEM_NAMESPACES, EmulatedApiServer, StateDirError, serve_in_thread
from paybill.kube import store as store_module
from paybill.kube.store import Store
from paybill.kubeclient import Kube
from test_emulator import MERGE, SECRETS, TENANTS, Http, secret, tenant

SEED = SYSTEM_NAMESPACES + [crd for crd in all_crds() if crd["spec"]["names"]["kind"] == "Tenant"]


class Restartable:
    """An emulated API server on a fixed port that can be stopped and started again on the same state directory
    (``state=None``: in memory, as before persistence existed)."""

    def __init__(self, state: Path | None, port: int | None = None, **options: Any) -> None:
        self.state, self.port, self.options = state, port, options
        self._running: Any = None
        self.api: EmulatedApiServer
        self.url = ""

    def start(self, seed: list[dict[str, Any]] = SEED) -> None:
        api = (
            EmulatedApiServer.persistent(self.state, **self.options)
            if self.state
            else EmulatedApiServer(**self.options)
        )
        self._running = serve_in_thread(seed=seed, api=api, port=self.port)
        self.api, self.url = self._running.__enter__()
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        self._running.__exit__(None, None, None)

    def restart(self, seed: list[dict[str, Any]] = SEED) -> None:
        self.stop()
        self.start(seed)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Restartable]:
    running = Restartable(tmp_path / "emulator")
    running.start()
    yield running
    running.stop()


def watch_lines(http: Http, path: str, **params: str) -> Iterator[dict[str, Any]]:
    return http.watch(path, timeoutSeconds="3", **params)


def test_objects_uids_and_resource_versions_survive_a_restart(server: Restartable, tmp_path: Path) -> None:
    http = Http(server.url, server.api, tmp_path)
    created = {name: http("POST", TENANTS, tenant(name)).json() for name in ("a", "b", "c")}
    patched = http("PATCH", f"{TENANTS}/b", {"spec": {"displayName": "B"}}, headers=MERGE).json()
    http("DELETE", f"{TENANTS}/c")
    kept_secret = http("POST", SECRETS, secret("kept")).json()
    before = int(http("GET", TENANTS).json()["metadata"]["resourceVersion"])

    server.restart()
    http = Http(server.url, server.api, tmp_path)  # the same CA and admin token: kubeconfigs stay valid

    listed = http("GET", TENANTS).json()
    assert int(listed["metadata"]["resourceVersion"]) == before
    by_name = {item["metadata"]["name"]: item for item in listed["items"]}
    assert sorted(by_name) == ["a", "b"]
    assert by_name["a"]["metadata"]["uid"] == created["a"]["metadata"]["uid"]
    assert by_name["a"]["metadata"]["resourceVersion"] == created["a"]["metadata"]["resourceVersion"]
    assert by_name["b"]["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
    assert by_name["b"]["spec"]["displayName"] == "B" and by_name["b"]["metadata"]["generation"] == 2
    assert http("GET", f"{SECRETS}/kept").json()["data"] == kept_secret["data"]
    assert http("GET", "/apis/paybill.dev/v1alpha1").status_code == 200  # the CRD is served again

    fresh = http("POST", TENANTS, tenant("d")).json()
    assert int(fresh["metadata"]["resourceVersion"]) > before
    stale = http("PUT", f"{TENANTS}/a", {**created["a"], "spec": {**created["a"]["spec"], "displayName": "A"}})
    assert stale.status_code == 200  # optimistic concurrency against the persisted resourceVersion
    assert int(stale.json()["metadata"]["resourceVersion"]) > int(fresh["metadata"]["resourceVersion"])

    server.restart()  # twice: numbers keep growing, nothing comes back that was deleted
    http = Http(server.url, server.api, tmp_path)
    assert sorted(i["metadata"]["name"] for i in http("GET", TENANTS).json()["items"]) == ["a", "b", "d"]
    assert int(http("POST", TENANTS, tenant("e")).json()["metadata"]["resourceVersion"]) > int(
        stale.json()["metadata"]["resourceVersion"]
    )


def test_state_files_are_private_and_a_torn_last_record_is_dropped(server: Restartable, tmp_path: Path) -> None:
    http = Http(server.url, server.api, tmp_path)
    http("POST", SECRETS, secret("private"))
    server.stop()
    assert stat.S_IMODE(os.stat(server.state).st_mode) == 0o700  # type: ignore[arg-type]
    files = list(server.state.iterdir())  # type: ignore[union-attr]
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    journal = next(f for f in files if f.name.endswith(".journal"))
    with journal.open("ab") as torn:  # a write cut short by a crash: half a record, no newline
        torn.write(b'{"rv": 999999, "type": "ADDED", "gro')
    server.start()
    http = Http(server.url, server.api, tmp_path)
    assert http("GET", f"{SECRETS}/private").status_code == 200
    assert int(http("POST", SECRETS, secret("next")).json()["metadata"]["resourceVersion"]) < 999999


def test_a_state_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(StateDirError, match="writable by others"):
        EmulatedApiServer.persistent(shared)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    with pytest.raises(StateDirError, match="link"):
        EmulatedApiServer.persistent(link)


def test_a_watch_from_the_version_before_a_restart_sees_what_came_after(server: Restartable, tmp_path: Path) -> None:
    http = Http(server.url, server.api, tmp_path)
    http("POST", TENANTS, tenant("a"))
    current = http("GET", TENANTS).json()["metadata"]["resourceVersion"]

    server.restart()
    http = Http(server.url, server.api, tmp_path)
    events = watch_lines(http, TENANTS, resourceVersion=current, allowWatchBookmarks="true")
    http("POST", TENANTS, tenant("after"))
    seen = next(e for e in events if e["type"] != "BOOKMARK")
    assert (seen["type"], seen["object"]["metadata"]["name"]) == ("ADDED", "after")


def test_a_watch_from_before_what_the_server_can_replay_is_gone_then_a_relist_works(
    server: Restartable, tmp_path: Path
) -> None:
    http = Http(server.url, server.api, tmp_path)
    first = http("POST", TENANTS, tenant("a")).json()["metadata"]["resourceVersion"]
    http("POST", TENANTS, tenant("b"))

    server.restart()
    http = Http(server.url, server.api, tmp_path)
    events = list(itertools.islice(watch_lines(http, TENANTS, resourceVersion=first), 2))
    assert [e["type"] for e in events] == ["ERROR"]
    assert (events[0]["object"]["code"], events[0]["object"]["reason"]) == (410, "Expired")
    assert events[0]["object"]["message"].startswith(f"too old resource version: {first}")
    exact = http("GET", TENANTS, params={"resourceVersion": first, "resourceVersionMatch": "Exact"})
    assert exact.status_code == 410 and exact.json()["reason"] == "Expired"
    relisted = http("GET", TENANTS).json()  # what kopf, client-go and kubectl do next
    assert sorted(i["metadata"]["name"] for i in relisted["items"]) == ["a", "b"]
    resumed = watch_lines(http, TENANTS, resourceVersion=relisted["metadata"]["resourceVersion"])
    http("DELETE", f"{TENANTS}/a")
    assert next(resumed)["type"] == "DELETED"


@pytest.mark.parametrize("persisted", [True, False], ids=["persisted", "in-memory"])
def test_a_watch_or_list_from_a_version_ahead_of_the_server_is_gone(persisted: bool, tmp_path: Path) -> None:
    """In memory, a restart loses everything: clients come back with versions the new server never issued
    (the incident: kopf at 303, the server at 31). They are told 410 and relist instead of waiting forever."""
    server = Restartable(tmp_path / "emulator" if persisted else None)
    server.start()
    try:
        http = Http(server.url, server.api, tmp_path)
        for name in "abcdefgh":
            http("POST", TENANTS, tenant(name))
        ahead = http("GET", TENANTS).json()["metadata"]["resourceVersion"]
        if persisted:
            ahead = str(int(ahead) + 100)
        else:
            access = server.api.access  # same certificate and tokens, nothing else kept
            server.stop()
            server._running = serve_in_thread(seed=SEED, api=EmulatedApiServer(access=access), port=server.port)
            server.api, server.url = server._running.__enter__()
        http = Http(server.url, server.api, tmp_path)
        assert int(http("GET", TENANTS).json()["metadata"]["resourceVersion"]) < int(ahead)

        events = list(itertools.islice(watch_lines(http, TENANTS, resourceVersion=ahead), 2))
        assert [e["type"] for e in events] == ["ERROR"] and events[0]["object"]["code"] == 410
        assert ahead in events[0]["object"]["message"]
        listed = http("GET", TENANTS, params={"resourceVersion": ahead})
        assert listed.status_code == 410 and ahead in listed.json()["message"]
        assert http("GET", TENANTS, params={"resourceVersion": "0"}).status_code == 200  # "any version" still lists
    finally:
        server.stop()


def test_each_write_is_journaled_before_it_is_answered(tmp_path: Path) -> None:
    """The record is in the journal when the reply comes (fsynced by then: the reply waits for it)."""
    server = Restartable(tmp_path / "emulator")
    server.start()
    try:
        http = Http(server.url, server.api, tmp_path)
        journal = next(f for f in server.state.iterdir() if f.name.endswith(".journal"))  # type: ignore[union-attr]
        size = journal.stat().st_size
        http("POST", SECRETS, secret("one"))
        assert journal.stat().st_size > size
        record = json.loads(journal.read_bytes().splitlines()[-1])
        assert record["object"]["metadata"]["name"] == "one" and record["type"] == "ADDED"
    finally:
        server.stop()


def _start_cli_emulator(state: Path, kubeconfig: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "paybill", "emulator", "--port", str(port), "--kubeconfig", str(kubeconfig)]
    child = subprocess.Popen([*command, "--state-dir", str(state)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for line in child.stdout:
        if "listening on " in line:
            return child, line.rsplit(" ", 1)[1].strip()
    raise AssertionError(f"paybill emulator exited with {child.wait()} before listening")


def test_paybill_emulator_killed_and_restarted_on_its_state_dir_serves_what_it_held(tmp_path: Path) -> None:
    """SIGKILL, not a clean stop: a write that was answered is in the journal already."""
    state, kubeconfig = tmp_path / "state", tmp_path / "kubeconfig"
    child, url = _start_cli_emulator(state, kubeconfig, 0)
    try:
        kube = Kube(kubernetes.config.new_client_from_config(config_file=str(kubeconfig)))
        created = kube.create(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept", "namespace": "default"}}
        )
    finally:
        child.kill()
        child.wait()
    child, url_again = _start_cli_emulator(state, kubeconfig, int(url.rsplit(":", 1)[1]))
    try:
        assert url_again == url
        kube = Kube(kubernetes.config.new_client_from_config(config_file=str(kubeconfig)))
        kept = kube.get("v1", "configmaps", "kept", "default")
        assert kept["metadata"]["uid"] == created["metadata"]["uid"]
    finally:
        child.terminate()
        child.wait()


def test_the_journal_is_folded_into_a_snapshot_that_reads_back_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "COMPACT_AFTER", 5)
    store = Store.open(tmp_path / "state")
    key = ("", "configmaps")
    for i in range(12):
        revision = str(store.next_revision())
        obj = {"metadata": {"name": f"c{i % 3}", "namespace": "default", "resourceVersion": revision}, "data": {"i": i}}
        store.put(key, obj, "MODIFIED")
    store.remove(key, store.get(key, "default", "c0"))  # type: ignore[arg-type]
    journal = (tmp_path / "state" / "store.journal").read_bytes().splitlines()
    assert len(journal) < 13  # folded into the snapshot on the way
    revision, kept = store.revision, {o["metadata"]["name"]: o["data"] for o in store.list(key)}
    store.close()

    again = Store.open(tmp_path / "state")
    assert again.revision == revision and {o["metadata"]["name"]: o["data"] for o in again.list(key)} == kept
    assert kept == {"c1": {"i": 10}, "c2": {"i": 11}}
    again.close()
