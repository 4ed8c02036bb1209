"""The compute-buffer estimate on dense shapes no catalog model has, against llama.cpp's own plan.

Two sweeps of random llama-style shapes, rebuilt header-only here and estimated with each case's settings:
  - sweep 1 (tests/data/llamacpp-cpu/shapes-specs.json): 24 shapes at 4096 and 32768 cells, flash attention on and
    off. Drawn after the compute phases were set; the allocator replay (advisor/gguf/galloc.py) was then written
    against it, so for the replay it is the development set;
  - sweep 2 (shapes2-specs.json): 24 shapes, 2-5 layers, one random context and ubatch each, flash attention on and
    off, drawn after the replay was written: its held-out check.
Each against llama.cpp's plan on this project's CPU (tests/data/llamacpp-cpu/shapes*-cpu.jsonl, target 5 % or 2 MiB)
and the oracle that leaves the host-side inputs out of the buffer, as CUDA0's at full offload
(tests/data/llamacpp-cuda/shapes*-oracle.jsonl, README.md there; target 10 % or 2 MiB). "exact": to the byte. The
oracle takes the token embeddings in its buffer after the inputs, where a GPU copies them in first, so the GPU rows
replay the allocator in the oracle's order (galloc.llama_compute_bytes embd_copied=False).

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

from advisor.gguf import estimate as est  # noqa: E402
from advisor.gguf.estimate import Settings, estimate  # noqa: E402
from advisor.gguf.facts import read_gguf_facts  # noqa: E402
from tests import ggufgen  # noqa: E402
from tests.ggufgen import Spec, T  # noqa: E402

DATA = ROOT / "tests" / "data"
MIB = 2**20
SWEEPS = (("1", "shapes"), ("2", "shapes2"))
TARGET = {"cpu": 0.05, "gpu": 0.10}


def data_of(kind: str, stem: str) -> Path:
    if kind == "cpu":
        return DATA / "llamacpp-cpu" / f"{stem}-cpu.jsonl"
    return DATA / "llamacpp-cuda" / f"{stem}-oracle.jsonl"


def compare(kind: str, row: dict, path: Path) -> tuple[int, int]:
    """(ours, llama.cpp's) compute bytes of one case; labels are name|cCELLS[|ubN]|faON."""
    parts = row["label"].split("|")
    cells, fa = parts[1], parts[-1]
    ub = int(parts[2][2:]) if len(parts) == 4 else 512
    gpu = kind == "gpu"
    s = Settings(n_ctx=int(cells[1:]), n_parallel=1, flash_attn=fa[2:], n_ubatch=ub, n_batch=max(ub, 2048),
                 n_gpus=1 if gpu else 0, backend="cuda" if gpu else None, mmap=False, kv_unified=False)
    replay = est.galloc.llama_compute_bytes
    if gpu:  # the oracle's order of the embeddings (module docstring)
        est.galloc.llama_compute_bytes = lambda *a, **k: replay(*a, **{**k, "embd_copied": False})  # type: ignore
    try:
        device = next(d for d in estimate(read_gguf_facts(path), s).devices if d.device == ("gpu0" if gpu else "cpu"))
    finally:
        est.galloc.llama_compute_bytes = replay
    return device.compute_bytes, sum(b["compute"] for b in row["buffers"])


def main(argv: list[str]) -> int:
    print(f"{'sweep':5} {'buffer':6} {'flash attn':10} {'cases':>5} {'in target':>9} {'exact':>6} {'median |err|':>12} "
          f"{'max |err|':>9}")
    misses = []
    with tempfile.TemporaryDirectory(prefix="advisor-shapes-") as tmp:
        for sweep, stem in SWEEPS:
            specs = json.loads((DATA / "llamacpp-cpu" / f"{stem}-specs.json").read_text())
            for name, kw in specs.items():
                ggufgen.write(Path(tmp) / f"{sweep}-{name}.gguf", Spec("llama", wtype=T.F16, **kw), sparse=True)
            for kind in ("cpu", "gpu"):
                rows = [json.loads(line) for line in data_of(kind, stem).read_text().splitlines() if line.strip()]
                for fa in ("faon", "faoff"):
                    misses += report(sweep, kind, fa, [r for r in rows if r["label"].endswith(fa)], specs, Path(tmp))
    if "--rows" in argv:
        for kind, label, kw, ours, theirs in misses:
            shape = " ".join(f"{k}={v}" for k, v in kw.items())
            print(f"{kind} {label:22} {shape}: ours {ours / MIB:.2f} MiB, llama.cpp {theirs / MIB:.2f} "
                  f"({(ours - theirs) / theirs:+.1%})")
    return 0


def report(sweep: str, kind: str, fa: str, rows: list[dict], specs: dict, tmp: Path) -> list[tuple]:
    """One line of the table; the cases out of target."""
    errs, ok, exact, misses = [], 0, 0, []
    for row in rows:
        name = row["label"].split("|")[0]
        ours, theirs = compare(kind, row, tmp / f"{sweep}-{name}.gguf")
        errs.append(abs(ours - theirs) / theirs)
        exact += ours == theirs
        if abs(ours - theirs) <= max(TARGET[kind] * theirs, 2 * MIB):
            ok += 1
        else:
            misses.append((kind, row["label"], specs[name], ours, theirs))
    print(f"{sweep:5} {kind:6} {fa[2:]:10} {len(errs):5} {ok:>4}/{len(errs):<4} {exact:6} "
          f"{statistics.median(errs):11.1%} {max(errs):8.1%}")
    return misses


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
