"""A compiled AgentPolicy: rules indexed by (action, table), the function allowlist, row filters."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..api.agentpolicy import AgentPolicySpec, Rule
from .schema import TENANT_COLUMN
from .tree import DecodeError, ParseError, parse, pb

WILDCARD = "*"

# Functions never admitted, whatever a policy lists: they read files, reach other servers, change
# settings or sessions, sleep, lock, or write outside the statement's tables.
UNSAFE_FUNCTIONS = frozenset(
    {
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "pg_ls_logdir",
        "pg_ls_waldir",
        "lo_import",
        "lo_export",
        "lo_open",
        "lo_create",
        "lo_unlink",
        "lo_get",
        "lo_put",
        "lo_from_bytea",
        "dblink",
        "dblink_exec",
        "dblink_connect",
        "dblink_send_query",
        "set_config",
        "current_setting",
        "pg_sleep",
        "pg_sleep_for",
        "pg_sleep_until",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_notify",
        "nextval",
        "setval",
        "txid_current",
        "pg_advisory_lock",
        "pg_advisory_xact_lock",
        "pg_try_advisory_lock",
        "query_to_xml",
        "query_to_xml_and_xmlschema",
        "cursor_to_xml",
        "table_to_xml",
        "database_to_xml",
        "schema_to_xml",
        "pg_switch_wal",
        "pg_create_restore_point",
        "pg_backup_start",
        "pg_backup_stop",
        "pg_logical_emit_message",
        "pg_replication_origin_create",
        "pg_file_write",
        "copy_from",
        "pg_execute_server_program",
        # they run SQL text the engine never sees
        "ts_stat",
        "ts_rewrite",
        "query_to_xmlschema",
        "cursor_to_xmlschema",
        "table_to_xmlschema",
        "table_to_xml_and_xmlschema",
        "schema_to_xmlschema",
        "schema_to_xml_and_xmlschema",
        "database_to_xmlschema",
        "database_to_xml_and_xmlschema",
        # sequences, transactions and indexes: state outside the statement's rows
        "currval",
        "lastval",
        "brin_summarize_new_values",
        "brin_summarize_range",
        "brin_desummarize_range",
        "gin_clean_pending_list",
        # the server, the session and the catalogs
        "version",
        "current_database",
        "current_schema",
        "current_schemas",
        "current_user",
        "session_user",
        "system_user",
        "inet_client_addr",
        "inet_client_port",
        "inet_server_addr",
        "inet_server_port",
        "obj_description",
        "col_description",
        "shobj_description",
        "format_type",
        "row_security_active",
        # the same under other names (outside review F7; pg_proc's stable and volatile functions reviewed):
        # the session's role and query, server settings and counters, the session's random seed
        "getpgusername",
        "current_query",
        "setseed",
        "getdatabaseencoding",
        "get_current_ts_config",
        "mxid_age",
        "currtid2",
        "aclexplode",
        # catalog lookups by name (what to_regclass does), validators and large objects by descriptor
        "regclass",
        "regclassin",
        "regcollationin",
        "regconfigin",
        "regdictionaryin",
        "regnamespacein",
        "regoperatorin",
        "regoperin",
        "regprocedurein",
        "regprocin",
        "regrolein",
        "regtypein",
        "amvalidate",
        "fmgr_c_validator",
        "fmgr_internal_validator",
        "fmgr_sql_validator",
        "plpgsql_validator",
        "plpgsql_inline_handler",
        "plpgsql_call_handler",
        "loread",
        "lowrite",
    }
)
# Prefixes of function families never admitted, whatever a policy lists.
UNSAFE_PREFIXES = ("pg_", "lo_", "dblink", "txid_", "has_", "to_reg", "binary_upgrade_")


class PolicyError(ValueError):
    """The policy itself is malformed (e.g. a rowFilter that is not one SQL predicate)."""


@dataclass(frozen=True)
class Match:
    """Rules that decide one access: the deny that wins, or the allows that admit it."""

    deny: Rule | None
    allows: tuple[Rule, ...]


def _columns_in(message: Any, names: set[str]) -> set[str]:
    """Every column name a predicate reads (the last field of each column reference)."""
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        for item in value if descriptor.is_repeated else (value,):
            if isinstance(item, pb.ColumnRef):
                if item.fields[-1].WhichOneof("node") == "string":
                    names.add(item.fields[-1].string.sval)
            else:
                _columns_in(item, names)
    return names


# What `SELECT 1 WHERE <predicate>` sets; anything more (GROUP BY, LIMIT, FROM...) is not a predicate.
_PREDICATE_CLAUSES = frozenset({"target_list", "where_clause", "limit_option", "op"})


def _row_filter(rule: Rule) -> pb.Node:
    """The rule's rowFilter parsed as one predicate."""
    try:
        statements = parse(f"SELECT 1 WHERE {rule.rowFilter}").stmts
    except (ParseError, DecodeError, RecursionError, ValueError) as error:
        raise PolicyError(f"rule {rule.id}: rowFilter does not parse: {error}") from None
    stmt = statements[0].stmt if len(statements) == 1 else None
    select = stmt.select_stmt if stmt is not None and stmt.WhichOneof("node") == "select_stmt" else None
    clauses = {descriptor.name for descriptor, _ in select.ListFields()} if select is not None else set()
    if select is None or not select.HasField("where_clause") or clauses - _PREDICATE_CLAUSES:
        raise PolicyError(f"rule {rule.id}: rowFilter must be one SQL predicate")
    return select.where_clause


