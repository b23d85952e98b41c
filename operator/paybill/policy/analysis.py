"""Walk one parsed statement: resolve every name against the schema, collect accesses, flag what is forbidden.

The walker knows a deliberately small part of PostgreSQL's grammar. Any node it does not know is a
reason to deny: default deny applies to syntax as much as to tables.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from pglast import ast, enums

from .decision import Reason
from .rules import UNSAFE_FUNCTIONS, RuleSet
from .schema import TENANT_COLUMN, Schema, Table, TypeFamily

COMPARISONS = frozenset({"=", "<>", "!=", "<", ">", "<=", ">="})
OPERATORS = COMPARISONS | frozenset({"+", "-", "*", "/", "%", "||", "~~", "!~~", "~~*", "!~~*"})
CASTS = frozenset({"int2", "int4", "int8", "smallint", "integer", "int", "bigint", "numeric", "decimal", "float4",
                   "float8", "real", "text", "varchar", "bpchar", "char", "bool", "boolean", "date", "time",
                   "timestamp", "timestamptz", "interval", "uuid", "json", "jsonb"})
TIME_VALUE_FUNCTIONS = frozenset({
    enums.SQLValueFunctionOp.SVFOP_CURRENT_DATE, enums.SQLValueFunctionOp.SVFOP_CURRENT_TIME,
    enums.SQLValueFunctionOp.SVFOP_CURRENT_TIME_N, enums.SQLValueFunctionOp.SVFOP_CURRENT_TIMESTAMP,
    enums.SQLValueFunctionOp.SVFOP_CURRENT_TIMESTAMP_N, enums.SQLValueFunctionOp.SVFOP_LOCALTIME,
    enums.SQLValueFunctionOp.SVFOP_LOCALTIME_N, enums.SQLValueFunctionOp.SVFOP_LOCALTIMESTAMP,
    enums.SQLValueFunctionOp.SVFOP_LOCALTIMESTAMP_N})
A_EXPR_KINDS = frozenset({
    enums.A_Expr_Kind.AEXPR_OP, enums.A_Expr_Kind.AEXPR_OP_ANY, enums.A_Expr_Kind.AEXPR_OP_ALL,
    enums.A_Expr_Kind.AEXPR_DISTINCT, enums.A_Expr_Kind.AEXPR_NOT_DISTINCT, enums.A_Expr_Kind.AEXPR_NULLIF,
    enums.A_Expr_Kind.AEXPR_IN, enums.A_Expr_Kind.AEXPR_LIKE, enums.A_Expr_Kind.AEXPR_ILIKE,
    enums.A_Expr_Kind.AEXPR_BETWEEN, enums.A_Expr_Kind.AEXPR_NOT_BETWEEN})
SUBLINKS = frozenset({enums.SubLinkType.EXISTS_SUBLINK, enums.SubLinkType.ANY_SUBLINK,
                      enums.SubLinkType.ALL_SUBLINK, enums.SubLinkType.EXPR_SUBLINK})

STATEMENT_KINDS = {ast.SelectStmt: "select", ast.InsertStmt: "insert", ast.UpdateStmt: "update",
                   ast.DeleteStmt: "delete"}
_NEVER = {
    "TransactionStmt": "transaction control", "VariableSetStmt": "SET/RESET", "VariableShowStmt": "SHOW",
    "CopyStmt": "COPY", "DoStmt": "DO blocks", "CallStmt": "CALL", "ExplainStmt": "EXPLAIN",
    "PrepareStmt": "PREPARE", "ExecuteStmt": "EXECUTE", "DeallocateStmt": "DEALLOCATE", "LockStmt": "LOCK",
    "ListenStmt": "LISTEN", "NotifyStmt": "NOTIFY", "UnlistenStmt": "UNLISTEN", "DiscardStmt": "DISCARD",
    "GrantStmt": "GRANT/REVOKE", "GrantRoleStmt": "GRANT/REVOKE", "VacuumStmt": "VACUUM/ANALYZE",
    "CheckPointStmt": "CHECKPOINT", "LoadStmt": "LOAD", "TruncateStmt": "TRUNCATE", "MergeStmt": "MERGE",
    "DeclareCursorStmt": "cursors", "FetchStmt": "cursors", "ClosePortalStmt": "cursors",
    "CreateTableAsStmt": "CREATE TABLE AS", "SecLabelStmt": "SECURITY LABEL", "ReindexStmt": "REINDEX",
    "ClusterStmt": "CLUSTER", "RefreshMatViewStmt": "REFRESH MATERIALIZED VIEW",
}

_INTEGER = re.compile(r"^\s*[+-]?\d+\s*$")
_BOOLEAN = frozenset({"t", "f", "true", "false", "y", "n", "yes", "no", "on", "off", "1", "0"})


@dataclass
class Relation:
    """Something a FROM clause makes visible: a base table, a CTE or a subquery."""

    name: str
    columns: tuple[str, ...]
    table: Table | None = None


@dataclass
class Scope:
    relations: list[Relation] = field(default_factory=list)
    parent: Scope | None = None

    def find(self, name: str) -> Relation | None:
        scope: Scope | None = self
        while scope is not None:
            for relation in scope.relations:
                if relation.name == name:
                    return relation
            scope = scope.parent
        return None


@dataclass(frozen=True)
class ParamType:
    family: TypeFamily
    array: bool = False


@dataclass
class FromSlot:
    """Where a base table sits in a FROM list, so the rewriter can put a filtered subquery there."""

    owner: Any
    attr: str
    index: int | None
    range_var: ast.RangeVar
    table: Table


@dataclass
class Target:
    """The table an INSERT, UPDATE or DELETE writes."""

    stmt: Any
    table: Table
    name: str


class Analysis:
    """The result of walking one statement. `reasons` empty means the syntax and names are admissible."""

    def __init__(self, rules: RuleSet, schema: Schema, tenant: str | None) -> None:
        self.rules = rules
        self.schema = schema
        self.tenant = tenant
        self.reasons: list[Reason] = []
        self.accesses: dict[tuple[str, str, str | None], int | None] = {}
        self.param_types: dict[int, ParamType] = {}
        self.params: set[int] = set()
        self.from_slots: list[FromSlot] = []
        self.target: Target | None = None
        self.kind: str | None = None
        self.where_missing = False

    # -- reasons and accesses -------------------------------------------------------------------

    def deny(self, code: str, message: str, node: Any = None) -> None:
        self.reasons.append(Reason(code, message, type(node).__name__ if node is not None else None,
                                   getattr(node, "location", None) if node is not None else None))

    def unsupported(self, node: Any, what: str | None = None) -> None:
        name = type(node).__name__
        self.deny("unsupported", f"{what or name} is not admitted (the engine does not understand it)", node)

    def access(self, action: str, table: Table, column: str | None, node: Any = None) -> None:
        key = (action, table.name, column)
        if key not in self.accesses:
            self.accesses[key] = getattr(node, "location", None)

    # -- statements ------------------------------------------------------------------------------

    def statement(self, stmt: Any) -> None:
        kind = STATEMENT_KINDS.get(type(stmt))
        name = type(stmt).__name__
        if kind is None:
            label = _NEVER.get(name)
            if label is None and name.startswith(("Create", "Alter", "Drop", "Rename", "Comment", "Define")):
                label = "DDL"
            self.deny("statement_kind", f"{label or name} statements are never admitted", stmt)
            return
        self.kind = kind
        if kind == "select":
            self.select(stmt, None, {}, top=True)
        elif kind == "insert":
            self.insert(stmt)
        elif kind == "update":
            self.update(stmt)
        else:
            self.delete(stmt)

    def select(self, stmt: ast.SelectStmt, outer: Scope | None, ctes: dict[str, tuple[str, ...]],
               top: bool = False) -> tuple[str, ...]:
        if stmt.withClause is not None:
            ctes = self.with_clause(stmt.withClause, outer, ctes)
        if stmt.intoClause is not None:
            self.deny("select_into", "SELECT INTO creates a table and is never admitted", stmt.intoClause)
        if stmt.windowClause:
            self.unsupported(stmt.windowClause[0], "WINDOW")
        if stmt.limitOption == enums.LimitOption.LIMIT_OPTION_WITH_TIES:
            self.unsupported(stmt, "FETCH ... WITH TIES")
        if stmt.op != enums.SetOperation.SETOP_NONE:
            left = self.select(stmt.larg, outer, ctes)
            right = self.select(stmt.rarg, outer, ctes)
            if len(left) != len(right):
                self.deny("invalid", "each side of a set operation must return the same number of columns", stmt)
            self.order_and_limit(stmt, Scope([Relation("", left)], outer), left)
            return left
        if stmt.valuesLists:
            scope = Scope([], outer)
            for row in stmt.valuesLists:
                self.expressions(row, scope)
            width = len(stmt.valuesLists[0])
            return tuple(f"column{n + 1}" for n in range(width))
        scope = Scope([], outer)
        for index, item in enumerate(stmt.fromClause or ()):
            self.from_item(item, scope, ctes, stmt, "fromClause", index)
        columns = self.target_list(stmt.targetList or (), scope)
        self.expression(stmt.whereClause, scope)
        for item in stmt.groupClause or ():
            if isinstance(item, ast.GroupingSet):
                self.unsupported(item, "GROUPING SETS")
            else:
                self.expression(item, scope, outputs=columns)
        self.expression(stmt.havingClause, scope)
        for item in stmt.distinctClause or ():
            if item is not None:
                self.expression(item, scope)
        if stmt.lockingClause:
            self.locking(stmt, scope)
        self.order_and_limit(stmt, scope, columns)
        return columns

    def order_and_limit(self, stmt: ast.SelectStmt, scope: Scope, outputs: tuple[str, ...]) -> None:
        for sort in stmt.sortClause or ():
            self.expression(sort.node, scope, outputs=outputs)
        self.expression(stmt.limitCount, scope)
        self.expression(stmt.limitOffset, scope)

    def locking(self, stmt: ast.SelectStmt, scope: Scope) -> None:
        """FOR UPDATE/SHARE needs an update rule on every locked table, as PostgreSQL needs UPDATE on it."""
        for clause in stmt.lockingClause:
            names = {rv.relname for rv in clause.lockedRels or ()}
            for relation in scope.relations:
                if relation.table is not None and (not names or relation.name in names):
                    self.access("update", relation.table, None, clause)

    def with_clause(self, clause: ast.WithClause, outer: Scope | None,
                    ctes: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        if clause.recursive:
            self.unsupported(clause, "WITH RECURSIVE")
        ctes = dict(ctes)
        for cte in clause.ctes:
            if not isinstance(cte.ctequery, ast.SelectStmt):
                self.deny("data_modifying_cte", f"WITH {cte.ctename}: only SELECT is admitted inside WITH", cte)
                continue
            columns = self.select(cte.ctequery, outer, ctes)
            if cte.aliascolnames:
                columns = tuple(n.sval for n in cte.aliascolnames)
            ctes[cte.ctename] = columns
        return ctes

    def insert(self, stmt: ast.InsertStmt) -> None:
        if stmt.withClause is not None:
            self.unsupported(stmt.withClause, "WITH on INSERT")
        if stmt.onConflictClause is not None:
            self.unsupported(stmt.onConflictClause, "ON CONFLICT")
        if stmt.override:
            self.unsupported(stmt, "OVERRIDING")
        table = self.base_table(stmt.relation)
        if table is None:
            return
        name = stmt.relation.alias.aliasname if stmt.relation.alias else table.name
        self.target = Target(stmt, table, name)
        if not stmt.cols:
            self.deny("insert_columns", "INSERT must name its columns", stmt)
            return
        families = []
        for col in stmt.cols:
            if col.indirection:
                self.unsupported(col, "subscripted INSERT target")
            if col.name not in table.columns:
                self.deny("unknown_column", f"column {table.name}.{col.name} does not exist", col)
                families.append(None)
                continue
            self.writes_tenant_column(table, col.name, col)
            self.access("insert", table, col.name, col)
            families.append(table.columns[col.name])
        source = stmt.selectStmt
        if isinstance(source, ast.SelectStmt) and source.valuesLists and not source.fromClause:
            scope = Scope()
            for row in source.valuesLists:
                if len(row) != len(families):
                    self.deny("invalid", "VALUES row and column list differ in length", source)
                for value, family in zip(row, families, strict=False):
                    self.expression(value, scope)
                    if family is not None:
                        self.typed_value(family, value)
        elif isinstance(source, ast.SelectStmt):
            if source.op != enums.SetOperation.SETOP_NONE and self.tenant is not None and table.pooled:
                self.unsupported(source, "a set operation as the source of a pooled INSERT")
            columns = self.select(source, None, {})
            if len(columns) != len(families):
                self.deny("invalid", "INSERT ... SELECT returns a different number of columns", source)
        else:
            self.deny("insert_columns", "INSERT needs VALUES or a SELECT", stmt)
        self.returning(stmt.returningClause, Scope([Relation(name, tuple(table.columns), table)]))

    def update(self, stmt: ast.UpdateStmt) -> None:
        if stmt.withClause is not None:
            self.unsupported(stmt.withClause, "WITH on UPDATE")
        table = self.base_table(stmt.relation)
        if table is None:
            return
        name = stmt.relation.alias.aliasname if stmt.relation.alias else table.name
        self.target = Target(stmt, table, name)
        scope = Scope([Relation(name, tuple(table.columns), table)])
        for index, item in enumerate(stmt.fromClause or ()):
            self.from_item(item, scope, {}, stmt, "fromClause", index)
        for target in stmt.targetList:
            if isinstance(target.val, ast.MultiAssignRef) or target.indirection:
                self.unsupported(target, "multi-column or subscripted SET")
                continue
            if target.name not in table.columns:
                self.deny("unknown_column", f"column {table.name}.{target.name} does not exist", target)
                continue
            self.writes_tenant_column(table, target.name, target)
            self.access("update", table, target.name, target)
            self.expression(target.val, scope)
            self.typed_value(table.columns[target.name], target.val)
        self.where(stmt, scope)
        self.returning(stmt.returningClause, scope)

    def delete(self, stmt: ast.DeleteStmt) -> None:
        if stmt.withClause is not None:
            self.unsupported(stmt.withClause, "WITH on DELETE")
        table = self.base_table(stmt.relation)
        if table is None:
            return
        name = stmt.relation.alias.aliasname if stmt.relation.alias else table.name
        self.target = Target(stmt, table, name)
        self.access("delete", table, None, stmt.relation)
        scope = Scope([Relation(name, tuple(table.columns), table)])
        for index, item in enumerate(stmt.usingClause or ()):
            self.from_item(item, scope, {}, stmt, "usingClause", index)
        self.where(stmt, scope)
        self.returning(stmt.returningClause, scope)

    def where(self, stmt: Any, scope: Scope) -> None:
        if isinstance(stmt.whereClause, ast.CurrentOfExpr):
            self.unsupported(stmt.whereClause, "WHERE CURRENT OF")
            return
        before = len(self.accesses)
        self.expression(stmt.whereClause, scope)
        # A WHERE that reads no column (WHERE true, WHERE 1 = 1) restricts nothing.
        self.where_missing = stmt.whereClause is None or len(self.accesses) == before

    def returning(self, clause: ast.ReturningClause | None, scope: Scope) -> None:
        if clause is None:
            return
        if clause.options:
            self.unsupported(clause, "RETURNING WITH (OLD/NEW)")
        self.target_list(clause.exprs or (), scope)

    def writes_tenant_column(self, table: Table, column: str, node: Any) -> None:
        if column == TENANT_COLUMN and self.tenant is not None and table.pooled:
            self.deny("tenant_column", f"{table.name}.{TENANT_COLUMN} is set by Paybill, never by an agent", node)

    # -- FROM ------------------------------------------------------------------------------------

    def base_table(self, range_var: ast.RangeVar) -> Table | None:
        if range_var.catalogname is not None or (range_var.schemaname not in (None, self.schema.name)):
            qualified = ".".join(p for p in (range_var.catalogname, range_var.schemaname, range_var.relname) if p)
            self.deny("other_schema", f"{qualified}: only tables of the tenant schema are admitted", range_var)
            return None
        table = self.schema.tables.get(range_var.relname)
        if table is None:
            self.deny("unknown_table", f"table {range_var.relname} does not exist in the tenant schema", range_var)
        return table

    def from_item(self, item: Any, scope: Scope, ctes: dict[str, tuple[str, ...]], owner: Any, attr: str,
                  index: int | None) -> None:
        if isinstance(item, ast.RangeVar):
            alias = item.alias
            if alias is not None and alias.colnames:
                self.unsupported(alias, "column aliases on a table")
            name = alias.aliasname if alias is not None else item.relname
            if item.schemaname is None and item.catalogname is None and item.relname in ctes:
                scope.relations.append(Relation(name, ctes[item.relname]))
                return
            table = self.base_table(item)
            if table is None:
                return
            self.access("select", table, None, item)
            scope.relations.append(Relation(name, tuple(table.columns), table))
            self.from_slots.append(FromSlot(owner, attr, index, item, table))
        elif isinstance(item, ast.JoinExpr):
            if item.isNatural:
                self.unsupported(item, "NATURAL JOIN")
            if item.alias is not None or item.join_using_alias is not None:
                self.unsupported(item, "an aliased JOIN")
            self.from_item(item.larg, scope, ctes, item, "larg", None)
            self.from_item(item.rarg, scope, ctes, item, "rarg", None)
            for name in item.usingClause or ():
                matches = [r for r in scope.relations if name.sval in r.columns]
                if len(matches) < 2:
                    self.deny("unknown_column", f"USING column {name.sval} is not on both sides", item)
                for relation in matches:
                    if relation.table is not None:
                        self.access("select", relation.table, name.sval, item)
            self.expression(item.quals, scope)
        elif isinstance(item, ast.RangeSubselect):
            outer = scope if item.lateral else scope.parent
            columns = self.select(item.subquery, outer, ctes)
            alias = item.alias
            if alias is not None and alias.colnames:
                columns = tuple(n.sval for n in alias.colnames)
            scope.relations.append(Relation(alias.aliasname if alias is not None else "", columns))
        elif isinstance(item, ast.RangeFunction):
            self.deny("set_returning_function", "functions in FROM are never admitted", item)
        else:
            self.unsupported(item)

    # -- target lists and expressions -----------------------------------------------------------

    def target_list(self, targets: Any, scope: Scope) -> tuple[str, ...]:
        names: list[str] = []
        for target in targets:
            value = target.val
            if isinstance(value, ast.ColumnRef) and isinstance(value.fields[-1], ast.A_Star):
                names.extend(self.star(value, scope))
                continue
            self.expression(value, scope)
            names.append(target.name or _output_name(value))
        return tuple(names)

    def star(self, ref: ast.ColumnRef, scope: Scope) -> tuple[str, ...]:
        """Expand `*` or `rel.*` into the columns it reads, each checked like a named column."""
        if len(ref.fields) == 1:
            relations = scope.relations
        elif len(ref.fields) == 2:
            relation = scope.find(ref.fields[0].sval)
            if relation is None:
                self.deny("unknown_table", f"{ref.fields[0].sval} is not in the FROM clause", ref)
                return ()
            relations = [relation]
        else:
            self.deny("other_schema", "qualified star references are not admitted", ref)
            return ()
        if not relations:
            self.deny("invalid", "* needs a FROM clause", ref)
        columns: list[str] = []
        for relation in relations:
            self.whole_row(relation, ref)
            columns.extend(relation.columns)
        return tuple(columns)

    def whole_row(self, relation: Relation, node: Any) -> None:
        if relation.table is not None:
            for column in relation.columns:
                self.access("select", relation.table, column, node)

    def column(self, ref: ast.ColumnRef, scope: Scope, outputs: tuple[str, ...] = ()) -> tuple[Relation, str] | None:
        fields = ref.fields
        if isinstance(fields[-1], ast.A_Star):
            self.star(ref, scope)
            return None
        names = [f.sval for f in fields]
        if len(names) == 1:
            name = names[0]
            search: Scope | None = scope
            while search is not None:
                found = [r for r in search.relations if name in r.columns]
                if len(found) > 1:
                    self.deny("ambiguous_column", f"column reference {name} is ambiguous", ref)
                    return None
                if found:
                    relation = found[0]
                    if relation.table is not None:
                        self.access("select", relation.table, name, ref)
                    return relation, name
                search = search.parent
            if name in outputs:
                return None
            relation = scope.find(name)
            if relation is not None:  # a whole-row reference reads every column
                self.whole_row(relation, ref)
                return None
            self.deny("unknown_column", f"column {name} does not exist", ref)
            return None
        if len(names) == 2:
            relation = scope.find(names[0])
            if relation is None:
                self.deny("unknown_table", f"{names[0]} is not in the FROM clause", ref)
                return None
            if names[1] not in relation.columns:
                self.deny("unknown_column", f"column {names[0]}.{names[1]} does not exist", ref)
                return None
            if relation.table is not None:
                self.access("select", relation.table, names[1], ref)
            return relation, names[1]
        self.deny("other_schema", f"{'.'.join(names)}: qualified column references are not admitted", ref)
        return None

    def expressions(self, nodes: Any, scope: Scope) -> None:
        for node in nodes or ():
            self.expression(node, scope)

    def expression(self, node: Any, scope: Scope, outputs: tuple[str, ...] = ()) -> None:
        if node is None:
            return
        if isinstance(node, tuple):
            self.expressions(node, scope)
        elif isinstance(node, ast.ColumnRef):
            self.column(node, scope, outputs)
        elif isinstance(node, ast.A_Const):
            return
        elif isinstance(node, ast.ParamRef):
            if node.number < 1 or node.number > 1000:
                self.deny("invalid", f"parameter ${node.number} is out of range", node)
            self.params.add(node.number)
        elif isinstance(node, ast.TypeCast):
            self.cast(node)
            self.expression(node.arg, scope)
        elif isinstance(node, ast.FuncCall):
            self.function(node, scope)
        elif isinstance(node, ast.A_Expr):
            self.operator(node, scope)
        elif isinstance(node, ast.BoolExpr | ast.CoalesceExpr | ast.MinMaxExpr | ast.RowExpr):
            self.expressions(node.args, scope)
        elif isinstance(node, ast.NullTest | ast.BooleanTest):
            self.expression(node.arg, scope)
        elif isinstance(node, ast.CaseExpr):
            self.expression(node.arg, scope)
            for when in node.args:
                self.expression(when.expr, scope)
                self.expression(when.result, scope)
            self.expression(node.defresult, scope)
        elif isinstance(node, ast.A_ArrayExpr):
            self.expressions(node.elements, scope)
        elif isinstance(node, ast.SubLink):
            if node.subLinkType not in SUBLINKS:
                self.unsupported(node, f"{node.subLinkType.name} subquery")
            self.expression(node.testexpr, scope)
            self.select(node.subselect, scope, {})
        elif isinstance(node, ast.SQLValueFunction):
            if node.op not in TIME_VALUE_FUNCTIONS:
                self.deny("session_information", f"{node.op.name} reads session information", node)
        else:
            self.unsupported(node)

    def cast(self, node: ast.TypeCast) -> None:
        type_name = node.typeName
        names = [n.sval for n in type_name.names]
        if len(names) > 2 or (len(names) == 2 and names[0] != "pg_catalog") or names[-1].lower() not in CASTS:
            self.deny("cast_not_allowed", f"cast to {'.'.join(names)} is not admitted", node)
        if type_name.arrayBounds or type_name.setof or type_name.pct_type:
            self.deny("cast_not_allowed", "array, SETOF and %TYPE casts are not admitted", node)

    def function(self, node: ast.FuncCall, scope: Scope) -> None:
        names = [n.sval.lower() for n in node.funcname]
        name = names[-1]
        if len(names) > 2 or (len(names) == 2 and names[0] != "pg_catalog"):
            self.deny("other_schema", f"function {'.'.join(names)}: only unqualified functions are admitted", node)
        elif name in UNSAFE_FUNCTIONS or name.startswith(("pg_", "lo_", "dblink")):
            self.deny("unsafe_function", f"function {name} is never admitted", node)
        elif name not in self.rules.functions:
            self.deny("function_not_allowed", f"function {name} is not in the policy's allowlist", node)
        if node.over is not None:
            self.unsupported(node.over, "window functions")
        if node.func_variadic:
            self.unsupported(node, "VARIADIC")
        for arg in node.args or ():
            if isinstance(arg, ast.NamedArgExpr):
                self.unsupported(arg, "named arguments")
            else:
                self.expression(arg, scope)
        for sort in node.agg_order or ():
            self.expression(sort.node, scope)
        self.expression(node.agg_filter, scope)

    def operator(self, node: ast.A_Expr, scope: Scope) -> None:
        if node.kind not in A_EXPR_KINDS:
            self.unsupported(node, f"{node.kind.name} expression")
            return
        names = [n.sval for n in node.name]
        if len(names) != 1:
            self.deny("operator_not_allowed", f"OPERATOR({'.'.join(names)}) is not admitted", node)
        elif names[0] not in OPERATORS and node.kind not in (enums.A_Expr_Kind.AEXPR_BETWEEN,
                                                              enums.A_Expr_Kind.AEXPR_NOT_BETWEEN):
            self.deny("operator_not_allowed", f"operator {names[0]} is not admitted", node)
        left = self.resolved(node.lexpr, scope)
        right = node.rexpr
        if isinstance(right, tuple):
            self.expressions(right, scope)
        else:
            right_col = self.resolved(right, scope)
            if left is None and right_col is not None:
                self.typed_operand(right_col, node.lexpr, node)
                return
        if left is None:
            return
        if node.kind in (enums.A_Expr_Kind.AEXPR_IN, enums.A_Expr_Kind.AEXPR_BETWEEN,
                         enums.A_Expr_Kind.AEXPR_NOT_BETWEEN) and isinstance(right, tuple):
            for value in right:
                self.typed_value(left, value)
        elif node.kind in (enums.A_Expr_Kind.AEXPR_OP_ANY, enums.A_Expr_Kind.AEXPR_OP_ALL):
            if isinstance(right, ast.ParamRef):
                self.expect_param(right, ParamType(left, array=True))
            elif isinstance(right, ast.A_ArrayExpr):
                for value in right.elements or ():
                    self.typed_value(left, value)
        else:
            self.typed_operand(left, right, node)

    def typed_operand(self, family: TypeFamily, value: Any, node: ast.A_Expr) -> None:
        if node.kind in (enums.A_Expr_Kind.AEXPR_LIKE, enums.A_Expr_Kind.AEXPR_ILIKE):
            self.typed_value(TypeFamily.TEXT, value)
        elif node.kind != enums.A_Expr_Kind.AEXPR_OP or node.name[0].sval in COMPARISONS:
            self.typed_value(family, value)

    def resolved(self, node: Any, scope: Scope) -> TypeFamily | None:
        """Walk an operand; for a base-table column, also return its type family."""
        if isinstance(node, ast.ColumnRef) and not isinstance(node.fields[-1], ast.A_Star):
            found = self.column(node, scope)
            if found is not None and found[0].table is not None:
                return found[0].table.columns[found[1]]
            return None
        self.expression(node, scope)
        return None

    # -- literal and parameter types -----------------------------------------------------------

    def expect_param(self, param: ast.ParamRef, expected: ParamType) -> None:
        self.params.add(param.number)
        self.param_types.setdefault(param.number, expected)

    def typed_value(self, family: TypeFamily, value: Any) -> None:
        if isinstance(value, ast.ParamRef):
            self.expect_param(value, ParamType(family))
        elif isinstance(value, ast.A_Const) and not value.isnull:
            literal = value.val
            python = literal.sval if isinstance(literal, ast.String) else (
                literal.boolval if isinstance(literal, ast.Boolean) else (
                    literal.ival if isinstance(literal, ast.Integer) else (
                        literal.fval if isinstance(literal, ast.Float) else None)))
            if isinstance(literal, ast.String):
                ok = literal_fits(family, python)
            else:
                ok = value_fits(family, python if not isinstance(literal, ast.Float) else float(python))
            if not ok:
                shown = repr(python) if len(repr(python)) <= 40 else repr(python)[:37] + "..."
                self.deny("type_mismatch", f"{shown} is not a valid {family} value", value)


def literal_fits(family: TypeFamily, text: str) -> bool:
    """Can an SQL string literal be read as a value of this family?"""
    if family == TypeFamily.INTEGER:
        return bool(_INTEGER.match(text))
    if family == TypeFamily.NUMERIC:
        try:
            float(text)
        except ValueError:
            return False
        return True
    if family == TypeFamily.BOOLEAN:
        return text.strip().lower() in _BOOLEAN
    if family == TypeFamily.UUID:
        try:
            uuid.UUID(text)
        except ValueError:
            return False
        return True
    return True


def value_fits(family: TypeFamily, value: Any) -> bool:
    """Can a non-string literal or a bound parameter be a value of this family?"""
    if value is None:
        return True
    if isinstance(value, str):
        return literal_fits(family, value)
    if isinstance(value, bool):
        return family in (TypeFamily.BOOLEAN, TypeFamily.OTHER)
    if isinstance(value, int):
        return family in (TypeFamily.INTEGER, TypeFamily.NUMERIC, TypeFamily.OTHER)
    if isinstance(value, float):
        return family in (TypeFamily.NUMERIC, TypeFamily.OTHER)
    return False


def param_fits(expected: ParamType, value: Any) -> bool:
    if expected.array:
        return isinstance(value, list) and all(value_fits(expected.family, v) for v in value)
    return value_fits(expected.family, value)


def _output_name(node: Any) -> str:
    if isinstance(node, ast.ColumnRef) and isinstance(node.fields[-1], ast.String):
        return node.fields[-1].sval
    if isinstance(node, ast.FuncCall):
        return node.funcname[-1].sval
    if isinstance(node, ast.TypeCast):
        return _output_name(node.arg)
    return "?column?"
