"""The compute-buffer estimate on dense shapes no catalog model has, against llama.cpp's own plan.

24 llama-style shapes drawn at random (tests/data/llamacpp-cpu/shapes-specs.json), each at 4096 and 32768 cells with
flash attention on and off, rebuilt header-only here and estimated with the case's settings:
  - CPU: llama.cpp's plan on this project's CPU (tests/data/llamacpp-cpu/shapes-cpu.jsonl), target 5 % or 2 MiB;
  - GPU: the oracle that leaves the host-side inputs out of the buffer (tests/data/llamacpp-cuda/shapes-oracle.jsonl,
    README.md there), full offload, target 10 % or 2 MiB.
The shapes were drawn after the compute coefficients were set; nothing was fitted on them.

    python benchmarks/shapes_sweep.py           # the table
    python benchmarks/shapes_sweep.py --rows    # every case out of target
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from advisor.gguf.estimate import Settings, estimate  # noqa: E402
from advisor.gguf.facts import read_gguf_facts  # noqa: E402
from tests import ggufgen  # noqa: E402
from tests.ggufgen import Spec, T  # noqa: E402

DATA = ROOT / "tests" / "data"
MIB = 2**20
SETS = (("cpu", DATA / "llamacpp-cpu" / "shapes-cpu.jsonl", 0.05),
        ("gpu", DATA / "llamacpp-cuda" / "shapes-oracle.jsonl", 0.10))


def compare(kind: str, row: dict, path: Path) -> tuple[int, int]:
    """(ours, llama.cpp's) compute bytes of one case."""
    _name, cells, fa = row["label"].split("|")
    gpu = kind == "gpu"
    s = Settings(n_ctx=int(cells[1:]), n_parallel=1, flash_attn=fa[2:], n_gpus=1 if gpu else 0,
                 backend="cuda" if gpu else None, mmap=False, kv_unified=False)
    device = next(d for d in estimate(read_gguf_facts(path), s).devices if d.device == ("gpu0" if gpu else "cpu"))
    return device.compute_bytes, sum(b["compute"] for b in row["buffers"])


def main(argv: list[str]) -> int:
    specs = json.loads((DATA / "llamacpp-cpu" / "shapes-specs.json").read_text())
    print(f"{'buffer':6} {'flash attn':10} {'cases':>5} {'in target':>9} {'median |err|':>12} {'max |err|':>9}")
    misses = []
    with tempfile.TemporaryDirectory(prefix="advisor-shapes-") as tmp:
        for name, kw in specs.items():
            ggufgen.write(Path(tmp) / f"{name}.gguf", Spec("llama", wtype=T.F16, **kw), sparse=True)
        for kind, data, target in SETS:
            rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
            for fa in ("faon", "faoff"):
                errs, ok = [], 0
                for row in (r for r in rows if r["label"].endswith(fa)):
                    ours, theirs = compare(kind, row, Path(tmp) / f"{row['label'].split('|')[0]}.gguf")
                    errs.append(abs(ours - theirs) / theirs)
                    if abs(ours - theirs) <= max(target * theirs, 2 * MIB):
                        ok += 1
                    else:
                        misses.append((kind, row["label"], specs[row["label"].split("|")[0]], ours, theirs))
                print(f"{kind:6} {fa[2:]:10} {len(errs):5} {ok:>4}/{len(errs):<4} {statistics.median(errs):11.1%} "
                      f"{max(errs):8.1%}")
    if "--rows" in argv:
        for kind, label, kw, ours, theirs in misses:
            shape = " ".join(f"{k}={v}" for k, v in kw.items() if k != "n_layer")
            print(f"{kind} {label:18} {shape}: ours {ours / MIB:.2f} MiB, llama.cpp {theirs / MIB:.2f} "
                  f"({(ours - theirs) / theirs:+.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
