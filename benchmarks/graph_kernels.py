"""Kernels per layer of llama.cpp's graph, per catalog architecture (rules/speed.toml decode-graph-kernels).

In token generation every op of the graph is a kernel launch with a fixed cost beyond its memory traffic, so the
per-layer overhead of the speed model scales with how many ops a layer has: a llama layer has 19, a Qwen3-MoE layer
38 (router, top-k, weight normalisation, three expert products and n_used - 1 aggregation adds), a Gemma 3n layer
68. This script counts them on the installed llama-cpp-python: one catalog model per architecture
(benchmarks/device/measure.py MEM_MODELS) and Gemma 4 E4B (tests/gemma4_header.py) are rebuilt header-only with
their real tensor inventories, loaded on the CPU with GGML_SCHED_DEBUG=2 (ggml-backend.cpp
ggml_backend_sched_print_assignments prints one line per non-view node of each graph it splits), and the nodes of
the first graph are divided by the layer count.

    python benchmarks/graph_kernels.py          # the table
    python benchmarks/graph_kernels.py --toml   # the rules/speed.toml entries

Takes a few minutes (the largest sparse files are mapped, not read).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from advisor.gguf.facts import read_gguf_facts  # noqa: E402
from benchmarks.device.measure import MEM_MODELS  # noqa: E402
from tests import gemma4_header, gguf_from_catalog  # noqa: E402

#: Loaded through the low-level API so that no CPU repack buffer is allocated (use_extra_bufts off: a repacked copy
#: of a sparse 400 GB file would not fit), every log line printed.
LOAD = """
import ctypes, sys, llama_cpp
@llama_cpp.llama_log_callback
def cb(level, text, user):
    sys.stderr.write(text.decode("utf-8", "replace"))
llama_cpp.llama_log_set(cb, ctypes.c_void_p(0))
llama_cpp.llama_backend_init()
mp = llama_cpp.llama_model_default_params()
mp.n_gpu_layers = 0
mp.use_extra_bufts = False
model = llama_cpp.llama_model_load_from_file(sys.argv[1].encode(), mp)
cp = llama_cpp.llama_context_default_params()
cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_threads, cp.n_threads_batch = 4096, 512, 512, 1, 1
cp.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
ctx = llama_cpp.llama_init_from_model(model, cp)
"""


def graph_nodes(path: Path) -> int:
    """Non-view nodes of the first graph llama.cpp's scheduler splits for this model (the prompt graph)."""
    env = {**os.environ, "GGML_SCHED_DEBUG": "2"}
    out = subprocess.run([sys.executable, "-c", LOAD, str(path)], env=env, capture_output=True, text=True,
                         timeout=900).stderr
    counts: list[int] = []
    for line in out.splitlines():
        if line.startswith("## SPLIT #0"):
            counts.append(0)
        elif line.startswith("node #") and counts:
            counts[-1] += 1
    if not counts:
        raise RuntimeError(f"{path.name}: no scheduler dump (is GGML_SCHED_DEBUG honoured by this build?)")
    return counts[0]


def main(argv: list[str]) -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="advisor-kernels-") as tmp:
        for model_id, quant in MEM_MODELS:
            path = gguf_from_catalog.write_any_quant(Path(tmp) / f"{model_id}.gguf", model_id, quant)
            facts = read_gguf_facts(path)
            try:
                nodes = graph_nodes(path)
            except RuntimeError as e:
                print(e, file=sys.stderr)
                continue
            rows.append((facts.architecture, model_id, facts.n_layer, facts.n_expert_used, nodes))
            path.unlink()
        # an architecture outside the catalog, from its own header writer
        path = gemma4_header.write(Path(tmp) / "gemma-4-e4b.gguf")
        facts = read_gguf_facts(path)
        rows.append((facts.architecture, "gemma-4-e4b (tests/gemma4_header.py)", facts.n_layer, 0, graph_nodes(path)))
    if "--toml" in argv:
        first: dict[str, tuple] = {}  # per architecture, the model its count (and n_used) comes from
        for row in rows:
            first.setdefault(row[0], row)
        print("[rule.set.graph_kernels_per_layer]")
        print("\n".join(f"{a} = {round(nodes / n_layer, 1)}" for a, (_a, _m, n_layer, _u, nodes) in first.items()))
        print("[rule.set.graph_kernels_n_used]")
        print("\n".join(f"{a} = {u}" for a, (_a, _m, _l, u, _n) in first.items() if u))
        return 0
    print(f"{'architecture':16} {'model':34} {'layers':>6} {'n_used':>6} {'kernels':>8} {'per layer':>9}")
    for arch, model_id, n_layer, used, nodes in rows:
        print(f"{arch:16} {model_id:34} {n_layer:6} {used:6} {nodes:8} {nodes / n_layer:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
