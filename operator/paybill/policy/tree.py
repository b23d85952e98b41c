"""Parse trees as libpg_query protobuf messages, parsed and deparsed in C by pglast.

pglast's Python AST and printer cost about 300 µs for a short statement; this path (pglast's
`parse_sql_protobuf`, upb-backed messages, pglast's `deparse_protobuf`) does the same round trip in about
20 µs. The message classes are postgast's `pg_query_pb2`, built for the same libpg_query 18 as pglast.

Where the install compiled them, both forms are written in C straight from the parser's nodes: the serialized
ParseResult by `treeprotobuf` (libpg_query's upb encoder visits every member of a Node's oneof for each node), and
the validator's trees, libpg_query's JSON form as dicts (`parse_dicts`), by `treedicts`. Otherwise pglast's
`parse_sql_protobuf`, and libpg_query's JSON text read by orjson: the same trees, slower.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any, Final, TypeVar

import orjson
import pglast
from google.protobuf.message import DecodeError
from pglast.parser import ParseError, deparse_protobuf, parse_sql_json, parse_sql_protobuf
from postgast import pg_query_pb2 as pb

T = TypeVar("T")

__all__ = [
    "SPLICE_SELECT",
    "DecodeError",
    "ParseError",
    "deparse",
    "deparse_serialized",
    "parse",
    "parse_dicts",
    "parse_raw",
    "pb",
    "set_column",
    "set_integer",
    "set_text",
    "unwrap",
]


def _json_dicts(sql: str) -> dict[str, Any]:
    tree: dict[str, Any] = orjson.loads(parse_sql_json(sql))
    return tree


def _native(module: str, function: str, fallback: T) -> T:
    """A function of a C module where it was built for the pglast installed; `fallback` otherwise."""
    try:  # imported by name: a compiled module binds a function's `from ... import` as a global
        native = importlib.import_module(f"paybill.policy.{module}")
    except ImportError:  # not built (no pglast sdist at install), or a stale build (compiled.guard)
        return fallback
    if pglast.__version__ != native.PGLAST_VERSION:  # its structures are another libpg_query's: never read them
        logging.getLogger(__name__).warning(
            "%s was built for pglast %s, not %s: using pglast's own", module, native.PGLAST_VERSION, pglast.__version__
        )
        return fallback
    found: T = getattr(native, function)
    return found


READER: Final = _native("treedicts", "parse", _json_dicts)
SERIALIZER: Final = _native("treeprotobuf", "parse", parse_sql_protobuf)
Splice = Callable[[bytes, dict[int, bytes], bytes, int, int], "bytes | None"]
_NO_SPLICE: Splice | None = None  # typed, so that `_native` returns the function's type, not None's
# rewrite.py's splice of a serialized SELECT, in C; None: rewrite.py splices through shallow protobuf messages
SPLICE_SELECT: Final = _native("treeprotobuf", "splice_select", _NO_SPLICE)


def parse(sql: str) -> pb.ParseResult:
    """Raises ParseError for bad SQL and DecodeError or RecursionError for a tree nested too deeply."""
    return pb.ParseResult.FromString(SERIALIZER(sql))


def parse_raw(sql: str) -> tuple[bytes, pb.ParseResult]:
    """`parse`, with the serialized tree it was read from (the rewriter splices it instead of re-serializing)."""
    data = SERIALIZER(sql)
    return data, pb.ParseResult.FromString(data)


def parse_dicts(sql: str) -> dict[str, Any]:
    """The parse tree in libpg_query's JSON form, as dicts. Raises ParseError for bad SQL, RecursionError or
    orjson.JSONDecodeError for a tree nested deeper than 1024 levels, ValueError for a tree JSON cannot carry."""
    return READER(sql)


def deparse(result: pb.ParseResult) -> str:
    return deparse_protobuf(result.SerializeToString())


def deparse_serialized(data: bytes) -> str:
    return deparse_protobuf(data)


def unwrap(node: pb.Node) -> Any:
    """The message inside a Node (a SelectStmt, a ColumnRef...), or None for an unset Node."""
    kind = node.WhichOneof("node")
    return None if kind is None else getattr(node, kind)


def set_column(node: pb.Node, *names: str) -> None:
    """Make an unset Node a column reference. Trees are built in place: nested constructors copy every level."""
    fields = node.column_ref.fields
    for name in names:
        fields.add().string.sval = name


def set_text(node: pb.Node, value: str) -> None:
    node.a_const.sval.SetInParent()
    node.a_const.sval.sval = value


def set_integer(node: pb.Node, value: int) -> None:
    node.a_const.ival.SetInParent()
    node.a_const.ival.ival = value
