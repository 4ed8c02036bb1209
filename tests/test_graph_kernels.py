"""The kernel counts of rules/speed.toml decode-graph-kernels against llama.cpp's own graph: generated llama models
(dense, and Mixtral-style MoE under the same architecture) loaded with llama-cpp-python, the scheduler's node dump
(GGML_SCHED_DEBUG=2) counted by benchmarks/graph_kernels.py. Two depths, so the difference is one layer's
kernels, whatever the graph's input and output ops."""

from __future__ import annotations

from pathlib import Path

import pytest

from advisor.planner import speed
from advisor.rules import Subject, load_rules
from tests import ggufgen
from tests.ggufgen import Spec

pytestmark = pytest.mark.engine


def per_layer(tmp_path: Path, **kw: int) -> float:
    from benchmarks.graph_kernels import graph_nodes

    counts = []
    for n_layer in (2, 4):
        path = tmp_path / f"m{n_layer}.gguf"
        ggufgen.write(path, Spec("llama", n_layer=n_layer, n_embd=256, n_head=4, n_head_kv=2, n_ff=512,
                                 n_vocab=1000, **kw), sparse=True)
        counts.append(graph_nodes(path))
    return (counts[1] - counts[0]) / 2


@pytest.mark.parametrize("experts", [0, 4])
def test_a_layers_kernels_are_what_llamacpp_builds(tmp_path: Path, experts: int) -> None:
    pytest.importorskip("llama_cpp")
    c = speed.Constants.from_rules(load_rules().resolve(Subject()))
    used = 2 if experts else 0
    # a llama-architecture MoE (Mixtral) sizes its experts with feed_forward_length
    got = per_layer(tmp_path, n_expert=experts, n_expert_used=used, n_ff_exp=512)
    want = c.kernel_ratio(speed.ModelSpeed(arch="llama", n_expert_used=used)) * c.graph_kernels_reference
    assert got == pytest.approx(want, abs=0.5), (got, want)
