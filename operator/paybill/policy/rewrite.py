"""Rewrite an admitted tree: tenant predicate, row filters and the read limit go into the tree itself.

Base tables read in a FROM list become `(SELECT <columns> FROM t WHERE <filters>) t`, which keeps outer
joins and lateral references correct; the table an UPDATE or DELETE writes gets the filters AND-ed
into its WHERE. The result is deparsed by pglast (libpg_query's deparser): the rewritten SQL is what runs.

Serializing a whole tree costs more than parsing it (every Node is a oneof of some 270 fields), so the common
shape, a top-level SELECT whose filtered tables are plain items of its own FROM list, is not re-serialized: the
parser's own bytes are copied with those items and LIMIT replaced (`_spliced_select`); the filtered subquery of
a (table, alias, columns, tenant) is built and serialized once per policy. Any other shape takes the general path.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from ..api.agentpolicy import Limits
from .analysis import Analysis, FromSlot
from .rules import RuleSet
from .schema import TENANT_COLUMN, Table
from .tree import SPLICE_SELECT, deparse, deparse_serialized, pb, set_column, set_integer, set_text


def rewrite(result: pb.ParseResult, analysis: Analysis, limits: Limits, serialized: bytes | None = None) -> str:
    """The final SQL. `serialized`, when given, is the parser's serialization of `result` before any change."""
    if serialized is not None and not analysis.fences:
        spliced = _spliced_select(result, analysis, limits, serialized)
        if spliced is not None:
            return deparse_serialized(spliced)
    _fence(analysis.fences)
    rules, tenant = analysis.rules, analysis.tenant
    for slot in analysis.from_slots:
        if _restricted(slot.table, "select", rules, tenant) or (
            slot.locked and rules.row_filters_for("update", slot.table.name)
        ):
            _filter(
                slot,
                [c for c in slot.table.columns if ("select", slot.table.name, c) in analysis.accesses],
                rules,
                tenant,
            )
    target = analysis.target
    if target is not None and analysis.kind in ("update", "delete"):
        _restrict(target.stmt.where_clause, target.table, analysis.kind, rules, tenant, target.name)
        _hidden_rows(target.stmt.where_clause, target.table, rules, target.name)  # its WHERE and RETURNING read them
    if target is not None and analysis.kind == "insert":
        if tenant is not None and target.table.pooled:
            _insert_tenant(target.stmt, tenant)
        conflict = target.stmt.on_conflict_clause
        if target.stmt.HasField("on_conflict_clause") and conflict.action == pb.ONCONFLICT_UPDATE:
            _guard_conflict(conflict.where_clause, target.table, rules, tenant, target.name)
    if analysis.kind == "select":
        # a locking read locks what it returns: one row past maxRowsWritten is enough for the guard to refuse
        rows = min(limits.maxRowsRead, limits.maxRowsWritten + 1) if analysis.locking else limits.maxRowsRead
        _limit(result.stmts[0].stmt.select_stmt, rows)
    return deparse(result)


def _guard_conflict(where: pb.Node, table: Table, rules: RuleSet, tenant: str | None, qualifier: str) -> None:
    """ON CONFLICT DO UPDATE's WHERE: the conflicting row may be another tenant's or one the agent may not select,
    and PostgreSQL evaluates this WHERE, in the order written, before row security's check (whose error would tell a
    hidden row's values apart). It becomes CASE WHEN <tenant predicate, update and select row filters> THEN <the
    agent's WHERE> ELSE false END: the agent's expression never reads a row it may not reach."""
    guard = pb.Node()
    _restrict(guard, table, "update", rules, tenant, qualifier)
    _hidden_rows(guard, table, rules, qualifier)
    if guard.WhichOneof("node") is None:
        return
    if where.WhichOneof("node") is None:
        where.CopyFrom(guard)
        return
    original = pb.Node()
    original.CopyFrom(where)
    where.Clear()
    case = where.case_expr
    when = case.args.add().case_when
    when.expr.CopyFrom(guard)
    when.result.CopyFrom(original)
    case.defresult.a_const.boolval.boolval = False


def _hidden_rows(where: pb.Node, table: Table, rules: RuleSet, qualifier: str) -> None:
    """AND into `where` the select row filters of `table`: a WHERE that reads rows the agent may not select would
    tell their values apart (by what it changes, or by the error the database raises on them)."""
    hidden = rules.row_filters_for("select", table.name)
    if hidden:
        _row_filters(_conjunct(where), hidden, rules, qualifier)


def _fence(written: list[Any]) -> None:
    """Every CTE the statement wrote MATERIALIZED, every FROM subquery without its own LIMIT or OFFSET given OFFSET 0:
    PostgreSQL then plans each once, alone, instead of inlining it into the query that reads it (same rows)."""
    for node in written:
        if isinstance(node, pb.CommonTableExpr):
            node.ctematerialized = pb.CTEMaterializeAlways
        elif not node.HasField("limit_offset") and not node.HasField("limit_count"):
            set_integer(node.limit_offset, 0)


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


def _predicate(
    node: pb.Node, table: Table, action: str, rules: RuleSet, tenant: str | None, qualifier: str | None
) -> None:
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


