"""Rewrite an admitted tree: tenant predicate, row filters and the read limit go into the tree itself.

Base tables read in a FROM list become `(SELECT <columns> FROM t WHERE <filters>) t`, which keeps outer
joins and lateral references correct; the table an UPDATE or DELETE writes gets the filters AND-ed
into its WHERE. The result is deparsed by pglast (libpg_query's deparser): the rewritten SQL is what runs.
"""

from __future__ import annotations

from typing import Any

from ..api.agentpolicy import Limits
from .analysis import Analysis, FromSlot
from .rules import RuleSet
from .schema import TENANT_COLUMN, Table
from .tree import deparse, pb, set_column, set_integer, set_text


def rewrite(result: pb.ParseResult, analysis: Analysis, limits: Limits) -> str:
    rules, tenant = analysis.rules, analysis.tenant
    for slot in analysis.from_slots:
        if _restricted(slot.table, "select", rules, tenant) or (
                slot.locked and rules.row_filters_for("update", slot.table.name)):
            _filter(slot, [c for c in slot.table.columns if ("select", slot.table.name, c) in analysis.accesses],
                    rules, tenant)
    target = analysis.target
    if target is not None and analysis.kind in ("update", "delete"):
        _restrict(target.stmt.where_clause, target.table, analysis.kind, rules, tenant, target.name)
    if target is not None and analysis.kind == "insert":
        if tenant is not None and target.table.pooled:
            _insert_tenant(target.stmt, tenant)
        conflict = target.stmt.on_conflict_clause
        if target.stmt.HasField("on_conflict_clause") and conflict.action == pb.ONCONFLICT_UPDATE:
            # the conflicting row may be another tenant's: DO UPDATE touches it only where an UPDATE could
            _restrict(conflict.where_clause, target.table, "update", rules, tenant, target.name)
    if analysis.kind == "select":
        # a locking read locks what it returns: one row past maxRowsWritten is enough for the guard to refuse
        rows = min(limits.maxRowsRead, limits.maxRowsWritten + 1) if analysis.locking else limits.maxRowsRead
        _limit(result.stmts[0].stmt.select_stmt, rows)
    return deparse(result)


def _restricted(table: Table, action: str, rules: RuleSet, tenant: str | None) -> bool:
    return (tenant is not None and table.pooled) or bool(rules.row_filters_for(action, table.name))


def _restrict(where: pb.Node, table: Table, action: str, rules: RuleSet, tenant: str | None, qualifier: str) -> None:
    """AND the tenant predicate and row filters around a WHERE clause of the written table."""
    if _restricted(table, action, rules, tenant):
        _predicate(_conjunct(where), table, action, rules, tenant, qualifier)


def _conjunct(where: pb.Node) -> pb.Node:
    """A new, empty Node AND-ed to `where` (`where` itself when it is empty).

    An AND takes one more argument; anything else (an OR, a NOT, one comparison) becomes the first argument
    of a new AND, so its meaning is kept whole."""
    kind = where.WhichOneof("node")
    if kind is None:
        return where
    if kind == "bool_expr" and where.bool_expr.boolop == pb.AND_EXPR:
        return where.bool_expr.args.add()
    original = pb.Node()
    original.CopyFrom(where)
    where.Clear()
    both = where.bool_expr
    both.boolop = pb.AND_EXPR
    both.args.append(original)
    return both.args.add()


def _predicate(node: pb.Node, table: Table, action: str, rules: RuleSet, tenant: str | None,
               qualifier: str | None) -> None:
    """Write into `node` the tenant predicate AND the OR of the row filters for (action, table)."""
    filters = rules.row_filters_for(action, table.name)
    if tenant is None or not table.pooled:
        _row_filters(node, filters or [], rules, qualifier)
    elif not filters:
        _equals(node, tenant, qualifier)
    else:
        both = node.bool_expr
        both.boolop = pb.AND_EXPR
        _equals(both.args.add(), tenant, qualifier)
        _row_filters(both.args.add(), filters, rules, qualifier)


