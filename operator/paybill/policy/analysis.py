"""Walk one parsed statement: resolve every name against the schema, collect accesses, flag what is forbidden.

The tree is libpg_query's protobuf form (see `tree`). The walker knows a deliberately small part of
PostgreSQL's grammar. Any node it does not know is a reason to deny: default deny applies to syntax as
much as to tables.
"""

from __future__ import annotations

import decimal
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mypy_extensions import mypyc_attr

from .decision import Reason
from .rules import UNSAFE_FUNCTIONS, UNSAFE_PREFIXES, RuleSet
from .schema import TENANT_COLUMN, WRITING_ACTIONS, Schema, Table, TypeFamily
from .tree import pb, unwrap

# A numeric constant's digits written out (1e131071 is 131,072 of them): the planner prints it so at each use, and the
# guard reads the plan. Past this many, a constant is refused (a parameter is costed so: guard.parameter_expansion).
MAX_NUMERIC_DIGITS = 1000
# A constant's text, quoted in SQL and escaped in EXPLAIN's JSON, is taken at up to this many bytes per byte.
PLAN_BYTES_PER_CHAR = 4
# How many values read (columns, parameters, rows) any one value a statement builds may be made of. A column a query
# reads twice (`s || s`) and a query over it that does the same again double the value at each level: 13 levels of
# `s || s || s || s` over one letter build 256 MiB at an estimated cost of 8, where maxCost cannot see it. Constants
# count nothing (all of them together are at most the statement); a column a query makes of them counts 1.
MAX_COPIES = 64
# The same for a whole row of a SELECT or RETURNING (a target list may hold many columns of MAX_COPIES each)
MAX_ROW_COPIES = 1024
# A text, JSON or numeric value a statement writes is made of at most one value read: more, and each run's
# statements compound (`SET a = a || b`, then `SET b = a || b`; `SET n = n * n` doubles a numeric's digits, stored
# in a few bytes, printed up to 147,455 characters); integers, dates, booleans and uuids keep their size
GROWING = frozenset({TypeFamily.TEXT, TypeFamily.JSON, TypeFamily.NUMERIC, TypeFamily.OTHER})
# Products, quotients and remainders: PostgreSQL's numeric arithmetic does not stop for a cancel (300 squarings of
# 65,534 nines ran 20 s past a 2 s timeout). In one, an operand made of constants and parameters only counts as one
# value (at most 1,000 digits), unless it is a constant of at most SMALL_NUMBER_DIGITS digits, so MAX_COPIES bounds
# the digits of a number as it bounds the length of text. A statement computes at most MAX_PRODUCTS of them, and
# their work, the product of what the two operands are made of, summed, is at most MAX_NUMERIC_WORK.
PRODUCTS = frozenset({"*", "/", "%"})
PRODUCT_FUNCTIONS = frozenset({"div", "mod"})  # the same, as functions an author may allowlist
SMALL_NUMBER_DIGITS = 20
MAX_PRODUCTS = 32
# The expression nodes PostgreSQL's copies of IN's and BETWEEN's left operands add (Analysis.copied), and the copies
# it may make of a parameter or of a constant longer than SHORT_CONSTANT there (Analysis.copied_value).
MAX_EXPANDED = 10_000
MAX_VALUE_COPIES = 8
SHORT_CONSTANT = 64
MAX_PARAMS = 1000
# A LIKE pattern's characters, constants and parameters together (PostgreSQL 15's LIKE does not stop for a cancel:
# 300,000 characters against a pattern of 150,000 ran 24 s past a 2 s timeout; text times pattern is the work)
MAX_PATTERN = 128
# LIKE matches a statement may make (text times pattern is each one's work: 150 of them over one 1.5 MB parameter ran
# 28 s past a 2 s timeout), and the CTEs it may write (the validator keeps a set of names per CTE)
MAX_LIKES = 16
MAX_CTES = 100
LIKE_OPERATORS = frozenset({"~~", "!~~", "~~*", "!~~*"})
MAX_NUMERIC_WORK = 256
# A cast to char(n) pads its value to n characters.
MAX_PADDED = 1024
# numeric(p, s) pads a value to s digits after the point: s at most this (a 5-character column cast to
# numeric(1000, 998) printed 1,001 characters)
MAX_NUMERIC_SCALE = 64
# Casts to numeric, and what they may read (Analysis.numeric_source): columns of these families; casts to these types,
# whatever they read (a number past their range is an error); functions whose value is a number whatever they read
# (or an error), and those that give one of their arguments.
NUMERIC_TYPES = frozenset({"numeric", "decimal"})
NUMBER_COLUMNS = frozenset({TypeFamily.INTEGER, TypeFamily.NUMERIC, TypeFamily.JSON})
BOUNDED_NUMBER_TYPES = frozenset(
    {"int2", "int4", "int8", "smallint", "integer", "int", "bigint", "float4", "float8", "real"}
)
NUMBER_FUNCTIONS = frozenset(
    {"count", "sum", "avg", "length", "char_length", "octet_length", "abs", "round", "trunc", "ceil", "ceiling"}
    | {"floor", "sign", "mod", "div", "extract", "date_part"}
)
PASSING_FUNCTIONS = frozenset({"min", "max", "greatest", "least", "nullif"})
ARITHMETIC = frozenset({"+", "-", "*", "/", "%"})
# How many digits more than it is written a number in a JSON value an agent writes may print ('1e999' prints 1,000).
JSON_NUMBER_GROWTH = 16
COMPARISONS = frozenset({"=", "<>", "!=", "<", ">", "<=", ">="})
# `->` and `->>`: a field or element of json(b)
JSON_FIELDS = frozenset({"->", "->>"})
OPERATORS = COMPARISONS | JSON_FIELDS | frozenset({"+", "-", "*", "/", "%", "||", "~~", "!~~", "~~*", "!~~*"})
ORDERINGS = frozenset({"<", ">"})  # what ORDER BY ... USING may name
# Operators whose value is a boolean, whatever they read
TESTS = COMPARISONS | frozenset({"~~", "!~~", "~~*", "!~~*"})
# Operators whose value is about as large as their larger operand (a number, what jsonb - key leaves, a field of a
# JSON value); a product or a quotient has the digits of both operands
LARGER_OPERAND = frozenset({"+", "-", "%", "->", "->>"})
# Comparisons that pick rows by a value (the sense of requireWhere); <> and != pick nearly all rows.
CASTS = frozenset(
    {
        "int2",
        "int4",
        "int8",
        "smallint",
        "integer",
        "int",
        "bigint",
        "numeric",
        "decimal",
        "float4",
        "float8",
        "real",
        "text",
        "varchar",
        "bpchar",
        "char",
        "bool",
        "boolean",
        "date",
        "time",
        "timestamp",
        "timestamptz",
        "interval",
        "uuid",
    }
)
TIME_VALUE_FUNCTIONS = frozenset(
    {
        pb.SVFOP_CURRENT_DATE,
        pb.SVFOP_CURRENT_TIME,
        pb.SVFOP_CURRENT_TIME_N,
        pb.SVFOP_CURRENT_TIMESTAMP,
        pb.SVFOP_CURRENT_TIMESTAMP_N,
        pb.SVFOP_LOCALTIME,
        pb.SVFOP_LOCALTIME_N,
        pb.SVFOP_LOCALTIMESTAMP,
        pb.SVFOP_LOCALTIMESTAMP_N,
    }
)
A_EXPR_KINDS = frozenset(
    {
        pb.AEXPR_OP,
        pb.AEXPR_OP_ANY,
        pb.AEXPR_OP_ALL,
        pb.AEXPR_DISTINCT,
        pb.AEXPR_NOT_DISTINCT,
        pb.AEXPR_NULLIF,
        pb.AEXPR_IN,
        pb.AEXPR_LIKE,
        pb.AEXPR_ILIKE,
        pb.AEXPR_BETWEEN,
        pb.AEXPR_NOT_BETWEEN,
    }
)
LISTS = frozenset({pb.AEXPR_IN, pb.AEXPR_BETWEEN, pb.AEXPR_NOT_BETWEEN})
SUBLINKS = frozenset({pb.EXISTS_SUBLINK, pb.ANY_SUBLINK, pb.ALL_SUBLINK, pb.EXPR_SUBLINK})
ARGUMENT_LISTS = frozenset({"bool_expr", "coalesce_expr", "min_max_expr", "row_expr"})
LOCK_STRENGTHS = {
    pb.LCS_FORKEYSHARE: "FOR KEY SHARE",
    pb.LCS_FORSHARE: "FOR SHARE",
    pb.LCS_FORNOKEYUPDATE: "FOR NO KEY UPDATE",
    pb.LCS_FORUPDATE: "FOR UPDATE",
}

# The SelectStmt fields each form of SELECT handles. Any other field set is a denial that names it, so a
# clause the walker forgets is refused rather than passed (deny by default, field by field).
_ANY_SELECT = frozenset(
    {"with_clause", "into_clause", "sort_clause", "limit_offset", "limit_count", "limit_option", "locking_clause", "op"}
)
SELECT_FIELDS = _ANY_SELECT | {
    "distinct_clause",
    "target_list",
    "from_clause",
    "where_clause",
    "group_clause",
    "group_distinct",
    "having_clause",
    "window_clause",
}
SET_OPERATION_FIELDS = _ANY_SELECT | {"all", "larg", "rarg"}
VALUES_FIELDS = _ANY_SELECT | {"values_lists"}
INSERT_VALUES_FIELDS = frozenset({"values_lists", "limit_option", "op"})  # INSERT ... VALUES: the list, nothing else


class _FieldNames(dict[Any, str]):
    """Field descriptor -> its name, each read from the descriptor once (descriptors are long-lived singletons)."""

    def __missing__(self, descriptor: Any) -> str:
        name: str = descriptor.name
        self[descriptor] = name
        return name


_FIELD_NAMES = _FieldNames()


def set_fields(message: Any) -> dict[str, Any]:
    """The fields set on `message` by name, from one ListFields() (every field its descriptor knows, so a field a
    newer libpg_query adds is in): cheaper than asking for each field, and an unset field is never built."""
    names = _FIELD_NAMES
    return {names[descriptor]: value for descriptor, value in message.ListFields()}


def unhandled_fields(fields: dict[str, Any], handled: frozenset[str]) -> list[str]:
    """The set fields (`set_fields`) that `handled` leaves out, in field-number order."""
    return [name for name in fields if name not in handled]


