"""Predicted vs measured speed over public llama-bench results (tests/data/llama-bench/results.csv).

For every row the speed model of advisor/planner/speed.py predicts the row's test (pp512: prefill; tg128/tg512:
decode at the test's average depth) from the device's datasheet figures (tests/data/llama-bench/hardware.csv) and
the model's shape (models.csv). The table shows, per set (calibration: the rows rules/speed.toml was fitted on;
evaluation: held out, devices chosen by the rule in SOURCES.md), backend and test, how many predictions fall within
+-25 % of the measurement and the median error.

    python benchmarks/speed_accuracy.py            # the table
    python benchmarks/speed_accuracy.py --rows     # every row: predicted, measured, ratio
    python benchmarks/speed_accuracy.py --fit      # constants fitted on the calibration set, as TOML
    python benchmarks/speed_accuracy.py --baseline # also the estimate advisor used before, on the same rows
"""

from __future__ import annotations

import csv
import dataclasses
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from advisor.planner import speed
from advisor.rules import Subject, load_rules

DATA = ROOT / "tests" / "data" / "llama-bench"
GIB = 1 << 30
BACKENDS = {"CUDA": "cuda", "ROCm": "rocm", "Vulkan": "vulkan", "Metal": "metal", "CPU": "cpu", "SYCL": "sycl"}
FITTED = ("cuda", "cuda_hbm", "cuda_hbm_hopper", "cuda_igpu", "rocm", "vulkan", "vulkan_coopmat", "vulkan_nvidia",
          "metal", "cpu")
#: Decode on HBM GPUs: "cuda_hbm" is fitted on the public A100 rows (May 2024 builds), "cuda_hbm_hopper" on this
#: repository's H200 rows (a 2026 build, measured.csv), the only Hopper rows of a current build. A Hopper row of a
#: build before HOPPER_CURRENT_SINCE (the public H100 PCIe rows, May 2024) takes "cuda_hbm", the constants of its
#: build era.
HOPPER_CURRENT_SINCE = "2025"
#: Families fitted apart for Hopper: its rows cover each, and 8- and 16-bit types do not stream at one rate there.
HOPPER_GROUPS = (("f16",), ("q8_0",), ("q4_0", "k", "iq", "mxfp4"))
#: Families fitted together (too few rows per family): 8-16-bit types stream at one rate, 4-bit block types at
#: another; prefill: F16 (cuBLAS/hipBLAS/mul_mm in F16) apart from every quantized type (MMQ / dequantize+mul_mm).
DECODE_GROUPS = (("f16", "q8_0"), ("q4_0", "k", "iq", "mxfp4"))
PREFILL_GROUPS = (("f16",), ("q8_0", "q4_0", "k", "iq", "mxfp4"))


def _csv(name: str) -> list[dict[str, str]]:
    with open(DATA / name, newline="") as f:
        return list(csv.DictReader(f))


@dataclass(frozen=True)
class Case:
    row: dict[str, str]
    backend: str
    test: str  # pp | tg
    depth: int
    measured: float
    parts: list[speed.Part]
    ms: speed.ModelSpeed
    active_params: float
    datasheet_tflops: float = 0.0  # hardware.csv's FP16 figure (for the --baseline estimate)


def depth_of(test: str) -> tuple[str, int]:
    """llama-bench's tgN generates N tokens from an empty context (average depth N/2); ppN processes N tokens in
    one batch (attention over N/2 on average); "@dD" (llama-bench -d D) starts both D tokens deep."""
    test, _, start = test.partition("@d")
    n = int(test[2:])
    return test[:2], n // 2 + int(start or 0)


#: llama.cpp's CUDA MMQ kernels moved to int8 tensor cores in June 2024 (pull requests 7676, 7860 and 7921, which
#: made ggml_cuda_should_use_mmq pick MMQ on Turing and later); before, a quantized prompt batch on a GPU with FP16
#: tensor cores was converted to F16 and multiplied by cuBLAS (ggml_cuda_op_mul_mat_cublas).
MMQ_INT8_SINCE = "2024-06"


