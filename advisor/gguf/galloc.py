"""llama.cpp's compute buffer by replaying its graph allocator on the graph it builds.

The size of a compute buffer is the high-water mark of ggml-alloc placing every tensor of the graph in node order:
where a tensor lands depends on the holes earlier ones left, so a sum of live sizes is only a bound. This module
ports the allocator (ggml/src/ggml-alloc.c) and builds, node by node, the graph llama.cpp reserves for llama-style
models (src/models/llama.cpp, qwen2.cpp, qwen3.cpp, qwen3moe.cpp, glm4-moe.cpp, deepseek2.cpp with attn_kv_b whole,
gemma2.cpp, gemma3.cpp; src/llama-graph.cpp build_inp_embd, build_attn, build_ffn, build_moe_ffn), with ggml-cuda's
MoE fusion dependencies and the GPU scheduler's input copies, so the buffer comes out to the byte: every random
dense shape recorded on this project's CPU and on a GPU-buffer oracle, and every single-device case of those
architectures recorded on an H200 and on this CPU (the fused MoE plans within 16 KiB) (tests/test_galloc.py,
tests/test_cuda_memprobe.py). Pure: no I/O.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

#: ggml_op_can_inplace: the ops whose result may take the place of a source (ggml-alloc.c).
INPLACE_OPS = frozenset({"FILL", "SCALE", "DIAG_MASK_ZERO", "DIAG_MASK_INF", "ADD", "ADD_ID", "ADD1", "SUB", "MUL",
                         "DIV", "SQR", "SQRT", "LOG", "UNARY", "ROPE", "ROPE_BACK", "SILU_BACK", "RMS_NORM",
                         "RMS_NORM_BACK", "CLAMP", "SOFT_MAX", "SOFT_MAX_BACK"})
#: ggml_impl_is_view: ops whose result is a view of another tensor's data, never allocated.
VIEW_OPS = frozenset({"RESHAPE", "VIEW", "PERMUTE", "TRANSPOSE", "SET_ROWS"})
#: Block alignment, between the CPU buffer's (ggml-impl.h TENSOR_ALIGNMENT, 32) and CUDA's
#: (ggml_backend_cuda_buffer_type_get_alignment, 128): every tensor here is a multiple of 4 x n_ubatch bytes, so from
#: ubatch 32 up any of them rounds alike; the fused H200 plans come out 4-16 KiB under the replay, the one difference
#: seen (tests/test_cuda_memprobe.py).
ALIGNMENT = 64


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    nbytes: int
    srcs: tuple[str, ...]


class _Dyn:
    """ggml_dyn_tallocr: free blocks by offset; best fit among all but the last block, else the last one (the
    end of the buffer, which grows); a freed block merges with its neighbours."""

    def __init__(self) -> None:
        self.free: list[list[int]] = [[0, 1 << 62]]
        self.high = 0

    def alloc(self, size: int) -> int:
        size = -(-size // ALIGNMENT) * ALIGNMENT
        fits = [i for i, (_o, s) in enumerate(self.free[:-1]) if s >= size]
        # ties go to the later block, as the C loop's "<=" does
        best = min(fits, key=lambda i: (self.free[i][1], -i)) if fits else len(self.free) - 1
        offset = self.free[best][0]
        self.free[best][0] += size
        self.free[best][1] -= size
        if self.free[best][1] == 0:
            del self.free[best]
        self.high = max(self.high, offset + size)
        return offset

    def release(self, offset: int, size: int) -> None:
        size = -(-size // ALIGNMENT) * ALIGNMENT
        blocks = self.free
        for i, (o, s) in enumerate(blocks):
            if o + s == offset:  # ends where the freed bytes start
                blocks[i][1] += size
                if i + 1 < len(blocks) and o + blocks[i][1] == blocks[i + 1][0]:
                    blocks[i][1] += blocks.pop(i + 1)[1]
                return
            if offset + size == o:  # starts where they end
                blocks[i][0], blocks[i][1] = offset, s + size
                if i > 0 and blocks[i - 1][0] + blocks[i - 1][1] == offset:
                    blocks[i - 1][1] += blocks.pop(i)[1]
                return
        at = next((i for i, (o, _s) in enumerate(blocks) if o > offset), len(blocks))
        blocks.insert(at, [offset, size])


def high_water(nodes: list[Node], inputs: list[tuple[str, int]], outputs: frozenset[str] = frozenset()) -> int:
    """ggml_gallocr_alloc_graph_impl: graph inputs first, then each node in order, reusing a source in place when
    the op allows it and the source is an own, non-view tensor of the same size with no other consumer and no view;
    a tensor is freed once its last consumer and view are done (a view counts against its root: ggml_new_tensor_impl
    points a view of a view at the root). Sources no node or input defines (weights, caches) are external. A NONE
    node is a dependency a backend's graph_optimize adds (ggml-backend.cpp add_alloc_dep): it keeps its sources alive
    to its place in the order and is itself never allocated."""
    size = {n.name: n.nbytes for n in nodes} | dict(inputs)
    root: dict[str, str] = {}
    for n in nodes:
        if n.op in VIEW_OPS:
            root[n.name] = root.get(n.srcs[0], n.srcs[0])
    children: dict[str, int] = {}
    views: dict[str, int] = {}
    for n in nodes:
        if n.name in root:
            views[root[n.name]] = views.get(root[n.name], 0) + 1
        for src in n.srcs:
            children[src] = children.get(src, 0) + 1
    dyn, addr, own = _Dyn(), {}, set()
    for name, nbytes in inputs:
        addr[name] = dyn.alloc(nbytes)
        own.add(name)
    for n in nodes:
        if n.name not in root and n.op != "NONE":  # NONE: an allocation dependency, never allocated
            _place(n, dyn, addr, own, size, children, views, root, outputs)
        for src in n.srcs:
            children[src] -= 1
            if children[src] or views.get(src, 0):
                continue
            owner = root.get(src, src)
            if owner != src:
                views[owner] -= 1
            if owner in own and owner not in outputs and not children.get(owner) and not views.get(owner):
                dyn.release(addr[owner], size[owner])
                own.discard(owner)
    return dyn.high


def _place(n: Node, dyn: _Dyn, addr: dict[str, int], own: set[str], size: dict[str, int],
           children: dict[str, int], views: dict[str, int], root: dict[str, str], outputs: frozenset[str]) -> None:
    """ggml_gallocr_allocate_node for one node."""
    if n.op in INPLACE_OPS:
        for src in n.srcs:
            if (src in own and src not in root and src not in outputs and size[src] == n.nbytes
                    and children.get(src) == 1 and not views.get(src)):
                addr[n.name] = addr[src]
                own.discard(src)  # the result owns the block now
                own.add(n.name)
                return
    addr[n.name] = dyn.alloc(n.nbytes)
    own.add(n.name)


@dataclass(frozen=True)
class Style:
    """How a layer departs from src/models/llama.cpp's: ``qk_norm``, Q and K RMS-normed per head before RoPE
    (qwen3.cpp, gemma3.cpp, glm4-moe.cpp where the file has the norms); ``q_scale``, the roped Q scaled in place
    (gemma2.cpp, gemma3.cpp, phi3.cpp); ``gemma``, the embeddings scaled in place and a norm after the attention
    and after the FFN (gemma2.cpp, gemma3.cpp); ``fused_qkv``, one attn_qkv product viewed as Q, K and V, so Q and
    K are roped into new tensors and, without flash attention, V is copied contiguous for the transposed cache
    (phi3.cpp, llama-kv-cache.cpp cpy_v); ``fused_up``, one ffn_up product of twice the FFN width split by the
    SwiGLU (phi3.cpp, build_ffn LLM_FFN_SWIGLU); ``residual_first``, the layer output added as residual + FFN,
    so it takes the residual's block (phi3.cpp); ``layer_norm``, LayerNorm (GGML_OP_NORM, never in place, and a
    bias added) where llama has RMSNorm, and ``plain_ffn``, an FFN of one up product, its activation in place, and
    down (starcoder2.cpp); ``nope_every``, every n-th layer without RoPE, Q and K written and read as the
    products' views (smollm3.cpp n_no_rope_layer_step); ``kept_hidden``, every token's final hidden state an
    output (res->t_h_nextn), the output rows taken after the layers, not in the last one (openai-moe.cpp);
    ``nope_scale``, Q of a layer without RoPE multiplied by the attention-temperature input, and ``kq_l2``, the
    roped Q and K RMS-normed without a weight (llama4.cpp)."""

    qk_norm: bool = False
    q_scale: bool = False
    gemma: bool = False
    fused_qkv: bool = False
    fused_up: bool = False
    residual_first: bool = False
    layer_norm: bool = False
    plain_ffn: bool = False
    nope_every: int = 0
    kept_hidden: bool = False
    nope_scale: bool = False
    kq_l2: bool = False


@dataclass(frozen=True)
class Mla:
    """DeepSeek-V2/V3's multi-head latent attention (deepseek2.cpp): a latent of ``rank`` values plus ``rope`` RoPE
    values per token, per-head K of ``head_k`` and V of ``head_v``, and ``q_lora`` the rank of Q's LoRA (0: one
    attn_q product). ``absorbed`` (a file with attn_k_b / attn_v_b split, is_mla): the cache holds the latent, Q's
    no-RoPE part is absorbed into it by attn_k_b and the attention output expanded per head by attn_v_b
    (_mla_attention); else (attn_kv_b whole) the latent is expanded to per-head K and V, cached as usual
    (_deepseek2_qkv)."""

    rank: int
    rope: int
    head_k: int
    head_v: int
    q_lora: int = 0
    absorbed: bool = True


@dataclass(frozen=True)
class Moe:
    """The expert FFN of an MoE layer as llama-graph.cpp build_moe_ffn builds it: ``sigmoid`` gating (else
    softmax), ``prob_bias`` (exp_probs_b added to the probabilities for the selection only), ``norm_w`` (the chosen
    weights divided by their sum), ``scale`` (the weights scaled by expert_weights_scale when it is not 1);
    ``n_ff_shexp``: the width of the shared expert that glm4-moe.cpp runs on the same input after the routed sum
    (0: none); ``dense_lead``: leading layers with a dense FFN of the model's n_ff instead; ``weight_softmax``:
    no gating on the logits, the chosen ones softmaxed (SOFTMAX_WEIGHT, openai-moe.cpp); ``biases``: the router
    and the experts' products carry biases (gpt-oss); ``weight_before``: the experts chosen on the raw logits and
    their input, repeated per expert, weighted before the products, not their outputs after (llama4.cpp,
    build_moe_ffn weight_before_ffn); ``moe_layers``: which layers have experts, where not the ones after
    ``dense_lead``; ``groups``: (expert groups, groups used) where the experts are chosen within the best groups
    (DeepSeek-V3: 8, 4), see _group_selection."""

    n_expert: int
    n_used: int
    n_ff_exp: int
    sigmoid: bool = False
    prob_bias: bool = False
    norm_w: bool = True
    scale: bool = False
    n_ff_shexp: int = 0
    dense_lead: int = 0
    weight_softmax: bool = False
    biases: bool = False
    weight_before: bool = False
    moe_layers: tuple[bool, ...] = ()
    groups: tuple[int, int] = (0, 0)


@functools.lru_cache(maxsize=4096)
def llama_compute_bytes(n_embd: int, n_head: int, n_head_kv: int, head_dim: int, n_ff: int, n_vocab: int,
                        n_layer: int, n_ubatch: int, kv_cells: int, flash_attn: bool, host_inputs: bool,
                        style: Style = Style(), moe: Moe | None = None,
                        alloc_deps: tuple[bool, bool] = (False, False), head_dim_v: int = 0,
                        fa_elsewhere: bool = False, v_cont: int = 0,
                        swa: tuple[tuple[bool, ...], int] = ((), 0),
                        embd_copied: bool = True, rot: tuple[int, int] = (0, 0), mla: Mla | None = None) -> int:
    """The compute buffer llama.cpp reserves for a llama-style model with every layer and the output on one device
    (current builds: the embeddings input beside the token ids, an f16 mask with flash attention, K and V written by
    set_rows, a fused SwiGLU). Q, K, V and output biases (qwen2.cpp, glm4-moe.cpp, starcoder2.cpp, openai-moe.cpp)
    are added in place on the products, so they move nothing.

    - ``host_inputs``: the token ids and embeddings input are in this buffer (the CPU). On a GPU they are in its
      host buffer, the token embeddings are taken there, and they and the other graph inputs are copied in at the
      start of the GPU's split in the order the graph first reads them (ggml-backend.cpp
      ggml_backend_sched_split_graph), the embeddings first; ``embd_copied`` False takes them in this buffer after
      the inputs instead (a CPU build that leaves only the two host-side inputs out: the oracle of
      tests/data/llamacpp-cuda).
    - ``style``: the layer's departures from llama's (Style); ``moe``: the experts of Qwen3-MoE, GLM-4.5,
      DeepSeek-V2 or gpt-oss layers (qwen3moe.cpp, glm4-moe.cpp, deepseek2.cpp, openai-moe.cpp); ``alloc_deps``:
      the dependencies ggml-cuda's graph_optimize adds for its fused top-k routing and weighted expert sum (_moe).
    - ``head_dim_v``: the V head size where it differs from K's.
    - ``fa_elsewhere``: a GPU buffer whose flash-attention ops run on the CPU (ggml-cuda has no kernel for the head
      sizes): the mask is not its input, and the attention output is copied in where the op would have been.
    - ``v_cont``: the bytes of one layer's V copied transposed without flash attention, for a cache stored
      untransposed (-fa auto decided after the cache was made; build_attn_mha).
    - ``swa``: which layers attend over the sliding-window cache, and its cells: an iSWA cache gives those layers
      their own row indices and mask (build_attn_inp_kv_iswa).
    - ``rot``: the sizes of the Hadamard rotations of K and V, 0 for none: a quantized cache stores rotated K (Q
      rotated alike) and V (the attention output rotated back), each a product by an n x n input
      (llama-kv-cache.cpp attn_rot_k / attn_rot_v, llama-impl.h llama_mul_mat_hadamard).
    - ``mla``: DeepSeek's latent attention (Mla); absorbed, its cache has no V of its own, so no V row indices,
      and ``v_cont`` is then the latent copied transposed."""
    f = 4 * n_ubatch  # bytes of one f32 value per token
    head_dim_v = head_dim_v or head_dim
    q, kv = n_head * head_dim, n_head_kv * head_dim_v
    if host_inputs:
        inputs = [("inp_tokens", 4 * n_ubatch), ("inp_embd", n_embd * f), ("inp_pos", 4 * n_ubatch)]
        nodes = [Node("embd", "GET_ROWS", n_embd * f, ("w", "inp_tokens"))]
    elif embd_copied:
        inputs = [("embd", n_embd * f), ("inp_pos", 4 * n_ubatch)]
        nodes = []
    else:
        inputs = [("inp_pos", 4 * n_ubatch)]
        nodes = [Node("embd", "GET_ROWS", n_embd * f, ("w",))]
    if style.gemma:
        nodes.append(Node("embd_scaled", "SCALE", n_embd * f, ("embd",)))
    prev = nodes[-1].name if nodes else "embd"
    swa_layers, swa_cells = swa
    for il in range(n_layer):
        p = f"{il}."
        rope = not (style.nope_every and (il + 1) % style.nope_every == 0)
        if not rope and style.nope_scale and not any(name == "attn_scale" for name, _ in inputs):
            inputs.append(("attn_scale", 4 * n_ubatch))  # build_inp_attn_scale, read first by this Q
        cells, kind = (swa_cells, "_swa") if il < len(swa_layers) and swa_layers[il] else (kv_cells, "")
        if not any(name == "mask" + kind for name, _ in inputs):
            # llm_graph_input_attn_kv(_iswa), allocated where the graph first reads them: int64 K (and V) row
            # indices (per value for a transposed V), the mask (f16 with flash attention, over the cells)
            per_value = kv if not (flash_attn or v_cont) else 1
            inputs += [(f"{t}_rot{kind}", 4 * n * n) for t, n in zip("kv", rot) if n]
            inputs += [("k_idxs" + kind, 8 * n_ubatch)]
            inputs += [] if mla and mla.absorbed else [("v_idxs" + kind, 8 * n_ubatch * per_value)]
            inputs += [("mask" + kind, 0 if fa_elsewhere else cells * n_ubatch * (2 if flash_attn else 4))]
        if mla and mla.absorbed:
            nodes += _mla_attention(p, prev, il == n_layer - 1, n_embd * f, f, n_head, mla, cells, flash_attn,
                                    v_cont)
        else:
            qkv = _deepseek2_qkv(p, f, n_head, mla) if mla else _llama_qkv(p, q * f, kv * f, style, rope)
            v_copy = kv * f if style.fused_qkv and not flash_attn else 0
            qkv = _rotated(p, qkv, kind, rot, {"q": q * f, "v": kv * f, "k": n_head_kv * head_dim * f},
                           strided_v=style.fused_qkv)
            last = il == n_layer - 1 and not style.kept_hidden
            nodes += _attention(p, prev, last, n_embd * f, qkv, n_head * head_dim_v * f,
                                cells * n_head * f, flash_attn, v_cont * cells // max(kv_cells, 1), kind,
                                style.gemma, v_copy, rot_out=bool(rot[1]), layer_norm=style.layer_norm)
        nodes += _norm(p + "ffn_norm", n_embd * f, p + "ffn_inp", style.layer_norm)
        if moe is None or il < moe.dense_lead or (moe.moe_layers and not moe.moe_layers[il]):
            kind = "fused_up" if style.fused_up else "plain" if style.plain_ffn else "gated"
            nodes += _ffn(p, p + "ffn_norm", n_embd * f, n_ff * f, p + "ffn_out", kind)
            out = p + "ffn_out"
            if style.gemma:
                nodes += _norm(p + "ffn_post", n_embd * f, out)
                out = p + "ffn_post"
        else:
            nodes += _moe(p, n_embd * f, f, moe, alloc_deps)
            out = p + "moe_out"
            if moe.n_ff_shexp:  # glm4-moe.cpp: the shared expert on the same normed input, then added
                nodes += _ffn(p + "sh", p + "ffn_norm", n_embd * f, moe.n_ff_shexp * f, p + "shexp_out")
                nodes.append(Node(p + "ffn_out", "ADD", n_embd * f, (out, p + "shexp_out")))
                out = p + "ffn_out"
        srcs = (p + "ffn_inp", out) if style.residual_first else (out, p + "ffn_inp")
        nodes.append(Node(p + "l_out", "ADD", n_embd * f, srcs))
        prev = p + "l_out"
    inputs.append(("out_ids", 4 * n_ubatch))
    outputs = {"result_output"}
    if style.kept_hidden:
        nodes.append(Node("out_rows", "GET_ROWS", n_embd * f, (prev, "out_ids")))
        outputs.add(prev)
        prev = "out_rows"
    nodes += [Node("out_norm", "NORM" if style.layer_norm else "RMS_NORM", n_embd * f, (prev,)),
              Node("result_norm", "MUL", n_embd * f, ("out_norm", "w")),
              Node("result_output", "MUL_MAT", n_vocab * f, ("w", "result_norm"))]
    return high_water(nodes, inputs, frozenset(outputs))


def _norm(name: str, size: int, src: str, layer_norm: bool = False) -> list[Node]:
    """build_norm with LLM_NORM_RMS (or LLM_NORM, ``layer_norm``) and a weight: the norm, then the weight
    multiplied in place (and a LayerNorm's bias added in place, which moves nothing)."""
    return [Node(name + "0", "NORM" if layer_norm else "RMS_NORM", size, (src,)),
            Node(name, "MUL", size, (name + "0", "w"))]


def _attention(p: str, prev: str, last: bool, e: int, qkv: list[Node], out: int, kq: int,
               flash_attn: bool, v_cont: int = 0, kind: str = "", post_norm: bool = False,
               v_copy: int = 0, rot_out: bool = False, layer_norm: bool = False) -> list[Node]:
    """A layer's attention block of src/models/llama.cpp in node order, up to the FFN's input (sizes in bytes):
    the norm, ``qkv`` (the products and their RoPE, ending in tensors named q_rope, v3 and k_rope), the cache
    writes, the attention (``out`` bytes: heads x V head size per token) and its output projection; the last layer
    keeps only the output rows (get_rows with out_ids, all of them in the reserve graph). ``kind``: the suffix of
    the cache's row indices and mask ("_swa" for a sliding-window layer of an iSWA cache); ``post_norm``: the
    attention output normed before the residual (Gemma); ``v_copy``: the bytes of V copied contiguous before the
    transposed cache write (a strided view of a fused QKV product); ``rot_out``: the attention output rotated back
    (a rotated V cache)."""
    mask = "mask" + kind
    nodes = _norm(p + "attn_norm", e, prev, layer_norm) + qkv
    nodes += [Node(p + "k_view", "VIEW", 0, (p + "k_rope",)),
              Node(p + "k_set", "SET_ROWS", 0, ("cache_k", p + "k_view", "k_idxs" + kind)),
              *([Node(p + "v3c", "CONT", v_copy, (p + "v3",))] if v_copy else []),
              Node(p + "v_view", "VIEW" if flash_attn or v_cont else "RESHAPE", 0, (p + ("v3c" if v_copy else "v3"),)),
              Node(p + "v_set", "SET_ROWS", 0, ("cache_v", p + "v_view", "v_idxs" + kind)),
              Node(p + "q_view", "VIEW", 0, (p + "q_rope",)), Node(p + "q_perm", "PERMUTE", 0, (p + "q_view",))]
    if flash_attn:
        nodes += [Node(p + "fa", "FLASH_ATTN_EXT", out, (p + "q_perm", "cache_k", "cache_v", mask)),
                  Node(p + "kqv_out", "RESHAPE", 0, (p + "fa",))]
    else:  # build_attn_mha: KQ, soft_max in place, KQV, permuted back and made contiguous; an untransposed V
        # is copied transposed first (KQV's first source, so the graph reaches it before KQ)
        v = p + "v_cont" if v_cont else "cache_v"
        nodes += [Node(v, "CONT", v_cont, ("cache_v",))] if v_cont else []
        nodes += [Node(p + "kq", "MUL_MAT", kq, ("cache_k", p + "q_perm")),
                  Node(p + "kq_soft_max", "SOFT_MAX", kq, (p + "kq", mask)),
                  Node(p + "kqv", "MUL_MAT", out, (v, p + "kq_soft_max")),
                  Node(p + "kqv_perm", "PERMUTE", 0, (p + "kqv",)), Node(p + "kqv_out", "CONT", out, (p + "kqv_perm",))]
    kqv = p + "kqv_out"
    if rot_out:
        nodes += _hadamard(kqv, out, True, "v_rot" + kind)
        kqv += "_h4"
    nodes.append(Node(p + "attn_out", "MUL_MAT", e, ("w", kqv)))
    cur = p + "attn_out"
    if last:
        nodes += [Node(p + "attn_rows", "GET_ROWS", e, (cur, "out_ids")),
                  Node(p + "prev_rows", "GET_ROWS", e, (prev, "out_ids"))]
        cur, prev = p + "attn_rows", p + "prev_rows"
    if post_norm:
        nodes += _norm(p + "attn_post", e, cur)
        cur = p + "attn_post"
    return nodes + [Node(p + "ffn_inp", "ADD", e, (cur, prev))]


def _group_selection(p: str, f: int, moe: Moe, select: str) -> list[Node]:
    """build_moe_ffn's choice of the best expert groups (n_expert_groups > 1, DeepSeek-V3) in the order the graph
    reaches it from the top-k: each group scored by the sum of its two best selection probabilities (argsort,
    get_rows, sum_rows), the best groups taken (argsort), their experts gathered and written over a copy of the
    probabilities filled with -inf (fill, set_rows: a view of the fill), which the top-k then sorts."""
    groups, used = moe.groups
    g, per_group = moe.n_expert * f, moe.n_expert // groups
    return [Node(p + "sel_groups", "RESHAPE", 0, (select,)), Node(p + "fill", "FILL", g, (p + "sel_groups",)),
            Node(p + "sel4d", "RESHAPE", 0, (p + "sel_groups",)),
            Node(p + "g_sort", "ARGSORT", g, (p + "sel_groups",)), Node(p + "g_top2", "VIEW", 0, (p + "g_sort",)),
            Node(p + "g_best2", "GET_ROWS", 2 * groups * f, (p + "sel4d", p + "g_top2")),
            Node(p + "g_best2_3d", "RESHAPE", 0, (p + "g_best2",)),
            Node(p + "g_score", "SUM_ROWS", groups * f, (p + "g_best2_3d",)),
            Node(p + "g_score_2d", "RESHAPE", 0, (p + "g_score",)),
            Node(p + "gg_sort", "ARGSORT", groups * f, (p + "g_score_2d",)),
            Node(p + "g_chosen", "VIEW", 0, (p + "gg_sort",)),
            Node(p + "g_probs", "GET_ROWS", per_group * used * f, (p + "sel_groups", p + "g_chosen")),
            Node(p + "g_masked", "SET_ROWS", 0, (p + "fill", p + "g_probs", p + "g_chosen")),
            Node(p + "sel2d", "RESHAPE", 0, (p + "g_masked",))]


def _mla_attention(p: str, prev: str, last: bool, e: int, f: int, n_head: int, mla: Mla, cells: int,
                   flash_attn: bool, v_cont: int) -> list[Node]:
    """The attention block of a DeepSeek layer with absorbed MLA (deepseek2.cpp is_mla; llama-graph.cpp build_attn
    for a K-only cache and build_attn_mha with v_mla), up to the FFN's input: Q (through its LoRA), absorbed and
    joined with its roped part; the latent normed (V, a view) and joined with its roped part (K, the cache row);
    the attention over the cache (V a view of K: with flash attention its output is latent-wide, without it the
    latent is copied transposed first), expanded per head by attn_v_b, made contiguous, projected."""
    rank, rope, lat = mla.rank, mla.rope, (mla.rank + mla.rope) * f
    q = [Node(p + "q", "MUL_MAT", n_head * mla.head_k * f, ("w", p + "attn_norm"))]
    if mla.q_lora:
        q = [Node(p + "q_a", "MUL_MAT", mla.q_lora * f, ("w", p + "attn_norm")), *_norm(p + "q_an", mla.q_lora * f,
             p + "q_a"), Node(p + "q", "MUL_MAT", n_head * mla.head_k * f, ("w", p + "q_an"))]
    nodes = _norm(p + "attn_norm", e, prev) + q + [
        Node(p + "q3", "RESHAPE", 0, (p + "q",)), Node(p + "q_nope", "VIEW", 0, (p + "q3",)),
        Node(p + "q_nope_p", "PERMUTE", 0, (p + "q_nope",)),
        Node(p + "q_abs", "MUL_MAT", n_head * rank * f, ("w", p + "q_nope_p")),
        Node(p + "q_abs_p", "PERMUTE", 0, (p + "q_abs",)), Node(p + "q_pe", "VIEW", 0, (p + "q3",)),
        Node(p + "q_pe_r", "ROPE", n_head * rope * f, (p + "q_pe", "inp_pos")),
        Node(p + "q_rope", "CONCAT", n_head * lat, (p + "q_abs_p", p + "q_pe_r")),
        Node(p + "kv_pe", "MUL_MAT", lat, ("w", p + "attn_norm")), Node(p + "kv_cmpr", "VIEW", 0, (p + "kv_pe",)),
        *_norm(p + "kv_n", rank * f, p + "kv_cmpr"), Node(p + "v3", "RESHAPE", 0, (p + "kv_n",)),
        Node(p + "k_pe", "VIEW", 0, (p + "kv_pe",)), Node(p + "k_pe_r", "ROPE", rope * f, (p + "k_pe", "inp_pos")),
        Node(p + "k_rope", "CONCAT", lat, (p + "v3", p + "k_pe_r")),
        Node(p + "k_view", "VIEW", 0, (p + "k_rope",)), Node(p + "k_set", "SET_ROWS", 0, ("cache_k", p + "k_view",
                                                                                             "k_idxs")),
        Node(p + "q_view", "VIEW", 0, (p + "q_rope",)), Node(p + "q_perm", "PERMUTE", 0, (p + "q_view",))]
    heads_v = n_head * mla.head_v * f
    if flash_attn:
        nodes += [Node(p + "fa", "FLASH_ATTN_EXT", n_head * rank * f, (p + "q_perm", "cache_k", "mask")),
                  Node(p + "fa_p", "PERMUTE", 0, (p + "fa",))]
        lat_out = p + "fa_p"
    else:
        nodes += [Node(p + "v_cont", "CONT", v_cont, ("cache_k",)),
                  Node(p + "kq", "MUL_MAT", cells * n_head * f, ("cache_k", p + "q_perm")),
                  Node(p + "kq_soft_max", "SOFT_MAX", cells * n_head * f, (p + "kq", "mask")),
                  Node(p + "kqv", "MUL_MAT", n_head * rank * f, (p + "v_cont", p + "kq_soft_max"))]
        lat_out = p + "kqv"
    nodes += [Node(p + "mla", "MUL_MAT", heads_v, ("w", lat_out)), Node(p + "mla_p", "PERMUTE", 0, (p + "mla",)),
              Node(p + "kqv_out", "CONT", heads_v, (p + "mla_p",)),
              Node(p + "attn_out", "MUL_MAT", e, ("w", p + "kqv_out"))]
    cur = p + "attn_out"
    if last:
        nodes += [Node(p + "attn_rows", "GET_ROWS", e, (cur, "out_ids")),
                  Node(p + "prev_rows", "GET_ROWS", e, (prev, "out_ids"))]
        cur, prev = p + "attn_rows", p + "prev_rows"
    return nodes + [Node(p + "ffn_inp", "ADD", e, (cur, prev))]


def _hadamard(x: str, size: int, contiguous: bool, rot: str) -> list[Node]:
    """llama_mul_mat_hadamard: ``x`` viewed (or, strided, copied) as rows of the rotation's size, multiplied by it,
    viewed back as ``x + "_h4"``."""
    flat = Node(x + "_r2", "RESHAPE", 0, (x,)) if contiguous else Node(x + "_r2", "CONT", size, (x,))
    return [flat, Node(x + "_h", "MUL_MAT", size, (rot, x + "_r2")), Node(x + "_h4", "RESHAPE", 0, (x + "_h",))]


def _rotated(p: str, qkv: list[Node], kind: str, rot: tuple[int, int], sizes: dict[str, int],
             strided_v: bool) -> list[Node]:
    """``qkv`` (the Q, V and K chains in that order, ending in q_rope, v3 and k_rope) with build_attn's rotations for
    a quantized cache: Q and K by the K rotation, V by the V rotation, each right after its chain, and the names
    _attention reads pointed at the rotated tensors."""
    if not any(rot):
        return qkv
    out: list[Node] = []
    ends = {p + "q_rope": ("q", rot[0]), p + "v3": ("v", rot[1]), p + "k_rope": ("k", rot[0])}
    renamed: dict[str, str] = {}
    for n in qkv:
        out.append(n)
        if n.name in ends and ends[n.name][1]:
            t = ends[n.name][0]
            out += _hadamard(n.name, sizes[t], not (t == "v" and strided_v), f"{t if t != 'q' else 'k'}_rot{kind}")
            renamed[n.name] = n.name + "_h4"
    # the consumers in _attention read q_rope, v3 and k_rope: give those names to the rotated views
    swap = {**{k: k + "_pre" for k in renamed}, **{v: k for k, v in renamed.items()}}
    return [Node(swap.get(n.name, n.name), n.op, n.nbytes, tuple(swap.get(x, x) for x in n.srcs)) for n in out]


def _llama_qkv(p: str, q: int, kv: int, style: Style, rope: bool = True) -> list[Node]:
    """Q, K and V of a llama-style layer (build_qkv) in the order build_attn expands them: Q, V, K, each from its
    own product or, with ``style.fused_qkv``, as views of one; the roped Q scaled in place with ``style.q_scale``;
    without ``rope`` Q and K stay views of their products."""
    nodes: list[Node] = [Node(p + "qkv", "MUL_MAT", q + 2 * kv, ("w", p + "attn_norm"))] if style.fused_qkv else []
    for t, size in (("q", q), ("v", kv), ("k", kv)):
        if style.fused_qkv:
            nodes.append(Node(p + t + "3", "VIEW", 0, (p + "qkv",)))
        else:
            nodes += [Node(p + t, "MUL_MAT", size, ("w", p + "attn_norm")),
                      Node(p + t + "3", "RESHAPE", 0, (p + t,))]
        if t == "v":
            continue
        src = p + t + "3"
        if style.qk_norm:  # the norm of a view cannot take its block; the scale and the RoPE then work in place
            nodes += [Node(p + t + "_norm0", "RMS_NORM", size, (src,)),
                      Node(p + t + "_normed", "MUL", size, (p + t + "_norm0", "w"))]
            src = p + t + "_normed"
        if not rope:  # Q and K stay views, Q scaled by the temperature input into a new tensor (Llama 4)
            scaled = t == "q" and style.nope_scale
            nodes.append(Node(p + t + "_rope", "MUL", size, (src, "attn_scale")) if scaled
                         else Node(p + t + "_rope", "VIEW", 0, (src,)))
        elif style.kq_l2:
            nodes += [Node(p + t + "_roped", "ROPE", size, (src, "inp_pos")),
                      Node(p + t + "_rope", "RMS_NORM", size, (p + t + "_roped",))]
        elif t == "q" and style.q_scale:
            nodes += [Node(p + "q_roped", "ROPE", size, (src, "inp_pos")),
                      Node(p + "q_rope", "SCALE", size, (p + "q_roped",))]
        else:
            nodes.append(Node(p + t + "_rope", "ROPE", size, (src, "inp_pos")))
    return nodes


def _deepseek2_qkv(p: str, f: int, n_head: int, mla: Mla) -> list[Node]:
    """Q, K and V of a DeepSeek-V2 layer whose file keeps attn_kv_b whole (src/models/deepseek2.cpp, the path
    without MLA absorption), expanded Q, V, K: Q is one product roped on its trailing dims; the compressed KV and
    its RoPE part come from one product, the compressed part normed and expanded by attn_kv_b into per-head K
    (no-RoPE part) and V, V made contiguous; K is the no-RoPE view joined with the roped part repeated per head."""
    rank, rope, head_k, head_v = mla.rank, mla.rope, mla.head_k, mla.head_v
    q, nope = n_head * head_k * f, head_k - rope
    return [Node(p + "q", "MUL_MAT", q, ("w", p + "attn_norm")), Node(p + "q3", "RESHAPE", 0, (p + "q",)),
            Node(p + "q_rope", "ROPE", q, (p + "q3", "inp_pos")),
            Node(p + "kv_pe", "MUL_MAT", (rank + rope) * f, ("w", p + "attn_norm")),
            Node(p + "kv_cmpr", "VIEW", 0, (p + "kv_pe",)),
            *_norm(p + "kv_norm", rank * f, p + "kv_cmpr"),
            Node(p + "kv", "MUL_MAT", n_head * (nope + head_v) * f, ("w", p + "kv_norm")),
            Node(p + "v_view3", "VIEW", 0, (p + "kv",)), Node(p + "v3", "CONT", n_head * head_v * f, (p + "v_view3",)),
            Node(p + "k_nope", "VIEW", 0, (p + "kv",)), Node(p + "k_pe", "VIEW", 0, (p + "kv_pe",)),
            Node(p + "k_pe_rope", "ROPE", rope * f, (p + "k_pe", "inp_pos")),
            Node(p + "k_pe_rep", "REPEAT", n_head * rope * f, (p + "k_pe_rope",)),
            Node(p + "k_rope", "CONCAT", n_head * head_k * f, (p + "k_nope", p + "k_pe_rep"))]


def _ffn(p: str, src: str, e: int, ff: int, out: str, kind: str = "gated") -> list[Node]:
    """A dense FFN on ``src`` giving ``out`` (llama-graph.cpp build_ffn): "gated", gate and up products and their
    fused activation; "fused_up", one product of both halves that the SwiGLU splits; "plain", one up product whose
    bias and activation work in place."""
    if kind == "fused_up":
        act = [Node(p + "up", "MUL_MAT", 2 * ff, ("w", src)), Node(p + "swiglu", "SWIGLU", ff, (p + "up",))]
    elif kind == "plain":
        act = [Node(p + "up", "MUL_MAT", ff, ("w", src)), Node(p + "swiglu", "UNARY", ff, (p + "up",))]
    else:
        act = [Node(p + "gate", "MUL_MAT", ff, ("w", src)), Node(p + "up", "MUL_MAT", ff, ("w", src)),
               Node(p + "swiglu", "SWIGLU", ff, (p + "gate", p + "up"))]
    return act + [Node(out, "MUL_MAT", e, ("w", p + "swiglu"))]


def _moe(p: str, e: int, f: int, moe: Moe, alloc_deps: tuple[bool, bool]) -> list[Node]:
    """The routed experts of an MoE layer in node order, from the normed input ``ffn_norm`` to ``moe_out``
    (build_moe_ffn: the routing, _routing; the experts' gate, up and down products, each output weighted and summed
    by views). With ``alloc_deps`` ggml-cuda's graph_optimize (ggml-cuda.cu ggml_backend_cuda_graph_optimize) keeps
    every node of the fused top-k (and their sources) alive until the node after it, and the experts' down output
    and the weights until the weighted sum's end, so the weighting cannot work in place and the sum lands higher."""
    topk_deps, sum_deps = alloc_deps
    n_used = moe.n_used
    nodes, fused, w = _routing(p, f, moe)
    nodes.append(Node(p + "ffn_norm_r", "RESHAPE", 0, (p + "ffn_norm",)))
    if topk_deps:  # kept until the node after the fused ones (add_alloc_deps(i, i + ops.size()))
        keep = dict.fromkeys(name for n in fused for name in (n.name, *n.srcs) if name != "w")
        nodes.append(Node(p + "dep_topk", "NONE", 0, tuple(keep)))
    width = moe.n_ff_exp * n_used * f
    x = p + "ffn_norm_r"
    if moe.weight_before:  # the input repeated per chosen expert and weighted in place
        nodes += [Node(p + "x_rep", "REPEAT", e * n_used, (x,)), Node(p + "x_w", "MUL", e * n_used, (p + "x_rep", w))]
        x = p + "x_w"
    for t in ("gate", "up"):  # the experts' biases (gpt-oss) are added in place by ADD_ID
        nodes.append(Node(p + t, "MUL_MAT_ID", width, ("w", x, p + "topk")))
        nodes += [Node(p + t + "_b", "ADD_ID", width, (p + t, "w", p + "topk"))] if moe.biases else []
    gate, up, down = (p + "gate_b", p + "up_b", p + "down_b") if moe.biases else (p + "gate", p + "up", p + "down")
    nodes += [Node(p + "swiglu", "SWIGLU", width, (gate, up)),
              Node(p + "down", "MUL_MAT_ID", e * n_used, ("w", p + "swiglu", p + "topk"))]
    nodes += [Node(down, "ADD_ID", e * n_used, (p + "down", "w", p + "topk"))] if moe.biases else []
    weighted = down
    if not moe.weight_before:
        nodes.append(Node(p + "weighted", "MUL", e * n_used, (down, w)))
        weighted = p + "weighted"
    nodes += [Node(p + f"wv{i}", "VIEW", 0, (weighted,)) for i in range(n_used)]
    acc = p + "wv0"
    for i in range(1, n_used):
        nodes.append(Node(p + f"acc{i}", "ADD", e, (acc, p + f"wv{i}")))
        acc = p + f"acc{i}"
    if n_used == 1:  # one expert: made contiguous, not returned as a view
        nodes.append(Node(p + "acc0", "CONT", e, (acc,)))
        acc = p + "acc0"
    if sum_deps:
        nodes.append(Node(p + "dep_down", "NONE", 0, (down, w)))
    return _renamed(nodes, acc, p + "moe_out")


def _routing(p: str, f: int, moe: Moe) -> tuple[list[Node], list[Node], str]:
    """build_moe_ffn's routing: the router logits (plus their bias, gpt-oss), the gating (softmax, sigmoid, or
    none where the chosen logits are softmaxed afterwards: SOFTMAX_WEIGHT), the top-k by argsort on the
    probabilities plus any selection bias, the chosen weights taken, normalised and scaled. Returns the nodes, those
    ggml-cuda's top-k fusion covers (from the gating on), and the name of the weights tensor."""
    n_used, g = moe.n_used, moe.n_expert * f
    nodes = [Node(p + "logits", "MUL_MAT", g, ("w", p + "ffn_norm"))]
    probs = p + "logits"
    if moe.biases:
        nodes.append(Node(p + "logits_b", "ADD", g, (probs, "w")))
        probs = p + "logits_b"
    start = len(nodes)
    if not moe.weight_softmax:
        nodes.append(Node(p + "probs", "UNARY" if moe.sigmoid else "SOFT_MAX", g, (probs,)))
        probs = p + "probs"
    nodes.append(Node(p + "probs_r", "RESHAPE", 0, (probs,)))
    select = p + "logits" if moe.weight_before else probs  # llama4 chooses on the raw logits
    if moe.prob_bias:  # the selection sees probs + exp_probs_b; the weights are taken from the unbiased probs
        nodes.append(Node(p + "probs_b", "ADD", g, (probs, "w")))
        select = p + "probs_b"
    if moe.groups[0] > 1:
        nodes += _group_selection(p, f, moe, select)
        select = p + "sel2d"
    nodes += [Node(p + "argsort", "ARGSORT", g, (select,)), Node(p + "topk", "VIEW", 0, (p + "argsort",)),
              Node(p + "weights", "GET_ROWS", n_used * f, (p + "probs_r", p + "topk"))]
    w = p + "weights"
    if moe.weight_softmax:  # a softmax over the chosen logits; its source is a view, so it takes a new block
        nodes += [Node(p + "w2", "RESHAPE", 0, (w,)), Node(p + "wsoft", "SOFT_MAX", n_used * f, (p + "w2",)),
                  Node(p + "wsoft3", "RESHAPE", 0, (p + "wsoft",))]
        w = p + "wsoft3"
    if moe.norm_w:
        nodes += [Node(p + "weights_r", "RESHAPE", 0, (w,)), Node(p + "wsum", "SUM_ROWS", f, (p + "weights_r",)),
                  Node(p + "wsum_c", "CLAMP", f, (p + "wsum",)),
                  Node(p + "wnorm", "DIV", n_used * f, (p + "weights_r", p + "wsum_c")),
                  Node(p + "wnorm_r", "RESHAPE", 0, (p + "wnorm",))]
        w = p + "wnorm_r"
    if moe.scale:
        nodes.append(Node(p + "wscaled", "SCALE", n_used * f, (w,)))
        w = p + "wscaled"
    return nodes, nodes[start:], w


def _renamed(nodes: list[Node], old: str, new: str) -> list[Node]:
    """``nodes`` with the tensor ``old`` called ``new`` (as its consumers will name it)."""
    return [Node(new if n.name == old else n.name, n.op, n.nbytes, tuple(new if x == old else x for x in n.srcs))
            for n in nodes]