STATEMENT_KINDS = {"select_stmt": "select", "insert_stmt": "insert", "update_stmt": "update", "delete_stmt": "delete"}
_NEVER = {
    "TransactionStmt": "transaction control",
    "VariableSetStmt": "SET/RESET",
    "VariableShowStmt": "SHOW",
    "CopyStmt": "COPY",
    "DoStmt": "DO blocks",
    "CallStmt": "CALL",
    "ExplainStmt": "EXPLAIN",
    "PrepareStmt": "PREPARE",
    "ExecuteStmt": "EXECUTE",
    "DeallocateStmt": "DEALLOCATE",
    "LockStmt": "LOCK",
    "ListenStmt": "LISTEN",
    "NotifyStmt": "NOTIFY",
    "UnlistenStmt": "UNLISTEN",
    "DiscardStmt": "DISCARD",
    "GrantStmt": "GRANT/REVOKE",
    "GrantRoleStmt": "GRANT/REVOKE",
    "VacuumStmt": "VACUUM/ANALYZE",
    "CheckPointStmt": "CHECKPOINT",
    "LoadStmt": "LOAD",
    "TruncateStmt": "TRUNCATE",
    "MergeStmt": "MERGE",
    "DeclareCursorStmt": "cursors",
    "FetchStmt": "cursors",
    "ClosePortalStmt": "cursors",
    "CreateTableAsStmt": "CREATE TABLE AS",
    "SecLabelStmt": "SECURITY LABEL",
    "ReindexStmt": "REINDEX",
    "ClusterStmt": "CLUSTER",
    "RefreshMatViewStmt": "REFRESH MATERIALIZED VIEW",
}

_INTEGER = re.compile(r"^\s*[+-]?\d+\s*$")
_BOOLEAN = frozenset({"t", "f", "true", "false", "y", "n", "yes", "no", "on", "off", "1", "0"})


@dataclass
class FromSlot:
    """A base table in a FROM list: the Node the rewriter replaces with a filtered subquery."""

    node: pb.Node
    range_var: pb.RangeVar
    table: Table
    locked: bool = False  # a row lock reaches it: the update rules' row filters apply too
    position: int | None = None  # its index in the FROM list of the top-level SELECT, when it is an item of it


# A base table a derived relation reads rows from: (its slot, its name in its SELECT, that SELECT's WHERE).
Source = tuple[FromSlot, str, pb.Node]
_NO_WHERE = pb.Node()  # the WHERE of a SELECT without one (read, never changed)


@dataclass
class Relation:
    """Something a FROM clause makes visible: a base table, a CTE or a subquery."""

    name: str
    columns: tuple[str, ...]
    table: Table | None = None
    sources: tuple[Source, ...] = ()  # for a CTE or subquery: the base tables a row lock on it reaches
    slot: FromSlot | None = None  # for a base table in a FROM list
    copies: tuple[int, ...] = ()  # for a CTE or subquery: how many values each column is built of (else 1 each)

    def copies_of(self, name: str) -> int:
        """How many values read the value of column `name` is made of (the most, where two columns share the name;
        where names were given to fewer columns than there are, the most of any)."""
        copies = self.copies
        if not copies:
            return 1
        if len(copies) != len(self.columns):
            return max(copies)
        most = 1
        for column, count in zip(self.columns, copies, strict=True):
            if column == name and count > most:
                most = count
        return most

    def copies_of_row(self) -> int:
        """What the whole row (`rel.*`, or `rel` as a value) is made of: a table's row is one value read."""
        return sum(self.copies) if self.copies else 1


@dataclass
class Scope:
    relations: list[Relation] = field(default_factory=list)
    parent: Scope | None = None
    ctes: dict[str, Relation] = field(default_factory=dict)  # the WITH queries visible here

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


_PARAM_TYPES = {(family, array): ParamType(family, array) for family in TypeFamily for array in (False, True)}


@dataclass
class Target:
    """The table an INSERT, UPDATE or DELETE writes."""

    stmt: Any
    table: Table
    name: str


def _most(left: tuple[int, ...], right: tuple[int, ...]) -> tuple[int, ...]:
    """Column by column, the larger of two counts (the longer tuple's tail as it is)."""
    if len(left) < len(right):
        left, right = right, left
    return tuple(max(a, right[n]) if n < len(right) else a for n, a in enumerate(left))


def _alias(message: Any) -> pb.Alias | None:
    return message.alias if message.HasField("alias") else None


def numeric_digits(text: str) -> int:
    """How many digits `text`, a number, takes written out without an exponent (0: not a number)."""
    try:
        value = decimal.Decimal(text)
    except (decimal.InvalidOperation, ValueError):
        return 0
    if not value.is_finite():
        return 0
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):
        return 0
    return max(value.adjusted() + 1, -exponent, len(value.as_tuple().digits))


def printed_size(text: str) -> int:
    """About the bytes `text` takes printed in a plan: itself (UTF-8), or as a number written out if PostgreSQL may read
    it as one (leading zeros and spaces included)."""
    return max(len(text.encode()), numeric_digits(text))


def _factor(made: int, operand: pb.Node) -> int:
    """What an operand of a product counts: what it is made of, or 1 if made of constants and parameters only, unless
    it is a constant of at most SMALL_NUMBER_DIGITS digits (`credit * 1.1`)."""
    if made:
        return made
    kind = operand.WhichOneof("node")
    if kind == "type_cast":
        operand = operand.type_cast.arg
        kind = operand.WhichOneof("node")
    if kind != "a_const":
        return 1
    const = operand.a_const
    which = const.WhichOneof("val")
    if which == "fval":
        return int(numeric_digits(const.fval.fval) > SMALL_NUMBER_DIGITS)
    if which == "sval":
        return int(numeric_digits(const.sval.sval) > SMALL_NUMBER_DIGITS)
    return 0


def _plain_number(node: pb.Node) -> bool:
    """Is `node` a number whatever the columns it reads hold (see Analysis.numeric_source)? A column read by
    arithmetic or by a numeric aggregate is (no arithmetic operator takes text); one read otherwise may be text."""
    kind = node.WhichOneof("node")
    if kind in ("a_const", "param_ref"):
        return True
    if kind == "a_expr":
        expr = node.a_expr
        names = _names(expr.name)
        if expr.kind != pb.AEXPR_OP or len(names) != 1:
            return False
        if names[0] == "->":
            return True  # a field of a json(b) column (Analysis.operator): jsonb casts to numeric only from a number

        return names[0] in ARITHMETIC and all(
            _plain_number(side) or side.WhichOneof("node") == "column_ref"
            for side in (expr.lexpr, expr.rexpr)
            if side.WhichOneof("node") is not None
        )
    if kind == "type_cast":
        target = _names(node.type_cast.type_name.names)[-1]
        return target in BOUNDED_NUMBER_TYPES or (target in NUMERIC_TYPES and _plain_number(node.type_cast.arg))
    if kind == "func_call":
        call = node.func_call
        name = _names(call.funcname)[-1]
        if name in NUMBER_FUNCTIONS:
            return True
        return name in PASSING_FUNCTIONS and all(_plain_number(arg) for arg in call.args[:])
    if kind == "coalesce_expr":
        return all(_plain_number(arg) for arg in node.coalesce_expr.args[:])
    if kind == "min_max_expr":
        return all(_plain_number(arg) for arg in node.min_max_expr.args[:])
    if kind == "case_expr":
        case = node.case_expr
        results = [when.case_when.result for when in case.args[:]]
        if case.defresult.WhichOneof("node") is not None:
            results.append(case.defresult)
        return all(_plain_number(result) for result in results)
    return False


def _params_in(node: pb.Node) -> set[int]:
    """The parameters anywhere in `node`'s expression (not inside subqueries)."""
    return {leaf.param_ref.number for leaf in _leaves(node) if leaf.WhichOneof("node") == "param_ref"}


def _leaves(node: pb.Node) -> list[pb.Node]:
    """What an expression is made of, through casts, operators, function arguments, lists, arrays, COALESCE,
    GREATEST/LEAST and rows: constants, parameters, columns, subqueries, CASEs and the rest, as they stand."""
    leaves: list[pb.Node] = []
    parts = [node]
    while parts:
        part = parts.pop()
        kind = part.WhichOneof("node")
        if kind == "type_cast":
            parts.append(part.type_cast.arg)
        elif kind == "a_expr":
            parts.extend(side for side in (part.a_expr.lexpr, part.a_expr.rexpr) if side.WhichOneof("node"))
        elif kind == "func_call":
            parts.extend(part.func_call.args[:])
        elif kind == "list":
            parts.extend(part.list.items[:])
        elif kind in ("coalesce_expr", "min_max_expr", "row_expr"):
            parts.extend(getattr(part, kind).args[:])
        elif kind == "a_array_expr":
            parts.extend(part.a_array_expr.elements[:])
        elif kind is not None:
            leaves.append(part)
    return leaves


def _left_copies(kind: int, right: pb.Node) -> int:
    """How many times PostgreSQL evaluates the left operand of an A_Expr of `kind` over `right`: BETWEEN twice; IN
    once for each element that is not a constant or parameter (those go together in one array) and once for them."""
    if kind in (pb.AEXPR_BETWEEN, pb.AEXPR_NOT_BETWEEN):
        return 2
    if kind != pb.AEXPR_IN or right.WhichOneof("node") != "list":
        return 1
    items = right.list.items[:]
    varying = sum(not _fixed(item) for item in items)
    return varying + (varying < len(items))


def _fixed(node: pb.Node) -> bool:
    """A constant or a parameter, cast or not."""
    kind = node.WhichOneof("node")
    if kind == "type_cast":
        return _fixed(node.type_cast.arg)
    return kind in ("a_const", "param_ref")


def _json_field(operand: pb.Node) -> bool:
    """Is `operand` a field read with `->` (so a json(b) value, if its own left operand was admitted)?"""
    if operand.WhichOneof("node") != "a_expr":
        return False
    names = _names(operand.a_expr.name)
    return operand.a_expr.kind == pb.AEXPR_OP and names == ["->"]


def _names(nodes: Any) -> list[str]:
    """The strings of a name list (function, operator, type and column names).

    Hot loops read a repeated field through a slice (`nodes[:]`, a list): iterating upb's container itself ends
    each loop by raising and catching an IndexError."""
    return [n.string.sval for n in nodes[:]]


def _column_names(ref: pb.ColumnRef) -> list[str] | None:
    """The names of a column reference in one pass over its fields; None for `*` or `rel.*` (a name is never
    empty: the parser refuses a zero-length quoted identifier, so only a star field reads as "")."""
    fields = ref.fields
    names = [n.string.sval for n in fields[:]]
    if names[-1] or fields[-1].WhichOneof("node") != "a_star":
        return names
    return None