def pre_mmq_int8(row: dict[str, str], dev: dict[str, str]) -> bool:
    """A CUDA row measured (results.csv ``date``) before MMQ's int8 tensor-core kernels, on a GPU with FP16 tensor
    cores: its quantized prefill took the dequantize + cuBLAS path."""
    return (row["backend"] == "CUDA" and bool(row["date"]) and row["date"] < MMQ_INT8_SINCE
            and speed.gpu_class("cuda", dev["arch"]) in ("turing_plus", "hopper", "volta"))


def attention_of(mdl: dict[str, str]) -> tuple[tuple[int, int, float, float], ...]:
    """ModelSpeed.attention from models.csv: K and V widths (n_kv_embd each, f16) and the query heads' width
    (n_q_embd) on every layer; ``swa`` "window/layers" puts that many layers on the window."""
    n, kv, q = int(mdl["n_layer"]), int(mdl["n_kv_embd"]), int(mdl["n_q_embd"])
    per = (2.0 * 2 * kv, 2.0 * 2 * q)  # K + V at 2 bytes per cell; QK + PV at 2 FLOPs per multiply-add
    window, swa = (int(x) for x in mdl["swa"].split("/")) if mdl["swa"] else (0, 0)
    return tuple(g for g in ((n - swa, 0, *per), (swa, window, *per)) if g[0])


def case_of(row: dict[str, str], models: dict[str, dict[str, str]], hw: dict[str, dict[str, str]]) -> Case:
    mdl, dev = models[row["model"]], hw[row["device"]]
    params, active = float(mdl["params_b"]) * 1e9, float(mdl["active_b"]) * 1e9
    size = float(row["size_gib"]) * GIB
    embd_params = int(mdl["n_vocab"]) * int(mdl["n_embd"])
    embd = size / params * embd_params
    tied = mdl["tied_embeddings"] == "true"
    read_fraction = 1.0 if active >= params else (active - embd_params) / (params - embd_params)
    use, all_experts = _experts(mdl)
    experts = all_experts * 1e9 * use
    ms = speed.ModelSpeed(quant=row["quant"], embd_bytes=int(embd), n_vocab=int(mdl["n_vocab"]),
                          n_layer=int(mdl["n_layer"]), n_embd=int(mdl["n_embd"]),
                          read_fraction=read_fraction, output_params=0.0 if tied else float(embd_params),
                          expert_params=experts, expert_use=use, arch=mdl["arch"],
                          n_expert_used=int(mdl["n_expert_used"] or 0), attention=attention_of(mdl))
    backend = speed.speed_backend(BACKENDS[row["backend"]], dev["vendor"], row["device"], HBM, dev["arch"],
                                  speed.name_matches(row["device"], IGPU))
    if backend == "cuda_hbm_hopper" and row["date"] and row["date"] < HOPPER_CURRENT_SINCE:
        backend = "cuda_hbm"
    bw, tf = float(dev["bandwidth_gbs"]), float(dev["fp16_tflops"] or 0)
    if row.get("n_cpu_moe"):
        parts = expert_offload_parts(row, mdl, dev, hw[row["host_device"]], size, embd, backend)
    elif backend == "cpu":
        parts = [speed.Part("cpu", bw, 0.0, size, 1.0, threads=int(row["threads"] or dev["cores"]), isa=dev["isa"])]
    else:
        n = int(row["n_gpus"] or 1)
        on_gpu = size if tied else size - embd  # a tied output layer is a GPU copy of the table
        f16x, qx, dequant = speed.matrix_path(BACKENDS[row["backend"]], dev["arch"], C)
        if pre_mmq_int8(row, dev):
            qx, dequant = f16x, True
        parts = [speed.Part(backend, bw, tf * f16x, on_gpu / n, 1.0 / n, quant_tflops=tf * qx, dequant=dequant)
                 for _ in range(n)]
        parts.append(speed.Part("cpu", 50.0, 0.0, embd, 0.0, threads=1))
    test, depth = depth_of(row["test"])
    # the token-embedding table is a lookup, not a product (advisor/planner/speed.py active_params_of)
    return Case(row, backend, test, depth, float(row["tps"]), parts, ms, active - embd_params, tf)


