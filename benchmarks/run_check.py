"""Wall time of `advisor run MODEL --check` on a generated tiny GGUF with llama-cpp-python's server, split into the
engine's start-up and advisor's own overhead (a fresh process each run, as a script or CI calls it).

Usage: python benchmarks/run_check.py [--runs 5]

Columns: total = wall time of the command; ready = spawn to ready as advisor saw it (engine start-up plus polling
granularity); engine = the same server started directly and polled every 10 ms (start-up alone); check = the test
prompt; stop = SIGTERM to exit; overhead = total - ready - check - stop (interpreter start, imports, machine key,
model resolution, spawning, writing the learned settings).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import ggufgen  # noqa: E402


def engine_alone(model: Path) -> float:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--n_ctx", "4096", "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    advisor = shutil.which("advisor", path=str(Path(sys.executable).parent)) or "advisor"
    with tempfile.TemporaryDirectory() as tmp:
        model = ggufgen.write(Path(tmp) / "tiny.gguf", ggufgen.Spec())
        env = {**os.environ, "ADVISOR_HOME": str(Path(tmp) / "home"), "HF_HUB_OFFLINE": "1",
               "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}  # fmt: skip
        cmd = [advisor, "run", str(model), "--check", "--json"]
        subprocess.run(cmd, capture_output=True, env=env, check=True)  # warm the file cache
        rows = []
        for _ in range(args.runs):
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, env=env, check=True, text=True)
            total = time.perf_counter() - start
            t = json.loads(done.stdout)["timings"]
            rows.append((total, t["ready_s"], t["check_s"], t["stop_s"], engine_alone(model)))
    med = [statistics.median(col) for col in zip(*rows)]
    total, ready, check, stop, engine = med
    print(f"runs: {args.runs} (medians, seconds)")
    print(f"total {total:.3f}  ready {ready:.3f}  engine alone {engine:.3f}  check {check:.3f}  stop {stop:.3f}")
    print(f"advisor overhead (total - ready - check - stop): {total - ready - check - stop:.3f}")
    print(f"readiness polling cost (ready - engine alone): {ready - engine:.3f}")


if __name__ == "__main__":
    main()
