"""Median wall time of `advisor probe --json` (a fresh process each run, as a provisioning script calls it).

Usage: python benchmarks/probe_time.py [--runs 10]. Target: median below 0.3 s on the 2-core CI machine.
`advisor --version` is timed alongside as the floor (interpreter and typer start-up).
"""

from __future__ import annotations

import argparse

from _wall import print_rows, time_commands


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    rows = time_commands([["probe", "--json"], ["--version"]], args.runs)
    print_rows(rows, args.runs, "target: probe below 0.3 s")


if __name__ == "__main__":
    main()
