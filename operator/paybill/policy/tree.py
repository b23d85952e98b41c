"""Parse trees as libpg_query protobuf messages, parsed and deparsed in C by pglast.

pglast's Python AST and printer cost about 300 µs for a short statement; this path (pglast's
`parse_sql_protobuf`, upb-backed messages, pglast's `deparse_protobuf`) does the same round trip in about
20 µs. The message classes are postgast's `pg_query_pb2`, built for the same libpg_query 18 as pglast.

The validator reads trees in libpg_query's JSON form, as dicts (`parse_dicts`): built in C from the parser's nodes
by `treedicts` where the install compiled it, else libpg_query's JSON text read by orjson (the same dicts).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any, Final

import orjson
import pglast
from google.protobuf.message import DecodeError
from pglast.parser import ParseError, deparse_protobuf, parse_sql_json, parse_sql_protobuf
from postgast import pg_query_pb2 as pb

__all__ = [
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


def parse(sql: str) -> pb.ParseResult:
    """Raises ParseError for bad SQL and DecodeError for a tree nested deeper than protobuf allows."""
    return pb.ParseResult.FromString(parse_sql_protobuf(sql))


def parse_raw(sql: str) -> tuple[bytes, pb.ParseResult]:
    """`parse`, with the serialized tree it was read from (the rewriter splices it instead of re-serializing)."""
    data = parse_sql_protobuf(sql)
    return data, pb.ParseResult.FromString(data)


def _json_dicts(sql: str) -> dict[str, Any]:
    tree: dict[str, Any] = orjson.loads(parse_sql_json(sql))
    return tree


def _reader() -> Callable[[str], dict[str, Any]]:
    """treedicts' parse where it was built for the pglast installed; libpg_query's JSON read by orjson otherwise."""
    try:  # imported by name: a compiled module binds a function's `from ... import` as a global
        native = importlib.import_module("paybill.policy.treedicts")
    except ImportError:  # not built (no pglast sdist at install), or a stale build (compiled.guard)
        return _json_dicts
    if pglast.__version__ != native.PGLAST_VERSION:  # its structures are another libpg_query's: never read them
        logging.getLogger(__name__).warning(
            "treedicts was built for pglast %s, not %s: reading JSON instead", native.PGLAST_VERSION, pglast.__version__
        )
        return _json_dicts
    reader: Callable[[str], dict[str, Any]] = native.parse
    return reader


READER: Final = _reader()


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
