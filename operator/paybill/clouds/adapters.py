"""The adapter of a cloud by name, its SDK imported only then (the `clouds` extra)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from .model import Cloud, CloudAdapter

_CLASSES = {
    Cloud.AWS: ("aws", "AwsAdapter"),
    Cloud.AZURE: ("azure", "AzureAdapter"),
    Cloud.GCP: ("gcp", "GcpAdapter"),
    Cloud.OCI: ("oci", "OciAdapter"),
    Cloud.IBM: ("ibm", "IbmAdapter"),
}


def adapter(cloud: Cloud, credentials: Mapping[str, str], region: str, **options: Any) -> CloudAdapter:
    """`credentials`: the Plan's Secret (only the cloud's own keys are read); `options`: endpoint, retry, ..."""
    module, name = _CLASSES[cloud]
    found: CloudAdapter = getattr(importlib.import_module(f"paybill.clouds.{module}"), name)(
        credentials, region, **options
    )
    return found