@mypyc_attr(allow_interpreted_subclasses=True)  # a test's subclass forgets a clause (PolicyEngine's analysis)
class Analysis:
    """The result of walking one statement. `reasons` empty means the syntax and names are admissible."""

    def __init__(self, rules: RuleSet, schema: Schema, tenant: str | None) -> None:
        self.rules = rules
        self.schema = schema
        self.tenant = tenant
        self.reasons: list[Reason] = []
        # (action, table, column) -> the node that first made it (its location is read only for a denial)
        self.accesses: dict[tuple[str, str, str | None], Any] = {}
        self.param_types: dict[int, ParamType] = {}
        self.params: set[int] = set()
        self.from_slots: list[FromSlot] = []
        self.target: Target | None = None
        self.kind: str | None = None
        self.where_missing = False
        self.locking = False  # a top-level FOR UPDATE/SHARE: the guard counts locked rows as written
        self.locks: list[tuple[str, bool]] = []  # (locked base table, whether its WHERE restricts it)
        self.top_from_items = 0  # the number of items in the top-level SELECT's FROM list
        # the CTEs and FROM subqueries the statement wrote: the rewrite fences each, so that PostgreSQL plans it once,
        # alone (inlined, a column read twice at each level doubles the expression: exponential planning)
        self.fences: list[Any] = []
        # what the constants (numbers written out, text that may be read as one) take printed in the plan
        self.constants_printed = 0
        # how many values (columns read, constants, parameters) the value being walked is built of, so far
        self.copies = 0
        # the same, per output column of the SELECT walked last
        self.output_copies: tuple[int, ...] = ()
        self.max_copies = MAX_COPIES
        self.max_row_copies = MAX_ROW_COPIES
        self.grows = False
        # expression nodes walked so far, counting the copies PostgreSQL makes of IN's and BETWEEN's left operand, and
        # those copies alone
        self.nodes = 0
        self.expanded = 0
        self.multiplier = 1  # how many copies PostgreSQL makes of the operand being walked
        # parameters a LIKE pattern is made of; 0 too when a pattern reads anything else (a column, a subquery, a
        # CASE ...): then every parameter is held as a pattern's
        self.pattern_params: set[int] = set()
        # parameters compared with = (the planner copies such a value into a clause for each column its equivalence
        # class joins: at most columns_read of them)
        self.equated_params: set[int] = set()
        self.columns_read = 0
        self.ctes_written = 0
        self.likes = 0  # LIKE matches, counting the copies PostgreSQL makes of them
        self.products = 0  # products, quotients and remainders met so far
        self.numeric_work = 0  # their work so far (see MAX_NUMERIC_WORK)
        self.max_products = MAX_PRODUCTS
        self.max_numeric_work = MAX_NUMERIC_WORK
        # operands of products counted as a value although made of constants and parameters only: a number written
        # may be multiplied by one (`SET credit = credit * $1` writes one value read; `* $1 * $2`, two)
        self.promoted = 0

    # -- reasons and accesses -------------------------------------------------------------------

    def deny(self, code: str, message: str, node: Any = None) -> None:
        self.reasons.append(Reason(code, message, type(node).__name__ if node is not None else None, location(node)))

    def unsupported(self, node: Any, what: str | None = None) -> None:
        name = type(node).__name__
        self.deny("unsupported", f"{what or name} is not admitted (the engine does not understand it)", node)

    def access(self, action: str, table: Table, column: str | None, node: Any = None) -> None:
        key = (action, table.name, column)
        if key not in self.accesses:
            self.accesses[key] = node

    # -- statements ------------------------------------------------------------------------------

    def statement(self, node: pb.Node) -> None:
        which = node.WhichOneof("node")
        stmt = getattr(node, which)
        kind = STATEMENT_KINDS.get(which)
        if kind is None:
            name = type(stmt).__name__
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
        limit = self.rules.limits.maxBytesRead
        if self.constants_printed * PLAN_BYTES_PER_CHAR > limit:
            self.deny(
                "plan_too_large",
                f"its constants, written out, would make its plan larger than maxBytesRead {limit} bytes",
                stmt,
            )

    def select(
        self, stmt: pb.SelectStmt, outer: Scope | None, ctes: dict[str, Relation], top: bool = False
    ) -> tuple[tuple[str, ...], tuple[Source, ...]]:
        """Walk one SELECT, set operation or VALUES; returns its output columns and the base tables it reads."""
        fields = set_fields(stmt)
        get = fields.get
        operation = get("op", 0) != pb.SETOP_NONE
        values = get("values_lists")
        if operation:
            form, handled = "a set operation", SET_OPERATION_FIELDS
        elif values is not None:
            form, handled = "VALUES", VALUES_FIELDS
        else:
            form, handled = "SELECT", SELECT_FIELDS
        unknown = unhandled_fields(fields, handled)
        if unknown:
            self.unsupported(stmt, f"{', '.join(unknown)} on {form}")
        if "with_clause" in fields:
            ctes = self.with_clause(fields["with_clause"], outer, ctes)
        if "into_clause" in fields:
            self.deny("select_into", "SELECT INTO creates a table and is never admitted", fields["into_clause"])
        if get("limit_option") == pb.LIMIT_OPTION_WITH_TIES:
            self.unsupported(stmt, "FETCH ... WITH TIES")
        scope = Scope([], outer, ctes)
        sources: tuple[Source, ...] = ()
        enclosing = self.copies  # of the expression this SELECT stands in, if any: its own values start afresh
        self.copies = 0
        if operation:
            columns, sources = self.select(stmt.larg, outer, ctes)
            left_copies = self.output_copies
            right, right_sources = self.select(stmt.rarg, outer, ctes)
            if len(columns) != len(right):
                self.deny("invalid", "each side of a set operation must return the same number of columns", stmt)
            sources += right_sources
            copies = _most(left_copies, self.output_copies)
            scope.relations.append(Relation("", columns, copies=copies))
        elif values is not None:
            copies = ()
            for row in values:
                copies = _most(copies, self.values_row(row.list.items, scope))
            columns = tuple(f"column{n + 1}" for n in range(len(values[0].list.items)))
        else:
            columns, copies = self.query(fields, scope, top)
            sources = self.sources(scope.relations, get("where_clause", _NO_WHERE))
        self.check_row(columns, copies, stmt)
        if "locking_clause" in fields:
            self.row_locks(stmt, scope, top and form == "SELECT")
        for sort in get("sort_clause", ())[:]:
            self.sort(sort.sort_by, scope, columns)
        if "limit_count" in fields:
            self.expression(fields["limit_count"], scope)
        if "limit_offset" in fields:
            self.expression(fields["limit_offset"], scope)
        self.output_copies = copies
        self.copies = enclosing
        return columns, sources

    def values_row(self, items: Any, scope: Scope) -> tuple[int, ...]:
        """Walk one row of a VALUES list; how many values each of its columns is built of."""
        copies: list[int] = []
        for item in items[:]:
            before = self.copies
            self.expression(item, scope)
            copies.append(max(1, self.copies - before))
        return tuple(copies)

    def check_copies(self, copies: int, what: str, node: Any) -> None:
        """Deny (once) a value made of more than max_copies values read: `what` names it."""
        if copies > self.max_copies and not self.grows:
            self.grows = True
            self.deny(
                "value_growth",
                f"{what} is made of {copies} values read (at most {self.max_copies}): a value repeated at each level"
                " of nested queries grows past any limit",
                node,
            )

    def check_row(self, columns: tuple[str, ...], copies: tuple[int, ...], node: Any) -> None:
        """Each column, and the whole row, within its bound."""
        for column, count in zip(columns, copies, strict=False):
            self.check_copies(count, f"column {column or '?'}", node)
        total = sum(copies)
        if total > self.max_row_copies and not self.grows:
            self.grows = True
            self.deny(
                "value_growth",
                f"a row is made of {total} values read (at most {self.max_row_copies} in all its columns)",
                node,
            )

    def written(self, family: TypeFamily | None, copies: int, column: str, node: Any) -> None:
        """A text or JSON value written made of more than one value read compounds from statement to statement."""
        if family in GROWING and copies > 1 and not self.grows:
            self.grows = True
            self.deny(
                "value_growth",
                f"column {column} is written with {copies} values read (at most 1 in text, JSON or numeric: each"
                " run's writes would compound; pass what it combines as a parameter)",
                node,
            )

    def query(self, fields: dict[str, Any], scope: Scope, top: bool = False) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """The clauses of a plain SELECT (its `set_fields`) before ORDER BY: FROM, the target list, WINDOW, WHERE...;
        its output columns and how many values each is built of.

        `top`: the statement's own SELECT, whose FROM items the rewriter may splice (`FromSlot.position`)."""
        get = fields.get
        position = 0
        for item in get("from_clause", ())[:]:
            self.from_item(item, scope, scope.ctes, position if top else None)
            position += 1
        if top:
            self.top_from_items = position
        columns, copies = self.target_list(get("target_list", ()), scope)
        for item in get("window_clause", ())[:]:
            self.window(item.window_def, scope)
        if "where_clause" in fields:
            self.expression(fields["where_clause"], scope)
        for item in get("group_clause", ())[:]:
            if item.WhichOneof("node") == "grouping_set":
                self.unsupported(item.grouping_set, "GROUPING SETS")
            else:
                self.expression(item, scope, outputs=columns)
        if "having_clause" in fields:
            self.expression(fields["having_clause"], scope)
        for item in get("distinct_clause", ())[:]:
            self.expression(item, scope)
        return columns, copies

    @staticmethod
    def sources(relations: list[Relation], where: pb.Node) -> tuple[Source, ...]:
        """The base tables under `relations`, each with the WHERE of the SELECT that reads it."""
        found: list[Source] = []
        for relation in relations:
            if relation.slot is not None:
                found.append((relation.slot, relation.name, where))
            else:
                found.extend(relation.sources)
        return tuple(found)

    def row_locks(self, stmt: pb.SelectStmt, scope: Scope, top: bool) -> None:
        """FOR UPDATE/SHARE is a write intent: an update rule on every base table it locks, only at the top level
        of a SELECT over base tables, where each returned row is the row locked and the guard counts them."""
        for item in stmt.locking_clause:
            clause = item.locking_clause
            label = LOCK_STRENGTHS.get(clause.strength, "FOR UPDATE")
            if not top:
                self.unsupported(clause, f"a row lock ({label}) anywhere but the top-level SELECT over tables")
                continue
            self.locking = True
            if stmt.HasField("limit_offset"):  # the rows OFFSET skips are locked too, but never counted
                self.unsupported(clause, f"OFFSET with a row lock ({label})")
            obstacle = _lock_obstacle(stmt, scope)
            if obstacle:  # the guard counts returned rows as locked rows: only true where each row is one row
                self.unsupported(
                    clause,
                    f"a row lock ({label}) with {obstacle} (only a single-level SELECT over base tables may lock rows)",
                )
                continue
            relations = scope.relations
            if clause.locked_rels:
                relations = []
                for node in clause.locked_rels:
                    range_var = node.range_var
                    found = [r for r in scope.relations if r.name == range_var.relname]
                    if range_var.schemaname or range_var.catalogname or not found:
                        self.deny(
                            "unknown_table", f"{range_var.relname} in {label} OF is not in the FROM clause", range_var
                        )
                    relations.extend(found)
            for slot, name, where in self.sources(relations, stmt.where_clause):
                slot.locked = True
                self.access("update", slot.table, None, clause)
                self.locks.append((slot.table.name, restricts(where, name, slot.table)))

    def with_clause(self, clause: pb.WithClause, outer: Scope | None, ctes: dict[str, Relation]) -> dict[str, Relation]:
        if clause.recursive:
            self.unsupported(clause, "WITH RECURSIVE")
        ctes = dict(ctes)
        self.ctes_written += len(clause.ctes)
        if self.ctes_written > MAX_CTES:
            self.deny("too_complex", f"more than {MAX_CTES} CTEs", clause)
            return ctes
        for item in clause.ctes:
            cte = item.common_table_expr
            if cte.ctequery.WhichOneof("node") != "select_stmt":
                self.deny("data_modifying_cte", f"WITH {cte.ctename}: only SELECT is admitted inside WITH", cte)
                continue
            columns, sources = self.select(cte.ctequery.select_stmt, outer, ctes)
            copies = self.output_copies
            self.fences.append(cte)
            if cte.aliascolnames:
                columns = tuple(_names(cte.aliascolnames))
            ctes[cte.ctename] = Relation(cte.ctename, columns, sources=sources, copies=copies)
        return ctes

    def insert(self, stmt: pb.InsertStmt) -> None:
        if stmt.HasField("with_clause"):
            self.unsupported(stmt.with_clause, "WITH on INSERT")
        if stmt.override > pb.OVERRIDING_NOT_SET:
            self.unsupported(stmt, "OVERRIDING")
        table = self.base_table(stmt.relation)
        if table is None:
            return
        name = self.target_name(stmt, table)
        if not stmt.cols:
            self.deny("insert_columns", "INSERT must name its columns", stmt)
            return
        families: list[TypeFamily | None] = []
        for item in stmt.cols:
            col = item.res_target
            if col.indirection:
                self.unsupported(col, "subscripted INSERT target")
            if col.name not in table.columns:
                self.deny("unknown_column", f"column {table.name}.{col.name} does not exist", col)
                families.append(None)
                continue
            self.writes_tenant_column(table, col.name, col)
            self.writes_key_column(table, col.name, col, update=False)
            self.access("insert", table, col.name, col)
            families.append(table.columns[col.name])
        source = stmt.select_stmt.select_stmt if stmt.select_stmt.WhichOneof("node") == "select_stmt" else None
        if source is None:
            self.deny("insert_columns", "INSERT needs VALUES or a SELECT", stmt)
        elif source.values_lists:
            extra = unhandled_fields(set_fields(source), INSERT_VALUES_FIELDS)
            if extra:  # the rewrite adds the tenant to each row: nothing may pick or reorder the rows
                self.unsupported(source, f"{', '.join(extra)} after an INSERT's VALUES list")
            self.select(source, None, {})
            self.written_row(stmt, families, self.output_copies)
            for row in source.values_lists:
                values = row.list.items
                if len(values) != len(families):
                    self.deny("invalid", "VALUES row and column list differ in length", source)
                for value, family in zip(values, families, strict=False):
                    if family is not None:
                        self.typed_value(family, value)
        else:
            if source.op != pb.SETOP_NONE and self.tenant is not None and table.pooled:
                self.unsupported(source, "a set operation as the source of a pooled INSERT")
            columns, _ = self.select(source, None, {})
            self.written_row(stmt, families, self.output_copies)
            if len(columns) != len(families):
                self.deny("invalid", "INSERT ... SELECT returns a different number of columns", source)
        if stmt.HasField("on_conflict_clause"):
            self.on_conflict(stmt.on_conflict_clause, table, name)
            rows = len(source.values_lists) if source is not None and source.values_lists else None
            limit = self.rules.limits.maxRowsWritten
            if stmt.on_conflict_clause.action == pb.ONCONFLICT_UPDATE and (rows is None or rows > limit):
                # DO UPDATE locks each conflicting row before its WHERE is checked: a lock the guard cannot count
                # after the fact, so the rows it may lock are counted here (DO NOTHING locks none)
                self.deny(
                    "rows_written_exceeded",
                    f"INSERT ... ON CONFLICT DO UPDATE may lock a row for each row it inserts: its source must be a "
                    f"VALUES list of at most maxRowsWritten {limit} rows",
                    stmt.on_conflict_clause,
                )
            # DO UPDATE updates each conflicting row of the source: an update rule's requireWhere is met only by a
            # VALUES list of literals and parameters, which names those rows by key one by one (never a SELECT)
            self.where_missing = stmt.on_conflict_clause.action == pb.ONCONFLICT_UPDATE and not (
                source is not None
                and bool(source.values_lists)
                and all(_value(value) for row in source.values_lists for value in row.list.items)
            )
        self.returning(stmt, Scope([Relation(name, tuple(table.columns), table)]))

    def on_conflict(self, clause: pb.OnConflictClause, table: Table, name: str) -> None:
        """DO NOTHING needs nothing more; DO UPDATE is an UPDATE of the conflicting row and is checked as one.

        Arbiter columns and `excluded.*` count as reads of the table, as PostgreSQL counts them."""
        columns = tuple(table.columns)
        scope = Scope([Relation(name, columns, table)])
        self.conflict_arbiter(clause, table)
        if clause.HasField("infer"):
            infer = clause.infer
            for item in infer.index_elems:
                element = item.index_elem
                if element.HasField("expr") or element.collation or element.opclass or element.opclassopts:
                    self.unsupported(element, "an expression, collation or operator class as a conflict target")
                elif element.name not in table.columns:
                    self.deny("unknown_column", f"column {table.name}.{element.name} does not exist", infer)
                else:
                    self.access("select", table, element.name, infer)
            self.expression(infer.where_clause, scope)
        if clause.action != pb.ONCONFLICT_UPDATE:
            return
        if name == "excluded":  # the tenant predicate must name the existing row, never the proposed one
            self.deny("invalid", "the target of ON CONFLICT DO UPDATE cannot be called excluded", clause)
            return
        scope.relations.append(Relation("excluded", columns, table))
        self.assignments(clause.target_list, table, scope)
        self.expression(clause.where_clause, scope)

    def update(self, stmt: pb.UpdateStmt) -> None:
        if stmt.HasField("with_clause"):
            self.unsupported(stmt.with_clause, "WITH on UPDATE")
        table = self.base_table(stmt.relation)
        if table is None:
            return
        scope = Scope([Relation(self.target_name(stmt, table), tuple(table.columns), table)])
        for item in stmt.from_clause:
            self.from_item(item, scope, {})
        self.assignments(stmt.target_list, table, scope)
        self.where(stmt, scope)
        self.returning(stmt, scope)

    def written_row(self, stmt: pb.InsertStmt, families: list[TypeFamily | None], copies: tuple[int, ...]) -> None:
        for item, family, count in zip(stmt.cols, families, copies, strict=False):
            self.written(family, count, item.res_target.name, item.res_target)

    def assignments(self, targets: Any, table: Table, scope: Scope) -> None:
        """The SET list of an UPDATE (or of ON CONFLICT DO UPDATE): each column needs an update rule."""
        for item in targets:
            target = item.res_target
            if target.val.WhichOneof("node") == "multi_assign_ref" or target.indirection:
                self.unsupported(target, "multi-column or subscripted SET")
                continue
            if target.name not in table.columns:
                self.deny("unknown_column", f"column {table.name}.{target.name} does not exist", target)
                continue
            self.writes_tenant_column(table, target.name, target)
            self.writes_key_column(table, target.name, target, update=True)
            self.access("update", table, target.name, target)
            before, promoted = self.copies, self.promoted
            self.expression(target.val, scope)
            self.check_copies(self.copies - before, f"column {target.name}", target)
            read = self.copies - before - min(1, self.promoted - promoted)  # one factor: `credit * $1`
            self.written(table.columns[target.name], read, target.name, target)
            self.typed_value(table.columns[target.name], target.val)

    def delete(self, stmt: pb.DeleteStmt) -> None:
        if stmt.HasField("with_clause"):
            self.unsupported(stmt.with_clause, "WITH on DELETE")
        table = self.base_table(stmt.relation)
        if table is None:
            return
        self.access("delete", table, None, stmt.relation)
        self.deletes_referenced(table, stmt.relation)
        scope = Scope([Relation(self.target_name(stmt, table), tuple(table.columns), table)])
        for item in stmt.using_clause:
            self.from_item(item, scope, {})
        self.where(stmt, scope)
        self.returning(stmt, scope)

    def target_name(self, stmt: Any, table: Table) -> str:
        alias = _alias(stmt.relation)
        name = alias.aliasname if alias is not None else table.name
        self.target = Target(stmt, table, name)
        return name

    def where(self, stmt: Any, scope: Scope) -> None:
        if stmt.where_clause.WhichOneof("node") == "current_of_expr":
            self.unsupported(stmt.where_clause.current_of_expr, "WHERE CURRENT OF")
            return
        self.expression(stmt.where_clause, scope)
        target = self.target
        self.where_missing = target is None or not restricts(stmt.where_clause, target.name, target.table)

    def returning(self, stmt: Any, scope: Scope) -> None:
        if not stmt.HasField("returning_clause"):
            return
        clause = stmt.returning_clause
        if clause.options:
            self.unsupported(clause, "RETURNING WITH (OLD/NEW)")
        columns, copies = self.target_list(clause.exprs, scope)
        self.check_row(columns, copies, clause)

    def writes_tenant_column(self, table: Table, column: str, node: Any) -> None:
        if column == TENANT_COLUMN and self.tenant is not None and table.pooled:
            self.deny("tenant_column", f"{table.name}.{TENANT_COLUMN} is set by Paybill, never by an agent", node)

    # -- keys: in a pooled table, a key without the tenant column spans every tenant's rows --------------

    def writes_key_column(self, table: Table, column: str, node: Any, update: bool) -> None:
        """Writing a column of such a key collides with (23505), references (23503, FOR KEY SHARE) or, for an
        UPDATE, is referenced by other tenants' rows; a foreign key's ON UPDATE action writes another table."""
        keys = self.schema.keys[table.name]
        if self.tenant is not None and table.pooled:
            key = keys.unscoped.get(column) or (keys.unscoped_referenced.get(column) if update else None)
            if key is not None:
                self.deny(
                    "tenant_unsafe_key",
                    f"{table.name}.{column}: {key.describe()} on {key.table} does not "
                    f"include {TENANT_COLUMN}, so writing it depends on other tenants' rows",
                    node,
                )
        writing = keys.writing_referenced.get(column) if update else None
        if writing is not None:
            self.deny(
                "foreign_key_action",
                f"{table.name}.{column}: {writing.describe()} on {writing.table} is "
                f"ON UPDATE {WRITING_ACTIONS[writing.on_update]}, a write no rule names",
                node,
            )

    def conflict_arbiter(self, clause: pb.OnConflictClause, table: Table) -> None:
        """ON CONFLICT's arbiter must include the tenant column, or the conflicting row may be another tenant's
        (DO NOTHING's row count shows it exists; DO UPDATE locks it before its WHERE is evaluated)."""
        if self.tenant is None or not table.pooled:
            return
        keys = self.schema.keys[table.name]
        if not clause.HasField("infer"):
            if keys.unscoped_unique:
                self.deny(
                    "tenant_unsafe_key",
                    f"ON CONFLICT without a target on {table.name} arbitrates on "
                    f"{keys.unscoped_unique[0].describe()}, which does not include "
                    f"{TENANT_COLUMN}",
                    clause,
                )
            return
        infer = clause.infer
        if infer.conname:
            key = keys.unique_by_name.get(infer.conname)
            if key is None or not key.tenant_scoped:
                self.deny(
                    "tenant_unsafe_key",
                    f"ON CONFLICT ON CONSTRAINT {infer.conname}: not a unique key of "
                    f"{table.name} known to include {TENANT_COLUMN}",
                    infer,
                )
            return
        names = [item.index_elem.name for item in infer.index_elems]
        if TENANT_COLUMN not in names and all(names):  # an expression target is refused as unsupported
            self.deny(
                "tenant_unsafe_key",
                f"ON CONFLICT ({', '.join(names)}) on {table.name} does not include "
                f"{TENANT_COLUMN}: the conflicting row may be another tenant's",
                infer,
            )

    def deletes_referenced(self, table: Table, node: Any) -> None:
        """Other tenants' rows referencing a deleted row make the DELETE fail; an ON DELETE action writes them."""
        keys = self.schema.keys[table.name]
        key = keys.unscoped_referencing if self.tenant is not None and table.pooled else None
        if key is not None:
            self.deny(
                "tenant_unsafe_key",
                f"{table.name} is referenced by {key.describe()} on {key.table}, which "
                f"does not include {TENANT_COLUMN}: deleting depends on other tenants' "
                "rows",
                node,
            )
        if keys.writing_on_delete is not None:
            writing = keys.writing_on_delete
            self.deny(
                "foreign_key_action",
                f"{table.name} is referenced by {writing.describe()} on {writing.table}, "
                f"ON DELETE {WRITING_ACTIONS[writing.on_delete]}: a write no rule names",
                node,
            )

    # -- FROM ------------------------------------------------------------------------------------

    def base_table(self, range_var: pb.RangeVar) -> Table | None:
        return self.table_named(range_var, range_var.catalogname, range_var.schemaname, range_var.relname)

    def table_named(self, range_var: pb.RangeVar, catalog: str, schema: str, name: str) -> Table | None:
        """`base_table`, with the names of `range_var` already read."""
        if catalog or schema not in ("", self.schema.name):
            qualified = ".".join(p for p in (catalog, schema, name) if p)
            self.deny("other_schema", f"{qualified}: only tables of the tenant schema are admitted", range_var)
            return None
        table = self.schema.tables.get(name)
        if table is None:
            self.deny("unknown_table", f"table {name} does not exist in the tenant schema", range_var)
        return table

    def from_item(self, item: pb.Node, scope: Scope, ctes: dict[str, Relation], position: int | None = None) -> None:
        kind = item.WhichOneof("node")
        if kind == "range_var":
            range_var = item.range_var
            alias = _alias(range_var)
            if alias is not None and alias.colnames:
                self.unsupported(alias, "column aliases on a table")
            catalog, schema, relname = range_var.catalogname, range_var.schemaname, range_var.relname
            name = alias.aliasname if alias is not None else relname
            if not schema and not catalog and relname in ctes:
                cte = ctes[relname]
                scope.relations.append(Relation(name, cte.columns, sources=cte.sources, copies=cte.copies))
                return
            table = self.table_named(range_var, catalog, schema, relname)
            if table is None:
                return
            self.access("select", table, None, range_var)
            slot = FromSlot(item, range_var, table, position=position)
            scope.relations.append(Relation(name, tuple(table.columns), table, slot=slot))
            self.from_slots.append(slot)
        elif kind == "join_expr":
            join = item.join_expr
            if join.is_natural:
                self.unsupported(join, "NATURAL JOIN")
            if join.HasField("alias") or join.HasField("join_using_alias"):
                self.unsupported(join, "an aliased JOIN")
            self.from_item(join.larg, scope, ctes)
            self.from_item(join.rarg, scope, ctes)
            for name in _names(join.using_clause):
                matches = [r for r in scope.relations if name in r.columns]
                if len(matches) < 2:
                    self.deny("unknown_column", f"USING column {name} is not on both sides", join)
                for relation in matches:
                    if relation.table is not None:
                        self.access("select", relation.table, name, join)
            self.expression(join.quals, scope)
            self.copies = 0  # a condition: it builds no value of the FROM list
        elif kind == "range_subselect":
            subselect = item.range_subselect
            outer = scope if subselect.lateral else scope.parent
            columns, sources = self.select(subselect.subquery.select_stmt, outer, ctes)
            copies = self.output_copies
            self.fences.append(subselect.subquery.select_stmt)
            alias = _alias(subselect)
            if alias is not None and alias.colnames:
                columns = tuple(_names(alias.colnames))
            name = alias.aliasname if alias is not None else ""
            scope.relations.append(Relation(name, columns, sources=sources, copies=copies))
        elif kind == "range_function":
            self.deny("set_returning_function", "functions in FROM are never admitted", item.range_function)
        else:
            self.unsupported(unwrap(item))

    # -- target lists and expressions -----------------------------------------------------------

    def target_list(self, targets: Any, scope: Scope) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """The output columns of a target list, and how many values each is built of."""
        names: list[str] = []
        copies: list[int] = []
        for item in targets[:]:
            target = item.res_target
            value = target.val
            before = self.copies
            if value.WhichOneof("node") == "column_ref":  # the common case, without a second dispatch
                ref = value.column_ref
                parts = _column_names(ref)
                if parts is None:
                    columns, counts = self.star(ref, scope)
                    names.extend(columns)
                    copies.extend(counts)
                    continue
                found = self.named_column(ref, parts, scope)
                if found is not None and not target.name:  # its output name, without a second walk
                    names.append(found[1])
                    copies.append(max(1, self.copies - before))
                    continue
            else:
                self.expression(value, scope)
            names.append(target.name or _output_name(value))
            copies.append(max(1, self.copies - before))  # one value, if made of constants only
        return tuple(names), tuple(copies)

    def star(self, ref: pb.ColumnRef, scope: Scope) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """Expand `*` or `rel.*` into the columns it reads, each checked like a named column, with how many values
        each is built of."""
        if len(ref.fields) == 1:
            relations = scope.relations
        elif len(ref.fields) == 2:
            name = ref.fields[0].string.sval
            relation = scope.find(name)
            if relation is None:
                self.deny("unknown_table", f"{name} is not in the FROM clause", ref)
                return (), ()
            relations = [relation]
        else:
            self.deny("other_schema", "qualified star references are not admitted", ref)
            return (), ()
        if not relations:
            self.deny("invalid", "* needs a FROM clause", ref)
        columns: list[str] = []
        copies: list[int] = []
        for relation in relations:
            self.whole_row(relation, ref)
            columns.extend(relation.columns)
            copies.extend(
                relation.copies
                if len(relation.copies) == len(relation.columns)
                else [relation.copies_of(column) for column in relation.columns]
            )
        self.copies += sum(copies)
        return tuple(columns), tuple(copies)

    def whole_row(self, relation: Relation, node: Any) -> None:
        """A reference to every column of `relation` (checked here; the caller counts what it is built of)."""
        if relation.table is not None:
            for column in relation.columns:
                self.access("select", relation.table, column, node)

    def column(self, ref: pb.ColumnRef, scope: Scope, outputs: tuple[str, ...] = ()) -> tuple[Relation, str] | None:
        names = _column_names(ref)
        if names is None:  # a row value (a target list's * is expanded by target_list)
            before = self.copies
            self.star(ref, scope)
            self.copies += self.copies - before  # as a row
            return None
        return self.named_column(ref, names, scope, outputs)

    def named_column(
        self, ref: pb.ColumnRef, names: list[str], scope: Scope, outputs: tuple[str, ...] = ()
    ) -> tuple[Relation, str] | None:
        """A column reference that is not `*` (its `_column_names`): the relation and column it reads, when it
        names one."""
        if len(names) == 1:
            name = names[0]
            search: Scope | None = scope
            while search is not None:
                found = [r for r in search.relations if name in r.columns]
                if len(found) > 1:
                    self.deny("ambiguous_column", f"column reference {name} is ambiguous", ref)
                    return None
                if found:
                    self.columns_read += 1
                    if found[0].table is not None:
                        self.access("select", found[0].table, name, ref)
                    else:
                        self.copies += found[0].copies_of(name) - 1
                    self.copies += 1
                    return found[0], name
                search = search.parent
            if name in outputs:  # GROUP BY or ORDER BY an output column: a value already counted
                self.copies += 1
                return None
            whole = scope.find(name)
            if whole is not None:  # a whole-row reference reads every column
                self.whole_row(whole, ref)
                self.copies += 2 * whole.copies_of_row()  # as a row
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
            self.columns_read += 1
            if relation.table is not None:
                self.access("select", relation.table, names[1], ref)
            self.copies += relation.copies_of(names[1])
            return relation, names[1]
        self.deny("other_schema", f"{'.'.join(names)}: qualified column references are not admitted", ref)
        return None

    def expressions(self, nodes: Any, scope: Scope) -> None:
        for node in nodes[:]:
            self.expression(node, scope)

    def expression(self, node: pb.Node, scope: Scope, outputs: tuple[str, ...] = (), which: str | None = None) -> None:
        """`which`: the node's kind when the caller has read it already."""
        kind = node.WhichOneof("node") if which is None else which
        if kind is None:
            return
        self.nodes += 1
        if kind == "a_const":
            const = node.a_const
            which_value = const.WhichOneof("val")
            if which_value == "fval":
                digits = numeric_digits(const.fval.fval)
                self.constants_printed += digits
                if digits > SHORT_CONSTANT:
                    self.copied_value(const)
                if digits > MAX_NUMERIC_DIGITS:
                    shown = const.fval.fval[:20]
                    self.deny(
                        "numeric_too_long",
                        f"numeric constant {shown} has more than {MAX_NUMERIC_DIGITS} digits written out",
                        const,
                    )
            elif which_value == "sval":  # PostgreSQL may read it as a number or JSON where one is expected
                text = const.sval.sval
                self.constants_printed += printed_size(text)
                if len(text) > SHORT_CONSTANT:
                    self.copied_value(const)
                why = prints_long(text)
                if why is not None:
                    self.deny("numeric_too_long", f"constant {text[:20]!r} reads as {why}", const)
            return
        # self.copies: what this node's value is made of is added to it (a column or parameter 1, a constant nothing,
        # a concatenation or function the sum of its operands, a condition 1, a choice its largest branch)
        before = self.copies
        if kind == "column_ref":
            self.column(node.column_ref, scope, outputs)
        elif kind == "param_ref":
            param = node.param_ref
            number = param.number
            if not self.param_in_range(param):
                return
            if number in self.params:  # used again: a copy of what the agent sent once
                self.copies += 1
            self.params.add(number)
            self.copied_value(param)
        elif kind == "a_expr":
            self.operator(node.a_expr, scope)
        elif kind == "func_call":
            self.function(node.func_call, scope)
        elif kind == "type_cast":
            cast = node.type_cast
            padded = self.cast(cast)
            if _names(cast.type_name.names)[-1] in NUMERIC_TYPES:
                self.numeric_source(cast, self.resolved(cast.arg, scope))
            else:
                self.expression(cast.arg, scope)
            if padded:  # a value of its own size, whatever it was made of
                self.copies = max(self.copies, before + 1)
        elif kind == "bool_expr":
            self.expressions(node.bool_expr.args, scope)
            self.copies = before + 1
        elif kind == "coalesce_expr" or kind == "min_max_expr":  # the value of one argument
            self.copies = before + self.largest(getattr(node, kind).args, scope, getattr(node, kind))
        elif kind == "row_expr":  # printed as text, each quote is escaped: twice as long, and a value (of constants)
            self.expressions(node.row_expr.args, scope)
            self.copies = before + 2 * max(1, self.copies - before)
        elif kind in ARGUMENT_LISTS:
            self.expressions(getattr(node, kind).args, scope)
        elif kind == "null_test" or kind == "boolean_test":
            self.expression(getattr(node, kind).arg, scope)
            self.copies = before + 1
        elif kind == "case_expr":
            case = node.case_expr
            self.expression(case.arg, scope)
            results = [case.defresult]
            for when in case.args:
                self.expression(when.case_when.expr, scope)
                results.append(when.case_when.result)
            self.copies = before + self.largest(results, scope, case)
        elif kind == "a_array_expr":  # as a row
            self.expressions(node.a_array_expr.elements, scope)
            self.copies = before + 2 * max(1, self.copies - before)
        elif kind == "list":
            self.expressions(node.list.items, scope)
        elif kind == "sub_link":
            link = node.sub_link
            if link.sub_link_type not in SUBLINKS:
                self.unsupported(link, f"{pb.SubLinkType.Name(link.sub_link_type)} subquery")
            if link.oper_name:
                self.operator_name(_names(link.oper_name), OPERATORS, link)
                if _names(link.oper_name)[-1] in LIKE_OPERATORS:  # patterns a subquery gives
                    self.pattern_params.add(0)
            self.expression(link.testexpr, scope)
            self.select(link.subselect.select_stmt, scope, scope.ctes)
            made = max(self.output_copies, default=1) if link.sub_link_type == pb.EXPR_SUBLINK else 1
            self.copies = before + made
        elif kind == "sqlvalue_function":
            function = node.sqlvalue_function
            if function.op not in TIME_VALUE_FUNCTIONS:
                self.deny(
                    "session_information",
                    f"{pb.SQLValueFunctionOp.Name(function.op)} reads session information",
                    function,
                )
            self.copies += 1
        else:
            self.unsupported(getattr(node, kind))
        made = self.copies - before
        if made > self.max_copies:
            self.check_copies(made, "a value", getattr(node, kind))

    def numeric_source(self, cast: pb.TypeCast, column: TypeFamily | None) -> None:
        """A cast to numeric reads a number: a column of numbers or JSON, a constant, a parameter, or arithmetic and
        aggregates over them. Text, stored or built by the statement (`('1e' || '131071')::numeric`), has digits
        without bound, and numeric arithmetic does not stop for a cancel."""
        if column in NUMBER_COLUMNS or (column is None and _plain_number(cast.arg)):
            return
        self.deny(
            "value_growth",
            "a cast to numeric may read a number only: a column of numbers or JSON, a constant, a parameter, or"
            " arithmetic over them (text has digits without bound)",
            cast,
        )

    def largest(self, nodes: Any, scope: Scope, choice: Any) -> int:
        """Walk `nodes`, of which one gives the value; what the largest is made of (1 for none). All of them are
        built (GREATEST's arguments; planning folds every branch over constants and parameters): together they are
        held to max_copies."""
        start = self.copies
        most = 1
        total = 0
        for node in nodes:
            self.copies = start
            self.expression(node, scope)
            most = max(most, self.copies - start)
            total += self.copies - start
        self.copies = start
        if total > self.max_copies:
            self.check_copies(total, "the branches of a choice together", choice)
        return most

    def window(self, window: pb.WindowDef, scope: Scope) -> None:
        """A window reads what its PARTITION BY, ORDER BY and frame offsets read."""
        self.expressions(window.partition_clause, scope)
        for sort in window.order_clause:
            self.sort(sort.sort_by, scope)
        self.expression(window.start_offset, scope)
        self.expression(window.end_offset, scope)

    def sort(self, sort: pb.SortBy, scope: Scope, outputs: tuple[str, ...] = ()) -> None:
        if sort.sortby_dir == pb.SORTBY_USING:
            self.operator_name(_names(sort.use_op), ORDERINGS, sort)
        self.expression(sort.node, scope, outputs=outputs)

    def cast(self, node: pb.TypeCast) -> bool:
        """Names are compared exactly: the parser has already folded unquoted ones, "TEXT" is another type. True for
        a cast that pads its value (char(n))."""
        type_name = node.type_name
        names = _names(type_name.names)
        if len(names) > 2 or (len(names) == 2 and names[0] != "pg_catalog") or names[-1] not in CASTS:
            self.deny("cast_not_allowed", f"cast to {'.'.join(names)} is not admitted", node)
        if type_name.array_bounds or type_name.setof or type_name.pct_type:
            self.deny("cast_not_allowed", "array, SETOF and %TYPE casts are not admitted", node)
        padded = False
        for index, modifier in enumerate(type_name.typmods):
            if modifier.WhichOneof("node") != "a_const" or modifier.a_const.WhichOneof("val") != "ival":
                self.deny("cast_not_allowed", f"cast to {'.'.join(names)}: type modifiers must be integers", node)
            elif names[-1] in NUMERIC_TYPES and index == 1 and modifier.a_const.ival.ival > MAX_NUMERIC_SCALE:
                self.deny(  # numeric(p, s) pads to s digits after the point
                    "value_growth",
                    f"numeric(p, {modifier.a_const.ival.ival}) pads to that many digits (a scale of at most"
                    f" {MAX_NUMERIC_SCALE})",
                    node,
                )
            elif names[-1] == "bpchar":
                padded = True
                length = modifier.a_const.ival.ival
                if length > MAX_PADDED:
                    self.deny(
                        "value_growth",
                        f"char({length}) pads a value to {length} characters (at most {MAX_PADDED})",
                        node,
                    )
        return padded

    def function(self, node: pb.FuncCall, scope: Scope) -> None:
        before = self.copies
        names = _names(node.funcname)  # exact: "LOWER" is not lower
        name = names[-1]
        if len(names) > 2 or (len(names) == 2 and names[0] != "pg_catalog"):
            self.deny("other_schema", f"function {'.'.join(names)}: only unqualified functions are admitted", node)
        elif name in UNSAFE_FUNCTIONS or name.startswith(UNSAFE_PREFIXES):
            self.deny("unsafe_function", f"function {name} is never admitted", node)
        elif name not in self.rules.functions:
            self.deny("function_not_allowed", f"function {name} is not in the policy's allowlist", node)
        if node.func_variadic:
            self.unsupported(node, "VARIADIC")
        made_of: list[int] = []
        for arg in node.args[:]:
            if arg.WhichOneof("node") == "named_arg_expr":
                self.unsupported(arg.named_arg_expr, "named arguments")
            else:
                start = self.copies
                self.expression(arg, scope)
                made_of.append(_factor(self.copies - start, arg))
        if name in PRODUCT_FUNCTIONS and len(made_of) == 2:
            self.count_product(made_of[0], made_of[1], node)
        # its value: what its arguments are built of (a value, without any); its window, order and filter build none
        made = max(self.copies, before + 1)
        if node.HasField("over"):
            self.window(node.over, scope)
        for sort in node.agg_order:
            self.sort(sort.sort_by, scope)
        self.expression(node.agg_filter, scope)
        self.copies = made

    def operator(self, node: pb.A_Expr, scope: Scope) -> None:
        kind = node.kind
        if kind not in A_EXPR_KINDS:
            self.unsupported(node, f"{pb.A_Expr_Kind.Name(kind)} expression")
            return
        names = _names(node.name)
        if kind not in (pb.AEXPR_BETWEEN, pb.AEXPR_NOT_BETWEEN):  # their name is the keyword
            self.operator_name(names, OPERATORS, node)
        before = self.copies
        after_left, left = self.operands(node, kind, names, scope)
        if kind in (pb.AEXPR_LIKE, pb.AEXPR_ILIKE) or (len(names) == 1 and names[0] in LIKE_OPERATORS):
            self.pattern(node.rexpr, node)
        elif names == ["="]:  # and IN: the planner folds an operand of constants and parameters to one constant
            for side in (node.lexpr, node.rexpr):
                which = side.WhichOneof("node")
                if which == "param_ref":
                    self.equated_params.add(side.param_ref.number)
                elif which not in ("column_ref", "a_const", None):  # the common `column = $1` walks nothing
                    self.equated_params.update(_params_in(side))
        if kind == pb.AEXPR_OP:
            name = names[0] if len(names) == 1 else ""
            if name in JSON_FIELDS and not (left is TypeFamily.JSON or _json_field(node.lexpr)):
                # by type, PostgreSQL could find a tenant's own `->` on text: only json(b) columns, and their fields
                self.deny("operator_not_allowed", f"operator {name} reads a field of a json or jsonb column only", node)
            if name in PRODUCTS:
                self.product(node, before, after_left)
            if name in TESTS:
                self.copies = before + 1  # a test: its value is a boolean
            elif name in LARGER_OPERAND:
                self.copies = before + max(after_left - before, self.copies - after_left, 1)
        elif kind != pb.AEXPR_NULLIF:  # its first operand (named "=")
            self.copies = before + 1

    def pattern(self, node: pb.Node, like: pb.A_Expr) -> None:
        """A LIKE pattern (or the array ANY/ALL matches against): its constants together at most MAX_PATTERN
        characters; its parameters are held to that when bound (engine). A pattern read from a column is the
        tenant's data."""
        self.likes += self.multiplier
        if self.likes > MAX_LIKES and not self.grows:
            self.grows = True
            self.deny(
                "value_growth",
                f"more than {MAX_LIKES} LIKE matches: each is the text's length times the pattern's, and matching does"
                " not stop for a cancel",
                like,
            )
        written = 0
        for leaf in _leaves(node):
            kind = leaf.WhichOneof("node")
            if kind == "a_const" and leaf.a_const.WhichOneof("val") == "sval":
                written += len(leaf.a_const.sval.sval)
            elif kind == "param_ref":
                self.pattern_params.add(leaf.param_ref.number)
            elif kind != "a_const":
                self.pattern_params.add(0)  # a column, a subquery, a CASE ...: every parameter may reach it
        if written > MAX_PATTERN:
            self.deny(
                "value_growth",
                f"a LIKE pattern of {written} characters (at most {MAX_PATTERN}): matching does not stop for a cancel",
                like,
            )

    def product(self, node: pb.A_Expr, before: int, after_left: int) -> None:
        """Count a product, quotient or remainder and its work (see MAX_NUMERIC_WORK); deny (once) past the bounds."""
        left = _factor(after_left - before, node.lexpr)
        right = _factor(self.copies - after_left, node.rexpr)
        if _names(node.name)[0] != "%":  # a remainder is no longer than its operands
            made = left + right
            self.promoted += made - (self.copies - before)
            self.copies = before + made
        self.count_product(left, right, node)

    def copied(self, extra: int, marks: tuple[int, int, int], node: pb.A_Expr) -> None:
        """PostgreSQL copies IN's left operand for each element that reads a column (`a = e1 OR a = e2 ...`) and
        BETWEEN's for its second comparison: what was walked since `marks` (nodes, products, work) counts `extra` times
        more, and nested copies compound (a BETWEEN of a BETWEEN of ...: 21 levels in 569 bytes took 3.6 GB)."""
        nodes = (self.nodes - marks[0]) * extra
        self.nodes += nodes
        self.expanded += nodes
        self.products += (self.products - marks[1]) * extra
        self.numeric_work += (self.numeric_work - marks[2]) * extra
        if self.expanded > MAX_EXPANDED and not self.grows:
            self.grows = True
            self.deny(
                "value_growth",
                f"the left operands of IN and BETWEEN, copied for each comparison PostgreSQL makes of them, come to"
                f" {self.expanded} more expression nodes (at most {MAX_EXPANDED})",
                node,
            )
        self.check_products(node)

    def count_product(self, left: int, right: int, node: Any) -> None:
        self.products += 1
        self.numeric_work += max(1, left) * max(1, right)
        self.check_products(node)

    def check_products(self, node: Any) -> None:
        if self.grows:
            return
        if self.products > self.max_products or self.numeric_work > self.max_numeric_work:
            self.grows = True
            self.deny(
                "value_growth",
                f"{self.products} products, quotients and remainders of work {self.numeric_work} (at most"
                f" {self.max_products} and {self.max_numeric_work}: the product of what the two operands are made of,"
                " summed): numeric arithmetic on long numbers does not stop for a cancel",
                node,
            )

    def operands(self, node: pb.A_Expr, kind: int, names: list[str], scope: Scope) -> tuple[int, TypeFamily | None]:
        """Walk both operands; `self.copies` once the left one was walked, and the left one's type family if it is a
        base-table column."""
        left_node = node.lexpr
        marks = (self.nodes, self.products, self.numeric_work)
        copies = _left_copies(kind, node.rexpr)
        enclosing = self.multiplier
        self.multiplier *= copies
        left: TypeFamily | None = self.resolved(left_node, scope)
        self.multiplier = enclosing
        if copies > 1:
            self.copied(copies - 1, marks, node)
        after_left = self.copies
        right = node.rexpr
        right_kind = right.WhichOneof("node")
        if right_kind == "list":
            self.expressions(right.list.items, scope)
        else:
            right_column = self.resolved(right, scope, right_kind)
            if left is None and right_column is not None:
                self.typed_operand(right_column, left_node, kind, names)
                return after_left, left
        if left is None:
            return after_left, left
        if kind in LISTS and right_kind == "list":
            for value in right.list.items:
                self.typed_value(left, value)
        elif kind in (pb.AEXPR_OP_ANY, pb.AEXPR_OP_ALL):
            if right_kind == "param_ref":
                self.expect_param(right.param_ref, _PARAM_TYPES[left, True])
            elif right_kind == "a_array_expr":
                for value in right.a_array_expr.elements:
                    self.typed_value(left, value)
        else:
            self.typed_operand(left, right, kind, names, right_kind)
        return after_left, left

    def operator_name(self, names: list[str], allowed: frozenset[str], node: Any) -> None:
        """An operator wherever it stands (expression, ANY/ALL subquery, ORDER BY USING): unqualified and listed."""
        if len(names) != 1:
            self.deny("operator_not_allowed", f"OPERATOR({'.'.join(names)}) is not admitted", node)
        elif names[0] not in allowed:
            self.deny("operator_not_allowed", f"operator {names[0]} is not admitted", node)

    def typed_operand(
        self, family: TypeFamily, value: pb.Node, kind: int, names: list[str], which: str | None = None
    ) -> None:
        """The value an operator (of A_Expr `kind`, named `names`) compares with a column of `family`."""
        if kind in (pb.AEXPR_LIKE, pb.AEXPR_ILIKE):
            self.typed_value(TypeFamily.TEXT, value, which)
        elif kind != pb.AEXPR_OP or names[0] in COMPARISONS:
            self.typed_value(family, value, which)

    def resolved(self, node: pb.Node, scope: Scope, which: str | None = None) -> TypeFamily | None:
        """Walk an operand; for a base-table column, also return its type family."""
        if which is None:
            which = node.WhichOneof("node")
        if which == "column_ref":
            ref = node.column_ref
            names = _column_names(ref)
            if names is not None:
                self.nodes += 1
                found = self.named_column(ref, names, scope)
                if found is not None and found[0].table is not None:
                    return found[0].table.columns[found[1]]
                return None
        self.expression(node, scope, which=which)
        return None

    # -- literal and parameter types -----------------------------------------------------------

    def expect_param(self, param: pb.ParamRef, expected: ParamType) -> None:
        if not self.param_in_range(param):
            return
        number = param.number
        self.params.add(number)
        self.param_types.setdefault(number, expected)
        self.copied_value(param)

    def param_in_range(self, param: pb.ParamRef) -> bool:
        """$1 .. $MAX_PARAMS (a number past it is never recorded: $2147483647 would make a set of that many)."""
        if 1 <= param.number <= MAX_PARAMS:
            return True
        self.deny("invalid", f"parameter ${param.number} is out of range", param)
        return False

    def copied_value(self, node: Any) -> None:
        """A parameter or a long constant where PostgreSQL copies it (IN's and BETWEEN's left operand): each copy is
        another copy of its value in the plan (`$1 IN (s, s, ...)` with 4 MB: 1.5 GB in the backend)."""
        if self.multiplier > MAX_VALUE_COPIES and not self.grows:
            self.grows = True
            self.deny(
                "value_growth",
                f"a parameter or long constant PostgreSQL copies {self.multiplier} times (the left operand of IN or"
                f" BETWEEN; at most {MAX_VALUE_COPIES})",
                node,
            )

    def typed_value(self, family: TypeFamily, value: pb.Node, which: str | None = None) -> None:
        """`which`: the value's kind when the caller has read it already."""
        kind = value.WhichOneof("node") if which is None else which
        if kind == "param_ref":
            self.expect_param(value.param_ref, _PARAM_TYPES[family, False])
        elif kind == "a_const" and not value.a_const.isnull:
            const = value.a_const
            literal = const.WhichOneof("val")
            if literal == "sval":
                python: Any = const.sval.sval
                ok = literal_fits(family, python)
            elif literal == "fval":
                python = const.fval.fval
                ok = value_fits(family, float(python))
            else:
                python = (
                    const.ival.ival if literal == "ival" else (const.boolval.boolval if literal == "boolval" else None)
                )
                ok = value_fits(family, python)
            if not ok:
                shown = repr(python) if len(repr(python)) <= 40 else repr(python)[:37] + "..."
                self.deny("type_mismatch", f"{shown} is not a valid {family} value", const)


