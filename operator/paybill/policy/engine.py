"""The policy engine: one statement in, one deterministic Decision out. Default deny."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections import OrderedDict
from typing import Any, NamedTuple, Protocol

from ..api.agentpolicy import AgentPolicySpec
from .analysis import (
    MAX_NUMERIC_DIGITS,
    MAX_PATTERN,
    Analysis,
    ParamType,
    Relation,
    Scope,
    location,
    long_value,
    param_fits,
)
from .decision import POLICY_CODES, Decision, Reason, plan_hash
from .rewrite import rewrite
from .rules import WILDCARD, PolicyError, RuleSet
from .schema import TENANT_COLUMN, Schema
from .tree import DecodeError, ParseError, parse_raw
from .validate import Validator

MAX_SQL_LENGTH = 65536
# What a rowFilter, written by the policy's author, may do that an agent's statement may not.
AUTHOR_ONLY = frozenset({"function_not_allowed", "session_information"})
logger = logging.getLogger(__name__)
_SELECTIVE_WHERE = (
    "picks rows of {table} by value in every branch of an OR: a non-boolean column = or IN literals or parameters,"
    " a range bounded on both sides, or LIKE with a literal prefix"
)


class _Admitted(NamedTuple):
    """What the cache keeps for a statement: its decision before parameters are bound."""

    decision: Decision
    params: dict[int, ParamType | None]
    approvers: frozenset[str] | None
    min_approvals: int
    patterns: frozenset[int] = frozenset()  # parameters a LIKE pattern is made of (0: any, see Analysis)
    equated: frozenset[int] = frozenset()  # parameters compared with =
    columns: int = 0  # the column references of the statement


class Gate(Protocol):
    """What the operator asks of a policy engine: a PolicyEngine, or one wrapped (metrics.TimedEngine)."""

    rules: RuleSet
    schema: Schema
    version: str

    def decide(
        self,
        principal: str,
        sql: str,
        params: list[Any] | None = None,
        tenant: str | None = None,
        approvals: frozenset[str] = frozenset(),
    ) -> Decision: ...


class PolicyEngine:
    """Checks agent SQL against one AgentPolicy and one tenant schema.

    Decisions are cached by (principal, tenant, statement) under the policy and schema version;
    parameters are checked on every call, so a cached statement still rejects a badly typed value.
    `analysis` is the clause walker (the tests give one that forgets a clause, to show the validator denies it).
    """

    def __init__(
        self, policy: AgentPolicySpec, schema: Schema, cache_size: int = 4096, analysis: type[Analysis] = Analysis
    ) -> None:
        self.analysis = analysis
        self.rules = RuleSet(policy)
        self.schema = schema
        self.validator = Validator(self.rules, schema)
        self.version = f"{self.rules.version}.{schema.digest}"
        self._cache: OrderedDict[tuple[str, str | None, str], _Admitted] = OrderedDict()
        self._cache_size = cache_size
        self._check_row_filters()

    def _check_row_filters(self) -> None:
        """Each rowFilter must read only columns of the tables its rule names, and nothing never admitted."""
        for rule in self.rules.spec.rules:
            if rule.rowFilter is None:
                continue
            names = self.schema.tables if WILDCARD in rule.tables else rule.tables
            for table in (self.schema.tables[n] for n in names if n in self.schema.tables):
                analysis = self.analysis(self.rules, self.schema, None)
                scope = Scope([Relation(table.name, tuple(table.columns), table)])
                analysis.expression(self.rules.predicates[rule.rowFilter], scope)
                problems = [r.message for r in analysis.reasons if r.code not in AUTHOR_ONLY]
                if problems:
                    raise PolicyError(f"rule {rule.id}: rowFilter on {table.name}: {problems[0]}")

    def clear_cache(self) -> None:
        self._cache.clear()

    def decide(
        self,
        principal: str,
        sql: str,
        params: list[Any] | None = None,
        tenant: str | None = None,
        approvals: frozenset[str] = frozenset(),
    ) -> Decision:
        params = params or []
        if any(_nested(value, MAX_PARAM_DEPTH) for value in params):  # before anything walks or hashes them
            reason = Reason("param_type", f"a parameter is a list nested more than {MAX_PARAM_DEPTH} deep")
            return Decision(False, self.rules.mode, (reason,), policy_version=self.version)
        if any(_huge_integer(value) for value in params):  # past what the hash's JSON encoder prints
            reason = Reason("numeric_too_long", f"a parameter is an integer of more than {MAX_NUMERIC_DIGITS} digits")
            return Decision(False, self.rules.mode, (reason,), policy_version=self.version)
        key = (principal, tenant, sql)
        admitted = self._cache.get(key)
        if admitted is None:
            admitted = self._admit(principal, sql, tenant)
            if admitted.decision.source is not None:
                self._cache[key] = admitted
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return self._bind(admitted, sql, params, tenant, approvals)

    def _bind(
        self, admitted: _Admitted, sql: str, params: list[Any], tenant: str | None, approvals: frozenset[str]
    ) -> Decision:
        decision = admitted.decision
        digest = plan_hash(sql, params, self.version, tenant)
        if (
            decision.allowed
            and admitted.approvers is None
            and _params_fit(admitted.params, params)
            and not _long_patterns(admitted.patterns, params)
            and not self._copied_widely(admitted, params)
        ):
            # The hot path (a cached, admitted statement with good parameters): no new reasons.
            return Decision(
                True,
                decision.mode,
                decision.reasons,
                decision.sql,
                decision.statement,
                decision.rules,
                decision.source,
                digest,
                decision.policy_version,
                decision.extra,
            )
        reasons = list(decision.reasons)
        expected = admitted.params
        if decision.source is not None:
            if len(params) != len(expected):
                reasons.append(Reason("param_count", f"statement takes {len(expected)} parameters, got {len(params)}"))
            else:
                for number, value in enumerate(params, start=1):
                    kind = expected.get(number)
                    why = long_value(value)
                    if why is not None:
                        reasons.append(Reason("numeric_too_long", f"${number} reads as {why}"))
                    elif not _utf8(value):
                        reasons.append(Reason("param_type", f"${number} is not valid UTF-8 text"))
                    elif not _uniform(value):
                        reasons.append(Reason("param_type", f"${number} is an array of values of different types"))
                    elif number in self._copied_widely(admitted, params):
                        reasons.append(
                            Reason(
                                "plan_too_large",
                                f"${number} is compared with =, and the planner may copy it for each of the"
                                f" {admitted.columns} columns the statement reads: more than maxBytesRead"
                                f" {self.rules.limits.maxBytesRead} bytes",
                            )
                        )
                    elif number in _long_patterns(admitted.patterns, params):
                        reasons.append(
                            Reason("value_growth", f"${number} is a LIKE pattern longer than {MAX_PATTERN} characters")
                        )
                    elif kind is not None and not param_fits(kind, value):
                        reasons.append(
                            Reason(
                                "param_type",
                                f"${number} is not a valid {kind.family}{' array' if kind.array else ''} value",
                            )
                        )
                    elif kind is None and not _scalar(value):
                        reasons.append(Reason("param_type", f"${number} must be a scalar"))
        if admitted.approvers is not None:
            granted = approvals & admitted.approvers
            if len(granted) < admitted.min_approvals:
                reasons.append(
                    Reason(
                        "approval_required",
                        f"needs {admitted.min_approvals} approval(s) from {', '.join(sorted(admitted.approvers))}",
                    )
                )
        allowed = decision.allowed and not any(
            r.code not in POLICY_CODES or decision.mode == "enforce" for r in reasons[len(decision.reasons) :]
        )
        return dataclasses.replace(
            decision, allowed=allowed, reasons=tuple(reasons), sql=decision.sql if allowed else None, plan_hash=digest
        )

    def _copied_widely(self, admitted: _Admitted, params: list[Any]) -> list[int]:
        """Parameters compared with = whose size times the statement's column references (the planner copies such a
        value into a clause for each column an equivalence class joins: 60 self-joins on one 3.9 MB $1 took a
        backend to 1.15 GB) is past maxBytesRead."""
        limit, columns = self.rules.limits.maxBytesRead, max(1, admitted.columns)
        return [
            n
            for n in admitted.equated
            if n <= len(params) and isinstance(params[n - 1], str) and len(params[n - 1]) * columns > limit
        ]

    def _admit(self, principal: str, sql: str, tenant: str | None) -> _Admitted:
        mode = self.rules.mode
        deny = functools.partial(Decision, False, mode, policy_version=self.version)
        if principal not in self.rules.subjects:
            return _Admitted(
                deny((Reason("principal_not_subject", f"{principal} is not a subject of the policy"),)), {}, None, 1
            )
        if len(sql) > MAX_SQL_LENGTH:
            return _Admitted(
                deny((Reason("too_long", f"statement is longer than {MAX_SQL_LENGTH} characters"),)), {}, None, 1
            )
        if "\x00" in sql:
            return _Admitted(deny((Reason("syntax_error", "statement contains a NUL character"),)), {}, None, 1)
        try:
            serialized, tree = parse_raw(sql)
        except ParseError as error:
            position = error.args[1] if len(error.args) > 1 else None
            return _Admitted(deny((Reason("syntax_error", str(error.args[0]), position=position),)), {}, None, 1)
        except (DecodeError, RecursionError):
            return _Admitted(deny((Reason("too_complex", "statement is nested too deeply"),)), {}, None, 1)
        except ValueError as error:  # a node the serializer refuses (tree.parse_raw)
            return _Admitted(
                deny((Reason("unsupported", f"the engine cannot read this statement: {error}"),)), {}, None, 1
            )
        statements = tree.stmts
        if len(statements) != 1:
            return _Admitted(
                deny((Reason("statement_count", f"exactly one statement is admitted, got {len(statements)}"),)),
                {},
                None,
                1,
            )
        stmt = statements[0].stmt
        analysis = self.analysis(self.rules, self.schema, tenant)
        try:
            analysis.statement(stmt)
        except RecursionError:
            analysis.reasons.append(Reason("too_complex", "statement is nested too deeply"))
        except Exception as error:  # a tree shape the walker does not know: default deny
            logger.warning("policy analysis failed on a %s: %r", stmt.WhichOneof("node"), error)
            analysis.reasons.append(
                Reason("unsupported", f"the engine cannot analyse this statement ({type(error).__name__})")
            )
        rules, approvers, min_approvals = self._check_rules(analysis)
        params = analysis.param_types
        if analysis.params and analysis.params != set(range(1, max(analysis.params) + 1)):
            analysis.reasons.append(Reason("param_count", "parameters must be numbered $1..$n without gaps"))
        reasons = tuple(analysis.reasons)
        blocking = [r for r in reasons if r.code not in POLICY_CODES or mode == "enforce"]
        rewritten = None
        if not blocking:
            try:
                rewritten = rewrite(tree, analysis, self.rules.limits, serialized)
            except Exception as error:  # deparse refused the tree
                reasons += (Reason("rewrite_failed", f"could not deparse the rewritten statement: {error}"),)
                blocking = [reasons[-1]]
        found = self.validator.validate(rewritten, tenant) if rewritten is not None else []
        if found:  # deny by default: every node of the final statement, whatever clause the analysis missed
            seen = {(r.code, r.message) for r in reasons}
            reasons += tuple(r for r in found if (r.code, r.message) not in seen)
            blocking = [r for r in found if r.code not in POLICY_CODES or mode == "enforce"]
            if blocking:
                rewritten = None
        decision = Decision(
            not blocking,
            mode,
            reasons,
            rewritten,
            analysis.kind,
            rules,
            sql,
            policy_version=self.version,
            extra={"locks": True} if analysis.locking else {},
        )
        return _Admitted(
            decision,
            {n: params.get(n) for n in analysis.params},
            approvers,
            min_approvals,
            frozenset(analysis.pattern_params),
            frozenset(analysis.equated_params),
            analysis.columns_read,
        )

    def _check_rules(self, analysis: Analysis) -> tuple[tuple[str, ...], frozenset[str] | None, int]:
        """Every access needs an allow rule and no deny rule; collects approvals the allowing rules ask for."""
        allowing: dict[str, Any] = {}
        for (action, table, column), node in analysis.accesses.items():
            match = self.rules.match(action, table, column)
            if (
                match.deny is None
                and not match.allows
                and action == "select"
                and column == TENANT_COLUMN
                and analysis.tenant is not None
                and self.schema.tables[table].pooled
            ):
                # the agent's own tenant id: readable wherever the table is, unless a rule denies it. Row-filter
                # columns are not: reading them needs a select rule like any column (rules.predicate_columns)
                match = self.rules.match(action, table, None)
            if match.allows and match.deny is None:
                for rule in match.allows:
                    allowing.setdefault(rule.id, rule)
                continue
            target = f"{table}.{column}" if column else table
            if match.deny is not None:
                analysis.reasons.append(
                    Reason(
                        "denied_by_rule", f"{action} on {target} is denied", position=location(node), rule=match.deny.id
                    )
                )
            else:
                analysis.reasons.append(
                    Reason("no_allow_rule", f"no rule allows {action} on {target}", position=location(node))
                )
        written = analysis.target
        if analysis.where_missing and analysis.kind in ("update", "delete") and written is not None:
            for rule in allowing.values():
                if rule.requireWhere and analysis.kind in rule.actions:
                    analysis.reasons.append(
                        Reason(
                            "require_where",
                            f"{analysis.kind.upper()} needs a WHERE clause "
                            f"that {_SELECTIVE_WHERE.format(table=written.table.name)}",
                            rule=rule.id,
                        )
                    )
        if analysis.where_missing and analysis.kind == "insert" and written is not None:
            for rule in allowing.values():
                if rule.requireWhere and "update" in rule.actions:  # ON CONFLICT DO UPDATE is an UPDATE
                    analysis.reasons.append(
                        Reason(
                            "require_where",
                            f"INSERT ... ON CONFLICT DO UPDATE on {written.table.name} needs a VALUES list of "
                            "literals and parameters as its source (each row names the row it updates by key)",
                            rule=rule.id,
                        )
                    )
        for table in sorted({table for table, restricted in analysis.locks if not restricted}):
            for rule in self.rules.match("update", table, None).allows:
                if rule.requireWhere:  # a row lock is a write intent: the update rule's requireWhere holds
                    analysis.reasons.append(
                        Reason(
                            "require_where",
                            f"a row lock on {table} needs a WHERE clause that {_SELECTIVE_WHERE.format(table=table)}",
                            rule=rule.id,
                        )
                    )
        approvers: set[str] = set()
        min_approvals = 0
        for rule in allowing.values():
            if rule.approval is not None:
                approvers.update(rule.approval.approvers)
                min_approvals = max(min_approvals, rule.approval.minApprovals)
        return (tuple(sorted(allowing)), frozenset(approvers) if min_approvals else None, max(min_approvals, 1))


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _params_fit(expected: dict[int, ParamType | None], params: list[Any]) -> bool:
    if len(params) != len(expected):
        return False
    for number, value in enumerate(params, start=1):
        kind = expected.get(number)
        if not (param_fits(kind, value) if kind is not None else _scalar(value)) or long_value(value) is not None:
            return False
        if not _utf8(value) or not _uniform(value):
            return False
    return True


def _uniform(value: Any) -> bool:
    """An array's values are of one type (psycopg cannot send [1, "2"]), nulls aside."""
    if not isinstance(value, list):
        return True
    kinds: set[type] = set()
    level: list[Any] = value
    while level:
        kinds.update(type(item) for item in level if item is not None and not isinstance(item, list))
        level = [item for each in level if isinstance(each, list) for item in each]
    return len(kinds) <= 1