def _experts(mdl: dict[str, str]) -> tuple[float, float]:
    """(n_used / n_expert, every expert's parameters in billions) of a models.csv row: total - active = experts x
    (1 - n_used / n_expert); (0, 0) for a dense model."""
    if not mdl["n_expert"]:
        return 0.0, 0.0
    use = int(mdl["n_expert_used"]) / int(mdl["n_expert"])
    return use, (float(mdl["params_b"]) - float(mdl["active_b"])) / (1.0 - use)


def expert_offload_parts(row: dict[str, str], mdl: dict[str, str], dev: dict[str, str], host: dict[str, str],
                         size: float, embd: float, backend: str) -> list[speed.Part]:
    """--n-cpu-moe over every layer: the expert tensors in host memory (a token reads n_used / n_expert of them),
    the rest on the GPU (as advisor.planner.bridge places them)."""
    used, all_experts = _experts(mdl)
    experts = all_experts / float(mdl["params_b"]) * size  # their bytes, at the file's average bytes per parameter
    f16x, qx, dequant = speed.matrix_path("cuda", dev["arch"], C)
    tf = float(dev["fp16_tflops"])
    gpu = size - embd - experts
    total = gpu + experts
    return [speed.Part(backend, float(dev["bandwidth_gbs"]), tf * f16x, gpu, gpu / total, quant_tflops=tf * qx,
                       dequant=dequant),
            speed.Part("cpu", float(host["bandwidth_gbs"]), 0.0, experts + embd, experts / total,
                       threads=int(host["cores"]), isa=host["isa"], read_fraction=used * experts / (experts + embd))]


def predicted(case: Case, c: speed.Constants) -> float:
    if case.test == "tg":
        return 1.0 / speed.decode_seconds(case.parts, case.ms, c, case.depth)
    return 1.0 / speed.prefill_seconds(case.parts, case.active_params, case.ms, c, case.depth)


def previous(case: Case) -> float:
    """The speed estimate advisor used before this model (for comparison, --baseline): every weight on a device read
    per token at 60 % of its bandwidth, the token-embedding table from RAM at 40 GB/s (60 GB/s on a Mac, 150 GB/s
    on 24+ cores), MoE weights scaled by the active share; prefill at 35 % of the FP16 TFLOPs (CPU: 50 GFLOPS per
    core), whatever the quant or backend."""
    apple = case.row["backend"] == "Metal" or case.row["device"].startswith("Apple")
    ram = 60.0 if apple else 40.0
    frac = case.ms.read_fraction
    if case.test == "tg":
        t = 0.0
        for p in case.parts:
            bw = p.bandwidth_gbs if p.backend != "cpu" else (150.0 if p.threads >= 24 else ram)
            t += p.weights_bytes * frac / (bw * 1e9 * 0.6)
        return 1.0 / t
    gpu = [p for p in case.parts if p.backend != "cpu"]
    flops = case.datasheet_tflops * 1e12 if gpu else case.parts[0].threads * 50e9
    counted = case.active_params + case.ms.n_vocab * case.ms.n_embd  # it counted the token-embedding table too
    return flops * 0.35 / (2 * counted)


def load() -> list[Case]:
    models = {m["model"]: m for m in _csv("models.csv")}
    hw = {h["device"]: h for h in _csv("hardware.csv")}
    # results.csv: public results; measured.csv: this repository's own (benchmarks/device), split "measured";
    # modern.csv: public results of 2025-2026 builds collected after the fit, split "modern" (never fitted);
    # fresh.csv: public results from sources none of the others used, collected last, split "fresh" (never fitted)
    return [case_of(r, models, hw) for r in
            _csv("results.csv") + _csv("measured.csv") + _csv("modern.csv") + _csv("fresh.csv")]