def restricts(where: pb.Node, name: str, table: Table) -> bool:
    """Does `where` pick rows of `table` (called `name` in its statement) by a value, as requireWhere demands?

    Yes for a non-boolean column of the table compared with literals or parameters by =, IN or = ANY; for a range
    bounded on both sides (BETWEEN, or a lower and an upper bound on the same column in one AND), never by an
    infinity or NaN; for LIKE/ILIKE with a literal prefix (no leading % or _, never a parameter); for an AND when
    one conjunct does; for an OR when every branch does. Nothing else counts: `id = id`, `id IS NOT NULL`,
    `EXISTS (...)`, NOT, `<>`, a one-sided range (`status >= ''`), a boolean (`paid = true OR paid = false`)."""
    kind = where.WhichOneof("node")
    if kind == "bool_expr":
        expr = where.bool_expr
        if expr.boolop == pb.AND_EXPR:
            return any(restricts(arg, name, table) for arg in expr.args) or _closed_range(expr.args, name, table)
        if expr.boolop == pb.OR_EXPR:
            return all(restricts(arg, name, table) for arg in expr.args)
        return False
    if kind != "a_expr":
        return False
    expr = where.a_expr
    operator = expr.name[0].string.sval if len(expr.name) == 1 else None
    left, right = expr.lexpr, expr.rexpr
    if expr.kind == pb.AEXPR_OP and operator == "=":
        return (_key_column(left, name, table) and _value(right)) or (_key_column(right, name, table) and _value(left))
    if not _key_column(left, name, table):
        return False
    if expr.kind in (pb.AEXPR_BETWEEN, pb.AEXPR_BETWEEN_SYM):
        return right.WhichOneof("node") == "list" and all(_bound(v) for v in right.list.items)
    if expr.kind == pb.AEXPR_IN:
        return operator == "=" and right.WhichOneof("node") == "list" and all(_value(v) for v in right.list.items)
    if expr.kind == pb.AEXPR_OP_ANY and operator == "=":
        values = right.WhichOneof("node")
        return values == "param_ref" or (
            values == "a_array_expr"
            and all(_value(v) for v in right.a_array_expr.elements)
            and bool(right.a_array_expr.elements)
        )
    if expr.kind in (pb.AEXPR_LIKE, pb.AEXPR_ILIKE) and operator in ("~~", "~~*"):
        # a parameter never counts: its value ('%') is unknown here, and the decision is cached without it
        pattern = _literal(right)
        return (
            pattern is not None
            and pattern.WhichOneof("node") == "a_const"
            and pattern.a_const.WhichOneof("val") == "sval"
            and pattern.a_const.sval.sval[:1] not in ("", "%", "_")
        )
    return False