def _equals(node: pb.Node, tenant: str, qualifier: str | None) -> None:
    expr = node.a_expr
    expr.kind = pb.AEXPR_OP
    expr.name.add().string.sval = "="
    set_column(expr.lexpr, *((qualifier, TENANT_COLUMN) if qualifier else (TENANT_COLUMN,)))
    set_text(expr.rexpr, tenant)


def _row_filters(node: pb.Node, filters: list[str], rules: RuleSet, qualifier: str | None) -> None:
    if len(filters) == 1:
        node.CopyFrom(rules.predicates[filters[0]])
    else:
        either = node.bool_expr
        either.boolop = pb.OR_EXPR
        for row_filter in filters:
            either.args.append(rules.predicates[row_filter])
    if qualifier is not None:
        _qualify(node, qualifier)


def _qualify(message: Any, qualifier: str) -> None:
    """Prefix the bare column names of a policy predicate with the written table's name."""
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        for item in value if descriptor.is_repeated else (value,):
            if isinstance(item, pb.ColumnRef):
                if len(item.fields) == 1 and item.fields[0].WhichOneof("node") == "string":
                    name = item.fields[0].string.sval
                    del item.fields[:]
                    item.fields.add().string.sval = qualifier
                    item.fields.add().string.sval = name
            elif not isinstance(item, pb.SelectStmt):  # a subquery in a policy predicate has its own scope
                _qualify(item, qualifier)


def _filter(slot: FromSlot, columns: list[str], rules: RuleSet, tenant: str | None) -> None:
    """Replace the table with a subquery that yields only the filtered rows and the columns the statement reads.

    Naming the columns (never `*`) keeps the subquery within the agent role's column privileges."""
    range_var = pb.RangeVar()
    range_var.CopyFrom(slot.range_var)
    range_var.ClearField("alias")
    alias = slot.range_var.alias.aliasname if slot.range_var.HasField("alias") else slot.range_var.relname
    subselect = slot.node.range_subselect  # replaces the range_var in the Node's oneof
    subselect.alias.aliasname = alias
    query = subselect.subquery.select_stmt
    for column in columns:
        set_column(query.target_list.add().res_target.val, column)
    query.from_clause.add().range_var.CopyFrom(range_var)
    if _restricted(slot.table, "select", rules, tenant):
        _predicate(query.where_clause, slot.table, "select", rules, tenant, None)
    locked_filters = rules.row_filters_for("update", slot.table.name) if slot.locked else None
    if locked_filters:  # a row lock is a write intent: only rows an UPDATE could reach are locked
        _row_filters(_conjunct(query.where_clause), locked_filters, rules, None)
    query.limit_option = pb.LIMIT_OPTION_DEFAULT
    query.op = pb.SETOP_NONE


def _insert_tenant(stmt: pb.InsertStmt, tenant: str) -> None:
    stmt.cols.add().res_target.name = TENANT_COLUMN
    source = stmt.select_stmt.select_stmt
    if source.values_lists:
        for row in source.values_lists:
            set_text(row.list.items.add(), tenant)
    else:
        set_text(source.target_list.add().res_target.val, tenant)


def _limit(stmt: pb.SelectStmt, max_rows: int) -> None:
    """LIMIT n stays when n <= max_rows; anything else is bounded by max_rows."""
    current = stmt.limit_count
    kind = current.WhichOneof("node")
    if kind is None or (kind == "a_const" and current.a_const.isnull):
        current.Clear()
        set_integer(current, max_rows)
    elif kind == "a_const" and current.a_const.WhichOneof("val") == "ival":
        if current.a_const.ival.ival > max_rows:
            set_integer(current, max_rows)
    else:
        bounded = pb.Node()
        least = bounded.min_max_expr
        least.op = pb.IS_LEAST
        least.args.append(current)
        set_integer(least.args.add(), max_rows)
        current.CopyFrom(bounded)
    stmt.limit_option = pb.LIMIT_OPTION_COUNT
