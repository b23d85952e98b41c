"""The peer gateway's restricted-mode check, run inside its own virtualenv (postgres-mcp needs Python >= 3.12
and pins pglast 7, which Paybill's pglast 8 excludes). Imports nothing from Paybill.

Protocol: one JSON request per line on stdin, one JSON answer per line on stdout.
- {"op": "load", "name": ..., "statements": [...]}  -> {"loaded": n}
- {"op": "time", "name": ..., "rounds": r}          -> {"samples": [µs, ...]} (each statement r times, in order)
- {"op": "admitted", "name": ...}                   -> {"admitted": [index, ...]}

The check is `SafeSqlDriver._validate(sql)`: what `execute_query` runs before any SQL reaches the database
in restricted mode (it raises ValueError to refuse).
"""

from __future__ import annotations

import gc
import json
import sys
import time

from postgres_mcp.sql.safe_sql import SafeSqlDriver  # type: ignore[import-not-found]


def admits(driver: SafeSqlDriver, sql: str) -> bool:
    try:
        driver._validate(sql)
    except ValueError:
        return False
    return True


def timings(driver: SafeSqlDriver, statements: list[str], rounds: int) -> list[float]:
    samples = []
    gc.disable()
    try:
        for sql in statements:
            for _ in range(rounds):
                start = time.perf_counter_ns()
                admits(driver, sql)
                samples.append((time.perf_counter_ns() - start) / 1000)
    finally:
        gc.enable()
    return samples


def main() -> int:
    driver = SafeSqlDriver(sql_driver=None)
    corpora: dict[str, list[str]] = {}
    for line in sys.stdin:
        request = json.loads(line)
        op, name = request["op"], request["name"]
        if op == "load":
            corpora[name] = request["statements"]
            answer: dict[str, object] = {"loaded": len(corpora[name])}
        elif op == "time":
            answer = {"samples": timings(driver, corpora[name], request["rounds"])}
        elif op == "admitted":
            answer = {"admitted": [n for n, sql in enumerate(corpora[name]) if admits(driver, sql)]}
        else:
            answer = {"error": f"unknown op {op}"}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