_LOWER_BOUNDS = {">": True, ">=": True, "<": False, "<=": False}  # operator -> bounds from below (column on the left)
_UNBOUNDED = frozenset({"infinity", "+infinity", "-infinity", "inf", "+inf", "-inf", "nan"})


def _closed_range(conjuncts: Sequence[pb.Node], name: str, table: Table) -> bool:
    """Do the conjuncts of one AND bound the same column from below and from above?"""
    lower: set[str] = set()
    upper: set[str] = set()
    for conjunct in conjuncts:
        if conjunct.WhichOneof("node") != "a_expr":
            continue
        expr = conjunct.a_expr
        operator = expr.name[0].string.sval if len(expr.name) == 1 else ""
        if expr.kind != pb.AEXPR_OP or operator not in _LOWER_BOUNDS:
            continue
        from_below = _LOWER_BOUNDS[operator]
        if _key_column(expr.lexpr, name, table) and _bound(expr.rexpr):
            column = expr.lexpr
        elif _key_column(expr.rexpr, name, table) and _bound(expr.lexpr):
            column, from_below = expr.rexpr, not from_below
        else:
            continue
        (lower if from_below else upper).add(column.column_ref.fields[-1].string.sval)
    return bool(lower & upper)


def _key_column(node: pb.Node, name: str, table: Table) -> bool:
    """A column of the target that can pick rows by value: a boolean's two values cover every row."""
    return _target_column(node, name, table) and table.columns[node.column_ref.fields[-1].string.sval] != (
        TypeFamily.BOOLEAN
    )


