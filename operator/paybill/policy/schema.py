"""The tenant schema a policy is checked against: tables, columns and their type families.

Read either from DDL (CREATE TABLE statements, parsed with pglast) or from a live database.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum

from pglast import ast, parse_sql
from pglast.parser import ParseError

TENANT_COLUMN = "tenant_id"


class TypeFamily(StrEnum):
    INTEGER = "integer"
    NUMERIC = "numeric"
    TEXT = "text"
    BOOLEAN = "boolean"
    UUID = "uuid"
    TEMPORAL = "temporal"
    JSON = "json"
    OTHER = "other"


_FAMILIES: dict[str, TypeFamily] = {
    **dict.fromkeys(("int2", "int4", "int8", "smallint", "integer", "int", "bigint", "serial", "bigserial",
                     "smallserial"), TypeFamily.INTEGER),
    **dict.fromkeys(("numeric", "decimal", "float4", "float8", "real", "double precision", "money"),
                    TypeFamily.NUMERIC),
    **dict.fromkeys(("text", "varchar", "character varying", "bpchar", "char", "character", "name", "citext"),
                    TypeFamily.TEXT),
    **dict.fromkeys(("bool", "boolean"), TypeFamily.BOOLEAN),
    "uuid": TypeFamily.UUID,
    **dict.fromkeys(("date", "time", "timetz", "timestamp", "timestamptz", "timestamp without time zone",
                     "timestamp with time zone", "time without time zone", "time with time zone", "interval"),
                    TypeFamily.TEMPORAL),
    **dict.fromkeys(("json", "jsonb"), TypeFamily.JSON),
}


def type_family(type_name: str) -> TypeFamily:
    """The family of a PostgreSQL type name (catalog spelling or SQL spelling)."""
    return _FAMILIES.get(type_name.lower(), TypeFamily.OTHER)


class SchemaError(ValueError):
    """The schema source could not be read."""


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, TypeFamily]

    @property
    def pooled(self) -> bool:
        """A pooled table keeps many tenants' rows apart by its tenant column."""
        return TENANT_COLUMN in self.columns


@dataclass(frozen=True)
class Schema:
    name: str = "public"
    tables: dict[str, Table] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        canonical = {t.name: {c: f.value for c, f in t.columns.items()} for t in self.tables.values()}
        return hashlib.sha256(json.dumps([self.name, canonical], sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_ddl(cls, ddl: str, name: str = "public") -> Schema:
        """Tables from CREATE TABLE statements; other statements are ignored."""
        try:
            statements = parse_sql(ddl)
        except ParseError as error:
            raise SchemaError(f"schema DDL does not parse: {error}") from None
        tables: dict[str, Table] = {}
        for raw in statements:
            stmt = raw.stmt
            if not isinstance(stmt, ast.CreateStmt) or stmt.relation is None or not stmt.relation.relname:
                continue
            columns = {}
            for element in stmt.tableElts or ():
                if not isinstance(element, ast.ColumnDef) or element.typeName is None:
                    continue
                if element.colname and element.typeName.names:
                    columns[element.colname] = type_family(element.typeName.names[-1].sval)
            tables[stmt.relation.relname] = Table(stmt.relation.relname, columns)
        if not tables:
            raise SchemaError("schema DDL has no CREATE TABLE statement")
        return cls(name, tables)

    @classmethod
    def from_dsn(cls, dsn: str, name: str = "public") -> Schema:
        """Tables and columns of one schema of a live database (information_schema)."""
        import psycopg

        try:
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                rows = conn.execute(
                    "SELECT table_name, column_name, udt_name FROM information_schema.columns"
                    " WHERE table_schema = %s ORDER BY table_name, ordinal_position", (name,)).fetchall()
        except psycopg.OperationalError as error:
            raise SchemaError(f"cannot read the schema from the database: {type(error).__name__}") from None
        tables: dict[str, dict[str, TypeFamily]] = {}
        for table, column, udt in rows:
            tables.setdefault(table, {})[column] = type_family(udt)
        if not tables:
            raise SchemaError(f"schema {name!r} has no tables")
        return cls(name, {t: Table(t, cols) for t, cols in tables.items()})
