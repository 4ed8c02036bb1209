"""llama.cpp's CPU compute buffer for the MoE routing options real files carry and the catalog's rebuilt headers do
not: DeepSeek-V3's expert groups (8 groups, the best 4), sigmoid gating, normalised and scaled weights; GLM-4.5's
normalised weights. Each is a catalog model's header (tests/gguf_from_catalog.py) cut to a few layers, with the
routing keys of the published GGUF added, loaded by llama-cpp-python on this CPU (tests/test_llamacpp_accuracy.py
measure). Writes tests/data/llamacpp-cpu/moe-routing-cpu.jsonl; replayed by tests/test_cuda_memprobe.py. In none of
these cases does the group selection's own live set lead the buffer (the replay gives the same with the groups
left out), so they show the routing options leave the plan exact, not that the group graph is; that graph is read
from build_moe_ffn (advisor/gguf/galloc.py _group_selection).

    python benchmarks/record_moe_routing.py [--check]   # --check: compare with the estimate, write nothing
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from advisor.gguf.estimate import estimate  # noqa: E402
from advisor.gguf.facts import read_gguf_facts  # noqa: E402
from tests.moe_routing import SETTINGS, VARIANTS, write  # noqa: E402

OUT = ROOT / "tests" / "data" / "llamacpp-cpu" / "moe-routing-cpu.jsonl"


def main(argv: list[str]) -> int:
    from tests.test_llamacpp_accuracy import measure

    rows = []
    with tempfile.TemporaryDirectory(prefix="advisor-routing-") as tmp:
        for name in VARIANTS:
            path = write(Path(tmp) / f"{name}.gguf", name)
            for label, s in SETTINGS.items():
                got = measure(path, s)
                ours = estimate(read_gguf_facts(path), s).compute_bytes
                print(f"{name:22} {label:14} llama.cpp {got['compute'] / 2**20:9.2f} MiB  ours {ours / 2**20:9.2f}")
                rows.append({"label": f"{name}|{label}", "compute_mib": round(got["compute"] / 2**20, 2)})
    if "--check" not in argv:
        OUT.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