def _bound(node: pb.Node) -> bool:
    """A literal or parameter that bounds a range: never an infinity or NaN (beyond every value of the type)."""
    value = _literal(node)
    if value is None:
        return False
    text = (
        value.a_const.sval.sval
        if value.WhichOneof("node") == "a_const" and value.a_const.WhichOneof("val") == "sval"
        else ""
    )
    return text.strip().lower() not in _UNBOUNDED


AGGREGATES = frozenset(
    {
        "count",
        "sum",
        "avg",
        "min",
        "max",
        "array_agg",
        "string_agg",
        "bool_and",
        "bool_or",
        "every",
        "json_agg",
        "jsonb_agg",
        "json_object_agg",
        "jsonb_object_agg",
        "bit_and",
        "bit_or",
        "xmlagg",
        "stddev",
        "stddev_pop",
        "stddev_samp",
        "variance",
        "var_pop",
        "var_samp",
    }
)


def _lock_obstacle(stmt: pb.SelectStmt, scope: Scope) -> str | None:
    """Why a row lock on `stmt` could lock rows other than those it returns (None when it cannot): a derived
    table, CTE or function in FROM (a LIMIT inside locks more than the outer LIMIT returns), WITH, DISTINCT,
    GROUP BY, HAVING, or an aggregate or window function (one returned row for many locked)."""
    if any(relation.slot is None for relation in scope.relations):
        return "a subquery, CTE or function in FROM"
    for present, what in (
        (stmt.HasField("with_clause"), "WITH"),
        (bool(stmt.distinct_clause), "DISTINCT"),
        (bool(stmt.group_clause), "GROUP BY"),
        (stmt.HasField("having_clause"), "HAVING"),
        (bool(stmt.window_clause), "a window function"),
    ):
        if present:
            return what
    for node in (*stmt.target_list, *stmt.sort_clause):
        found = _aggregate_or_window(node)
        if found:
            return found
    return None


