"""Decisions: what the engine decided about one statement, and why, as deterministic JSON."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import orjson
from pglast.parser import fingerprint as pglast_fingerprint

# Reasons a policy's own rules produce. Under warn and audit they are recorded but do not deny;
# every other reason (syntax, statement kind, unknown names, catalogs, types) denies in every mode, and so does
# approval_required: a human approval a rule asks for is a control, not a denial to observe in shadow mode.
POLICY_CODES = frozenset({"no_allow_rule", "denied_by_rule", "require_where", "function_not_allowed"})


@dataclass(frozen=True)
class Reason:
    code: str
    message: str
    node: str | None = None
    position: int | None = None
    rule: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.node is not None:
            data["node"] = self.node
        if self.position is not None:
            data["position"] = self.position
        if self.rule is not None:
            data["rule"] = self.rule
        return data


@dataclass(frozen=True, init=False)
class Decision:
    allowed: bool
    mode: str
    reasons: tuple[Reason, ...] = ()
    sql: str | None = None
    statement: str | None = None
    rules: tuple[str, ...] = ()
    source: str | None = None  # the statement as submitted, when it parsed
    plan_hash: str | None = None
    policy_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __init__(
        self,
        allowed: bool,
        mode: str,
        reasons: tuple[Reason, ...] = (),
        sql: str | None = None,
        statement: str | None = None,
        rules: tuple[str, ...] = (),
        source: str | None = None,
        plan_hash: str | None = None,
        policy_version: str = "",
        extra: dict[str, Any] | None = None,
    ) -> None:
        # One dict update instead of the ten object.__setattr__ calls a frozen dataclass's own __init__ makes:
        # every call of the engine builds a Decision. Still frozen: assignment raises FrozenInstanceError.
        vars(self).update(
            allowed=allowed,
            mode=mode,
            reasons=reasons,
            sql=sql,
            statement=statement,
            rules=rules,
            source=source,
            plan_hash=plan_hash,
            policy_version=policy_version,
            extra={} if extra is None else extra,
        )

    @functools.cached_property
    def fingerprint(self) -> str | None:
        """libpg_query's fingerprint of the statement (its shape: constants and spelling ignored), for grouping
        decisions in the audit log; worked out when a record asks for it, since no decision depends on it."""
        return None if self.source is None else pglast_fingerprint(self.source)

    @property
    def enforced(self) -> bool:
        """False when warn/audit let through a statement enforce mode would deny."""
        return not any(r.code in POLICY_CODES for r in self.reasons) or not self.allowed or self.mode == "enforce"

    def refusing(self) -> tuple[Reason, ...]:
        """The reasons that refuse the statement: under warn and audit, policy-level ones are only recorded."""
        return tuple(r for r in self.reasons if r.code not in POLICY_CODES or self.mode == "enforce")

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": "allow" if self.allowed else "deny",
            "mode": self.mode,
            "reasons": [r.to_json() for r in self.reasons],
            "sql": self.sql,
            "statement": self.statement,
            "rules": list(self.rules),
            "fingerprint": self.fingerprint,
            "planHash": self.plan_hash,
            "policyVersion": self.policy_version,
            **self.extra,
        }

    def dumps(self) -> str:
        """Byte-identical for the same input and policy version."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# For what orjson refuses (integers past 64 bits, non-string keys): the standard encoder takes any value.
_PLAN_ENCODER = json.JSONEncoder(sort_keys=True, default=str)


def plan_hash(sql: str, params: list[Any], policy_version: str, tenant: str | None) -> str:
    """The statement exactly as submitted (not its fingerprint, which ignores constants), its parameters, the policy
    version and the tenant: what an approval is bound to."""
    plan = [sql, params, policy_version, tenant]
    try:
        payload = orjson.dumps(plan, default=str, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        payload = _PLAN_ENCODER.encode(plan).encode()
    return hashlib.sha256(payload).hexdigest()[:32]
