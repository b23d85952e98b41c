"""The tenant schema a policy is checked against: tables, columns and their type families, and their keys.

Read either from DDL (CREATE TABLE, CREATE UNIQUE INDEX, ALTER TABLE ... ADD, parsed with pglast) or from a
live database's catalog (its constraint and index definitions, read back through the same DDL reader; the
reading itself is the database side's, paybill.database.agents.catalog: this module opens no connection).

Keys matter to isolation: in a pooled table a primary key, unique constraint or foreign key without the
tenant column spans every tenant's rows, so writing its columns succeeds, fails or locks according to
another tenant's rows. `Schema.keys` says, per table and computed once, which writes that rules out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from pglast import ast, parse_sql
from pglast.enums import AlterTableType, ConstrType
from pglast.parser import ParseError
from pglast.visitors import Visitor

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
    **dict.fromkeys(
        ("int2", "int4", "int8", "smallint", "integer", "int", "bigint", "serial", "bigserial", "smallserial"),
        TypeFamily.INTEGER,
    ),
    **dict.fromkeys(
        ("numeric", "decimal", "float4", "float8", "real", "double precision", "money"), TypeFamily.NUMERIC
    ),
    **dict.fromkeys(
        ("text", "varchar", "character varying", "bpchar", "char", "character", "name", "citext"), TypeFamily.TEXT
    ),
    **dict.fromkeys(("bool", "boolean"), TypeFamily.BOOLEAN),
    "uuid": TypeFamily.UUID,
    **dict.fromkeys(
        (
            "date",
            "time",
            "timetz",
            "timestamp",
            "timestamptz",
            "timestamp without time zone",
            "timestamp with time zone",
            "time without time zone",
            "time with time zone",
            "interval",
        ),
        TypeFamily.TEMPORAL,
    ),
    **dict.fromkeys(("json", "jsonb"), TypeFamily.JSON),
}


def type_family(type_name: str) -> TypeFamily:
    """The family of a PostgreSQL type name (catalog spelling or SQL spelling)."""
    return _FAMILIES.get(type_name.lower(), TypeFamily.OTHER)


class SchemaError(ValueError):
    """The schema source could not be read."""


class KeyKind(StrEnum):
    PRIMARY = "primary key"
    UNIQUE = "unique constraint"
    INDEX = "unique index"
    EXCLUSION = "exclusion constraint"
    FOREIGN = "foreign key"


# Foreign-key actions (pg_constraint.confupdtype/confdeltype) that write the referencing rows.
WRITING_ACTIONS = {"c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


@dataclass(frozen=True)
class Key:
    """A primary key, unique constraint or index, exclusion constraint or foreign key of `table`.

    `columns`: the key's plain columns in order (an exclusion constraint's: those compared with =; a foreign
    key's: the referencing ones). `involves`: every column whose value can decide a conflict or a reference,
    expression and partial-index predicate columns included."""

    kind: KeyKind
    table: str
    columns: tuple[str, ...]
    involves: frozenset[str]
    name: str | None = None
    references: str | None = None  # a foreign key's referenced table
    referenced: tuple[str, ...] = ()  # its referenced columns (the primary key's when the DDL names none)
    on_update: str = "a"
    on_delete: str = "a"

    @property
    def tenant_scoped(self) -> bool:
        """Does the key keep tenants apart: the tenant column is one of its equality columns (and, for a
        foreign key, references the referenced table's tenant column)?"""
        if self.kind != KeyKind.FOREIGN:
            return TENANT_COLUMN in self.columns
        return any(
            mine == TENANT_COLUMN and theirs == TENANT_COLUMN
            for mine, theirs in zip(self.columns, self.referenced, strict=False)
        )

    def describe(self) -> str:
        shown = ", ".join(self.columns) if self.columns else ", ".join(sorted(self.involves))
        text = f"{self.kind} {self.name + ' ' if self.name else ''}({shown})"
        if self.kind == KeyKind.FOREIGN:
            text += f" REFERENCES {self.references} ({', '.join(self.referenced) or '?'})"
        return text

    def canonical(self) -> list[object]:
        return [
            self.kind.value,
            self.table,
            list(self.columns),
            sorted(self.involves),
            self.name,
            self.references,
            list(self.referenced),
            self.on_update,
            self.on_delete,
        ]


@dataclass(frozen=True)
class TableKeys:
    """What the keys rule out on one table, computed once per schema (the walker only looks things up).

    "Unscoped" keys lack the tenant column; they matter in a pooled table when the agent acts for a tenant.
    Foreign keys whose ON UPDATE/DELETE action writes the referencing rows matter always."""

    unscoped: dict[str, Key] = field(default_factory=dict)  # column -> an unscoped key of the table holding it
    unscoped_referenced: dict[str, Key] = field(default_factory=dict)  # column -> an unscoped FK referencing it
    writing_referenced: dict[str, Key] = field(default_factory=dict)  # column -> an FK whose ON UPDATE writes
    unscoped_referencing: Key | None = None  # an unscoped FK referencing the table (DELETE depends on it)
    writing_on_delete: Key | None = None  # an FK whose ON DELETE writes the referencing rows
    unscoped_unique: tuple[Key, ...] = ()  # arbiters of ON CONFLICT without a target that span tenants
    unique_by_name: dict[str, Key] = field(default_factory=dict)  # for ON CONFLICT ON CONSTRAINT


def table_keys(table: Table, inbound: Iterable[Key]) -> TableKeys:
    """The TableKeys of `table` from its own keys and the foreign keys (of any table) referencing it."""
    unscoped: dict[str, Key] = {}
    unscoped_referenced: dict[str, Key] = {}
    writing_referenced: dict[str, Key] = {}
    unscoped_unique: list[Key] = []
    by_name: dict[str, Key] = {}
    for key in table.keys:
        if key.kind in (KeyKind.PRIMARY, KeyKind.UNIQUE, KeyKind.EXCLUSION) and key.name:  # constraints only
            by_name.setdefault(key.name, key)
        if not key.tenant_scoped:
            for column in sorted(key.involves):
                unscoped.setdefault(column, key)
            if key.kind != KeyKind.FOREIGN:
                unscoped_unique.append(key)
    referencing = [key for key in inbound if key.references == table.name]
    for key in referencing:
        for column in key.referenced or table.columns:  # columns never resolved: any of them
            if not key.tenant_scoped:
                unscoped_referenced.setdefault(column, key)
            if key.on_update in WRITING_ACTIONS:
                writing_referenced.setdefault(column, key)
    return TableKeys(
        unscoped,
        unscoped_referenced,
        writing_referenced,
        next((k for k in referencing if not k.tenant_scoped), None),
        next((k for k in referencing if k.on_delete in WRITING_ACTIONS), None),
        tuple(unscoped_unique),
        by_name,
    )


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, TypeFamily]
    keys: tuple[Key, ...] = ()

    @property
    def pooled(self) -> bool:
        """A pooled table keeps many tenants' rows apart by its tenant column."""
        return TENANT_COLUMN in self.columns