def _aggregate_or_window(message: Any) -> str | None:
    """An aggregate or window function call anywhere in `message`, outside sublinks (their own level)."""
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None or descriptor.name == "sub_link":
            continue
        for item in value if isinstance(value, Sequence) else (value,):
            if isinstance(item, pb.FuncCall):
                if item.HasField("over"):
                    return "a window function"
                name = item.funcname[-1].string.sval if item.funcname else ""
                if (
                    item.agg_star
                    or item.agg_distinct
                    or item.agg_order
                    or item.HasField("agg_filter")
                    or item.agg_within_group
                    or name.lower() in AGGREGATES
                ):
                    return "an aggregate function"
            found = _aggregate_or_window(item)
            if found:
                return found
    return None


def _target_column(node: pb.Node, name: str, table: Table) -> bool:
    """A column of the written table (bare or qualified by its name), never the tenant column."""
    if node.WhichOneof("node") != "column_ref":
        return False
    fields = node.column_ref.fields
    if (len(fields) == 2 and fields[0].string.sval != name) or len(fields) > 2:
        return False
    last = fields[-1]
    return (
        last.WhichOneof("node") == "string" and last.string.sval in table.columns and last.string.sval != TENANT_COLUMN
    )


def _literal(node: pb.Node) -> pb.Node | None:
    """The literal or parameter `node` is, through casts; None for anything else (columns, expressions)."""
    while node.WhichOneof("node") == "type_cast":
        node = node.type_cast.arg
    kind = node.WhichOneof("node")
    if kind == "param_ref" or (kind == "a_const" and not node.a_const.isnull):
        return node
    return None


