"""Wall time of whole `advisor` commands, each run a fresh process (as scripts call it): the shared timing loop."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def advisor_exe() -> str:
    return shutil.which("advisor", path=str(Path(sys.executable).parent)) or "advisor"


def time_commands(commands: list[list[str]], runs: int, ok_codes: tuple[int, ...] = (0,)) -> list[tuple]:
    """(command, median, min, max) seconds per command; one untimed run first warms the file cache."""
    exe = advisor_exe()
    rows = []
    for command in commands:
        subprocess.run([exe, *command], capture_output=True)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            done = subprocess.run([exe, *command], capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if done.returncode not in ok_codes:
                sys.exit(f"advisor {' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        rows.append((" ".join(["advisor", *command]), statistics.median(times), min(times), max(times)))
    return rows


def print_rows(rows: list[tuple], runs: int, target: str = "") -> None:
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'command':<{width}} {'median s':>9} {'min s':>7} {'max s':>7}   ({runs} runs each){'; ' + target if target else ''}")
    for name, median, low, high in rows:
        print(f"{name:<{width}} {median:>9.3f} {low:>7.3f} {high:>7.3f}")
