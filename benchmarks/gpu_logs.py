"""The estimator against real GPU start-up logs (issue 7): one row per entry, device and buffer, then a summary.

Usage: python benchmarks/gpu_logs.py. Each llama.cpp entry of tests/data/gpu-logs/logs.jsonl is rebuilt as a
header-only GGUF (tests/gguf_from_log.py) in a temporary directory and estimated with the entry's settings and
backend. Error = (ours - reported) / reported. Targets: KV 0.5 %, model buffer 2 % per device, GPU compute 10 %;
host/CPU compute and output buffers have none ("-"). Rows that miss are marked with the reason from
tests/test_gpu_logs.py; skipped entries and uncheckable buffers are listed at the end, never dropped silently.
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
from tests.test_gpu_logs import MISSES, SKIPPED_ENTRIES, UNCHECKABLE  # noqa: E402

MIB = 2**20


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
                if tgt is None:
                    mark = "-"
                elif g.within(ours, theirs, tgt):
                    mark = "ok"
                else:
                    mark = "MISS (listed)" if key in MISSES else "MISS"
                table.append((entry["id"], str(s.backend), dev, buf, ours, theirs, tgt, mark))

    print(f"{'entry':44} {'device':6} {'buffer':9} {'ours MiB':>11} {'reported':>11} {'error':>9}  target")
    for eid, _, dev, buf, ours, theirs, tgt, mark in table:
        err = (ours - theirs) / theirs if theirs else 0.0
        t = f"{tgt:.1%}" if tgt is not None else "-"
        print(f"{eid:44} {dev:6} {buf:9} {ours / MIB:11.2f} {theirs / MIB:11.2f} {err:+9.2%}  {t:5} {mark}")

    def summary(title: str, key_index: int) -> None:
        print(f"\nSummary per {title} (targeted buffers only; |error|):")
        print(f"  {title:9} {'buffer':9} {'count':>5} {'median':>8} {'max':>8} {'in target':>9}")
        groups: dict[tuple[str, str], list[tuple[float, bool]]] = {}
        for row in table:
            eid, backend, dev, buf, ours, theirs, tgt, mark = row
            if tgt is None:
                continue
            k = (row[key_index], buf)
            groups.setdefault(k, []).append((abs(ours - theirs) / theirs, mark == "ok"))
        for (k, buf), vals in sorted(groups.items()):
            errs = [v for v, _ in vals]
            ok = sum(1 for _, good in vals if good)
            print(f"  {k:9} {buf:9} {len(vals):5d} {statistics.median(errs):8.2%} {max(errs):8.2%} "
                  f"{ok:>5d}/{len(vals)}")

    summary("backend", 1)
    print("\nSummary per buffer (all backends):")
    print(f"  {'buffer':9} {'count':>5} {'median':>8} {'max':>8} {'in target':>9}")
    for buf in ("kv_cache", "weights", "compute"):
        vals = [(abs(o - t) / t, m == "ok") for _, _, d, b, o, t, tgt, m in table if b == buf and tgt is not None]
        if vals:
            errs = [v for v, _ in vals]
            ok = sum(1 for _, good in vals if good)
            print(f"  {buf:9} {len(vals):5d} {statistics.median(errs):8.2%} {max(errs):8.2%} {ok:>5d}/{len(vals)}")

    print("\nOut of target (listed in tests/test_gpu_logs.py MISSES):")
    for (eid, dev, buf), why in MISSES.items():
        print(f"  {eid} {dev} {buf}: {why}")
    print("\nNot checkable (UNCHECKABLE):")
    for (eid, dev, buf), why in UNCHECKABLE.items():
        print(f"  {eid} {dev} {buf}: {why}")
    print("\nSkipped entries:")
    for eid, why in SKIPPED_ENTRIES.items():
        print(f"  {eid}: {why}")
    unexpected = [r for r in table if r[7] == "MISS"]
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