# -- the spliced path -------------------------------------------------------------------------------------------
# "Shallow" twins of the messages on the path to a top-level SelectStmt: the same field numbers, with every
# message field below them read as raw bytes (enums as int32, presence kept: proto2). upb parses and writes them
# in C without visiting the Nodes inside; fields they do not declare are kept as unknown fields, byte for byte.
def _shallow_types() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(name="paybill_shallow.proto", package="paybill.shallow", syntax="proto2")
    nested = {
        "ParseResult": {"stmts": "RawStmt"},
        "RawStmt": {"stmt": "Node"},
        "Node": {"select_stmt": "SelectStmt"},
        "SelectStmt": {},
    }
    for name, children in nested.items():
        message = file.message_type.add(name=name)
        for field in pb.DESCRIPTOR.message_types_by_name[name].fields:
            if name == "Node" and field.name not in children:
                continue  # another statement: an unknown field, kept as it is
            shallow = message.field.add(name=field.name, number=field.number)
            shallow.label = shallow.LABEL_REPEATED if field.is_repeated else shallow.LABEL_OPTIONAL
            if field.name in children:
                shallow.type = shallow.TYPE_MESSAGE
                shallow.type_name = f".paybill.shallow.{children[field.name]}"
            elif field.message_type is not None:
                shallow.type = shallow.TYPE_BYTES
            elif field.enum_type is not None:
                shallow.type = shallow.TYPE_INT32
            else:
                shallow.type = field.type
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"paybill.shallow.{name}")) for name in nested
    }


_SHALLOW = _shallow_types()
# What `_filter` copies from a RangeVar besides its alias and location: the subquery cache key. A field a newer
# libpg_query adds must be added here (import fails until it is).
_RANGE_VAR_KEY = ("catalogname", "schemaname", "relname", "inh", "relpersistence")
assert {f.name for f in pb.RangeVar.DESCRIPTOR.fields} == {*_RANGE_VAR_KEY, "alias", "location"}
_SUBQUERIES_CACHED = 1024


def _spliced_select(result: pb.ParseResult, analysis: Analysis, limits: Limits, serialized: bytes) -> bytes | None:
    """The rewritten tree serialized, for a SELECT that locks nothing and whose filtered tables are all items of
    its own FROM list; None for any other shape (the caller takes the general path)."""
    if analysis.kind != "select" or analysis.locking or analysis.target is not None:
        return None
    rules, tenant = analysis.rules, analysis.tenant
    replaced: dict[int, bytes] = {}
    for slot in analysis.from_slots:
        if slot.locked:
            return None
        if not _restricted(slot.table, "select", rules, tenant):
            continue
        index = slot.position  # set by the analysis for the items of the top-level FROM list only
        if index is None:
            return None
        columns = tuple(c for c in slot.table.columns if ("select", slot.table.name, c) in analysis.accesses)
        replaced[index] = _subquery(slot, columns, rules, tenant)
    select = result.stmts[0].stmt.select_stmt
    if select.HasField("limit_count"):
        _limit(select, limits.maxRowsRead)
        limit = select.limit_count.SerializeToString()
    else:  # no LIMIT: the one `_limit` writes, serialized once per bound
        limit = _integer_node(limits.maxRowsRead)
    return _SPLICE(serialized, replaced, limit, analysis.top_from_items, pb.LIMIT_OPTION_COUNT)


def shallow_splice(
    serialized: bytes, replaced: dict[int, bytes], limit: bytes, from_items: int, limit_option: int
) -> bytes | None:
    """treeprotobuf's splice_select, through messages that decode only the levels it changes (where the C module
    is not built)."""
    shallow = _SHALLOW["ParseResult"].FromString(serialized)
    statements = shallow.stmts
    if len(statements) != 1:
        return None
    node = statements[0].stmt
    if not node.HasField("select_stmt"):
        return None
    select = node.select_stmt
    if len(select.from_clause) != from_items:
        return None
    for index, subquery in replaced.items():
        select.from_clause[index] = subquery
    select.limit_count = limit
    select.limit_option = limit_option
    return shallow.SerializeToString()  # type: ignore[no-any-return]


_SPLICE: Final = SPLICE_SELECT or shallow_splice


@functools.lru_cache(maxsize=64)
def _integer_node(value: int) -> bytes:
    node = pb.Node()
    set_integer(node, value)
    return node.SerializeToString()  # type: ignore[no-any-return]


def _subquery(slot: FromSlot, columns: tuple[str, ...], rules: RuleSet, tenant: str | None) -> bytes:
    """The serialized `(SELECT <columns> FROM t WHERE <filters>) alias` Node that `_filter` builds, cached."""
    range_var = slot.range_var
    alias = range_var.alias.aliasname if range_var.HasField("alias") else None
    key = (  # the fields of _RANGE_VAR_KEY
        range_var.catalogname,
        range_var.schemaname,
        range_var.relname,
        range_var.inh,
        range_var.relpersistence,
        alias,
        columns,
        tenant,
    )
    cache = rules.subqueries
    found = cache.get(key)
    if found is None:
        if len(cache) >= _SUBQUERIES_CACHED:
            cache.clear()
        node = pb.Node()
        _filter(FromSlot(node, range_var, slot.table), list(columns), rules, tenant)
        found = cache[key] = node.SerializeToString()
    return found
