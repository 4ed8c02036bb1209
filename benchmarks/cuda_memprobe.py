"""The estimator against llama.cpp's own memory plan on a CUDA GPU (an H200), per buffer.

Usage: python benchmarks/cuda_memprobe.py [--rows]. Also replays the same cases recorded on this project's CPU
(tests/data/llamacpp-cpu/memprobe-cpu.jsonl: every catalog architecture, no GPU).

The recording (tests/data/llamacpp-cuda/h200-memprobe.jsonl, described in tests/cuda_memprobe.py) is replayed: each
catalog model is rebuilt header-only here, estimated with the case's llama-server settings and the CUDA backend,
and every buffer compared: weights and KV/recurrent state 0.5 %, compute 10 % or 2 MiB on the GPU and 5 % or 2 MiB
on the host. No coefficient of the estimator was set from these measurements: the whole file is an evaluation set.
Misses are marked with their listed bound and reason (tests/cuda_memprobe.py MISSES).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import cuda_memprobe as cm  # noqa: E402

MIB = 2**20


def main(argv: list[str]) -> int:
    for data, gpu in ((cm.DATA, True), (cm.DATA_CPU, False), (cm.DATA_CASES, True)):
        report(data, gpu, "--rows" in argv)
    report_gemma4()
    return 0


def report_gemma4() -> None:
    """Gemma 4 E4B (outside the catalog) on this project's CPU: every buffer of its nine cases."""
    print("Gemma 4 E4B on this project's CPU (tests/data/llamacpp-cpu/gemma4-cpu.jsonl; misses and their reasons:"
          " tests/test_cuda_memprobe.py GEMMA4_MISSES)")
    with tempfile.TemporaryDirectory(prefix="advisor-memprobe-") as tmp:
        for row in cm.rows(cm.DATA_GEMMA4_CPU):
            for dev, buf, o, t, ok in cm.compare_gemma4(row, Path(tmp)):
                print(f"  {' '.join(cm.flag_words(row['label'].split('|')[1])):44} {dev:4} {buf:8} ours {o / MIB:9.2f} "
                      f"llama.cpp {t / MIB:9.2f} MiB {(o - t) / t if t else 0.0:+7.1%}  {'ok' if ok else 'MISS'}")


def report(data: Path, gpu: bool, every_row: bool) -> None:
    table = []
    recorded = cm.rows(data)
    failed = [r["label"] for r in recorded if "buffers" not in r]
    with tempfile.TemporaryDirectory(prefix="advisor-memprobe-") as tmp:
        for row in recorded:
            if "buffers" in row:
                model_id, _quant, setting, env = cm.parse_label(row["label"])
                setting += f" [{env}]" if env else ""
                table += [(model_id, setting, *c) for c in cm.compare(row, Path(tmp), gpu)]
    for m, s, dev, buf, o, t, ok in table:
        if every_row or not ok:
            miss = cm.miss_of(m, s, dev, buf) if gpu else cm.CPU_MISSES.get((m, s)) or cm.CPU_MISSES.get((m, "*"))
            mark = "ok" if ok else ("MISS (listed)" if miss and abs(o - t) <= miss[0] * t else "MISS")
            print(f"{m:32} {s[:60]:22} {dev:5} {buf:8} ours {o / MIB:10.2f} llama.cpp {t / MIB:10.2f} MiB "
                  f"{(o - t) / t if t else float('inf'):+8.1%}  {mark}")
    where = "an H200" if gpu else "this project's CPU (no GPU)"
    print(f"\n{len(recorded)} cases measured on {where} ({data.relative_to(ROOT)}); {len(failed)} with a model "
          "that llama.cpp could not load from the header-only file")
    print(f"{'device':6} {'buffer':8} {'rows':>5} {'in target':>10} {'median |err|':>13}")
    for dev in ("gpu0", "host", "cpu"):
        for buf in ("weights", "context", "compute"):
            sel = [(o, t, ok) for _m, _s, d, b, o, t, ok in table if d == dev and b == buf]
            if sel:
                errs = [abs(o - t) / t for o, t, _ in sel if t]
                print(f"{dev:6} {buf:8} {len(sel):5} {sum(ok for *_, ok in sel):5}/{len(sel):<4} "
                      f"{statistics.median(errs) if errs else 0.0:12.1%}")
    print("\nListed misses (tests/cuda_memprobe.py):")
    if gpu:
        for (m, s, dev, buf), (bound, why) in cm.MISSES.items():
            print(f"  {m} {s} {dev} {buf} (|error| <= {bound:.0%}): {why}")
    else:
        for (m, s), (bound, why) in cm.CPU_MISSES.items():
            print(f"  {m} {s} cpu compute (|error| <= {bound:.0%}): {why}")
    print()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