def _resolved():
    return load_rules(ROOT / "rules").resolve(Subject())


HBM = tuple(_resolved()["hbm_gpu_match"])
IGPU = tuple(_resolved()["igpu_match"])
C = speed.Constants.from_rules(_resolved())  # the matrix-path rates (rules, not fitted)


def constants() -> speed.Constants:
    return speed.Constants.from_rules(_resolved())


def summary(cases: list[Case], c: speed.Constants,
            model: Callable[[Case, speed.Constants], float] | None = None
            ) -> list[tuple[str, str, str, int, float, float, float]]:
    predicted_ = model or predicted
    out = []
    for split in ("calibration", "evaluation", "measured", "modern", "fresh"):
        for backend in (*FITTED, "all"):
            for test in ("pp", "tg"):
                sel = [k for k in cases if k.row["split"] == split and k.test == test
                       and (backend == "all" or k.backend == backend)]
                if not sel:
                    continue
                ratios = [predicted_(k, c) / k.measured for k in sel]
                errs = [abs(r - 1) for r in ratios]
                within = sum(e <= 0.25 for e in errs) / len(errs)
                out.append((split, backend, "pp512" if test == "pp" else "tg", len(sel), within,
                            statistics.median(errs), statistics.median(ratios)))
    return out


def print_table(cases: list[Case], c: speed.Constants,
                model: Callable[[Case, speed.Constants], float] | None = None) -> None:
    print(f"{'set':<12} {'backend':<8} {'test':<6} {'rows':>5} {'within 25%':>11} {'median err':>11} "
          f"{'median pred/meas':>17}")
    for split, backend, test, n, within, med, ratio in summary(cases, c, model):
        print(f"{split:<12} {backend:<8} {test:<6} {n:>5} {within:>10.0%} {med:>10.0%} {ratio:>17.2f}")


def print_rows(cases: list[Case], c: speed.Constants) -> None:
    for k in cases:
        p = predicted(k, c)
        r = k.row
        print(f"{r['split'][:4]} {k.backend:<6} {r['device'][:28]:<28} {r['model']:<16} {r['quant']:<8} "
              f"{r['test']:<6} n{r['n_gpus'] or 1} pred {p:9.1f} meas {k.measured:9.1f} ratio {p / k.measured:5.2f}")


# --- fitting (calibration set only) -----------------------------------------------------------------------------

def _median_or(values: list[float], default: float) -> float:
    return statistics.median(values) if values else default


#: Decode overhead grid (us per llama layer: 19 kernels at up to about 5 us each, launch and synchronisation) and
#: the tolerance within which a flatter error curve gives way to the smaller overhead: with few or slow rows the
#: error barely moves with the overhead, and the grid's far end is no measurement.
OVERHEAD_GRID_US = [x * 2.5 for x in range(41)]
FLAT_ERROR = 0.005
#: Fewer decode rows than this cannot separate an overhead from an efficiency: the backend gets none (cpu: three).
MIN_OVERHEAD_ROWS = 4


