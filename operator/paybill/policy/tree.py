"""Parse trees as libpg_query protobuf messages, parsed and deparsed in C by pglast.

pglast's Python AST and printer cost about 300 µs for a short statement; this path (pglast's
`parse_sql_protobuf`, upb-backed messages, pglast's `deparse_protobuf`) does the same round trip in about
20 µs. The message classes are postgast's `pg_query_pb2`, built for the same libpg_query 18 as pglast.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError
from pglast.parser import ParseError, deparse_protobuf, parse_sql_protobuf
from postgast import pg_query_pb2 as pb

__all__ = [
    "DecodeError",
    "ParseError",
    "deparse",
    "deparse_serialized",
    "parse",
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
