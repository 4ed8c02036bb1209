"""The estimator against real GPU start-up logs: one row per entry, device and buffer, then a summary.

Usage: python benchmarks/gpu_logs.py. Each llama.cpp entry of tests/data/gpu-logs/logs.jsonl is rebuilt as a
header-only GGUF (tests/gguf_from_log.py) in a temporary directory and estimated with the entry's settings and
backend. Error = (ours - reported) / reported. Targets: KV and model buffers 0.5 %, compute 10 % or 2 MiB on a GPU
and 5 % or 2 MiB on the host/CPU side; the output buffer has none ("-"). The calibration set (entries whose
buffers set a rule) and the evaluation set (held out) are printed apart. Rows that miss are marked with the reason
and bound from tests/test_gpu_logs.py; skipped entries and uncheckable buffers are listed at the end.
A second section runs the vLLM entries through the planner's vLLM memory model (tests/test_gpu_logs_vllm.py):
available KV memory and KV tokens, target 5 %.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from advisor.gguf.estimate import estimate  # noqa: E402
from tests import gguf_from_log as g  # noqa: E402
from tests.test_gpu_logs import (  # noqa: E402
    BY_CONSTRUCTION, CALIBRATION, EVALUATION, MISSES, SKIPPED_ENTRIES, UNCHECKABLE)

MIB = 2**20


def _mark(key: tuple[str, str, str], ours: float, theirs: float, tgt: float | None, buf: str) -> str:
    if tgt is None:
        return "-"
    if g.within(ours, theirs, tgt, buf):
        return "ok"
    if key in MISSES:
        return "MISS (listed)" if abs(ours - theirs) <= MISSES[key][0] * theirs else "MISS (worse than its bound)"
    return "MISS"


def main() -> int:
    table: list[tuple[str, str, str, str, float, float, float | None, str]] = []
    with tempfile.TemporaryDirectory(prefix="advisor-gpulogs-") as tmp:
        for entry in g.load_entries():
            if entry["id"] in SKIPPED_ENTRIES or entry["id"] not in g.MODELS:
                continue
            facts, _ = g.build(entry, tmp)
            s = g.settings_of(entry)
            est = estimate(facts, s)
            for dev, buf, ours, theirs, tgt in g.rows(entry, est):
                key = (entry["id"], dev, buf)
                if key in UNCHECKABLE:
                    continue
                mark = _mark(key, ours, theirs, tgt, buf)
                if buf == "kv_cache" and entry["id"] in BY_CONSTRUCTION:
                    mark += " (by construction)"
                table.append((entry["id"], str(s.backend), dev, buf, ours, theirs, tgt, mark))

    for title, ids in (("CALIBRATION SET (entries that set a rule: tests/test_gpu_logs.py CALIBRATION)",
                        set(CALIBRATION)), ("EVALUATION SET (held out)", set(EVALUATION))):
        print(f"\n{title}")
        print(f"{'entry':44} {'device':6} {'buffer':9} {'ours MiB':>11} {'reported':>11} {'error':>9}  target")
        for eid, _, dev, buf, ours, theirs, tgt, mark in table:
            if eid not in ids:
                continue
            err = (ours - theirs) / theirs if theirs else 0.0
            t = f"{tgt:.1%}" if tgt is not None else "-"
            print(f"{eid:44} {dev:6} {buf:9} {ours / MIB:11.2f} {theirs / MIB:11.2f} {err:+9.2%}  {t:5} {mark}")

    print("\nSummary per set and buffer (targeted rows; by-construction KV rows left out; |error|):")
    print(f"  {'set':12} {'buffer':9} {'device':6} {'count':>5} {'median':>8} {'max':>8} {'in target':>9}")
    for name, ids in (("calibration", set(CALIBRATION)), ("evaluation", set(EVALUATION))):
        for buf in ("kv_cache", "weights", "compute"):
            for side in ("gpu", "host/cpu"):
                vals = [(abs(o - t) / t, m == "ok") for eid, _, d, b, o, t, tgt, m in table
                        if eid in ids and b == buf and tgt is not None and "construction" not in m
                        and (d.startswith("gpu")) == (side == "gpu")]
                if vals:
                    errs = [v for v, _ in vals]
                    ok = sum(1 for _, good in vals if good)
                    print(f"  {name:12} {buf:9} {side:8} {len(vals):3d} {statistics.median(errs):8.2%} "
                          f"{max(errs):8.2%} {ok:>5d}/{len(vals)}")

    print("\nOut of target (tests/test_gpu_logs.py MISSES: bound, reason):")
    for (eid, dev, buf), (bound, why) in MISSES.items():
        print(f"  {eid} {dev} {buf} (|error| <= {bound:.0%}): {why}")
    print("\nNot checkable (UNCHECKABLE):")
    for (eid, dev, buf), why in UNCHECKABLE.items():
        print(f"  {eid} {dev} {buf}: {why}")
    print("\nKV rows by construction (BY_CONSTRUCTION):")
    for eid, why in BY_CONSTRUCTION.items():
        print(f"  {eid}: {why}")
    print("\nSkipped entries:")
    for eid, why in SKIPPED_ENTRIES.items():
        print(f"  {eid}: {why}")
    unexpected = [r for r in table if r[7].startswith("MISS") and not r[7].startswith("MISS (listed)")]
    return 1 if unexpected or vllm_section() else 0


def vllm_section() -> int:
    """advisor.vllm.memory (what `advisor estimate --engine vllm` and the planner run) on every vLLM V1 entry:
    available KV memory per rank (GiB) and KV tokens, target 5 %; weights from the config for information.
    Calibration and evaluation sets are printed apart. Returns the count of unlisted or worsened misses."""
    from tests import test_gpu_logs_vllm as tv

    print("\n\nvLLM (advisor/vllm/memory.py): weights from the log; activation + non-torch + KV layout from our model")
    vt: list[tuple[str, str, float, float, float | None, str]] = []
    for title, ids in (("calibration set (CALIBRATED)", list(tv.CALIBRATED)), ("evaluation set", list(tv.EVALUATION))):
        print(f"\n{title}")
        print(f"{'entry':44} {'device':6} {'buffer':9} {'ours':>11} {'reported':>11} {'error':>9}  target")
        for entry in (e for e in tv.VLLM if e["id"] in ids):
            for buf, ours, theirs, tgt in tv.rows(entry):
                key = (entry["id"], buf)
                err = (ours - theirs) / theirs
                if tgt is None:
                    mark = "-"
                elif tv.within(ours, theirs, tgt):
                    mark = "ok"
                elif key in tv.MISSES:
                    mark = "MISS (listed)" if abs(err) <= tv.MISSES[key][0] else "MISS (worse than its bound)"
                else:
                    mark = "MISS"
                vt.append((entry["id"], buf, ours, theirs, tgt, mark))
                scale = 1 if buf == "kv_tokens" else 2**30
                unit = "" if buf == "kv_tokens" else "  (GiB)"
                t = f"{tgt:.1%}" if tgt is not None else "-"
                print(f"{entry['id']:44} {tv.device_of(entry):6} {buf:9} {ours / scale:11.2f} {theirs / scale:11.2f} "
                      f"{err:+9.2%}  {t:5} {mark}{unit}")
    print("\nvLLM summary per buffer (CUDA; |error|):")
    print(f"  {'set':12} {'buffer':9} {'count':>5} {'median':>8} {'max':>8} {'in target':>9}")
    for name, ids in (("calibration", set(tv.CALIBRATED)), ("evaluation", set(tv.EVALUATION))):
        for buf in ("kv_avail", "kv_tokens", "weights"):
            vals = [(abs(o - t) / t, m) for eid, b, o, t, tgt, m in vt if b == buf and eid in ids]
            if not vals:
                continue
            errs = [v for v, _ in vals]
            ok = f"{sum(1 for _, m in vals if m == 'ok'):>5d}/{len(vals)}" if buf != "weights" else "    -"
            print(f"  {name:12} {buf:9} {len(vals):5d} {statistics.median(errs):8.2%} {max(errs):8.2%} {ok:>9}")
    print("\nvLLM constants calibrated on (CALIBRATED):")
    for eid, what in tv.CALIBRATED.items():
        print(f"  {eid}: {what}")
    print("\nvLLM out of target (MISSES: bound, reason):")
    for (eid, buf), (bound, why) in tv.MISSES.items():
        print(f"  {eid} {buf} (|error| <= {bound:.1%}): {why}")
    print("\nvLLM rows without a logged value (NO_LINE):")
    for (eid, buf), why in tv.NO_LINE.items():
        print(f"  {eid} {buf}: {why}")
    print("\nvLLM entries out of scope:")
    for eid, why in tv.OUT_OF_SCOPE.items():
        print(f"  {eid}: {why}")
    return sum(1 for r in vt if r[5].startswith("MISS") and r[5] != "MISS (listed)")


if __name__ == "__main__":
    raise SystemExit(main())
