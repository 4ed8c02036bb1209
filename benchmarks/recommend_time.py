"""Median wall time of `advisor recommend --json` (whole catalog, a saved profile of this machine), 10 runs, each a
fresh process: nothing is cached across runs. Target: under 0.5 s.

    python benchmarks/recommend_time.py [--runs 10] [--hardware FILE]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--hardware", type=Path)
    args = ap.parse_args()
    exe = shutil.which("advisor", path=str(Path(sys.executable).parent)) or "advisor"
    with tempfile.TemporaryDirectory() as tmp:
        hw = args.hardware
        if hw is None:
            hw = Path(tmp) / "profile.json"
            hw.write_text(subprocess.run([exe, "probe", "--json"], capture_output=True, text=True, check=True).stdout)
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            done = subprocess.run([exe, "recommend", "--json", "--hardware", str(hw)], capture_output=True, text=True)
            times.append(time.perf_counter() - t)
            if done.returncode not in (0, 3):
                sys.exit(f"advisor recommend failed: {done.stderr}")
    print(f"advisor recommend --json: median {statistics.median(times):.3f} s over {len(times)} runs "
          f"(min {min(times):.3f}, max {max(times):.3f}); target < 0.5 s")


if __name__ == "__main__":
    main()
