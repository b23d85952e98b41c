"""The C tree readers against the pglast paths they replace: treedicts gives the dicts libpg_query's JSON gives read by
orjson, treeprotobuf the bytes pglast's parse_sql_protobuf gives, or each the same error.

The analysis and the validator trust their trees to be the statement that runs, so each reader is held to the path it
replaced, on every corpus statement, on the engine's final statements and on generated ones, including the hostile
fragments, the edges of libpg_query's writers and the nesting limits.
"""

from __future__ import annotations

import gc
import importlib
import random
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pglast
import pytest
from pglast.parser import ParseError, parse_sql_json, parse_sql_protobuf

from paybill.policy import PolicyEngine, compiled, tree

from .conftest import PRINCIPAL, load_cases
from .grammar import Grammar, RandomChooser
from .oracle import policies
from .test_fuzz import findings

# The engine refuses NUL before parsing (libpg_query's JSON path reads up to it; treedicts refuses it, tested below).
CASES = [c for name in ("legitimate.jsonl", "adversarial.jsonl") for c in load_cases(name)] + findings()
CORPUS = [c["sql"] for c in CASES if "\x00" not in c["sql"]]


def built(name: str) -> ModuleType:
    if compiled.stale() or not (compiled.HERE / compiled.MANIFEST).exists():
        pytest.skip(f"the compiled build is not current: {name} is not imported")
    try:
        return importlib.import_module(f"paybill.policy.{name}")
    except ImportError:
        pytest.skip(f"{name} was not built (no pglast sdist at install)")


@pytest.fixture(scope="module")
def native() -> ModuleType:
    return built("treedicts")


@pytest.fixture(scope="module")
def serializer() -> ModuleType:
    return built("treeprotobuf")


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


def same_as_pglast(serializer: ModuleType, statements: list[str]) -> None:
    """Byte for byte: the same fields in the same order, so the same message whoever decodes it."""
    for sql in statements:
        assert outcome(serializer.parse, sql) == outcome(parse_sql_protobuf, sql), sql


def test_the_engine_reads_trees_with_the_c_readers_where_they_were_built(
    native: ModuleType, serializer: ModuleType
) -> None:
    assert tree.READER is native.parse
    assert tree.SERIALIZER is serializer.parse
    assert pglast.__version__ == native.PGLAST_VERSION == serializer.PGLAST_VERSION


def test_every_corpus_statement_reads_as_pglast_reads_it(native: ModuleType, serializer: ModuleType) -> None:
    assert len(CORPUS) > 700
    same_as_json(native, CORPUS)
    same_as_pglast(serializer, CORPUS)


def test_every_final_statement_the_engine_admits_reads_as_pglast_reads_it(
    native: ModuleType, serializer: ModuleType, engine: PolicyEngine
) -> None:
    decisions = [engine.decide(PRINCIPAL, c["sql"], c.get("params"), tenant="acme") for c in CASES]
    finals = [d.sql for d in decisions if d.sql]
    assert len(finals) > 50
    same_as_json(native, finals)
    same_as_pglast(serializer, finals)


def generated(count: int, seed: int, hostility: int) -> Iterator[tuple[str, list[object]]]:
    rng = random.Random(seed)
    for _ in range(count):
        grammar = Grammar(RandomChooser(rng), hostility)
        yield grammar.statement(), grammar.params


@pytest.mark.parametrize("hostility", [4, 40])
def test_generated_statements_read_as_pglast_reads_them(
    native: ModuleType, serializer: ModuleType, hostility: int
) -> None:
    statements = [sql for sql, _ in generated(1500, 20261201 + hostility, hostility)]
    same_as_json(native, statements)
    same_as_pglast(serializer, statements)


def test_generated_final_statements_read_as_pglast_reads_them(native: ModuleType, serializer: ModuleType) -> None:
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
    same_as_pglast(serializer, finals)


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


def test_the_edges_of_the_writers_read_alike(native: ModuleType, serializer: ModuleType) -> None:
    """Empty and multiple statements, every constant kind, escapes and control characters, non-ASCII and truncated
    names, statements the gate never admits (their nodes still read alike), parse errors with their positions, and
    the nesting limits on both sides of them."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)  # comparing the deepest trees recurses in ==
    try:
        same_as_json(native, EDGES)
    finally:
        sys.setrecursionlimit(limit)
    same_as_pglast(serializer, EDGES)
    assert outcome(native.parse, EDGES[-4]) == ("too deep", None)
    assert outcome(native.parse, EDGES[-5])[0] == "tree"
    assert outcome(native.parse, "SELECT 'unterminated")[0] == "ParseError"


@pytest.mark.parametrize("name", ["treedicts", "treeprotobuf"])
def test_a_nul_character_is_refused_not_cut_short(name: str) -> None:
    """The engine refuses NUL before parsing; a reader must not read `SELECT 1` out of `SELECT 1\\0; DROP ...`."""
    with pytest.raises(ValueError, match="NUL"):
        built(name).parse("SELECT 1\x00; DROP TABLE t")


@pytest.mark.parametrize("name", ["treedicts", "treeprotobuf"])
def test_reading_keeps_no_memory_behind(name: str) -> None:
    """Trees, errors and refused depths: nothing is left allocated once the results are dropped."""
    native = built(name)
    deep = 145 if name == "treedicts" else 3000
    statements = [*CORPUS[:50], "SELECT 'unterminated", "SELECT " + "(SELECT " * deep + "1" + ")" * deep]
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


GC_RACE = """
import gc, sys, threading, time
from paybill.policy import tree
from paybill.policy.tree import parse_dicts, parse_raw


