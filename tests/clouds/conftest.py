"""Fixtures of the cloud adapter tests: moto's server with authentication on (AWS)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .fakes.aws import moto_with_authentication


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto's server checking signatures: {"url", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}."""
    with moto_with_authentication(tmp_path_factory.mktemp("moto") / "moto.log") as found:
        yield found
