"""The long fuzzing campaign: `python -m bench.fuzz [--count N] [--seed S]` (`make fuzz`).

Generates N statements with the grammar of tests/policy/grammar.py (seeded random choices, fast), has the
engine decide each for tenant acme under each fuzzed policy in turn, and runs every admitted one through the
oracle of tests/policy/oracle.py (as a BYPASSRLS role, never committed) on a throwaway PostgreSQL server.
Prints progress, then a summary; findings are grouped by what the oracle saw (digits folded), with the
shortest statements of each group, and written as JSON lines to --findings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from paybill.policy import PolicyEngine, Schema

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.policy.grammar import Grammar, RandomChooser
from tests.policy.oracle import SCHEMA_SQL, Oracle, create_database, fuzz_server, policies

PRINCIPAL = "agent:support-bot"


@dataclass
class Campaign:
    count: int = 0
    admitted: int = 0
    executed: int = 0
    seconds: float = 0.0
    by_policy: Counter = field(default_factory=Counter)
    findings: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))

    @property
    def escapes(self) -> int:
        return sum(len(v) for v in self.findings.values())


def category(problem: str) -> str:
    """A finding's class: the oracle's sentence up to its first detail, digits folded."""
    head = re.split(r"[(:]", problem, maxsplit=1)[0].strip()
    return re.sub(r"\d+", "N", head)


def run(count: int, seed: int, progress: int, hostility: int) -> Campaign:
    logging.getLogger("paybill.policy").setLevel(logging.ERROR)  # analysis failures are denials, counted below
    schema = Schema.from_ddl(SCHEMA_SQL)
    campaign = Campaign()
    chooser = RandomChooser(__import__("random").Random(seed))
    with fuzz_server() as server:
        dsn = create_database(server.dsn)
        gates = {name: (PolicyEngine(spec, schema), Oracle(dsn, spec)) for name, spec in policies().items()}
        names = sorted(gates)
        started = time.perf_counter()
        try:
            for n in range(count):
                policy = names[n % len(names)]
                engine, oracle = gates[policy]
                grammar = Grammar(chooser, hostility)
                statement = grammar.statement()
                decision = engine.decide(PRINCIPAL, statement, grammar.params, tenant="acme")
                campaign.count += 1
                if decision.allowed:
                    campaign.admitted += 1
                    campaign.by_policy[policy] += 1
                    problems = oracle.check(decision.sql or "", grammar.params, kind=decision.statement or "select")
                    campaign.executed += 1
                    for problem in problems:
                        campaign.findings[category(problem)].append(
                            {
                                "policy": policy,
                                "sql": statement,
                                "params": grammar.params,
                                "rewritten": decision.sql,
                                "why": problem,
                            }
                        )
                if progress and (n + 1) % progress == 0:
                    elapsed = time.perf_counter() - started
                    print(
                        f"{n + 1} statements, {campaign.admitted} admitted, {campaign.escapes} oracle failures "
                        f"in {len(campaign.findings)} classes, {elapsed:.0f} s",
                        flush=True,
                    )
        finally:
            campaign.seconds = time.perf_counter() - started
            for _, oracle in gates.values():
                oracle.close()
    return campaign


def report(campaign: Campaign, seed: int, hostility: int) -> str:
    statements = {(f["policy"], f["sql"]) for items in campaign.findings.values() for f in items}
    kinds = Counter(f"{sql.split()[0].upper()} ({policy})" for policy, sql in statements)
    lines = [
        f"- statements generated and decided: {campaign.count} (seed {seed}, hostility {hostility}%)",
        f"- admitted and executed by the oracle: {campaign.executed} "
        f"({', '.join(f'{p}: {n}' for p, n in sorted(campaign.by_policy.items()))})",
        f"- duration: {campaign.seconds:.0f} s ({campaign.count / max(campaign.seconds, 1e-9):.0f} statements/s)",
        f"- oracle failures: {campaign.escapes} in {len(campaign.findings)} classes, from {len(statements)} "
        f"statements ({', '.join(f'{k}: {n}' for k, n in sorted(kinds.items())) or 'none'})",
    ]
    for name, items in sorted(campaign.findings.items(), key=lambda kv: -len(kv[1])):
        shortest = min(items, key=lambda f: len(f["sql"]))
        lines.append(f"  - {len(items)} x {name}: e.g. `{shortest['sql']}` ({shortest['policy']})")
    return "\n".join(lines)


SECTION = "## Fuzzing campaign (issue 10)"


def section(campaign: Campaign, seed: int, hostility: int, machine: str) -> str:
    return (
        "\n".join(
            [
                SECTION,
                "",
                "Grammar-based fuzzing of the agent gate: statements generated by "
                "`tests/policy/grammar.py` (sublinks in "
                "every expression position, VALUES with ORDER BY/LIMIT/OFFSET/FETCH/locking after it, set operations, "
                "CTEs, LATERAL, window frames, row locks of every strength with OF, ON CONFLICT, "
                "RETURNING, OR/NOT/nested "
                "WHEREs, casts and quoted names, `$n` parameters, and hostile fragments at random positions), decided "
                "for tenant acme under three policies in turn (the support policy; a writer that also inserts, deletes "
                "and upserts; the support policy with a rowFilter). Every admitted statement's rewritten SQL is run by "
                "`tests/policy/oracle.py` as a BYPASSRLS role, never committed: its rows, row count, errors and writes "
                "must not change when the other tenant's rows are deleted and unreadable columns scrambled; it must "
                "write only allowed columns of the tenant's rows, lock only rows an update rule "
                "reaches, leave no large "
                "object, lock, setting or NOTIFY behind, and name only allowlisted functions, operators, types and "
                "relations.",
                "",
                f"Machine: {machine}.",
                "",
                f"Command: `make fuzz` (`python -m bench.fuzz --count {campaign.count} --seed {seed} "
                f"--hostility {hostility}`), PostgreSQL on loopback, other work sharing the 2 cores.",
                "",
                report(campaign, seed, hostility),
                "",
                "The escapes found so far, minimized by hand into `tests/policy/fuzz-findings.jsonl` "
                "(`test_fuzz_findings_are_closed` asserts that each is denied or runs without breaking the oracle):",
                "",
                *(f"- {f['id']} ({f['policy']}): `{f['sql']}`: {f['why']}" for f in minimized()),
                "",
                "The bounded run in `make test` (`test_admitted_statements_keep_to_the_tenant`, derandomized) takes "
                "`PAYBILL_FUZZ_EXAMPLES` examples (400 by default).",
            ]
        )
        + "\n"
    )


def minimized() -> list[dict]:
    path = Path(__file__).resolve().parent.parent / "tests" / "policy" / "fuzz-findings.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def write_section(path: Path, text: str) -> None:
    """Replace (or append) this campaign's section of BENCHMARKS.md, leaving every other section alone."""
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    start = current.find(SECTION)
    if start < 0:
        updated = current.rstrip("\n") + "\n\n" + text
    else:
        following = current.find("\n## ", start + len(SECTION))
        updated = current[:start] + text + (current[following + 1 :] if following >= 0 else "")
        updated = updated.replace(text + "## ", text + "\n## ")
    path.write_text(updated)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz")
    parser.add_argument("--count", type=int, default=int(os.environ.get("PAYBILL_FUZZ_CAMPAIGN", "100000")))
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--hostility", type=int, default=4, help="percent of positions given a hostile fragment")
    parser.add_argument("--progress", type=int, default=5000)
    parser.add_argument("--findings", default=".state/fuzz-campaign-findings.jsonl")
    parser.add_argument("--benchmarks", help="write the campaign's section into this file (BENCHMARKS.md)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the throwaway server on kill, too
    campaign = run(args.count, args.seed, args.progress, args.hostility)
    out = Path(args.findings)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as handle:
        for items in campaign.findings.values():
            for item in sorted(items, key=lambda f: len(f["sql"])):
                handle.write(json.dumps(item) + "\n")
    print(report(campaign, args.seed, args.hostility))
    if args.benchmarks:
        from .__main__ import machine

        write_section(Path(args.benchmarks), section(campaign, args.seed, args.hostility, machine()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
