"""Cloud adapters: each cloud's SDK behind one protocol (model.CloudAdapter), seen through Paybill's tags.

Import a cloud's module (paybill.clouds.aws, .azure, .gcp, .oci, .ibm) only where its SDK is installed (the
`clouds` extra); this package itself imports none of them.
"""

from .model import (
    Cloud,
    CloudAdapter,
    CloudError,
    CloudPlan,
    PowerChange,
    PowerState,
    Preflight,
    Resource,
    Unsupported,
    Verdict,
)

__all__ = [
    "Cloud",
    "CloudAdapter",
    "CloudError",
    "CloudPlan",
    "PowerChange",
    "PowerState",
    "Preflight",
    "Resource",
    "Unsupported",
    "Verdict",
]
