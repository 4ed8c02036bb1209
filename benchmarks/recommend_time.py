"""Median wall time of `advisor recommend --json` (whole catalog, a saved profile of this machine), 10 runs, each a
fresh process: nothing is cached across runs. Target (issue 5): under 0.5 s.

    python benchmarks/recommend_time.py [--runs 10] [--hardware FILE] [--deadline 30]

Timed with this script's own clock (time.perf_counter around each process). A run counts only when it did its job:
exit status 0 and a JSON answer with at least one plan. A "nothing fits" answer (exit 3) or any other failure is
not a valid timing: the row says how many runs were valid and the script exits non-zero if a command had none. Each
run has a deadline (--deadline seconds): a run past it is killed and counted as failed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _wall import advisor_exe


def run_once(argv: list[str], deadline_s: float) -> tuple[float, str]:
    """(seconds, "" when the run gave at least one plan, else why it does not count)."""
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=deadline_s)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, f"past the {deadline_s:g} s deadline"
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return seconds, f"exit {done.returncode}: {done.stderr.strip()[-200:]}"
    try:
        plans = json.loads(done.stdout).get("plans") or []
    except (ValueError, AttributeError):
        return seconds, "stdout is not the JSON answer"
    return seconds, "" if plans else "no plan in the answer"


def time_recommend(profile: Path, runs: int, deadline_s: float) -> dict:
    argv = [advisor_exe(), "recommend", "--json", "--hardware", str(profile)]
    run_once(argv, deadline_s)  # untimed: warms the file cache
    times, failures = [], []
    for _ in range(runs):
        seconds, why = run_once(argv, deadline_s)
        (failures if why else times).append(why or seconds)
    return {"command": " ".join(["advisor", *argv[1:]]), "times": times, "failures": failures}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--hardware", type=Path, action="append", help="profiles to plan for (default: this machine)")
    ap.add_argument("--deadline", type=float, default=30.0, help="seconds one run may take")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        profiles = args.hardware
        if not profiles:
            here = Path(tmp) / "this-machine.json"
            probe = subprocess.run([advisor_exe(), "probe", "--json"], capture_output=True, text=True, check=True,
                                   timeout=args.deadline)
            here.write_text(probe.stdout)
            profiles = [here]
        rows = [time_recommend(p, args.runs, args.deadline) for p in profiles]
    width = max(len(r["command"]) for r in rows) + 2
    print(f"{'command':<{width}} {'valid':>6} {'median s':>9} {'min s':>7} {'max s':>7}   target: below 0.5 s")
    status = 0
    for r in rows:
        t = r["times"]
        stats = f"{statistics.median(t):>9.3f} {min(t):>7.3f} {max(t):>7.3f}" if t else f"{'-':>9} {'-':>7} {'-':>7}"
        print(f"{r['command']:<{width}} {len(t):>3}/{len(t) + len(r['failures']):<2} {stats}")
        for why in sorted(set(r["failures"])):
            print(f"    not counted ({r['failures'].count(why)}x): {why}")
        status |= not t
    return status


if __name__ == "__main__":
    sys.exit(main())