def fit_decode(cases: list[Case], c: speed.Constants, backend: str,
               groups: tuple[tuple[str, ...], ...] = DECODE_GROUPS) -> tuple[dict[str, float], float]:
    """Per-layer overhead by a grid (the smallest within FLAT_ERROR of the best median error), then each family
    group's efficiency as the median implied by its rows."""
    pool = DECODE_POOL.get(backend, (backend,))
    sel = [k for k in cases if k.backend in pool and k.test == "tg"]
    if not sel:
        return dict(c._pick(c.decode_efficiency, backend)), c._pick(c.layer_overhead_us, backend)
    trials = []
    for us in OVERHEAD_GRID_US if len(sel) >= MIN_OVERHEAD_ROWS else [0.0]:
        effs = {}
        for group in groups:
            imp = []
            for k in sel:
                if k.ms.family not in group:
                    continue
                t = 1.0 / k.measured - us * 1e-6 * k.ms.n_layer * c.kernel_ratio(k.ms)
                unit = speed.decode_seconds(k.parts, k.ms, _unit(c), k.depth) - _unit(c).overhead_s(backend, 0)
                if t > 0:
                    imp.append(unit / t)
            if imp:
                effs.update({fam: min(0.98, statistics.median(imp)) for fam in group})
        trial = _with(c, backend, effs, us)
        trials.append((statistics.median(abs(predicted(k, trial) / k.measured - 1) for k in sel), effs, us))
    best = min(err for err, _e, _u in trials)
    _err, effs, us = next(t for t in trials if t[0] <= best + FLAT_ERROR)
    return effs, us


def _unit(c: speed.Constants) -> speed.Constants:
    ones = {b: {f: 1.0 for f in speed.FAMILIES} for b in (*c.decode_efficiency, *FITTED)}
    return dataclasses.replace(c, decode_efficiency=ones,
                               layer_overhead_us={b: 0.0 for b in (*c.layer_overhead_us, *FITTED)})


def _with(c: speed.Constants, backend: str, effs: dict[str, float], us: float) -> speed.Constants:
    table = {b: dict(v) for b, v in c.decode_efficiency.items()}
    table.setdefault(backend, dict(c._pick(c.decode_efficiency, backend))).update(effs)
    over = dict(c.layer_overhead_us)
    over[backend] = us
    return dataclasses.replace(c, decode_efficiency=table, layer_overhead_us=over)


#: Prefill is compute-bound: HBM GPUs share their backend's prefill efficiency (cuda_hbm has no entry of its own).
PREFILL_POOL = {"cuda": ("cuda", "cuda_hbm", "cuda_hbm_hopper")}
#: Decode reads memory the same way whether or not Vulkan's matrix shaders use cooperative matrices.
DECODE_POOL = {"vulkan": ("vulkan", "vulkan_coopmat"), "cuda": ("cuda", "cuda_igpu")}


def _pooled_away(b: str, pools: dict[str, tuple[str, ...]]) -> bool:
    return any(b in pool and b != key for key, pool in pools.items())


def fit_prefill(cases: list[Case], c: speed.Constants, backend: str) -> dict[str, float]:
    pool = PREFILL_POOL.get(backend, (backend,))
    sel = [k for k in cases if k.backend in pool and k.test == "pp" and not k.ms.expert_params]  # dense rows
    ones = {b: {f: 1.0 for f in speed.FAMILIES} for b in (*c.prefill_efficiency, *FITTED)}
    unit = dataclasses.replace(c, prefill_efficiency=ones)
    effs = {}
    for group in PREFILL_GROUPS:
        imp = [_implied_prefill_eff(k, unit) for k in sel if _prefill_group(k) in group]
        if imp:
            effs.update({fam: statistics.median(imp) for fam in group})
    return effs


def _prefill_group(k: Case) -> str:
    """The efficiency a row's prefill is computed with: quantized weights converted to F16 use the F16 GEMM's."""
    return "f16" if any(p.dequant for p in k.parts) else k.ms.family


def _implied_prefill_eff(k: Case, unit: speed.Constants) -> float:
    """The efficiency that reproduces the row: matrix time at efficiency 1 over the measured time, both less the
    conversion to F16 (which does not scale with the efficiency)."""
    conv = sum(speed._dequant_seconds(p, k.active_params, k.ms.family) for p in k.parts if p.layer_share > 0)
    t_unit = speed.prefill_seconds(k.parts, k.active_params, k.ms, unit, k.depth) - conv
    t_meas = 1.0 / k.measured - conv
    return t_unit / t_meas if t_meas > 0 else 1.0


