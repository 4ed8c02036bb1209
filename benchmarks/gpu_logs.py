"""The estimator against real GPU start-up logs (issue 7): one row per entry, device and buffer, then a summary.

Usage: python benchmarks/gpu_logs.py. Each llama.cpp entry of tests/data/gpu-logs/logs.jsonl is rebuilt as a
header-only GGUF (tests/gguf_from_log.py) in a temporary directory and estimated with the entry's settings and
backend. Error = (ours - reported) / reported. Targets: KV 0.5 %, model buffer 2 % per device, GPU compute 10 %;
host/CPU compute and output buffers have none ("-"). Rows that miss are marked with the reason from
tests/test_gpu_logs.py; skipped entries and uncheckable buffers are listed at the end, never dropped silently.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from advisor.estimate import estimate  # noqa: E402
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
    return 1 if unexpected else 0


if __name__ == "__main__":
    raise SystemExit(main())