class RuleSet:
    """The policy compiled for lookups; `version` changes whenever anything in the spec does."""

    def __init__(self, spec: AgentPolicySpec) -> None:
        self.spec = spec
        self.version = hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[
            :16
        ]
        self.mode = str(spec.mode)
        self.subjects = frozenset(subject.agent for subject in spec.subjects)  # display names; identity: admission
        self.functions = frozenset(f.lower() for f in spec.functions)
        self.limits = spec.limits
        self.row_filters = {rule.id: rule.rowFilter for rule in spec.rules}
        # Parsed once: the rewriter copies these trees into every statement they filter.
        self.predicates = {rule.rowFilter: _row_filter(rule) for rule in spec.rules if rule.rowFilter is not None}
        self._filter_columns = {f: _columns_in(node, set()) for f, node in self.predicates.items()}
        self._index: dict[tuple[str, str], list[Rule]] = {}
        for rule in spec.rules:
            for action in rule.actions:
                for table in rule.tables:
                    self._index.setdefault((str(action), table), []).append(rule)
        self._merged: dict[tuple[str, str], tuple[Rule, ...]] = {}
        # match() per key, a pure function of the compiled rules (bounded by the schema's tables and columns).
        self._matches: dict[tuple[str, str, str | None], Match] = {}
        # The rewriter's serialized filtered subqueries (see rewrite._subquery), per (table, alias, columns, tenant).
        self.subqueries: dict[tuple[Any, ...], bytes] = {}
        for indexed, table in list(self._index):
            self._check_row_filters(indexed, table)

    def _check_row_filters(self, action: str, table: str) -> None:
        """A rowFilter restricts the rows of its (action, table), not only its columns: the OR of every allow
        rule's filter is applied to the whole table. So every column must be covered by an unfiltered rule or by
        rules carrying every filter of the table, else it would be reachable on rows its own rules exclude.
        An insert rowFilter is refused: the engine cannot check inserted rows (VALUES, SELECT) against it."""
        allows = [rule for rule in self.rules_for(action, table) if rule.effect == "allow"]
        if action == "insert":
            for rule in allows:
                if rule.rowFilter is not None:
                    raise PolicyError(
                        f"rule {rule.id}: a rowFilter on an insert rule is not supported (the engine "
                        "cannot check inserted rows against it)"
                    )
        filters = {rule.rowFilter for rule in allows}
        if len(filters) < 2:
            return
        named = sorted({column for rule in allows for column in rule.columns if column != WILDCARD})
        covered = [
            (f"{table}.{column}", [r for r in allows if column in r.columns or WILDCARD in r.columns])
            for column in named
        ]
        covered.append((f"{table} (every other column)", [r for r in allows if WILDCARD in r.columns]))
        for name, rules in covered:
            mine = {rule.rowFilter for rule in rules}
            if rules and None not in mine and mine != filters:
                others = sorted(rule.id for rule in allows if rule not in rules)
                raise PolicyError(
                    f"rule {', '.join(sorted(r.id for r in rules))}: {action} on {name} is allowed "
                    f"only under its rowFilter, but rule {', '.join(others)} admits {action} on {table} "
                    "with another or no rowFilter; filters apply to the whole table, so cover "
                    "that column under every filter of the table (or none)"
                )

    def rules_for(self, action: str, table: str) -> tuple[Rule, ...]:
        """Rules naming (action, table) or (action, *), in policy order."""
        key = (action, table)
        merged = self._merged.get(key)
        if merged is None:
            order = {id(rule): n for n, rule in enumerate(self.spec.rules)}
            candidates = self._index.get(key, []) + self._index.get((action, WILDCARD), [])
            merged = tuple(sorted({id(r): r for r in candidates}.values(), key=lambda r: order[id(r)]))
            self._merged[key] = merged
        return merged

    def match(self, action: str, table: str, column: str | None) -> Match:
        """Deny wins over allow. A table-level access (column None) is denied only by a rule on all columns."""
        key = (action, table, column)
        found = self._matches.get(key)
        if found is None:
            found = self._matches[key] = self._match(action, table, column)
        return found

    def _match(self, action: str, table: str, column: str | None) -> Match:
        allows = []
        for rule in self.rules_for(action, table):
            covers = WILDCARD in rule.columns or (column is not None and column in rule.columns)
            if rule.effect == "deny":
                if covers:
                    return Match(rule, ())
            elif covers or column is None:
                allows.append(rule)
        return Match(None, tuple(allows))

    def predicate_columns(
        self, table: str, columns: Mapping[str, object], pooled: bool, tenant: str | None
    ) -> set[str]:
        """Columns Paybill's own predicates read on `table`, which the agent role is GRANTed SELECT on.

        The grant is needed at the database: the rewrite's filtered subquery (`WHERE tenant_id = ... AND
        <rowFilter>`) runs as the agent role, and PostgreSQL checks column privileges on every column a query
        names, WHERE included. It is not a permission for the agent: the engine admits an agent's read of a
        row-filter column only under a select rule on it, and deny rules always apply (engine._check_rules).
        So for these columns the engine, not the grant, is what refuses a direct read."""
        names = {TENANT_COLUMN} if tenant is not None and pooled else set()
        for action in ("select", "insert", "update", "delete"):
            for row_filter in self.row_filters_for(action, table) or ():
                names |= self._filter_columns[row_filter]
        return names & columns.keys()

    def row_filters_for(self, action: str, table: str) -> list[str] | None:
        """Predicates OR-ed together for (action, table), as PostgreSQL combines permissive RLS policies.

        None when some allowing rule has no filter (the rows are not restricted)."""
        filters = []
        for rule in self.rules_for(action, table):
            if rule.effect != "allow":
                continue
            row_filter = self.row_filters[rule.id]
            if row_filter is None:
                return None
            filters.append(row_filter)
        return filters or None