def _fill(effs: dict[str, float], fallback: dict[str, float]) -> dict[str, float]:
    """Families of a group without rows: the other group's value (the backend's only measurement), else the
    previous value."""
    other = next(iter(effs.values()), None)
    return {fam: effs.get(fam, other if other is not None else fallback[fam]) for fam in speed.FAMILIES}


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    i = min(len(v) - 1, max(0, round(q * (len(v) - 1))))
    return v[i]


def fit_moe(cases: list[Case], c: speed.Constants, backend: str) -> float | None:
    """The tokens-per-expert half-rate point k that best reproduces the backend's MoE prefill rows (a grid); None
    without such rows. Run after the prefill efficiencies, which the dense rows set."""
    pool = PREFILL_POOL.get(backend, (backend,))
    sel = [k for k in cases if k.backend in pool and k.test == "pp" and k.ms.expert_params]
    if not sel or backend.split("_")[0] in c.moe_token_tile:  # modelled from its kernel's tile, nothing to fit
        return None
    best = None
    for k in [10.0 * x for x in range(1, 101)]:
        trial = dataclasses.replace(c, moe_half_rate_tokens={**c.moe_half_rate_tokens, backend: k})
        err = statistics.median(abs(predicted(r, trial) / r.measured - 1) for r in sel)
        if best is None or err < best[0] - 1e-9:
            best = (err, k)
    assert best is not None
    return best[1]


#: Rows this deep in context (average over the batch) set the attention rate: at llama-bench's usual depths the
#: attention is a few percent of a prompt batch's FLOPs and cannot tell a rate.
ATTENTION_FIT_DEPTH = 4096


def fit_hopper(cases: list[Case], c: speed.Constants) -> dict[str, float]:
    """Hopper's matrix-path rates (prefill_matrix_rate.hopper) from this repository's H200 rows, the only Hopper
    measured with a current build (the public H100 rows are 2024 builds and held out): each rate divided by the
    median predicted/measured of its dense prefill rows near the start of the context (F16: cuBLAS; quantized:
    MMQ)."""
    hw = {h["device"]: h for h in _csv("hardware.csv")}
    rows = [k for k in cases if k.row["split"] == "measured" and k.test == "pp" and not k.ms.expert_params
            and not k.row.get("n_cpu_moe") and speed.gpu_class("cuda", hw[k.row["device"]]["arch"]) == "hopper"
            and k.depth < ATTENTION_FIT_DEPTH]  # the deep rows set the attention rate (fit_attention)
    out = dict(c.matrix_rate.get("hopper", {}))
    for key, sel in (("f16", [k for k in rows if k.ms.family == "f16"]),
                     ("quant", [k for k in rows if k.ms.family != "f16"])):
        if sel:
            out[key] = round(out.get(key, 1.0) / statistics.median(predicted(k, c) / k.measured for k in sel), 2)
    return out


def fit_attention(cases: list[Case], c: speed.Constants) -> dict[str, float]:
    """The flash-attention share of the F16 path's rate (prefill_attention_rate) per backend family, from this
    repository's rows deep in context (the H200's, a current build; no public CUDA row that deep is in the fitted
    sets): for each row the share that reproduces it (bisection: a higher share, a faster prediction), the median."""
    out: dict[str, float] = {}
    rows = [k for k in cases if k.row["split"] == "measured" and k.test == "pp" and k.depth >= ATTENTION_FIT_DEPTH
            and not k.row.get("n_cpu_moe")]
    for family in sorted({k.backend.split("_")[0] for k in rows}):
        shares = []
        for k in (r for r in rows if r.backend.split("_")[0] == family):
            lo, hi = 0.05, 4.0
            for _ in range(40):
                mid = (lo + hi) / 2
                trial = dataclasses.replace(c, attention_rate={**c.attention_rate, family: mid})
                lo, hi = (mid, hi) if predicted(k, trial) < k.measured else (lo, mid)
            shares.append((lo + hi) / 2)
        out[family] = round(statistics.median(shares), 2)
    return out


