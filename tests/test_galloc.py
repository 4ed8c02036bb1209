"""The allocator replay (advisor/gguf/galloc.py) against llama.cpp's own plans: random llama-style shapes on this
project's CPU and on the GPU-buffer oracle (tests/data/llamacpp-*/shapes*), and Llama 3.1 8B on an H200; and the
allocator's rules, each from ggml/src/ggml-alloc.c."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advisor.gguf import galloc
from advisor.gguf.galloc import Node

DATA = Path(__file__).resolve().parent / "data"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("stem", ["shapes", "shapes2"])
@pytest.mark.parametrize("host_inputs", [True, False])
def test_random_shapes_to_the_byte(stem: str, host_inputs: bool) -> None:
    """Every case of both sweeps, on the CPU (inputs in the buffer) and on the oracle (without the token ids and
    embeddings input, as CUDA0, but the embeddings taken in the buffer after the inputs, not copied in before
    them): llama.cpp's compute buffer exactly."""
    specs = json.loads((DATA / "llamacpp-cpu" / f"{stem}-specs.json").read_text())
    cpu, gpu = DATA / "llamacpp-cpu" / f"{stem}-cpu.jsonl", DATA / "llamacpp-cuda" / f"{stem}-oracle.jsonl"
    path = cpu if host_inputs else gpu
    rows = _rows(path)
    assert len(rows) >= 48
    for row in rows:
        parts = row["label"].split("|")
        s = specs[parts[0]]
        ours = galloc.llama_compute_bytes(s["n_embd"], s["n_head"], s["n_head_kv"], s["head_dim"], s["n_ff"],
                                          s["n_vocab"], s["n_layer"], row["n_ubatch"], int(parts[1][1:]),
                                          parts[-1] == "faon", host_inputs, embd_copied=False)
        assert ours == sum(b["compute"] for b in row["buffers"]), row["label"]


def test_llama_8b_on_an_h200_to_the_byte() -> None:
    """Llama 3.1 8B's full-offload cases recorded on an H200 (tests/data/llamacpp-cuda/h200-memprobe.jsonl): CUDA0's
    compute buffer exactly, flash attention on and off, 4096-131072 cells, ubatch 256-2048, one stream."""
    rows = [r for r in _rows(DATA / "llamacpp-cuda" / "h200-memprobe.jsonl")
            if r["label"].startswith("llama-3.1-8b") and not r["label"].endswith(("half", "half-fa-off", "ngl0"))
            and (r["n_seq_max"] == 1 or "kvu" in r["label"])]
    assert len(rows) >= 7
    for row in rows:
        (theirs,) = [b["compute"] for b in row["buffers"] if b["buft"] == "CUDA0"]
        ours = galloc.llama_compute_bytes(4096, 32, 8, 128, 14336, 128256, 32, row["n_ubatch"], row["n_ctx"],
                                          "fa-off" not in row["label"], False)
        assert ours == theirs, row["label"]


def test_best_fit_takes_the_smallest_hole_and_the_later_of_equals() -> None:
    """ggml_dyn_tallocr_alloc: among the free blocks but the last, the smallest that fits (a tie goes to the later
    block: the loop keeps a block of equal size); none fits: the end of the buffer."""
    d = galloc._Dyn()
    a, b, c, e, f = (d.alloc(n) for n in (128, 64, 128, 64, 64))
    d.release(a, 128)
    d.release(c, 128)
    assert d.alloc(128) == c and d.alloc(256) == f + 64
    d.release(b, 64)  # merges with the free block before it: one 192-byte hole at a
    assert d.free[0] == [a, 192] and d.alloc(192) == a


def test_in_place_only_for_a_lone_consumer_of_an_own_tensor() -> None:
    """ggml_gallocr_allocate_node: an ADD takes its source's block when it is the source's only consumer; a second
    consumer or a view of the source keeps it, and a view's consumer never takes a block (is_own is false for a
    view); a view of a view counts against the root, which stays until the last view's consumer is done."""
    x = Node("x", "MUL_MAT", 1024, ("w",))
    alone = [x, Node("y", "ADD", 1024, ("x", "w"))]
    shared = [x, Node("y", "ADD", 1024, ("x", "w")), Node("z", "MUL_MAT", 64, ("w", "x"))]
    viewed = [x, Node("v", "RESHAPE", 0, ("x",)), Node("v2", "VIEW", 0, ("v",)), Node("y", "ADD", 1024, ("v2", "w")),
              Node("z", "MUL_MAT", 1024, ("w", "y"))]
    assert galloc.high_water(alone, []) == 1024
    assert galloc.high_water(shared, []) == 2048 + 64
    # y cannot reuse x through the views; x is freed once y, the views' consumer, is done, and z takes its block
    assert galloc.high_water(viewed, []) == 2048
