"""The watches' liveness verdict (handlers/watches.py): pure and table-driven; and the CRD check at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes
import pytest

from paybill.api.crdgen import all_crds
from paybill.handlers.watches import DEFAULT_STALE_SECONDS, Stream, WatchProgress, judge, missing_crds, stale_after
from paybill.kube import SYSTEM_NAMESPACES, serve_in_thread, write_admin_kubeconfig
from paybill.kubeclient import Kube


@pytest.mark.parametrize(
    ("streams", "missing_at_start", "alive", "stale", "missing"),
    [
        ({}, (), True, (), ()),  # nothing watched yet
        ({"tenants.paybill.dev": Stream(progressed=95)}, (), True, (), ()),
        ({"tenants.paybill.dev": Stream(progressed=89)}, (), False, ("tenants.paybill.dev",), ()),
        ({"tenants.paybill.dev": Stream(progressed=90)}, (), True, (), ()),  # exactly the threshold: not yet
        (  # one stuck stream among healthy ones fails liveness
            {"plans.paybill.dev": Stream(progressed=99), "tenants.paybill.dev": Stream(progressed=0)},
            (),
            False,
            ("tenants.paybill.dev",),
            (),
        ),
        (  # waiting for a CRD is reported, never a liveness failure
            {"tenants.paybill.dev": Stream(progressed=0, missing_since=1)},
            (),
            True,
            (),
            ("tenants.paybill.dev",),
        ),
        ({}, ("plans.paybill.dev", "tenants.paybill.dev"), True, (), ("plans.paybill.dev", "tenants.paybill.dev")),
    ],
)
def test_judge(
    streams: dict[str, Stream],
    missing_at_start: tuple[str, ...],
    alive: bool,
    stale: tuple[str, ...],
    missing: tuple[str, ...],
) -> None:
    health = judge(streams, now=100, stale_seconds=10, missing_crds=missing_at_start)
    assert health.alive is alive
    assert tuple(name for name, _ in health.stale) == stale
    assert health.missing == missing
    assert ("waiting_for_crds" in health.summary()) is bool(missing)


def test_progress_clears_waiting_and_a_closed_stream_is_forgotten() -> None:
    now = [0.0]
    progress = WatchProgress(clock=lambda: now[0], missing_at_start=("tenants.paybill.dev",))
    progress.opened("tenants.paybill.dev")
    progress.missing("tenants.paybill.dev")
    now[0] = 500
    assert progress.health(10).alive and progress.health(10).missing == ("tenants.paybill.dev",)
    progress.progressed("tenants.paybill.dev")
    assert progress.health(10).missing == () and progress.health(10).alive
    progress.opened("tenants.paybill.dev")  # a reconnection does not reset the clock
    now[0] = 520
    assert not progress.health(10).alive
    assert "tenants.paybill.dev (20s)" in progress.health(10).failure()
    progress.closed("tenants.paybill.dev")
    assert progress.health(10).alive and progress.health(10).streams == 0


def test_the_stale_threshold_comes_from_the_environment() -> None:
    assert stale_after({}) == DEFAULT_STALE_SECONDS
    assert stale_after({"PAYBILL_WATCH_STALE_SECONDS": "7.5"}) == 7.5


def test_missing_crds_asks_the_api_servers_discovery(cluster: Any, tmp_path: Path) -> None:
    names = tuple(crd["metadata"]["name"] for crd in all_crds())
    assert missing_crds(cluster.kube, names) == ()
    with serve_in_thread(seed=SYSTEM_NAMESPACES) as (api, url):
        bare = Kube(kubernetes.config.new_client_from_config(str(write_admin_kubeconfig(tmp_path / "k", url, api))))
        assert missing_crds(bare, names) == names
    assert missing_crds(bare, names) == ()  # gone: cannot tell, the streams' 404s will say
