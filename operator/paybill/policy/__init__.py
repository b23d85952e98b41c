"""The agent gate: parse agent SQL with pglast, check it against an AgentPolicy and the live schema."""

from .decision import Decision, Reason
from .engine import PolicyEngine
from .rules import PolicyError, RuleSet
from .schema import Schema, SchemaError, Table, TypeFamily

__all__ = [
    "Decision",
    "PolicyEngine",
    "PolicyError",
    "Reason",
    "RuleSet",
    "Schema",
    "SchemaError",
    "Table",
    "TypeFamily",
]
