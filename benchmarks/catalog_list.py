"""Median wall time of `advisor catalog list --json` (a fresh process each run, the real installed command).

Usage: python benchmarks/catalog_list.py [--runs 10]. Target: median below 0.3 s. `advisor --version` is
timed alongside as the floor (interpreter + typer start-up), so the catalog's own cost is the difference.
"""

from __future__ import annotations

import argparse

from _wall import print_rows, time_commands


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    rows = time_commands([["catalog", "list", "--json"], ["--version"]], args.runs)
    print_rows(rows, args.runs, "target: catalog list below 0.3 s")


if __name__ == "__main__":
    main()