def _value(node: pb.Node) -> bool:
    return _literal(node) is not None


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
    if family == TypeFamily.JSON:
        return json_fits(text)
    return True


def long_value(value: Any) -> str | None:
    """What a parameter reads as that prints far longer than it is written (None: nothing); see prints_long."""
    if isinstance(value, list):
        return next((why for why in map(long_value, value) if why is not None), None)
    if isinstance(value, str):
        return prints_long(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _LONG_INTEGER:
        return LONG_NUMBER
    return None


def prints_long(text: str) -> str | None:
    """What `text` reads as that prints far longer than it is written (None: nothing): a number of more than
    MAX_NUMERIC_DIGITS digits written out (numeric arithmetic does not stop for a cancel), or JSON, an array or a
    range holding a number past that or with an exponent past JSON_NUMBER_GROWTH. PostgreSQL reads a string as any of
    them where one is expected ("total + '1e65534'", "doc || '[1e131071]'", "amounts || '{1e131071}'",
    "band = '(0,1e131071]'"), and a range or an array reads a quoted element as a number too (the JSON array
    '["1e131071", "9e131071"]' is a numrange): every number-like run in the text is read, quoted or not."""
    digits = numeric_digits(text)
    if digits:  # a number: its digits are counted where it is used (Analysis.constants_printed, parameter_expansion)
        return LONG_NUMBER if digits > MAX_NUMERIC_DIGITS else None
    # as PostgreSQL's numeric, array and range input read numbers: quotes and backslashes dropped anywhere in an
    # element, whitespace after the exponent's e, "1.e5"
    plain = text.replace("\\", "").replace('"', "")
    if any(len(run) > MAX_NUMERIC_DIGITS for run in _DIGITS.findall(plain)):
        return LONG_ELEMENT
    if any(len(power.lstrip("+-")) > 3 or abs(int(power)) > JSON_NUMBER_GROWTH for power in _EXPONENT.findall(plain)):
        return LONG_ELEMENT
    return None


def _number_fits(written: str) -> bool:
    digits = numeric_digits(written)
    return digits <= MAX_NUMERIC_DIGITS and digits <= len(written) + JSON_NUMBER_GROWTH


_DIGITS = re.compile(r"[0-9]+")
_EXPONENT = re.compile(r"[0-9.][eE]\s*+([+-]?[0-9]+)")  # possessive: no backtracking over whitespace
_LONG_INTEGER = 10**MAX_NUMERIC_DIGITS
LONG_NUMBER = f"a number of more than {MAX_NUMERIC_DIGITS} digits written out"
LONG_ELEMENT = (
    f"JSON, an array or a range holding a number (quoted or not) of more than {MAX_NUMERIC_DIGITS} digits or with an"
    f" exponent past {JSON_NUMBER_GROWTH}"
)


def json_fits(text: str) -> bool:
    """JSON text whose numbers print at most JSON_NUMBER_GROWTH digits longer than they are written (jsonb keeps
    numbers as numeric and prints them in full: '1e999' is 1,000 digits)."""
    return _json_numbers(text) is True


def _json_numbers(text: str) -> bool | None:
    """Do the numbers of JSON `text` print at most MAX_NUMERIC_DIGITS digits, and at most JSON_NUMBER_GROWTH longer
    than written (None: not JSON, or nested deeper than the reader goes)?"""

    def number(written: str) -> str:
        if not _number_fits(written):
            raise _LongJSONNumber(written)
        return written

    try:
        json.loads(text, parse_int=number, parse_float=number)
    except _LongJSONNumber:
        return False
    except (ValueError, RecursionError):
        return None
    return True


class _LongJSONNumber(Exception):
    pass


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


def _output_name(node: pb.Node) -> str:
    kind = node.WhichOneof("node")
    if kind == "column_ref" and node.column_ref.fields[-1].WhichOneof("node") == "string":
        return node.column_ref.fields[-1].string.sval
    if kind == "func_call":
        return node.func_call.funcname[-1].string.sval
    if kind == "type_cast":
        return _output_name(node.type_cast.arg)
    return "?column?"


def location(node: Any) -> int | None:
    """A node's offset in the statement text; None when it has none (-1, or no location field)."""
    location = getattr(node, "location", -1)
    return location if location >= 0 else None
