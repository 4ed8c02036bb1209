"""Time to read a model's facts from a 4 GB (sparse, header-only) GGUF: median of 10 reads.

Usage: python benchmarks/gguf_header.py [--runs 10]. Target: < 0.2 s. The file has Llama-3-8B-like
shapes in Q4_0 with a 128256-token vocabulary (a ~2 MB header of token strings), so the
time is the header parse; the tensor data (a hole) is never touched.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from advisor.gguf.facts import read_gguf_facts  # noqa: E402
from tests import ggufgen  # noqa: E402
from tests.ggufgen import Spec, T  # noqa: E402

SPEC = Spec("llama", n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, n_ff=14336, n_vocab=128256,
            n_ctx_train=131072, wtype=T.Q4_0, embd_type=T.Q4_0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="advisor-bench-") as d:
        path = ggufgen.write(Path(d) / "llama-8b-q4_0.gguf", SPEC, sparse=True)
        size = os.path.getsize(path)
        on_disk = os.stat(path).st_blocks * 512
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            facts = read_gguf_facts(path)
            times.append(time.perf_counter() - start)
        print(f"file: {size / 2**30:.2f} GiB ({on_disk / 2**20:.1f} MiB on disk), {len(facts.tensors)} tensors, "
              f"vocab {facts.n_vocab}, weights {facts.weights_bytes / 2**30:.2f} GiB")
        med = statistics.median(times)
        print(f"read_gguf_facts: median {med * 1000:.1f} ms, min {min(times) * 1000:.1f} ms, "
              f"max {max(times) * 1000:.1f} ms over {args.runs} runs (target < 200 ms): "
              f"{'OK' if med < 0.2 else 'TOO SLOW'}")


if __name__ == "__main__":
    main()
