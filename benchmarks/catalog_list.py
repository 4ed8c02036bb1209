"""Median wall time of `advisor catalog list --json` (a fresh process each run, the real installed command).

Usage: python benchmarks/catalog_list.py [--runs 10]. Target (issue 4): median below 0.3 s. `advisor --version` is
timed alongside as the floor (interpreter + typer start-up), so the catalog's own cost is the difference.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    advisor = shutil.which("advisor", path=str(Path(sys.executable).parent)) or "advisor"
    subprocess.run([advisor, "catalog", "list", "--json"], capture_output=True, check=True)  # warm the file cache
    rows = []
    for command in (["catalog", "list", "--json"], ["--version"]):
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run([advisor, *command], capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        rows.append((" ".join(["advisor", *command]), statistics.median(times), min(times), max(times)))
    print(f"{'command':<30} {'median s':>9} {'min s':>7} {'max s':>7}   ({args.runs} runs each)")
    for name, median, low, high in rows:
        print(f"{name:<30} {median:>9.3f} {low:>7.3f} {high:>7.3f}")


if __name__ == "__main__":
    main()
