"""Median wall time of `advisor recommend --json` (whole catalog, a saved profile of this machine), 10 runs, each a
fresh process: nothing is cached across runs. Target: under 0.5 s.

    python benchmarks/recommend_time.py [--runs 10] [--hardware FILE]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from _wall import advisor_exe, print_rows, time_commands


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--hardware", type=Path, action="append", help="profiles to plan for (default: this machine)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        profiles = args.hardware
        if not profiles:
            here = Path(tmp) / "this-machine.json"
            probe = subprocess.run([advisor_exe(), "probe", "--json"], capture_output=True, text=True, check=True)
            here.write_text(probe.stdout)
            profiles = [here]
        commands = [["recommend", "--json", "--hardware", str(p)] for p in profiles]
        rows = time_commands(commands, args.runs, ok_codes=(0, 3))
    print_rows(rows, args.runs, "target: below 0.5 s")


if __name__ == "__main__":
    main()
