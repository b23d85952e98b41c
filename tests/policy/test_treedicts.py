"""treedicts, the validator's C tree reader: the same dicts as libpg_query's JSON read by orjson, or the same error.

The validator trusts its input tree to be the statement that runs, so the reader is held to the JSON path it
replaced, on every corpus statement, on the engine's final statements and on generated ones, including the
hostile fragments, the edges of libpg_query's JSON writer and the nesting limit.
"""

from __future__ import annotations

import gc
import random
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import orjson
import pglast
import pytest
from pglast.parser import ParseError, parse_sql_json

from paybill.policy import PolicyEngine, compiled, tree

from .conftest import PRINCIPAL, load_cases
from .grammar import Grammar, RandomChooser
from .oracle import policies
from .test_fuzz import findings

# The engine refuses NUL before parsing (libpg_query's JSON path reads up to it; treedicts refuses it, tested below).
CASES = [c for name in ("legitimate.jsonl", "adversarial.jsonl") for c in load_cases(name)] + findings()
CORPUS = [c["sql"] for c in CASES if "\x00" not in c["sql"]]


@pytest.fixture(scope="module")
def native() -> ModuleType:
    if compiled.stale() or not (compiled.HERE / compiled.MANIFEST).exists():
        pytest.skip("the compiled build is not current: treedicts is not imported")
    try:
        from paybill.policy import treedicts
    except ImportError:
        pytest.skip("treedicts was not built (no pglast sdist at install)")
    return treedicts


def outcome(read: Callable[[str], Any], sql: str) -> tuple[str, Any]:
    try:
        return "tree", read(sql)
    except ParseError as error:
        return "ParseError", error.args
    except (RecursionError, orjson.JSONDecodeError):
        return "too deep", None
    except ValueError:
        return "unreadable", None


def json_tree(sql: str) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(parse_sql_json(sql))
    return result


def same_as_json(native: ModuleType, statements: list[str]) -> None:
    for sql in statements:
        assert outcome(native.parse, sql) == outcome(json_tree, sql), sql


def test_the_validator_reads_trees_with_treedicts_where_it_was_built(native: ModuleType) -> None:
    assert tree.READER is native.parse
    assert pglast.__version__ == native.PGLAST_VERSION


def test_every_corpus_statement_reads_as_its_json(native: ModuleType) -> None:
    assert len(CORPUS) > 700
    same_as_json(native, CORPUS)


def test_every_final_statement_the_engine_admits_reads_as_its_json(native: ModuleType, engine: PolicyEngine) -> None:
    decisions = [engine.decide(PRINCIPAL, c["sql"], c.get("params"), tenant="acme") for c in CASES]
    finals = [d.sql for d in decisions if d.sql]
    assert len(finals) > 50
    same_as_json(native, finals)


def generated(count: int, seed: int, hostility: int) -> Iterator[tuple[str, list[object]]]:
    rng = random.Random(seed)
    for _ in range(count):
        grammar = Grammar(RandomChooser(rng), hostility)
        yield grammar.statement(), grammar.params


@pytest.mark.parametrize("hostility", [4, 40])
def test_generated_statements_read_as_their_json(native: ModuleType, hostility: int) -> None:
    same_as_json(native, [sql for sql, _ in generated(1500, 20261201 + hostility, hostility)])


def test_generated_final_statements_read_as_their_json(native: ModuleType) -> None:
    from .conftest import schema

    engines = [PolicyEngine(p, schema()) for p in policies().values()]
    finals = []
    for sql, params in generated(1500, 7, 4):
        for engine in engines:
            decision = engine.decide(PRINCIPAL, sql, params, tenant="acme")
            if decision.sql:
                finals.append(decision.sql)
    assert len(finals) > 200
    same_as_json(native, finals)


EDGES = [
    "",
    ";",
    "SELECT 1; SELECT 2",
    "SELECT NULL, true, false, B'1010', X'ff', 1.5e300, -0, 0, '', 'a''b', E'\\n\\t\\x01<>\"\\\\'",
    'SELECT \'ünïcødé ✓ \U0001d54f\', "Quoted ""Name""" FROM "tAbLe"',
    f"SELECT {'é' * 70} FROM {'日本' * 40}",  # identifiers truncated to 63 bytes
    "SELECT * FROM t FOR UPDATE OF t NOWAIT",
    "SELECT a FROM t WHERE a = ANY(ARRAY[1, 2]) AND b IS DISTINCT FROM c ORDER BY a USING < NULLS FIRST",
    "INSERT INTO t (a) VALUES (1), (DEFAULT) ON CONFLICT (a) DO UPDATE SET a = excluded.a RETURNING *",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r",
    "SELECT count(*) FILTER (WHERE a > 1) OVER (PARTITION BY b ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t",
    "SELECT CAST(a AS numeric(10, 2)), a::int[], interval '1 day' FROM t",
    'CREATE TABLE x (a int DEFAULT 1 CHECK (a > 0), b text COLLATE "C")',
    "COPY t FROM PROGRAM 'id'",
    "DO $$ BEGIN PERFORM 1; END $$",
    "ALTER SYSTEM SET work_mem = '1MB'",
    "SELECT xmlelement(name a, xmlattributes(1 AS b)), json_object('a': 1), 1 IS JSON",
    "SELECT * FROM json_table('[]', '$[*]' COLUMNS (a int PATH '$.a'))",
    "SELECT $1, $2::text, a[1:2] FROM t",
    "SELECT",
    "SELECT 'unterminated",
    "SELECT 1 FROM t WHERE é = 1 AND ✓ = '✓'",
    "SELECT " + "(SELECT " * 144 + "1" + ")" * 144,
    "SELECT " + "(SELECT " * 145 + "1" + ")" * 145,
    "SELECT " + "1 + (" * 506 + "1" + ")" * 506,
    "SELECT " + "1 + (" * 507 + "1" + ")" * 507,
    "SELECT " + "1 + (" * 5000 + "1" + ")" * 5000,
]


def test_the_edges_of_the_json_writer_read_alike(native: ModuleType) -> None:
    """Empty and multiple statements, every constant kind, escapes and control characters, non-ASCII and truncated
    names, statements the gate never admits (their nodes still read alike), parse errors with their positions, and
    the nesting limit on both sides of it."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)  # comparing the deepest trees recurses in ==
    try:
        same_as_json(native, EDGES)
    finally:
        sys.setrecursionlimit(limit)
    assert outcome(native.parse, EDGES[-4]) == ("too deep", None)
    assert outcome(native.parse, EDGES[-5])[0] == "tree"
    assert outcome(native.parse, "SELECT 'unterminated")[0] == "ParseError"


def test_a_nul_character_is_refused_not_cut_short(native: ModuleType) -> None:
    """The engine refuses NUL before parsing; the reader must not read `SELECT 1` out of `SELECT 1\\0; DROP ...`."""
    with pytest.raises(ValueError, match="NUL"):
        native.parse("SELECT 1\x00; DROP TABLE t")


def test_reading_keeps_no_memory_behind(native: ModuleType) -> None:
    """Trees, errors and refused depths: nothing is left allocated once the results are dropped."""
    statements = [*CORPUS[:50], "SELECT 'unterminated", "SELECT " + "(SELECT " * 145 + "1" + ")" * 145]
    for sql in statements:  # the first round fills the interned keys and caches
        outcome(native.parse, sql)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            for sql in statements:
                outcome(native.parse, sql)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 20_000, f"{grown} bytes still allocated after {20 * len(statements)} reads"
