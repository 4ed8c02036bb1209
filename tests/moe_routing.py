"""The MoE routing options real files carry and the catalog's rebuilt headers do not (DeepSeek-V3's expert groups,
sigmoid gating, normalised and scaled weights; GLM-4.5's normalised weights), as header-only files cut to a few
layers: recorded on this CPU by benchmarks/record_moe_routing.py, replayed by tests/test_cuda_memprobe.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gguf

from advisor.catalog.load import load_catalog
from advisor.gguf.estimate import Settings
from tests import gguf_from_catalog

U32, F32, BOOL = gguf.GGUFValueType.UINT32, gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.BOOL
#: name -> (catalog model, its shape changed, key-values of the published GGUF: DeepSeek-V3 (unsloth/DeepSeek-V3-GGUF
#: and the converter's DeepseekV2Model.set_gguf_parameters: n_group / topk_group / scoring_func / norm_topk_prob /
#: routed_scaling_factor of its config.json) and GLM-4.5-Air (config.json norm_topk_prob true, scaling 1.0).
VARIANTS = {
    "deepseek-v3-groups": ("deepseek-v3.1", {"n_layer": 4}, (
        ("deepseek2.expert_group_count", 8, U32), ("deepseek2.expert_group_used_count", 4, U32),
        ("deepseek2.expert_gating_func", 2, U32), ("deepseek2.expert_weights_norm", True, BOOL),
        ("deepseek2.expert_weights_scale", 2.5, F32))),
    # the same routing on a narrow shape with 1024 experts and a small vocabulary, so the routing tensors (n_expert
    # floats per token) are the largest of a layer; the group selection still leaves the peak where it was
    "deepseek-groups-wide": ("deepseek-v3.1", {"n_layer": 3, "n_embd": 256, "n_head": 4, "kv_lora_rank": 64,
                                               "q_lora_rank": 96, "qk_nope_head_dim": 32, "qk_rope_head_dim": 32,
                                               "v_head_dim": 32, "head_dim_k": 96, "head_dim_v": 64,
                                               "n_expert": 1024, "n_ff_expert": 32, "n_ff": 512,
                                               "vocab_size": 1024}, (
        ("deepseek2.expert_group_count", 8, U32), ("deepseek2.expert_group_used_count", 4, U32),
        ("deepseek2.expert_gating_func", 2, U32), ("deepseek2.expert_weights_norm", True, BOOL),
        ("deepseek2.expert_weights_scale", 2.5, F32))),
    "glm-4.5-air-norm": ("glm-4.5-air", {"n_layer": 4}, (
        ("glm4moe.expert_weights_norm", True, BOOL), ("glm4moe.expert_weights_scale", 1.0, F32),
        ("glm4moe.expert_gating_func", 2, U32))),
}
SETTINGS = {
    "c4096": Settings(n_ctx=4096, n_parallel=1, flash_attn="on", mmap=True),
    "c4096-fa-off": Settings(n_ctx=4096, n_parallel=1, flash_attn="off", mmap=True),
    "c8192-ub2048": Settings(n_ctx=8192, n_parallel=1, flash_attn="on", n_batch=2048, n_ubatch=2048, mmap=True),
    "c16384-np4": Settings(n_ctx=16384, n_parallel=4, flash_attn="on", mmap=True),
    "c2048-ub2048": Settings(n_ctx=2048, n_parallel=1, flash_attn="on", n_batch=2048, n_ubatch=2048, mmap=True),
}


def write(path: Path, name: str) -> Path:
    """Variant ``name`` header-only at ``path``, Q4_K_M."""
    model_id, shape, extra = VARIANTS[name]
    model = load_catalog().get(model_id)
    arch = dataclasses.replace(model.arch, n_layer_nextn=0, **shape)
    model = dataclasses.replace(model, arch=arch)
    variant = next(v for v in model.all_variants() if v.format == "gguf")
    return gguf_from_catalog._write(path, model, dataclasses.replace(variant, quant="Q4_K_M", imatrix=False), extra)