class Finalizer:  # garbage in a cycle, freed by the collector a reader's allocation may start
    def __init__(self):
        self.me = self

    def __del__(self):
        if sys.argv[1] == "reentrant":
            parse_dicts("SELECT 1")
            parse_raw("SELECT 1")
        else:
            time.sleep(0.0002)  # lets the other thread run: a file or socket closed in a finalizer does the same


big = "SELECT " + ", ".join(f"a{i} + b{i} * c{i}" for i in range(300)) + " FROM t WHERE d IN (1, 2, 3)"
expected = (parse_dicts(big), parse_raw(big)[0])
stop = False


def other():
    while not stop:
        assert parse_dicts("SELECT a FROM t WHERE b = 1")["stmts"]
        assert parse_raw("SELECT a FROM t WHERE b = 1")[0]


if sys.argv[1] == "threads":
    threading.Thread(target=other, daemon=True).start()
else:
    gc.set_threshold(1)
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    for _ in range(20):
        Finalizer()
    assert (parse_dicts(big), parse_raw(big)[0]) == expected
stop = True
print("held", tree.READER.__module__, tree.SERIALIZER.__module__)
"""


@pytest.mark.parametrize("how", ["threads", "reentrant"])
def test_readers_in_two_threads_or_within_a_finalizer_keep_their_own_walk(
    native: ModuleType, serializer: ModuleType, how: str, tmp_path: Path
) -> None:
    """Outsider's finding: a reader's allocation can run the collector, whose finalizers run any Python: another
    thread's parse (the GIL released) or a parse of their own. A reader whose walk state was one global pointer
    crashed the process (SIGSEGV); each walk must keep its own, and give the same trees."""
    script = tmp_path / "race.py"
    script.write_text(GC_RACE)
    done = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "held paybill.policy.treedicts paybill.policy.treeprotobuf" in done.stdout


SMALL_STACK = """
import sys, threading
from pglast.parser import ParseError, parse_sql_protobuf, parse_sql_json
from paybill.policy import tree
sql = sys.argv[2]
functions = {"pglast": parse_sql_protobuf, "pglast-json": parse_sql_json, "c": tree.SERIALIZER, "c-dicts": tree.READER}
out = []
def go():
    try:
        functions[sys.argv[1]](sql)
        out.append("tree")
    except (ParseError, RecursionError) as error:
        out.append(f"{type(error).__name__}: {error.args[0]}")
threading.stack_size(int(sys.argv[3]))
thread = threading.Thread(target=go)
thread.start()
thread.join()
print(out)
"""
# Deep trees of each shape a walk recurses through differently, all under the engine's MAX_SQL_LENGTH
DEEP = {
    "sums": "SELECT id FROM orders WHERE id = " + "+".join(["1"] * 4990),  # Node fields
    "unions": "SELECT" + " UNION SELECT" * 4000,  # SelectStmt.larg: a message field, not a Node
    "unions of ones": "SELECT 1" + " UNION SELECT 1" * 4000,
    "calls": "SELECT " + "f(" * 4000 + "1" + ")" * 4000,  # lists of Nodes
    "subqueries": "SELECT " + "(SELECT " * 1600 + "1" + ")" * 1600,
}


@pytest.mark.parametrize(("reader", "pglast_path"), [("c", "pglast"), ("c-dicts", "pglast-json")])
@pytest.mark.parametrize("stack", [256 * 1024, 128 * 1024])
@pytest.mark.parametrize("shape", sorted(DEEP))
def test_a_deep_tree_on_a_small_thread_stack_is_refused_not_a_crash(
    native: ModuleType, serializer: ModuleType, tmp_path: Path, reader: str, pglast_path: str, stack: int, shape: str
) -> None:
    """Outsiders' findings: libpg_query's writers check the stack at each level and raise; the C writers recursed
    with no such check (and then past their own refusal, down a UNION chain), and a statement of a few kB in a
    thread with a small stack killed the process (SIGSEGV). Each keeps to libpg_query's stack budget and to the
    stack its thread has, and refuses what pglast refuses."""
    script = tmp_path / "stack.py"
    script.write_text(SMALL_STACK)

    def run(which: str) -> str:
        done = subprocess.run(
            [sys.executable, str(script), which, DEEP[shape], str(stack)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (which, done.returncode, done.stderr[-1000:])
        return done.stdout

    expected = run(pglast_path)
    if reader == "c":
        assert run(reader) == expected  # the same tree, or pglast's own error
    else:  # a refusal, which the validator denies as too complex whatever its kind
        assert ("['tree']" in run(reader)) == ("['tree']" in expected)


FUNCTIONS = "SELECT " + "f(" * 4996 + "1" + ")" * 4996  # 10,001 message levels counting the ParseResult


def test_the_protobuf_writer_refuses_the_depth_libpg_query_refuses(serializer: ModuleType) -> None:
    """Outsider's finding: libpg_query's cap of 10,000 message levels counts the ParseResult; the writer counted
    one level fewer and wrote a tree pglast refuses. The same trees are refused, with pglast's error."""
    refused = ("ParseError", ("parse tree is nested too deeply to serialize to protobuf", None))
    assert outcome(parse_sql_protobuf, FUNCTIONS) == refused
    assert outcome(serializer.parse, FUNCTIONS) == refused
    within = "SELECT " + "f(" * 4995 + "1" + ")" * 4995
    assert outcome(serializer.parse, within) == outcome(parse_sql_protobuf, within)
    assert outcome(serializer.parse, within)[0] == "tree"
