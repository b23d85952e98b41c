"""`make bench`: run every benchmark in one process and write BENCHMARKS.md."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

from . import admission, clouds, policy, recovery, scaling, tenants, terraform


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    postgres = subprocess.run(["pg_ctl", "--version"], capture_output=True, text=True).stdout.strip() or "pgserver"
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; {postgres}"
    )


def kept_sections(previous: str, written: str) -> list[str]:
    """The `## ` sections of the previous file this run does not write (e.g. the fuzzing campaign's), unchanged."""
    headings = {line for line in written.splitlines() if line.startswith("## ")}
    kept = []
    for chunk in previous.split("\n## ")[1:]:
        section = "## " + chunk.rstrip("\n")
        if section.splitlines()[0] not in headings:
            kept.append(section)
    return kept


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (for a smoke run)")
    parser.add_argument("--out", default="BENCHMARKS.md")
    parser.add_argument(
        "--only",
        choices=("policy", "tenants", "terraform", "scaling", "recovery", "clouds", "admission"),
        help="run one group; the file keeps the others",
    )
    args = parser.parse_args()
    groups = {
        "policy": policy.run,
        "tenants": tenants.run,
        "terraform": terraform.run,
        "scaling": scaling.run,
        "recovery": recovery.run,
        "clouds": clouds.run,
        "admission": admission.run,
    }
    load_before = os.getloadavg()[0]
    sections = [run(args.quick) for name, run in groups.items() if args.only in (None, name)]
    load_after = os.getloadavg()[0]
    out = Path(args.out)
    text = (
        "\n\n".join(
            [
                "# Benchmarks",
                f"Machine: {machine()}.",
                f"Command: `make bench` (`{Path(sys.executable).name} -m bench{' --quick' if args.quick else ''}"
                f"{f' --only {args.only}' if args.only else ''}`); "
                "every figure in a table comes from the same run, side by side. Load average (1 min) "
                "when the run began and "
                f"ended: {load_before:.1f} and {load_after:.1f} (other work shares the cores; ratios "
                "measured side by side "
                "hold better than absolute times).",
                *sections,
                *kept_sections(out.read_text() if out.exists() else "", "\n".join(sections)),
            ]
        )
        + "\n"
    )
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
