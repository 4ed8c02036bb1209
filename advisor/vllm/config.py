"""A transformers ``config.json`` (a dict) and safetensors headers -> what vLLM's memory model needs. Pure.

Keys as transformers' configuration classes name them (LlamaConfig, Qwen2Config, MixtralConfig, GptOssConfig,
Gemma3TextConfig, DeepseekV3Config ...); multimodal configs keep the language model under ``text_config``, as
vLLM's ``ModelConfig.hf_text_config`` reads it.
"""

from __future__ import annotations

from typing import Any

from advisor.errors import BadInputError
from advisor.vllm.memory import VllmArch

#: Bytes per element of the safetensors dtypes (safetensors format spec: BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16,
#: F16, BF16, I32, U32, F32, F64, I64, U64; F4 types are packed into U8 by the checkpoints that use them).
ST_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
                  "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
#: --dtype: bytes of the floating-point weights once loaded (vllm/config/model.py _get_and_verify_dtype: "auto"
#: keeps a 16-bit checkpoint's dtype and runs float32 checkpoints in 16 bits).
DTYPE_BYTES = {"auto": None, "half": 2, "float16": 2, "bfloat16": 2, "float": 4, "float32": 4}
#: --kv-cache-dtype (vllm/config/cache.py CacheDType): auto = the model dtype.
KV_DTYPE_BYTES = {"auto": None, "bfloat16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1,
                  "fp8_ds_mla": 1}


def text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    tc = cfg.get("text_config")
    if isinstance(tc, dict):
        merged = {k: v for k, v in cfg.items() if k != "text_config"}
        merged.update(tc)
        return merged
    return cfg


def _int(cfg: dict[str, Any], *keys: str, default: int | None = None, where: str = "config.json") -> int:
    for k in keys:
        v = cfg.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    if default is None:
        raise BadInputError(f"{where}: no integer {' / '.join(keys)}")
    return default


def arch_from_config(raw: dict[str, Any], where: str = "config.json") -> VllmArch:
    """The attention/FFN shapes vLLM sizes its KV cache and profile run with."""
    cfg = text_config(raw)
    n_layer = _int(cfg, "num_hidden_layers", "n_layer", "num_layers", where=where)
    n_embd = _int(cfg, "hidden_size", "n_embd", "d_model", where=where)
    n_head = _int(cfg, "num_attention_heads", "n_head", where=where)
    if min(n_layer, n_embd, n_head) <= 0 or n_layer > 10_000 or n_head > 10_000:
        raise BadInputError(f"{where}: implausible shapes (layers {n_layer}, hidden {n_embd}, heads {n_head})")
    head = _int(cfg, "head_dim", default=n_embd // n_head)
    n_expert = _int(cfg, "num_local_experts", "num_experts", "n_routed_experts", default=0)
    sw = cfg.get("sliding_window")
    sliding = int(sw) if isinstance(sw, int) and cfg.get("use_sliding_window", True) is not False else 0
    layers: tuple[bool, ...] = ()
    pattern = 0
    types = cfg.get("layer_types")
    if isinstance(types, list) and len(types) == n_layer:
        layers = tuple(t == "sliding_attention" for t in types)
    elif sliding:
        pattern = _int(cfg, "sliding_window_pattern", default=2 if cfg.get("model_type") == "gemma2" else 1)
    mla = _int(cfg, "kv_lora_rank", default=0)
    return VllmArch(
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=_int(cfg, "num_key_value_heads", default=n_head),
        head_dim_k=head, head_dim_v=_int(cfg, "v_head_dim", default=head) if mla else head,
        n_ff=_int(cfg, "intermediate_size", "ffn_hidden_size", "n_inner", default=4 * n_embd),
        vocab_size=_int(cfg, "vocab_size", where=where), sliding_window=sliding if (layers and any(layers)) or pattern
        else 0, sliding_window_pattern=pattern, n_expert=n_expert,
        n_expert_used=_int(cfg, "num_experts_per_tok", "experts_per_token", "num_experts_per_token", default=0),
        n_ff_expert=_int(cfg, "moe_intermediate_size", "intermediate_size", default=0) if n_expert else 0,
        kv_lora_rank=mla, qk_rope_head_dim=_int(cfg, "qk_rope_head_dim", default=0), swa_layers=layers)


def max_position(raw: dict[str, Any]) -> int:
    """vLLM's default max_model_len: the config's max_position_embeddings (ModelConfig.get_max_model_len)."""
    return _int(text_config(raw), "max_position_embeddings", "max_seq_len", "seq_length", "n_positions",
                default=4096)


def is_quantized(raw: dict[str, Any]) -> bool:
    return isinstance(raw.get("quantization_config") or text_config(raw).get("quantization_config"), dict)


def weights_bytes(headers: list[dict[str, Any]], *, quantized: bool, dtype: str = "auto",
                  online_fp8: bool = False) -> int:
    """Bytes of the weights vLLM loads from safetensors headers ({name: {dtype, shape, data_offsets}}): floating
    tensors at the load dtype (16-bit under "auto"), quantized checkpoints as stored, ``--quantization fp8`` on a
    16-bit checkpoint: 2-D linear weights in 1 byte (embeddings and lm_head stay)."""
    if dtype not in DTYPE_BYTES:
        raise BadInputError(f"--dtype {dtype!r}: one of {', '.join(DTYPE_BYTES)}")
    want = DTYPE_BYTES[dtype]
    total = 0
    for h in headers:
        for name, t in h.items():
            if name == "__metadata__" or not isinstance(t, dict):
                continue
            st, shape = str(t.get("dtype", "")), t.get("shape") or []
            n = 1
            for d in shape:
                n *= int(d)
            size = n * ST_DTYPE_BYTES.get(st, 1)
            if st in FLOAT_DTYPES and not quantized:
                size = n * (want or 2)
                if online_fp8 and len(shape) == 2 and not any(k in name for k in ("embed", "lm_head", "norm")):
                    size = n
            total += size
    return total
