"""Wall time of `advisor run MODEL --check` on a generated tiny GGUF with llama-cpp-python's server, against the
same work done directly: the engine started, polled until ready, asked the same test prompt and stopped by this
script (a fresh process each run, as a script or CI calls it).

Usage: python benchmarks/run_check.py [--runs 5] [--deadline 120]

Every figure is measured with this script's own clock (time.perf_counter), never read from advisor's output; every
wait has a deadline (--deadline seconds per run; a run past it is killed and not counted). A run counts only when it
did its job: for advisor, exit 0 with "ok" and a test prompt that produced tokens; for the direct run, the server
answered /v1/models and the prompt produced tokens.

Columns (medians over valid runs): advisor = wall time of `advisor run --check`; direct = start + ready + prompt +
stop of the engine alone (start = spawn to the first 200 from /v1/models, polled every 10 ms); overhead = advisor -
direct (interpreter start, imports, probing, planning, model resolution, readiness-poll granularity, writing the
learned settings).
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

#: The prompt advisor's check sends (advisor/runner/execute.py TEST_PROMPT, TEST_MAX_TOKENS), so both sides do the
#: same work.
PROMPT = {"messages": [{"role": "user", "content": "Say OK"}], "max_tokens": 16, "temperature": 0}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def direct(model: Path, deadline_s: float) -> dict[str, float] | str:
    """The engine alone: {start, prompt, stop, total} seconds, or why the run does not count."""
    port = _free_port()
    t0 = time.perf_counter()
    end = t0 + deadline_s
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--n_ctx", "4096", "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        ready = None
        while ready is None:
            if time.perf_counter() > end:
                return f"not ready within the {deadline_s:g} s deadline"
            if proc.poll() is not None:
                return f"the server exited ({proc.returncode}) before it was ready"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1) as r:
                    if r.status == 200:
                        ready = time.perf_counter()
            except OSError:
                time.sleep(0.01)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(PROMPT).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=max(1.0, end - time.perf_counter())) as r:
            answer = json.loads(r.read())
        answered = time.perf_counter()
        if not (answer.get("usage") or {}).get("completion_tokens"):
            return "the prompt produced no tokens"
        proc.terminate()
        proc.wait(timeout=max(1.0, end - time.perf_counter()))
        stopped = time.perf_counter()
        return {"start": ready - t0, "prompt": answered - ready, "stop": stopped - answered, "total": stopped - t0}
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        return f"direct run failed: {e}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def through_advisor(cmd: list[str], env: dict[str, str], deadline_s: float) -> float | str:
    """Wall time of one `advisor run --check`, or why the run does not count."""
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, env=env, text=True, timeout=deadline_s)
    except subprocess.TimeoutExpired:
        return f"past the {deadline_s:g} s deadline"
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return f"exit {done.returncode}: {done.stderr.strip()[-200:]}"
    try:
        result = json.loads(done.stdout)
    except ValueError:
        return "stdout is not the JSON result"
    if not (result.get("ok") and (result.get("check") or {}).get("completion_tokens")):
        return "the check did not produce tokens"
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds one run may take")
    args = parser.parse_args()
    advisor = shutil.which("advisor", path=str(Path(sys.executable).parent)) or "advisor"
    ours: list[float] = []
    alone: list[dict[str, float]] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = ggufgen.write(Path(tmp) / "tiny.gguf", ggufgen.Spec())
        env = {**os.environ, "ADVISOR_HOME": str(Path(tmp) / "home"), "HF_HUB_OFFLINE": "1",
               "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}  # fmt: skip
        cmd = [advisor, "run", str(model), "--check", "--json"]
        through_advisor(cmd, env, args.deadline)  # untimed: warms the file cache
        for _ in range(args.runs):
            a = through_advisor(cmd, env, args.deadline)
            d = direct(model, args.deadline)
            (failures.append(f"advisor: {a}") if isinstance(a, str) else ours.append(a))
            (failures.append(f"direct: {d}") if isinstance(d, str) else alone.append(d))
    print(f"runs: {args.runs}; valid: advisor {len(ours)}, direct {len(alone)} (medians, seconds, this script's clock)")
    for why in sorted(set(failures)):
        print(f"  not counted ({failures.count(why)}x): {why}")
    if not ours or not alone:
        return 1
    med = {k: statistics.median(d[k] for d in alone) for k in ("start", "prompt", "stop", "total")}
    total = statistics.median(ours)
    print(f"{'advisor run --check':<22} {total:>8.3f}")
    print(f"{'direct: start':<22} {med['start']:>8.3f}")
    print(f"{'direct: prompt':<22} {med['prompt']:>8.3f}")
    print(f"{'direct: stop':<22} {med['stop']:>8.3f}")
    print(f"{'direct: total':<22} {med['total']:>8.3f}")
    print(f"{'advisor overhead':<22} {total - med['total']:>8.3f}   (advisor - direct total)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
