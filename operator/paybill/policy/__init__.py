"""The agent gate: parse agent SQL with pglast, check it against an AgentPolicy and the live schema."""

from .compiled import guard

guard(__name__)  # before any compiled module is imported: a stale build is never the one that runs

from .decision import Decision, Reason  # noqa: E402
from .engine import Gate, PolicyEngine  # noqa: E402
from .rules import PolicyError, RuleSet  # noqa: E402
from .schema import Schema, SchemaError, Table, TypeFamily  # noqa: E402

__all__ = [
    "Decision",
    "Gate",
    "PolicyEngine",
    "PolicyError",
    "Reason",
    "RuleSet",
    "Schema",
    "SchemaError",
    "Table",
    "TypeFamily",
]