def _long_patterns(patterns: frozenset[int], params: list[Any]) -> list[int]:
    """The parameters of a LIKE pattern longer than MAX_PATTERN characters (every parameter, for 0 in `patterns`)."""
    numbers = range(1, len(params) + 1) if 0 in patterns else patterns
    return [n for n in numbers if n <= len(params) and len(str(params[n - 1])) > MAX_PATTERN]


def _huge_integer(value: Any) -> bool:
    if type(value) is int:  # not a bool; the common scalar first, on every call
        return abs(value) >= _HUGE
    return isinstance(value, list) and any(_huge_integer(item) for item in value)


_HUGE = 10**MAX_NUMERIC_DIGITS
MAX_PARAM_DEPTH = 8  # a parameter is a scalar or an array: an array of arrays is deep enough


def _nested(value: Any, depth: int) -> bool:
    """Is `value` a list nested more than `depth` deep (walked without recursion)?"""
    level: list[Any] = [value]
    for _ in range(depth + 1):
        level = [item for each in level if isinstance(each, list) for item in each]
        if not level:
            return False
    return True


def _utf8(value: Any) -> bool:
    """Can `value` be sent as text (a lone surrogate, which a JSON decoder may produce, cannot)?"""
    if isinstance(value, list):
        return all(_utf8(item) for item in value)
    if not isinstance(value, str) or value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True
