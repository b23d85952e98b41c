"""The live schema an AgentPolicy is checked against, read from a tenant's database catalog.

The rows go to the engine's pure `Schema.from_catalog`; this module is only the reading.
"""

from __future__ import annotations

import psycopg

from ...policy.schema import Schema, SchemaError

# Constraint definitions as ALTER TABLE statements, unique indexes that back no constraint as CREATE UNIQUE
# INDEX: the engine reads them with the reader it reads DDL with. Identifiers are quoted with quote_ident.
KEY_DEFINITIONS = """
SELECT ns.nspname, rel.relname,
       'ALTER TABLE ' || quote_ident(ns.nspname) || '.' || quote_ident(rel.relname) || ' ADD CONSTRAINT '
       || quote_ident(con.conname) || ' ' || pg_get_constraintdef(con.oid)
  FROM pg_constraint con
  JOIN pg_class rel ON rel.oid = con.conrelid
  JOIN pg_namespace ns ON ns.oid = rel.relnamespace
  LEFT JOIN pg_class ref ON ref.oid = con.confrelid
  LEFT JOIN pg_namespace refns ON refns.oid = ref.relnamespace
 WHERE con.contype IN ('p', 'u', 'x', 'f')
   AND (ns.nspname = %(schema)s OR (con.contype = 'f' AND refns.nspname = %(schema)s))
UNION ALL
SELECT ns.nspname, rel.relname, pg_get_indexdef(i.indexrelid)
  FROM pg_index i
  JOIN pg_class rel ON rel.oid = i.indrelid
  JOIN pg_namespace ns ON ns.oid = rel.relnamespace
 WHERE ns.nspname = %(schema)s AND i.indisunique
   AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))
 ORDER BY 1, 2, 3"""


def read_schema(dsn: str, name: str = "public") -> Schema:
    """Tables, columns and keys of one schema of a live database (information_schema, pg_constraint,
    pg_index); also the foreign keys of other schemas' tables that reference it."""
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            columns = conn.execute(
                "SELECT table_name, column_name, udt_name FROM information_schema.columns"
                " WHERE table_schema = %s ORDER BY table_name, ordinal_position",
                (name,),
            ).fetchall()
            conn.execute("SET LOCAL search_path = pg_catalog")  # definitions name every table qualified
            definitions = conn.execute(KEY_DEFINITIONS, {"schema": name}).fetchall()
    except psycopg.OperationalError as error:
        raise SchemaError(f"cannot read the schema from the database: {type(error).__name__}") from None
    return Schema.from_catalog(name, columns, definitions)
