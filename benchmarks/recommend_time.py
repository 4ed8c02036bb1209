"""Wall time of `advisor recommend --json` (the whole catalog, a saved profile of this machine) beside llmfit's
`llmfit recommend --json` (a peer tool: a Rust binary that also probes and ranks a model database), each run a fresh
process, the two commands alternating so that both see the same load. Targets: advisor's median at most 0.3 s and
not slower than llmfit (ratio <= 1); `advisor probe --json` at most 0.2 s.

    python benchmarks/recommend_time.py [--runs 10] [--hardware FILE] [--deadline 30] [--llmfit EXE | --no-llmfit]

llmfit is installed by this script from PyPI (`llmfit==1.1.17`, a binary wheel) into a scratch virtualenv under
~/.cache/advisor-bench/llmfit, never into advisor's environment; `--llmfit EXE` uses one you have. When it cannot be
installed (offline), its row says why and advisor's rows still print.

Timed with this script's own clock (time.perf_counter around each process). A run counts only when it did its job:
exit status 0 and a JSON answer with at least one plan (llmfit: at least one model). Anything else is not a valid
timing: the row says how many runs were valid, and the script exits non-zero if an advisor command had none. Each run
has a deadline (--deadline seconds): a run past it is killed and counted as failed.

Python's bytecode is compiled first (``compileall``, as pip does when it installs a wheel): with
PYTHONDONTWRITEBYTECODE set and an editable install, every run would otherwise recompile advisor from source, which
no installed copy does.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

from _wall import advisor_exe

LLMFIT = "llmfit==1.1.17"
SCRATCH = Path.home() / ".cache" / "advisor-bench" / "llmfit"


def _answer_ok(stdout: str, key: str) -> str:
    try:
        items = json.loads(stdout).get(key) or []
    except (ValueError, AttributeError):
        return "stdout is not the JSON answer"
    return "" if items else f"no {key} in the answer"


def run_once(argv: list[str], deadline_s: float, key: str) -> tuple[float, str]:
    """(seconds, "" when the run answered with at least one ``key`` item, else why it does not count)."""
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=deadline_s)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, f"past the {deadline_s:g} s deadline"
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return seconds, f"exit {done.returncode}: {done.stderr.strip()[-200:]}"
    return seconds, _answer_ok(done.stdout, key)


def llmfit_exe(given: str | None) -> tuple[str | None, str]:
    """llmfit's executable, or None and why not."""
    if given:
        return given, ""
    exe = SCRATCH / "bin" / "llmfit"
    if not exe.exists():
        try:
            venv.create(SCRATCH, with_pip=True, clear=True)
            done = subprocess.run([str(SCRATCH / "bin" / "python"), "-m", "pip", "install", "-q", LLMFIT],
                                  capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            return None, f"could not install {LLMFIT}: {exc}"
        if done.returncode != 0 or not exe.exists():
            return None, f"could not install {LLMFIT}: {done.stderr.strip()[-200:]}"
    return str(exe), ""


def compile_advisor() -> None:
    import advisor

    compileall.compile_dir(Path(advisor.__file__).parent, quiet=1)


def measure(commands: dict[str, tuple[list[str], str]], runs: int, deadline_s: float) -> dict[str, dict]:
    """Every command ``runs`` times, in turn (one untimed round first warms the file cache)."""
    out = {name: {"times": [], "failures": []} for name in commands}
    for argv, key in commands.values():
        run_once(argv, deadline_s, key)
    for _ in range(runs):
        for name, (argv, key) in commands.items():
            seconds, why = run_once(argv, deadline_s, key)
            (out[name]["failures"] if why else out[name]["times"]).append(why or seconds)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--hardware", type=Path, help="a profile to plan for (default: this machine, probed once)")
    ap.add_argument("--deadline", type=float, default=30.0, help="seconds one run may take")
    ap.add_argument("--llmfit", help="llmfit's executable (default: installed in a scratch virtualenv)")
    ap.add_argument("--no-llmfit", action="store_true", help="time advisor only")
    args = ap.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    compile_advisor()
    exe = advisor_exe()
    with tempfile.TemporaryDirectory() as tmp:
        profile = args.hardware
        if profile is None:
            profile = Path(tmp) / "this-machine.json"
            probe = subprocess.run([exe, "probe", "--json"], capture_output=True, text=True, check=True,
                                   timeout=args.deadline)
            profile.write_text(probe.stdout)
        commands = {
            f"advisor recommend --json --hardware {profile.name}": ([exe, "recommend", "--json", "--hardware",
                                                                     str(profile)], "plans"),
            "advisor probe --json": ([exe, "probe", "--json"], "cpu"),
        }
        why_no_llmfit = "--no-llmfit"
        if not args.no_llmfit:
            fit, why_no_llmfit = llmfit_exe(args.llmfit)
            if fit:
                commands["llmfit recommend --json"] = ([fit, "recommend", "--json"], "models")
        rows = measure(commands, args.runs, args.deadline)
    return report(rows, why_no_llmfit)


def report(rows: dict[str, dict], why_no_llmfit: str) -> int:
    width = max(len(name) for name in rows) + 2
    print(f"{'command':<{width}} {'valid':>6} {'median s':>9} {'min s':>7} {'max s':>7}   target")
    targets = {"advisor recommend": "<= 0.3 s, not slower than llmfit", "advisor probe": "<= 0.2 s"}
    status = 0
    for name, r in rows.items():
        t = r["times"]
        stats = f"{statistics.median(t):>9.3f} {min(t):>7.3f} {max(t):>7.3f}" if t else f"{'-':>9} {'-':>7} {'-':>7}"
        target = next((v for k, v in targets.items() if name.startswith(k)), "")
        print(f"{name:<{width}} {len(t):>3}/{len(t) + len(r['failures']):<2} {stats}   {target}")
        for why in sorted(set(r["failures"])):
            print(f"    not counted ({r['failures'].count(why)}x): {why}")
        status |= name.startswith("advisor") and not t
    ours = next((r["times"] for n, r in rows.items() if n.startswith("advisor recommend")), [])
    theirs = rows.get("llmfit recommend --json", {}).get("times", [])
    if ours and theirs:
        print(f"advisor / llmfit (median): {statistics.median(ours) / statistics.median(theirs):.2f}")
    elif not theirs:
        print(f"llmfit not timed: {why_no_llmfit or 'no valid run'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