def fit(cases: list[Case], c: speed.Constants) -> str:
    cal = [k for k in cases if k.row["split"] == "calibration"]
    # current-build Hopper decode: no public row, this repository's H200 (full offload) sets it
    own_gpu = [k for k in cases if k.row["split"] == "measured" and not k.row.get("n_cpu_moe")]
    dec, over, pre = {}, {}, {}
    for b in FITTED:
        if not _pooled_away(b, DECODE_POOL):
            effs, us = (fit_decode(own_gpu, c, b, HOPPER_GROUPS) if b == "cuda_hbm_hopper"
                        else fit_decode(cal, c, b))
            dec[b], over[b] = _fill(effs, c._pick(c.decode_efficiency, b)), us
        if not _pooled_away(b, PREFILL_POOL):
            pre[b] = _fill(fit_prefill(cal, c, b), c._pick(c.prefill_efficiency, b))
    fitted = dataclasses.replace(c, decode_efficiency=dec, layer_overhead_us=over, prefill_efficiency=pre)
    moe = {}
    own = [k for k in cases if k.row["split"] == "measured"]  # the H200's MoE rows: no public CUDA MoE row exists
    for b in FITTED:
        if not _pooled_away(b, PREFILL_POOL) and (k := fit_moe(cal + own, fitted, b)) is not None:
            moe[b] = k
    fitted = dataclasses.replace(fitted, moe_half_rate_tokens=moe)
    ranges = {}
    for b in FITTED:  # pooled over backends: a single backend's few rows would give a falsely narrow range
        ranges[b] = {}
        for test, key in (("tg", "decode"), ("pp", "prefill")):
            rs = [k.measured / predicted(k, fitted) for k in cal if k.test == test]
            ranges[b][key] = [round(_pct(rs, 0.05), 2), round(_pct(rs, 0.95), 2)]
    lines = ["[rule.set.decode_bandwidth_efficiency]"]
    lines += [f"{b} = {{ " + ", ".join(f"{f} = {v:.2f}" for f, v in dec[b].items()) + " }" for b in dec]
    lines += ["", "[rule.set.decode_layer_overhead_us]"] + [f"{b} = {v:.1f}" for b, v in over.items()]
    lines += ["", "[rule.set.prefill_compute_efficiency]"]
    lines += [f"{b} = {{ " + ", ".join(f"{f} = {v:.3f}" for f, v in pre[b].items()) + " }" for b in pre]
    lines += ["", "[rule.set.moe_half_rate_tokens]"] + [f"{b} = {v:.1f}" for b, v in moe.items()]
    att = fit_attention(cases, fitted)
    lines += ["", "[rule.set.prefill_attention_rate]"] + [f"{b} = {v}" for b, v in att.items()]
    hop = fit_hopper(cases, fitted)
    lines += ["", "[rule.set.prefill_matrix_rate] (hopper only)",
              "hopper = { " + ", ".join(f"{k} = {v}" for k, v in hop.items()) + " }"]
    lines += ["", "[rule.set.prediction_range]"]
    lines += [f"{b} = {{ decode = {r['decode']}, prefill = {r['prefill']} }}" for b, r in ranges.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    cases, c = load(), constants()
    if "--fit" in argv:
        print(fit(cases, c))
        return 0
    if "--rows" in argv:
        print_rows(cases, c)
        print()
    print(f"{len(cases)} public llama-bench results ({DATA.relative_to(ROOT)}/results.csv); "
          "pp512 = prefill, tg = decode (tg128/tg512)")
    print_table(cases, c)
    if "--baseline" in argv:
        print("\nThe estimate advisor used before (one efficiency, the embedding table read from RAM, prefill from "
              "TFLOPs at 35 %):")
        print_table(cases, c, lambda k, _c: previous(k))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
