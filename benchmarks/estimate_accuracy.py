"""The estimator against llama.cpp (llama-cpp-python's build, CPU): one row per case and buffer, then a summary.

Usage: python benchmarks/estimate_accuracy.py [--quick]. Cases: the engine test matrix (tests/test_llamacpp_accuracy.py:
7 architectures x 7 settings, plus 3 recurrent-state models x 5 settings) plus a realistic-size model, Qwen2.5-0.5B shapes in Q8_0 (~0.5 GB, written
header-only/sparse), under several settings. Error = (ours - llama.cpp's) / llama.cpp's, with llama.cpp's log
rounding (two decimals of MiB) on its side; "weights_exact" compares with llama_model_size to the byte.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from advisor.gguf.estimate import Settings  # noqa: E402
from tests import ggufgen  # noqa: E402
from tests.test_llamacpp_accuracy import (  # noqa: E402
    BASE, MIB, PHI3, RECURRENT_SETTINGS, RECURRENT_SPECS, SETTINGS, SPECS, compare, within)

REALISTIC: dict[str, Settings] = {
    "c4096": BASE,
    "c32768": dataclasses.replace(BASE, n_ctx=32768),
    "c8192-fa-off": dataclasses.replace(BASE, n_ctx=8192, flash_attn="off"),
    "c32768-fa-off": dataclasses.replace(BASE, n_ctx=32768, flash_attn="off"),
    "c16384-q8": dataclasses.replace(BASE, n_ctx=16384, cache_type_k="q8_0", cache_type_v="q8_0"),
    "c16384-np-auto": dataclasses.replace(BASE, n_ctx=16384, n_parallel=-1),
    "c16384-np4": dataclasses.replace(BASE, n_ctx=16384, n_parallel=4),
    "c4096-ub256-fa-off": dataclasses.replace(BASE, n_ubatch=256, flash_attn="off"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="only the realistic-size model")
    args = parser.parse_args()
    cases = [] if args.quick else [(a, SPECS[a], n, s) for a in SPECS for n, s in SETTINGS.items()]
    if not args.quick:
        cases += [("phi3", PHI3, n, s) for n, s in SETTINGS.items()]
    if not args.quick:  # recurrent-state models (mamba, mamba2, granitehybrid): "rs" rows compare the RS buffer
        cases += [(a, RECURRENT_SPECS[a], n, s) for a in RECURRENT_SPECS for n, s in RECURRENT_SETTINGS.items()]
    cases += [("qwen2-0.5B", ggufgen.QWEN2_05B, n, s) for n, s in REALISTIC.items()]
    errors: dict[str, list[float]] = {}
    failures = 0
    print(f"{'case':34} {'buffer':14} {'ours MiB':>11} {'llama.cpp MiB':>14} {'error %':>8}")
    with tempfile.TemporaryDirectory(prefix="advisor-acc-") as d:
        paths: dict[str, Path] = {}
        for arch, spec, sname, s in cases:
            if arch not in paths:
                paths[arch] = ggufgen.write(Path(d) / f"{arch}.gguf", spec, sparse=True)
            for buf, ours, theirs in compare(paths[arch], s):
                err = 0.0 if ours == theirs else (ours - theirs) / theirs * 100 if theirs else float("inf")
                if abs(ours - theirs) <= 0.005 * MIB and buf != "weights_exact":
                    err = 0.0  # inside the log's rounding
                errors.setdefault(buf, []).append(abs(err))
                ok = within(buf, ours, theirs)
                failures += not ok
                print(f"{arch + '/' + sname:34} {buf:14} {ours / MIB:11.2f} {theirs / MIB:14.2f} {err:8.2f}"
                      f"{'' if ok else '  OUT OF TARGET'}")
    print()
    print(f"{len(cases)} cases, {len({c[0] for c in cases})} models "
          f"({', '.join(sorted({c[1].arch for c in cases}))})")
    print(f"{'buffer':14} {'median |err| %':>15} {'max |err| %':>12}")
    for buf, errs in errors.items():
        print(f"{buf:14} {statistics.median(errs):15.2f} {max(errs):12.2f}")
    print(f"out of target (weights/KV/output 0.5 %, compute 5 % or 2 MiB): {failures}")


if __name__ == "__main__":
    main()
