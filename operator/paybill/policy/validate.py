"""The whole-tree validator: deny by default, node by node, on the statement that will actually run.

The clause-aware analysis decides what a statement reads and writes; this second, independent check runs on
the FINAL statement (the rewriter's output, parsed again) and knows no clauses. It visits every field of every
message and admits only:

- message types on `ADMITTED`, and in each only the fields listed there (a set field that is not listed is a
  denial: VARIADIC, WITHIN GROUP, array bounds, SELECT INTO, WITH RECURSIVE...), with enum fields limited to
  the values listed (sublink kinds, expression kinds, lock strengths, set operations...);
- functions on the policy's allowlist and operators and cast types on the engine's, compared exactly as
  PostgreSQL resolves them (the parser has already folded unquoted names; a quoted `"LOWER"` is not `lower`);
- relations the rewriter filtered: a base table appears only as the single FROM item of a SELECT whose WHERE
  carries, as a top-level conjunct, the predicate the policy requires for that table and tenant, or as the
  target of an INSERT (with the tenant column set to the tenant) or of an UPDATE/DELETE whose WHERE carries it.
  The check is structural, so an agent writing the same shape gains nothing: it is then a correctly filtered
  read. Predicates Paybill adds (tenant, row filters) are matched and not walked further: the policy's
  author may use what an agent may not.

The tree walked is libpg_query's JSON form of the same parse, as dicts (`tree.parse_dicts`: built in C from the
parser's nodes, or the JSON text read by orjson): it holds exactly the fields of the protobuf messages (the tests
prove it over the corpora) and walking dicts is several times cheaper than walking upb messages. The field
tables are built once from the protobuf descriptors, so the walk is generic: a field the descriptors do not know,
or a node type not listed, is a denial with its name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

import orjson
from mypy_extensions import mypyc_attr
from pglast.parser import ParseError

from .analysis import CASTS, OPERATORS, ORDERINGS
from .decision import Reason
from .rules import UNSAFE_FUNCTIONS, UNSAFE_PREFIXES, RuleSet
from .schema import TENANT_COLUMN, Schema, Table
from .tree import deparse, parse_dicts, pb

Body = dict[str, Any]

# -- what is admitted --------------------------------------------------------------------------------------
# Message type -> its admitted fields (protobuf names) -> None (any value; children are walked) or the set of
# admitted values (enum names, or scalar values). Anything not here is denied.
_EXPRESSION_KINDS = frozenset(
    {
        "AEXPR_OP",
        "AEXPR_OP_ANY",
        "AEXPR_OP_ALL",
        "AEXPR_DISTINCT",
        "AEXPR_NOT_DISTINCT",
        "AEXPR_NULLIF",
        "AEXPR_IN",
        "AEXPR_LIKE",
        "AEXPR_ILIKE",
        "AEXPR_BETWEEN",
        "AEXPR_NOT_BETWEEN",
    }
)
_TIME_FUNCTIONS = frozenset(
    {
        "SVFOP_CURRENT_DATE",
        "SVFOP_CURRENT_TIME",
        "SVFOP_CURRENT_TIME_N",
        "SVFOP_CURRENT_TIMESTAMP",
        "SVFOP_CURRENT_TIMESTAMP_N",
        "SVFOP_LOCALTIME",
        "SVFOP_LOCALTIME_N",
        "SVFOP_LOCALTIMESTAMP",
        "SVFOP_LOCALTIMESTAMP_N",
    }
)
_SORT = {
    "node": None,
    "sortby_dir": frozenset({"SORTBY_DEFAULT", "SORTBY_ASC", "SORTBY_DESC", "SORTBY_USING"}),
    "sortby_nulls": frozenset({"SORTBY_NULLS_DEFAULT", "SORTBY_NULLS_FIRST", "SORTBY_NULLS_LAST"}),
    "use_op": None,
    "location": None,
}
ADMITTED: dict[str, dict[str, frozenset[Any] | None]] = {
    "SelectStmt": {
        "distinct_clause": None,
        "target_list": None,
        "from_clause": None,
        "where_clause": None,
        "group_clause": None,
        "having_clause": None,
        "window_clause": None,
        "values_lists": None,
        "sort_clause": None,
        "limit_offset": None,
        "limit_count": None,
        "locking_clause": None,
        "with_clause": None,
        "limit_option": frozenset({"LIMIT_OPTION_DEFAULT", "LIMIT_OPTION_COUNT"}),
        "op": frozenset({"SETOP_NONE", "SETOP_UNION", "SETOP_INTERSECT", "SETOP_EXCEPT"}),
        "all": None,
        "larg": None,
        "rarg": None,
    },
    "InsertStmt": {
        "relation": None,
        "cols": None,
        "select_stmt": None,
        "on_conflict_clause": None,
        "returning_clause": None,
        "override": frozenset({"OVERRIDING_NOT_SET"}),
    },
    "UpdateStmt": {
        "relation": None,
        "target_list": None,
        "where_clause": None,
        "from_clause": None,
        "returning_clause": None,
    },
    "DeleteStmt": {"relation": None, "using_clause": None, "where_clause": None, "returning_clause": None},
    "ReturningClause": {"exprs": None},
    "OnConflictClause": {
        "action": frozenset({"ONCONFLICT_NOTHING", "ONCONFLICT_UPDATE"}),
        "infer": None,
        "target_list": None,
        "where_clause": None,
        "location": None,
    },
    "InferClause": {"index_elems": None, "where_clause": None, "location": None},
    "IndexElem": {
        "name": None,
        "ordering": frozenset({"SORTBY_DEFAULT"}),
        "nulls_ordering": frozenset({"SORTBY_NULLS_DEFAULT"}),
    },
    "WithClause": {"ctes": None, "location": None},
    "CommonTableExpr": {
        "ctename": None,
        "aliascolnames": None,
        "ctequery": None,
        "location": None,
        "ctematerialized": frozenset({"CTEMaterializeDefault", "CTEMaterializeAlways", "CTEMaterializeNever"}),
    },
    "RangeVar": {
        "schemaname": None,
        "relname": None,
        "inh": None,
        "relpersistence": frozenset({"p"}),
        "alias": None,
        "location": None,
    },
    "RangeSubselect": {"lateral": None, "subquery": None, "alias": None},
    "JoinExpr": {
        "jointype": frozenset({"JOIN_INNER", "JOIN_LEFT", "JOIN_FULL", "JOIN_RIGHT"}),
        "larg": None,
        "rarg": None,
        "using_clause": None,
        "quals": None,
    },
    "Alias": {"aliasname": None, "colnames": None},
    "LockingClause": {
        "locked_rels": None,
        "strength": frozenset({"LCS_FORKEYSHARE", "LCS_FORSHARE", "LCS_FORNOKEYUPDATE", "LCS_FORUPDATE"}),
        "wait_policy": frozenset({"LockWaitBlock", "LockWaitSkip", "LockWaitError"}),
    },
    "ResTarget": {"name": None, "val": None, "location": None},
    "ColumnRef": {"fields": None, "location": None},
    "A_Star": {},
    "String": {"sval": None},
    "Integer": {"ival": None},
    "Float": {"fval": None},
    "Boolean": {"boolval": None},
    "BitString": {"bsval": None},
    "A_Const": {
        "ival": None,
        "fval": None,
        "boolval": None,
        "sval": None,
        "bsval": None,
        "isnull": None,
        "location": None,
    },
    "ParamRef": {"number": None, "location": None},
    "List": {"items": None},
    "A_Expr": {
        "kind": _EXPRESSION_KINDS,
        "name": None,
        "lexpr": None,
        "rexpr": None,
        "rexpr_list_start": None,
        "rexpr_list_end": None,
        "location": None,
    },
    "BoolExpr": {"boolop": frozenset({"AND_EXPR", "OR_EXPR", "NOT_EXPR"}), "args": None, "location": None},
    "NullTest": {"arg": None, "nulltesttype": frozenset({"IS_NULL", "IS_NOT_NULL"}), "location": None},
    "BooleanTest": {
        "arg": None,
        "booltesttype": frozenset(
            {"IS_TRUE", "IS_NOT_TRUE", "IS_FALSE", "IS_NOT_FALSE", "IS_UNKNOWN", "IS_NOT_UNKNOWN"}
        ),
        "location": None,
    },
    "CaseExpr": {"arg": None, "args": None, "defresult": None, "location": None},
    "CaseWhen": {"expr": None, "result": None, "location": None},
    "CoalesceExpr": {"args": None, "location": None},
    "MinMaxExpr": {"op": frozenset({"IS_GREATEST", "IS_LEAST"}), "args": None, "location": None},
    "RowExpr": {
        "args": None,
        "row_format": frozenset({"COERCE_EXPLICIT_CALL", "COERCE_IMPLICIT_CAST"}),
        "location": None,
    },
    "A_ArrayExpr": {"elements": None, "list_start": None, "list_end": None, "location": None},
    "SubLink": {
        "sub_link_type": frozenset({"EXISTS_SUBLINK", "ANY_SUBLINK", "ALL_SUBLINK", "EXPR_SUBLINK"}),
        "testexpr": None,
        "oper_name": None,
        "subselect": None,
        "location": None,
    },
    "SQLValueFunction": {"op": _TIME_FUNCTIONS, "typmod": None, "location": None},
    "FuncCall": {
        "funcname": None,
        "args": None,
        "agg_order": None,
        "agg_filter": None,
        "over": None,
        "agg_star": None,
        "agg_distinct": None,
        "funcformat": frozenset({"COERCE_EXPLICIT_CALL", "COERCE_SQL_SYNTAX"}),
        "location": None,
    },
    "WindowDef": {
        "name": None,
        "refname": None,
        "partition_clause": None,
        "order_clause": None,
        "frame_options": None,
        "start_offset": None,
        "end_offset": None,
        "location": None,
    },
    "SortBy": _SORT,
    "TypeCast": {"arg": None, "type_name": None, "location": None},
    "TypeName": {"names": None, "typmods": None, "typemod": frozenset({-1}), "location": None},
}
STATEMENTS = frozenset({"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt"})
BETWEEN_NAMES = frozenset({"BETWEEN", "NOT BETWEEN"})

# -- field tables from the protobuf descriptors --------------------------------------------------------------
_NODE: Final = 0
_NODES: Final = 1
_MESSAGE: Final = 2
_MESSAGES: Final = 3


class _Type:
    """One admitted message type: its JSON keys, the children to walk and the values each field may hold."""

    __slots__ = ("checks", "children", "keys", "known", "name")

    def __init__(self, name: str, admitted: dict[str, frozenset[Any] | None]) -> None:
        descriptor = pb.DESCRIPTOR.message_types_by_name[name]
        self.name = name
        self.known = {f.json_name: f.name for f in descriptor.fields}
        self.keys: frozenset[str] = frozenset()
        self.children: dict[str, tuple[int, str | None]] = {}
        checks: list[tuple[str, frozenset[Any], str, bool]] = []
        keys = set()
        for field_name, values in admitted.items():
            field = descriptor.fields_by_name[field_name]  # KeyError: a typo in ADMITTED fails at import
            keys.add(field.json_name)
            message = field.message_type
            if message is not None:
                kind = (
                    (_NODES if field.is_repeated else _NODE)
                    if message.name == "Node"
                    else (_MESSAGES if field.is_repeated else _MESSAGE)
                )
                self.children[field.json_name] = (kind, None if message.name == "Node" else message.name)
            if values is not None:
                default = field.enum_type.values[0].name if field.enum_type is not None else field.default_value
                # an absent field holds its default: when that is not admitted, the field must be set
                checks.append((field.json_name, values, field_name, default not in values))
        self.keys = frozenset(keys)
        self.checks = tuple(checks)


TYPES: Final[dict[str, _Type]] = {name: _Type(name, fields) for name, fields in ADMITTED.items()}
_STRING_KEYS: Final = frozenset({"sval"})
_RAW_STMT_KEYS: Final = frozenset({"stmt", "stmt_location", "stmt_len"})
_CONST_KEYS: Final = {
    "ival": frozenset({"ival"}),
    "fval": frozenset({"fval"}),
    "boolval": frozenset({"boolval"}),
    "sval": frozenset({"sval"}),
    "bsval": frozenset({"bsval"}),
}
# statements that may stand inside another
NESTED: Final = frozenset(TYPES) - {"InsertStmt", "UpdateStmt", "DeleteStmt"}
_EMPTY: Final[frozenset[str]] = frozenset()
_MISSING: Final = object()
_TERMS_CACHED = 1024


@mypyc_attr(allow_interpreted_subclasses=True)  # the benchmark's subclass switches the validator off, for its cost
class Validator:
    """Validates final statements for one compiled policy and schema. Its caches hold only what the policy
    requires (filter terms), never anything of a statement."""

    def __init__(self, rules: RuleSet, schema: Schema) -> None:
        self.rules = rules
        self.schema = schema
        self.functions = frozenset(f for f in rules.functions if _safe_function(f))
        self._filters: dict[tuple[str, str], list[Body] | None] = {}
        self._terms: dict[tuple[str, str, str | None, str | None], list[_Term] | None] = {}
        # Handlers see a message first; each returns the keys it consumed (the rest is walked generically), or
        # None when it walked the message itself.
        self._handlers: dict[str, Callable[[Body, frozenset[str], _Walk], Iterable[str] | None]] = {
            "SelectStmt": self._select,
            "JoinExpr": self._join,
            "RangeVar": self._stray_relation,
            "InsertStmt": self._insert,
            "UpdateStmt": self._update,
            "DeleteStmt": self._delete,
            "FuncCall": self._function,
            "A_Expr": self._operator,
            "SubLink": self._sublink,
            "SortBy": self._sort,
            "TypeName": self._type,
        }

    def validate(self, sql: str, tenant: str | None) -> list[Reason]:
        """Reasons to deny the final statement `sql` for `tenant`; empty when every node is admitted."""
        try:
            tree = parse_dicts(sql)
        except ParseError as error:
            return [Reason("validator_parse", f"the final statement does not parse: {error.args[0]}")]
        except (RecursionError, orjson.JSONDecodeError):  # nested deeper than the tree is read
            return [Reason("too_complex", "the final statement is nested too deeply")]
        except ValueError as error:  # what libpg_query's JSON form cannot carry
            return [Reason("validator_parse", f"the final statement cannot be read: {error}")]
        return self.check(tree, tenant)

    def check(self, tree: Body, tenant: str | None) -> list[Reason]:
        """Reasons to deny a parse tree in libpg_query's JSON form (what `validate` parses)."""
        walk = _Walk(tenant)
        statements = tree.get("stmts", ())
        if len(statements) != 1 or not _within(statements[0], _RAW_STMT_KEYS):
            return [Reason("validator_node", "the final statement must be exactly one statement")]
        stmt = statements[0].get("stmt", {})
        if len(stmt) != 1:
            return [Reason("validator_node", "the final statement must be exactly one statement")]
        ((kind, body),) = stmt.items()
        if kind not in STATEMENTS:
            return [Reason("validator_node", f"{kind} is not an admitted node type", node=kind)]
        stack = walk.stack
        stack.append((kind, body, _EMPTY))
        handlers, fields = self._handlers, walk.fields
        while stack:
            kind, body, ctes = stack.pop()
            handler = handlers.get(kind)
            if handler is None:
                fields(kind, body, ctes)
            else:
                consumed = handler(body, ctes, walk)
                if consumed is not None:
                    fields(kind, body, ctes, consumed)
        return walk.reasons

    # -- relations -----------------------------------------------------------------------------------------

    def _select(self, body: Body, ctes: frozenset[str], walk: _Walk) -> None:  # walks its own fields
        consumed = ["withClause", "fromClause", "lockingClause"]
        with_clause = body.get("withClause")
        if with_clause is not None:
            ctes = self._with(with_clause, ctes, walk)
        items: list[Body] = body.get("fromClause", _NO_NODES)
        for item in items:
            if len(items) == 1 and len(item) == 1 and "RangeVar" in item:
                if self._relation(item["RangeVar"], ctes, walk, "select", body.get("whereClause"), None):
                    consumed.append("whereClause")
            else:
                self._from_item(item, ctes, walk)
        for item in body.get("lockingClause", ()):
            self._locking(item, walk)
        walk.fields("SelectStmt", body, ctes, consumed)

    def _with(self, clause: Body, ctes: frozenset[str], walk: _Walk) -> frozenset[str]:
        """Each CTE sees the ones before it (WITH RECURSIVE is not admitted); the query sees them all."""
        walk.fields("WithClause", clause, ctes, ("ctes",))
        visible = set(ctes)
        for item in clause.get("ctes", ()):
            cte = item.get("CommonTableExpr")
            if cte is None or len(item) != 1:
                walk.node(item)
                continue
            walk.fields("CommonTableExpr", cte, frozenset(visible), ("ctequery",))
            query = cte.get("ctequery", {})
            if set(query) != {"SelectStmt"}:
                walk.deny(
                    "validator_node", f"WITH {cte.get('ctename')}: only a SELECT is admitted in WITH", "CommonTableExpr"
                )
            else:
                walk.stack.append(("SelectStmt", query["SelectStmt"], frozenset(visible)))
            visible.add(cte.get("ctename", ""))
        return frozenset(visible)

    def _from_item(self, item: Body, ctes: frozenset[str], walk: _Walk) -> None:
        if "RangeVar" in item and len(item) == 1:
            self._relation(item["RangeVar"], ctes, walk, "select", None, None)
        else:
            walk.node(item, ctes)

    def _join(self, body: Body, ctes: frozenset[str], walk: _Walk) -> Iterable[str]:
        for side in ("larg", "rarg"):
            self._from_item(body.get(side, {}), ctes, walk)
        return ("larg", "rarg")

    def _locking(self, item: Body, walk: _Walk) -> None:
        """FOR UPDATE OF names relations of the FROM list: plain names, never tables of their own."""
        clause = item.get("LockingClause")
        if clause is None or len(item) != 1:
            walk.node(item)
            return
        walk.fields("LockingClause", clause, _EMPTY, ("lockedRels",))
        for rel in clause.get("lockedRels", ()):
            body = rel.get("RangeVar")
            if body is None or len(rel) != 1 or not _within(body, _LOCKED_KEYS):
                walk.deny(
                    "validator_relation", "FOR UPDATE/SHARE OF names only relations of the FROM list", "LockingClause"
                )

    def _relation(
        self, body: Body, ctes: frozenset[str], walk: _Walk, action: str, where: Body | None, qualifier: str | None
    ) -> bool:
        """Check one relation reference; True when `where` held the required filter (and was walked here)."""
        walk.fields("RangeVar", body, ctes, ())
        name = body.get("relname", "")
        schema = body.get("schemaname", "")
        if not schema and name in ctes:
            return False
        table = self.schema.tables.get(name) if schema in ("", self.schema.name) else None
        shown = f"{schema}.{name}" if schema else name
        if table is None:
            walk.deny("validator_relation", f"relation {shown} is not a table of the tenant schema", "RangeVar")
            return False
        if "colnames" in body.get("alias", {}):  # renamed columns would let a predicate name another column
            walk.deny("validator_relation", f"{shown}: column aliases on a table are not admitted", "RangeVar")
            return False
        required = self._required(action, table, walk.tenant, qualifier)
        if required is None:
            return False
        rest = _without(where, required) if where is not None else None
        if rest is None:
            walk.deny(
                "validator_relation",
                f"relation {shown} is not wrapped in the {action} filter Paybill requires for it",
                "RangeVar",
            )
            return False
        for conjunct in rest:
            walk.node(conjunct, ctes)
        return True

    def _stray_relation(self, body: Body, ctes: frozenset[str], walk: _Walk) -> Iterable[str]:
        walk.deny(
            "validator_relation", f"relation {body.get('relname')} appears where no relation is admitted", "RangeVar"
        )
        return ()

    def _required(self, action: str, table: Table, tenant: str | None, qualifier: str | None) -> list[_Term] | None:
        """The conjuncts the policy requires on (action, table) for the tenant, or None when rows are not restricted.

        Mirrors the rewriter: the tenant predicate on a pooled table, AND the OR of the row filters. Kept per
        key in a bounded cache (qualifiers are the agent's aliases)."""
        key = (action, table.name, tenant, qualifier)
        cached = self._terms.get(key, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        if len(self._terms) >= _TERMS_CACHED:
            self._terms.clear()
        terms: list[_Term] = []
        if tenant is not None and table.pooled:
            terms.append(_TenantTerm(qualifier, tenant))
        filters = self._row_filters(action, table.name)
        if filters is not None:
            terms += [_Exact(_qualified(c, qualifier) if qualifier is not None else c) for c in filters]
        self._terms[key] = terms or None
        return terms or None

    def _row_filters(self, action: str, table: str) -> list[Body] | None:
        """The OR of the row filters as conjuncts, in the form the deparse-and-parse round trip gives them."""
        key = (action, table)
        if key not in self._filters:
            names = self.rules.row_filters_for(action, table)
            if names is None:
                self._filters[key] = None
            else:
                result = pb.ParseResult()
                select = result.stmts.add().stmt.select_stmt
                select.target_list.add().res_target.val.a_const.ival.ival = 1
                where = select.where_clause
                if len(names) == 1:
                    where.CopyFrom(self.rules.predicates[names[0]])
                else:
                    where.bool_expr.boolop = pb.OR_EXPR
                    for name in names:
                        where.bool_expr.args.append(self.rules.predicates[name])
                parsed = parse_dicts(deparse(result))
                self._filters[key] = _conjuncts(_unlocated(parsed["stmts"][0]["stmt"]["SelectStmt"]["whereClause"]))
        return self._filters[key]

    def _insert(self, body: Body, ctes: frozenset[str], walk: _Walk) -> Iterable[str]:
        relation = body.get("relation", {})
        walk.fields("RangeVar", relation, ctes, ())
        table = self._target(relation, walk)
        if table is None:
            return ("relation",)
        qualifier = relation.get("alias", {}).get("aliasname", relation.get("relname"))
        if walk.tenant is not None and table.pooled and not _inserts_tenant(body, walk.tenant):
            walk.deny(
                "validator_relation",
                f"INSERT into {table.name} does not set {TENANT_COLUMN} to the tenant",
                "InsertStmt",
            )
        conflict = body.get("onConflictClause")
        if conflict is not None and conflict.get("action") == "ONCONFLICT_UPDATE":
            required = self._required("update", table, walk.tenant, qualifier)
            if required is not None:
                guard, guarded = _guarded(conflict.get("whereClause"))
                rest = _without(guard, required)
                if rest is not None:
                    rest.extend(guarded)
                if rest is None:
                    walk.deny(
                        "validator_relation",
                        f"ON CONFLICT DO UPDATE of {table.name} lacks the update filter Paybill requires",
                        "OnConflictClause",
                    )
                else:
                    walk.fields("OnConflictClause", conflict, ctes, ("whereClause",))
                    for conjunct in rest:
                        walk.node(conjunct, ctes)
                    return ("relation", "onConflictClause")
        return ("relation",)

    def _update(self, body: Body, ctes: frozenset[str], walk: _Walk) -> Iterable[str]:
        return self._written(body, ctes, walk, "update", "fromClause")

    def _delete(self, body: Body, ctes: frozenset[str], walk: _Walk) -> Iterable[str]:
        return self._written(body, ctes, walk, "delete", "usingClause")

    def _written(self, body: Body, ctes: frozenset[str], walk: _Walk, action: str, sources: str) -> Iterable[str]:
        """The target of UPDATE/DELETE: its WHERE must carry the filter, qualified with the target's name."""
        relation = body.get("relation", {})
        walk.fields("RangeVar", relation, ctes, ())
        for item in body.get(sources, ()):
            self._from_item(item, ctes, walk)
        table = self._target(relation, walk)
        if table is None:
            return ("relation", sources)
        qualifier = relation.get("alias", {}).get("aliasname", relation.get("relname"))
        required = self._required(action, table, walk.tenant, qualifier)
        if required is None:
            return ("relation", sources)
        where = body.get("whereClause")
        rest = _without(where, required) if where is not None else None
        if rest is None:
            walk.deny(
                "validator_relation",
                f"the WHERE of this {action.upper()} lacks the filter Paybill requires on {table.name}",
                "RangeVar",
            )
            return ("relation", sources)
        for conjunct in rest:
            walk.node(conjunct, ctes)
        return ("relation", sources, "whereClause")

    def _target(self, relation: Body, walk: _Walk) -> Table | None:
        schema = relation.get("schemaname", "")
        table = self.schema.tables.get(relation.get("relname", "")) if schema in ("", self.schema.name) else None
        if table is None:
            walk.deny(
                "validator_relation",
                f"relation {relation.get('relname')} is not a table of the tenant schema",
                "RangeVar",
            )
        return table

    # -- names -----------------------------------------------------------------------------------------------

    def _function(self, body: Body, ctes: frozenset[str], walk: _Walk) -> Iterable[str]:
        names = _names(body.get("funcname", ()))
        if names is None or not names:
            walk.deny("validator_function", "a function name that is not a plain name", "FuncCall")
            return ("funcname",)
        name = names[-1]
        shown = ".".join(names)
        if len(names) > 2 or (len(names) == 2 and names[0] != "pg_catalog"):
            walk.deny("validator_function", f"function {shown}: only unqualified functions are admitted", "FuncCall")
        elif not _safe_function(name):
            walk.deny("validator_function", f"function {shown} is never admitted", "FuncCall")
        elif name not in self.functions:
            # the analysis' wording and code: under warn and audit a policy's own allowlist records, it does not deny
            walk.deny("function_not_allowed", f"function {name} is not in the policy's allowlist", "FuncCall")
        return ("funcname",)

    def _operator(self, body: Body, ctes: frozenset[str], walk: _Walk) -> Iterable[str]:
        names = _names(body.get("name", ()))
        kind = body.get("kind")
        if names is None or len(names) != 1:
            shown = ".".join(names) if names else "?"
            walk.deny("validator_operator", f"OPERATOR({shown}) is not admitted", "A_Expr")
        elif kind in ("AEXPR_BETWEEN", "AEXPR_NOT_BETWEEN"):
            if names[0] not in BETWEEN_NAMES:
                walk.deny("validator_operator", f"operator {names[0]} is not admitted", "A_Expr")
        elif names[0] not in OPERATORS:
            walk.deny("validator_operator", f"operator {names[0]} is not admitted", "A_Expr")
        return ("name",)

    def _sublink(self, body: Body, ctes: frozenset[str], walk: _Walk) -> Iterable[str]:
        if "operName" in body:
            names = _names(body["operName"])
            if names is None or len(names) != 1 or names[0] not in OPERATORS:
                walk.deny(
                    "validator_operator",
                    f"operator {'.'.join(names or ['?'])} is not admitted in a subquery comparison",
                    "SubLink",
                )
        return ("operName",)

    def _sort(self, body: Body, ctes: frozenset[str], walk: _Walk) -> Iterable[str]:
        if "useOp" in body:
            names = _names(body["useOp"])
            if names is None or len(names) != 1 or names[0] not in ORDERINGS:
                walk.deny(
                    "validator_operator", f"ORDER BY ... USING {'.'.join(names or ['?'])} is not admitted", "SortBy"
                )
        return ("useOp",)

    def _type(self, body: Body, ctes: frozenset[str], walk: _Walk) -> Iterable[str]:
        names = _names(body.get("names", ()))
        if (
            names is None
            or not names
            or len(names) > 2
            or (len(names) == 2 and names[0] != "pg_catalog")
            or names[-1] not in CASTS
        ):
            walk.deny("validator_type", f"type {'.'.join(names or ['?'])} is not admitted", "TypeName")
        return ("names",)


_LOCKED_KEYS: Final = frozenset({"relname", "inh", "relpersistence", "location"})


class _Walk:
    """The state of one validation: the stack of (type, body, visible CTE names) and the reasons found."""

    __slots__ = ("reasons", "stack", "tenant")

    def __init__(self, tenant: str | None) -> None:
        self.tenant = tenant
        self.reasons: list[Reason] = []
        self.stack: list[tuple[str, Body, frozenset[str]]] = []

    def deny(self, code: str, message: str, node: str | None) -> None:
        self.reasons.append(Reason(code, message, node=node))

    def node(self, item: Body, ctes: frozenset[str] = _EMPTY) -> None:
        """Check or queue a Node (`{"Type": {...}}`; `{}` is an unset Node); `fields` inlines the same steps."""
        for kind, body in item.items():
            leaf = LEAVES.get(kind)
            if leaf is None:
                if kind in NESTED:
                    self.stack.append((kind, body, ctes))
                else:
                    self.deny("validator_node", f"{kind} is not an admitted node type", kind)
            elif not leaf(body):
                self.fields(kind, body, ctes)

    def fields(self, kind: str, body: Body, ctes: frozenset[str], consumed: Iterable[str] = ()) -> None:
        """Check the fields set in one message and walk its children, except those a handler consumed.

        Leaves (names, constants, column references: most nodes) are checked on the spot, not queued."""
        spec = TYPES[kind]
        if not _within(body, spec.keys):
            self.unadmitted(spec, body)
        for key, values, field, required in spec.checks:
            value = body.get(key)
            if value is None:
                if required:
                    self.deny("validator_field", f"{kind}.{field} must be set", kind)
            elif value not in values:
                self.deny("validator_field", f"{kind}.{field} = {value} is not admitted", kind)
        children = spec.children
        stack = self.stack
        for key, value in body.items():
            child = children.get(key)
            if child is None or key in consumed:
                continue
            shape, message = child
            if shape == _MESSAGE:
                leaf = LEAVES.get(message)  # type: ignore[arg-type]
                if leaf is None:
                    stack.append((message, value, ctes))  # type: ignore[arg-type]
                elif not leaf(value):
                    self.fields(message, value, ctes)  # type: ignore[arg-type]
                continue
            if shape == _MESSAGES:
                stack.extend([(message, item, ctes) for item in value])  # type: ignore[misc]
                continue
            items: list[Body] = [value] if shape == _NODE else value
            for item in items:
                for node_kind, node in item.items():
                    leaf = LEAVES.get(node_kind)
                    if leaf is None:
                        if node_kind in NESTED:
                            stack.append((node_kind, node, ctes))
                        else:
                            self.deny("validator_node", f"{node_kind} is not an admitted node type", node_kind)
                    elif not leaf(node):
                        self.fields(node_kind, node, ctes)  # names what is wrong

    def unadmitted(self, spec: _Type, body: Body) -> None:
        for key in sorted(body.keys() - spec.keys):
            field = spec.known.get(key)
            what = f"{spec.name}.{field}" if field is not None else f"{spec.name}.{key} (unknown to the descriptors)"
            self.deny("validator_field", f"{what} is not admitted", spec.name)


# -- leaves: most nodes of any tree, checked where they are met, without queueing ----------------------------
# Each says whether a message is admitted as it is, with nothing below it to walk: every key admitted for its
# type, and any names or constants under it plain. False sends it to `fields`, which names what is wrong (or
# walks what is below it). So a leaf check may only be as strict as `fields` or stricter, never looser.


def _keys_within(admitted: frozenset[str]) -> Callable[[Body], bool]:
    def within(body: Body) -> bool:
        return _within(body, admitted)

    return within


def _plain_reference(body: Body) -> bool:
    """A ColumnRef of plain names and `*` (what the generic walk would find, without walking)."""
    if not _within(body, _REF_KEYS):
        return False
    fields: list[Body] = body.get("fields", _NO_NODES)
    for field in fields:
        string: Body | None = field.get("String")
        if string is None:
            if field != _STAR:
                return False
        elif len(field) != 1 or not _within(string, _STRING_KEYS):
            return False
    return True


def _plain_constant(body: Body) -> bool:
    if not _within(body, _CONST_FIELDS):
        return False
    return all(type(value) is not dict or _within(value, _CONST_KEYS[key]) for key, value in body.items())


def _plain_names(body: Body) -> bool:
    """An Alias whose column names, if any, are plain strings."""
    return _within(body, _ALIAS_KEYS) and all(
        len(item) == 1 and _within(item.get("String", _NOT_STRING), _STRING_KEYS) for item in body.get("colnames", ())
    )


def _plain_target(body: Body) -> bool:
    """A ResTarget with nothing to walk below it: no value, or a plain column reference or constant."""
    if not _within(body, _TARGET_KEYS):
        return False
    value: Body | None = body.get("val")
    if value is None:
        return True
    if len(value) != 1:
        return False
    reference: Body | None = value.get("ColumnRef")
    if reference is None:
        constant: Body | None = value.get("A_Const")
        return constant is not None and _plain_constant(constant)
    if not _within(reference, _REF_KEYS):  # `_plain_reference`, inlined: most targets are plain columns
        return False
    fields: list[Body] = reference.get("fields", _NO_NODES)
    for field in fields:
        string: Body | None = field.get("String")
        if string is None:
            if field != _STAR:
                return False
        elif len(field) != 1 or not _within(string, _STRING_KEYS):
            return False
    return True


_NOT_STRING: Final[Body] = {"": None}
_STAR: Final[Body] = {"A_Star": {}}
_NO_NODES: Final[list[Body]] = []  # what a missing list field reads as (never changed)
_ALIAS_KEYS: Final = TYPES["Alias"].keys
_TARGET_KEYS: Final = TYPES["ResTarget"].keys
LEAVES: Final[dict[str, Callable[[Body], bool]]] = {
    **{
        name: _keys_within(TYPES[name].keys)
        for name in ("String", "A_Star", "Integer", "Float", "Boolean", "BitString", "ParamRef")
    },
    "ColumnRef": _plain_reference,
    "A_Const": _plain_constant,
    "Alias": _plain_names,
    "ResTarget": _plain_target,
}


# -- pure helpers ---------------------------------------------------------------------------------------------


def _within(body: Body, admitted: frozenset[str]) -> bool:
    """`body.keys() <= admitted`, as a loop: compiled (mypyc), it runs in C, without a generic comparison."""
    return all(key in admitted for key in body)


def _safe_function(name: str) -> bool:
    folded = name.lower()
    return folded not in UNSAFE_FUNCTIONS and not folded.startswith(UNSAFE_PREFIXES)


def _names(items: Iterable[Body]) -> list[str] | None:
    """The strings of a name list, or None when an item is anything but a plain String."""
    names = []
    for item in items:
        string: Body | None = item.get("String")
        if string is None or len(item) != 1 or not _within(string, _STRING_KEYS):
            return None
        names.append(string.get("sval", ""))
    return names


def _conjuncts(node: Body) -> list[Body]:
    """The top-level AND terms of a predicate (nested ANDs flattened), in order."""
    terms: list[Body] = []
    pending = [node]
    while pending:
        node = pending.pop()
        boolean: Body | None = node.get("BoolExpr")
        if boolean is None or boolean.get("boolop") != "AND_EXPR" or not _within(boolean, _AND_KEYS):
            terms.append(node)
        else:
            pending.extend(reversed(boolean.get("args", ())))
    return terms


_AND_KEYS: Final = frozenset({"boolop", "args", "location"})


def _guarded(where: Body | None) -> tuple[Body | None, list[Body]]:
    """`CASE WHEN guard THEN result ELSE false END` (the rewrite's ON CONFLICT WHERE: as a filter, guard AND result,
    with the result evaluated only where the guard holds) as (guard, [result]); anything else as (where, [])."""
    case = (where or {}).get("CaseExpr")
    if case is None or "arg" in case or len(case.get("args", ())) != 1:
        return where, []
    default = case.get("defresult", {}).get("A_Const")
    when = case["args"][0].get("CaseWhen", {})
    if (
        default is None
        or set(default) - {"boolval", "location"}
        or default.get("boolval") != {}
        or "result" not in when
    ):
        return where, []
    return when.get("expr"), [when["result"]]


def _without(where: Body | None, required: list[_Term]) -> list[Body] | None:
    """The conjuncts of `where` other than the required ones, or None when a required one is missing.

    A row passes an AND only if it passes every term, so a WHERE holding each required term as a top-level
    conjunct admits no row the required predicate rejects, whatever else it says."""
    if where is None:
        return None
    rest = _conjuncts(where)
    for term in required:
        for index, conjunct in enumerate(rest):
            if term.matches(conjunct):
                del rest[index]
                break
        else:
            return None
    return rest


class _Exact:
    """A required term given as a tree (a row filter): matched structurally."""

    __slots__ = ("tree",)

    def __init__(self, tree: Body) -> None:
        self.tree = tree

    def matches(self, node: Body) -> bool:
        return _same(node, self.tree)


class _TenantTerm:
    """`[qualifier.]tenant_id = '<tenant>'`, matched without a generic comparison (it is on every statement)."""

    __slots__ = ("fields", "tenant")

    def __init__(self, qualifier: str | None, tenant: str) -> None:
        names = [qualifier, TENANT_COLUMN] if qualifier is not None else [TENANT_COLUMN]
        self.fields = [{"String": {"sval": name}} for name in names]
        self.tenant = {"sval": tenant}

    def matches(self, node: Body) -> bool:
        expr: Body | None = node.get("A_Expr")
        if expr is None or len(node) != 1 or not _within(expr, _OPERATOR_KEYS) or expr.get("kind") != "AEXPR_OP":
            return False
        left: Body = expr.get("lexpr", {})
        right: Body = expr.get("rexpr", {})
        ref: Body | None = left.get("ColumnRef")
        const: Body | None = right.get("A_Const")
        return (
            expr.get("name") == _EQUALS
            and ref is not None
            and len(left) == 1
            and const is not None
            and len(right) == 1
            and _within(ref, _REF_KEYS)
            and ref.get("fields") == self.fields
            and _within(const, _TEXT_CONST_KEYS)
            and const.get("sval") == self.tenant
        )


_Term = _Exact | _TenantTerm
_OPERATOR_KEYS: Final = frozenset({"kind", "name", "lexpr", "rexpr", "location"})
_EQUALS: Final = [{"String": {"sval": "="}}]
_REF_KEYS: Final = frozenset({"fields", "location"})
_CONST_FIELDS: Final = frozenset({"ival", "fval", "boolval", "sval", "bsval", "isnull", "location"})
_TEXT_CONST_KEYS: Final = frozenset({"sval", "location"})


def _same(actual: Any, expected: Any) -> bool:
    """Structural equality, ignoring `location` (expected trees carry none)."""
    if type(actual) is dict:
        if type(expected) is not dict:
            return False
        matched = 0
        for key, value in actual.items():
            if key == "location":
                continue
            if key not in expected or not _same(value, expected[key]):
                return False
            matched += 1
        return matched == len(expected)
    if type(actual) is list:
        return (
            type(expected) is list
            and len(actual) == len(expected)
            and all(_same(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return bool(actual == expected and type(actual) is type(expected))


def _unlocated(tree: Any) -> Any:
    if type(tree) is dict:
        return {k: _unlocated(v) for k, v in tree.items() if k != "location"}
    if type(tree) is list:
        return [_unlocated(v) for v in tree]
    return tree


def _qualified(tree: Any, qualifier: str) -> Any:
    """A policy predicate with its bare column names prefixed by the written table's name, as the rewriter
    does (a subquery in the predicate keeps its own scope)."""
    if type(tree) is list:
        return [_qualified(v, qualifier) for v in tree]
    if type(tree) is not dict:
        return tree
    ref = tree.get("ColumnRef")
    if ref is not None and len(tree) == 1:
        fields = ref.get("fields", [])
        if len(fields) == 1 and "String" in fields[0]:
            return {"ColumnRef": {**ref, "fields": [{"String": {"sval": qualifier}}, fields[0]]}}
        return tree
    if "SelectStmt" in tree:
        return tree
    return {k: _qualified(v, qualifier) for k, v in tree.items()}


def _inserts_tenant(body: Body, tenant: str) -> bool:
    """The INSERT names the tenant column once and every row it inserts sets it to the tenant's id."""
    names = [c.get("ResTarget", {}).get("name") for c in body.get("cols", ())]
    if names.count(TENANT_COLUMN) != 1:
        return False
    index = names.index(TENANT_COLUMN)
    expected = {"A_Const": {"sval": {"sval": tenant}}}
    source = body.get("selectStmt", {}).get("SelectStmt")
    if source is None or source.get("op", "SETOP_NONE") != "SETOP_NONE":
        return False
    if "valuesLists" in source:
        rows = [row.get("List", {}).get("items", []) for row in source["valuesLists"]]
        return all(len(row) > index and _same(row[index], expected) for row in rows)
    targets = source.get("targetList", [])
    return len(targets) > index and _same(targets[index].get("ResTarget", {}).get("val"), expected)