CATALOG_PREFIX = "pg_"  # names pg_catalog's relations use; never a tenant's table or column


@dataclass(frozen=True)
class Schema:
    name: str = "public"
    tables: dict[str, Table] = field(default_factory=dict)
    # foreign keys of tables outside the schema that reference its tables (read from a live database)
    inbound: tuple[Key, ...] = ()
    keys: dict[str, TableKeys] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for table in self.tables.values():
            for reserved in (n for n in (table.name, *table.columns) if n.startswith(CATALOG_PREFIX)):
                # the guard resolves names with pg_catalog first: the engine would check this table, the catalog's run
                raise SchemaError(
                    f"table {table.name}: {reserved} starts with {CATALOG_PREFIX}, a prefix reserved for PostgreSQL's "
                    "catalogs; rename it to let agents use this schema"
                )
        foreign = [k for t in self.tables.values() for k in t.keys if k.kind == KeyKind.FOREIGN] + list(self.inbound)
        object.__setattr__(self, "keys", {name: table_keys(table, foreign) for name, table in self.tables.items()})

    @property
    def digest(self) -> str:
        canonical = {
            t.name: {
                "columns": {c: f.value for c, f in t.columns.items()},
                "keys": sorted(json.dumps(k.canonical()) for k in t.keys),
            }
            for t in self.tables.values()
        }
        inbound = sorted(json.dumps(k.canonical()) for k in self.inbound)
        return hashlib.sha256(json.dumps([self.name, canonical, inbound], sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_ddl(cls, ddl: str, name: str = "public") -> Schema:
        """Tables from CREATE TABLE statements, keys from those, CREATE UNIQUE INDEX and ALTER TABLE ... ADD;
        other statements are ignored."""
        try:
            statements = parse_sql(ddl)
        except ParseError as error:
            raise SchemaError(f"schema DDL does not parse: {error}") from None
        reader = _DdlReader(name)
        for raw in statements:
            reader.statement(raw.stmt)
        if not reader.columns:
            raise SchemaError("schema DDL has no CREATE TABLE statement")
        return cls(name, reader.tables())

    @classmethod
    def from_catalog(
        cls, name: str, columns: Iterable[tuple[str, str, str]], definitions: Iterable[tuple[str, str, str]]
    ) -> Schema:
        """Tables, columns and keys of schema `name` as a live database's catalog describes them: (table, column,
        udt name) rows, and (schema, table, definition) rows, each definition an ALTER TABLE ... ADD CONSTRAINT or
        CREATE UNIQUE INDEX statement; definitions of other schemas' tables contribute the foreign keys that
        reference this one. The database side reads them (paybill.database.agents.catalog)."""
        reader = _DdlReader(name)
        for table, column, udt in columns:
            reader.columns.setdefault(table, {})[column] = type_family(udt)
        if not reader.columns:
            raise SchemaError(f"schema {name!r} has no tables")
        inbound: list[Key] = []
        for table_schema, table, definition in definitions:
            if table_schema == name:
                reader.statement(parse_sql(definition)[0].stmt)
            else:  # a table elsewhere that references this schema: only its foreign keys matter
                outside = _DdlReader(name)
                outside.columns[table] = {}
                outside.statement(parse_sql(definition)[0].stmt)
                inbound += [dataclasses.replace(k, table=f"{table_schema}.{table}") for k in outside.keys[table]]
        return cls(name, reader.tables(), tuple(reader.resolved(inbound)))


class _ColumnNames(Visitor):
    """Every column an expression reads."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def visit_ColumnRef(self, ancestors: object, node: ast.ColumnRef) -> None:
        last = node.fields[-1] if node.fields else None
        if isinstance(last, ast.String) and last.sval:
            self.names.add(last.sval)


def _expression_columns(node: ast.Node | None) -> set[str]:
    if node is None:
        return set()
    visitor = _ColumnNames()
    visitor(node)
    return visitor.names


def _strings(nodes: Iterable[ast.String] | None) -> tuple[str, ...]:
    return tuple(n.sval for n in nodes or () if n.sval is not None)


def _exclusion(table: str, constraint: ast.Constraint) -> Key:
    """An exclusion constraint: its columns compared with = are its equality columns."""
    equal: list[str] = []
    involves = _expression_columns(constraint.where_clause)
    for element, operator in constraint.exclusions or ():
        if element.name:
            involves.add(element.name)
            if _strings(operator) in (("=",), ("pg_catalog", "=")):
                equal.append(element.name)
        else:
            involves |= _expression_columns(element.expr)
    return Key(KeyKind.EXCLUSION, table, tuple(equal), frozenset(involves), constraint.conname or None)


class _DdlReader:
    """Collects columns and keys statement by statement; foreign keys are resolved once everything is read."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.columns: dict[str, dict[str, TypeFamily]] = {}
        self.keys: dict[str, list[Key]] = {}
        self.indexes: dict[str, Key] = {}  # unique indexes by name (ADD CONSTRAINT ... USING INDEX)

    def statement(self, stmt: ast.Node | None) -> None:
        if isinstance(stmt, ast.CreateStmt) and stmt.relation is not None and stmt.relation.relname:
            table = stmt.relation.relname
            self.columns[table] = {}
            self.keys.setdefault(table, [])
            for element in stmt.tableElts or ():
                if isinstance(element, ast.ColumnDef):
                    self.column(table, element)
                elif isinstance(element, ast.Constraint):
                    self.constraint(table, element, None)
        elif isinstance(stmt, ast.IndexStmt) and stmt.unique and stmt.relation is not None:
            self.index(stmt, stmt.relation)
        elif isinstance(stmt, ast.AlterTableStmt) and stmt.relation is not None:
            table = stmt.relation.relname or ""
            if table not in self.columns:
                return
            for command in stmt.cmds or ():
                if command.subtype == AlterTableType.AT_AddConstraint and isinstance(command.def_, ast.Constraint):
                    self.constraint(table, command.def_, None)
                elif command.subtype == AlterTableType.AT_AddColumn and isinstance(command.def_, ast.ColumnDef):
                    self.column(table, command.def_)

    def column(self, table: str, column: ast.ColumnDef) -> None:
        names = _strings(column.typeName.names if column.typeName is not None else None)
        if not column.colname or not names:
            return
        self.columns[table][column.colname] = type_family(names[-1])
        for constraint in column.constraints or ():
            self.constraint(table, constraint, column.colname)

    def constraint(self, table: str, constraint: ast.Constraint, column: str | None) -> None:
        kind = constraint.contype
        if kind in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE):
            self.add(self.unique(table, constraint, column))
        elif kind == ConstrType.CONSTR_EXCLUSION:
            self.add(_exclusion(table, constraint))
        elif kind == ConstrType.CONSTR_FOREIGN and constraint.pktable is not None:
            self.add(self.foreign(table, constraint, column, constraint.pktable))

    def unique(self, table: str, constraint: ast.Constraint, column: str | None) -> Key:
        kind = KeyKind.PRIMARY if constraint.contype == ConstrType.CONSTR_PRIMARY else KeyKind.UNIQUE
        name = constraint.conname or None
        if not constraint.indexname:
            columns = _strings(constraint.keys) or ((column,) if column else ())
            return Key(kind, table, columns, frozenset(columns), name)
        index = self.indexes.pop(constraint.indexname, None)  # ADD ... USING INDEX: the index becomes the key
        if index is None:  # an index never seen: any column may decide
            return Key(kind, table, (), frozenset(self.columns[table]), name)
        if index in self.keys[table]:
            self.keys[table].remove(index)
        return Key(kind, table, index.columns, index.involves, name)

    def foreign(self, table: str, constraint: ast.Constraint, column: str | None, pktable: ast.RangeVar) -> Key:
        columns = _strings(constraint.fk_attrs) or ((column,) if column else ())
        references = (
            pktable.relname
            if pktable.schemaname in (None, "", self.schema)
            else f"{pktable.schemaname}.{pktable.relname}"
        )
        return Key(
            KeyKind.FOREIGN,
            table,
            columns,
            frozenset(columns),
            constraint.conname or None,
            references,
            _strings(constraint.pk_attrs),
            constraint.fk_upd_action or "a",
            constraint.fk_del_action or "a",
        )

    def index(self, stmt: ast.IndexStmt, relation: ast.RangeVar) -> None:
        table = relation.relname
        if table not in self.columns:
            return
        columns: list[str] = []
        involves = _expression_columns(stmt.whereClause)
        for element in stmt.indexParams or ():
            if element.name:
                columns.append(element.name)
                involves.add(element.name)
            else:
                involves |= _expression_columns(element.expr)
        key = Key(KeyKind.INDEX, table, tuple(columns), frozenset(involves), stmt.idxname or None)
        if stmt.idxname:
            self.indexes[stmt.idxname] = key
        self.add(key)

    def add(self, key: Key) -> None:
        self.keys.setdefault(key.table, []).append(key)

    def resolved(self, keys: Iterable[Key]) -> list[Key]:
        """Foreign keys that name no referenced columns reference the referenced table's primary key."""
        result = []
        for key in keys:
            if key.kind == KeyKind.FOREIGN and not key.referenced:
                primary = [k for k in self.keys.get(key.references or "", ()) if k.kind == KeyKind.PRIMARY]
                if primary:
                    key = dataclasses.replace(key, referenced=primary[0].columns)
            result.append(key)
        return result

    def tables(self) -> dict[str, Table]:
        return {
            name: Table(name, columns, tuple(self.resolved(self.keys.get(name, ()))))
            for name, columns in self.columns.items()
        }
