"""Median wall time of `advisor probe --json` (a fresh process each run, as a provisioning script calls it).

Usage: python benchmarks/probe_time.py [--runs 10]. Target (issue 2): median below 0.3 s on the 2-core CI machine.
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
    subprocess.run([advisor, "probe", "--json"], capture_output=True, check=True)  # warm the file cache
    rows = []
    for command in (["probe", "--json"], ["--version"]):
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run([advisor, *command], capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        rows.append((" ".join(["advisor", *command]), statistics.median(times), min(times), max(times)))
    print(f"{'command':<24} {'median s':>9} {'min s':>7} {'max s':>7}   ({args.runs} runs each)")
    for name, median, low, high in rows:
        print(f"{name:<24} {median:>9.3f} {low:>7.3f} {high:>7.3f}")


if __name__ == "__main__":
    main()
