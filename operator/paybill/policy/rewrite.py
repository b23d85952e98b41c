"""Rewrite an admitted tree: tenant predicate, row filters and the read limit go into the tree itself.

Base tables read in a FROM list become `(SELECT * FROM t WHERE <filters>) AS t`, which keeps outer
joins and lateral references correct; the table an UPDATE or DELETE writes gets the filters AND-ed
into its WHERE. The result is deparsed with pglast: the rewritten SQL is what runs.
"""

from __future__ import annotations

from typing import Any

from pglast import ast, enums, parse_sql
from pglast.stream import RawStream

from .analysis import Analysis
from .schema import TENANT_COLUMN, Table


def rewrite(stmt: Any, analysis: Analysis, max_rows: int) -> str:
    rules, tenant = analysis.rules, analysis.tenant
    for slot in analysis.from_slots:
        predicate = _predicate(slot.table, "select", rules, tenant, None)
        if predicate is not None:
            columns = [c for c in slot.table.columns if ("select", slot.table.name, c) in analysis.accesses]
            _replace(slot.owner, slot.attr, slot.index, _filtered(slot.range_var, columns, predicate))
    target = analysis.target
    if target is not None and analysis.kind in ("update", "delete"):
        predicate = _predicate(target.table, analysis.kind, rules, tenant, target.name)
        if predicate is not None:
            where = target.stmt.whereClause
            target.stmt.whereClause = predicate if where is None else _and([where, predicate])
    if target is not None and analysis.kind == "insert" and tenant is not None and target.table.pooled:
        _insert_tenant(target.stmt, tenant)
    if analysis.kind == "select":
        _limit(stmt, max_rows)
    return RawStream()(stmt)


def _predicate(table: Table, action: str, rules: Any, tenant: str | None, qualifier: str | None) -> Any:
    parts = []
    if tenant is not None and table.pooled:
        parts.append(_equals(TENANT_COLUMN, tenant, qualifier))
    filters = rules.row_filters_for(action, table.name)
    if filters:
        parsed = [_parse_predicate(f, qualifier) for f in filters]
        parts.append(parsed[0] if len(parsed) == 1 else ast.BoolExpr(boolop=enums.BoolExprType.OR_EXPR,
                                                                      args=tuple(parsed)))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else _and(parts)


def _parse_predicate(text: str, qualifier: str | None) -> Any:
    predicate = parse_sql(f"SELECT 1 WHERE {text}")[0].stmt.whereClause
    if qualifier is not None:
        _qualify(predicate, qualifier)
    return predicate


def _qualify(node: Any, qualifier: str) -> None:
    """Prefix the bare column names of a policy predicate with the written table's name."""
    if isinstance(node, tuple):
        for item in node:
            _qualify(item, qualifier)
    elif isinstance(node, ast.ColumnRef):
        if len(node.fields) == 1 and isinstance(node.fields[0], ast.String):
            node.fields = (ast.String(qualifier), node.fields[0])
    elif isinstance(node, ast.SelectStmt):
        return  # a subquery in a policy predicate has its own scope
    elif isinstance(node, ast.Node):
        for attr in node.__slots__:
            _qualify(getattr(node, attr), qualifier)


def _equals(column: str, value: str, qualifier: str | None) -> ast.A_Expr:
    fields = (ast.String(qualifier), ast.String(column)) if qualifier else (ast.String(column),)
    return ast.A_Expr(kind=enums.A_Expr_Kind.AEXPR_OP, name=(ast.String("="),), lexpr=ast.ColumnRef(fields=fields),
                      rexpr=ast.A_Const(isnull=False, val=ast.String(value)))


def _and(parts: list[Any]) -> ast.BoolExpr:
    return ast.BoolExpr(boolop=enums.BoolExprType.AND_EXPR, args=tuple(parts))


def _filtered(range_var: ast.RangeVar, columns: list[str], predicate: Any) -> ast.RangeSubselect:
    """The table as a subquery that yields only the filtered rows and only the columns the statement reads.

    Naming the columns (never `*`) keeps the subquery within the agent role's column privileges."""
    inner = ast.RangeVar(relname=range_var.relname, schemaname=range_var.schemaname, inh=range_var.inh,
                         relpersistence=range_var.relpersistence)
    targets = tuple(ast.ResTarget(val=ast.ColumnRef(fields=(ast.String(c),))) for c in columns)
    subquery = ast.SelectStmt(targetList=targets or None, fromClause=(inner,), whereClause=predicate,
                              limitOption=enums.LimitOption.LIMIT_OPTION_DEFAULT, op=enums.SetOperation.SETOP_NONE)
    alias = range_var.alias if range_var.alias is not None else ast.Alias(aliasname=range_var.relname)
    return ast.RangeSubselect(lateral=False, subquery=subquery, alias=alias)


def _replace(owner: Any, attr: str, index: int | None, node: Any) -> None:
    if index is None:
        setattr(owner, attr, node)
    else:
        items = list(getattr(owner, attr))
        items[index] = node
        setattr(owner, attr, tuple(items))


def _insert_tenant(stmt: ast.InsertStmt, tenant: str) -> None:
    stmt.cols = (*stmt.cols, ast.ResTarget(name=TENANT_COLUMN))
    value = ast.A_Const(isnull=False, val=ast.String(tenant))
    source = stmt.selectStmt
    if source.valuesLists:
        source.valuesLists = tuple((*row, value) for row in source.valuesLists)
    else:
        source.targetList = (*source.targetList, ast.ResTarget(val=value))


def _limit(stmt: ast.SelectStmt, max_rows: int) -> None:
    """LIMIT n stays when n <= max_rows; anything else is bounded by max_rows."""
    bound = ast.A_Const(isnull=False, val=ast.Integer(max_rows))
    current = stmt.limitCount
    if current is None or (isinstance(current, ast.A_Const) and current.isnull):
        stmt.limitCount = bound
    elif isinstance(current, ast.A_Const) and isinstance(current.val, ast.Integer):
        if current.val.ival > max_rows:
            stmt.limitCount = bound
    else:
        stmt.limitCount = ast.MinMaxExpr(op=enums.MinMaxOp.IS_LEAST, args=(current, bound))
    stmt.limitOption = enums.LimitOption.LIMIT_OPTION_COUNT
