"""``advisor estimate MODEL`` for llama.cpp: the GGUF's facts (a local file, or a Hub header by range requests), the
devices (from the options or a saved profile, split by each GPU's free memory as llama.cpp does), the build whose
rules apply, then the pure estimator (advisor.gguf.estimate)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.errors import BadInputError
from advisor.gguf.estimate import Estimate, Settings
from advisor.gguf.facts import ModelFacts
from advisor.plan import MAX_DEVICES, MAX_UINT32


@dataclass(frozen=True)
class LlamaRequest:
    """The options of ``advisor estimate`` for llama.cpp, with llama-server's defaults."""

    model: str
    ctx: int = 0
    gpu_layers: int = -1
    gpus: int = 0
    parallel: int = -1
    batch: int = 2048
    ubatch: int = 512
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: str = "auto"
    swa_full: bool = False
    backend: str | None = None
    tensor_split: str | None = None
    n_cpu_moe: int = 0
    hardware: Path | None = None
    file: str | None = None
    quant: str | None = None
    revision: str | None = None
    llama_build: int | None = None


@dataclass(frozen=True)
class LlamaEstimate:
    facts: ModelFacts
    estimate: Estimate
    backend: str | None
    build: int | None
    build_source: str
    hub: Any = None  # advisor.hub.gguf.HubFacts when the header came from the Hub

    @property
    def overhead_bytes(self) -> int:
        """Per-GPU memory no llama.cpp buffer reports (rules/backends.toml context_overhead_bytes); 0 if unknown."""
        return overhead(self.backend)

    def to_dict(self) -> dict[str, Any]:
        from advisor.gguf.estimate import era

        doc = self.estimate.to_dict()
        doc["engine"] = "llama.cpp"
        doc["llama_build"] = {"build": self.build, "source": self.build_source, "era": era(self.build)}
        doc["backend"] = self.backend
        doc["context_overhead_bytes_per_gpu"] = self.overhead_bytes
        f = self.facts
        doc["model"] = {"path": f.path, "architecture": f.architecture, "name": f.name, "n_layer": f.n_layer,
                        "n_ctx_train": f.n_ctx_train, "files": list(f.files)}
        if self.hub is not None:
            h = self.hub
            doc["model"].update(repo=h.repo, revision=h.revision, commit=h.commit, repo_files=list(h.files))
        return doc


def overhead(backend: str | None) -> int:
    if backend is None:
        return 0
    from advisor.gguf.estimate import backend_rules

    rule = backend_rules().get(backend)
    return rule.context_overhead_bytes if rule else 0


def _check(req: LlamaRequest) -> None:
    for name, value in (("--batch", req.batch), ("--ubatch", req.ubatch)):
        if value < 1:
            raise BadInputError(f"{name} must be at least 1, got {value}")
    if req.parallel == 0 or req.parallel < -1:
        raise BadInputError(f"--parallel must be -1 (auto) or at least 1, got {req.parallel}")
    if req.gpu_layers < -1:
        raise BadInputError(f"--gpu-layers must be -1 (all) or more, got {req.gpu_layers}")
    if req.ctx < 0:
        raise BadInputError(f"--ctx must be 0 (trained context) or more, got {req.ctx}")
    if not 0 <= req.gpus <= MAX_DEVICES:  # llama.cpp's llama_max_devices()
        raise BadInputError(f"--gpus must be 0 to {MAX_DEVICES} (llama.cpp's device limit), got {req.gpus}")
    for name, value in (("--ctx", req.ctx), ("--batch", req.batch), ("--ubatch", req.ubatch),
                        ("--parallel", req.parallel)):
        if value > MAX_UINT32:  # uint32_t in llama_context_params
            raise BadInputError(f"{name} must be at most {MAX_UINT32}, got {value}")
    if req.n_cpu_moe < -1:
        raise BadInputError(f"--n-cpu-moe must be -1 (all) or more, got {req.n_cpu_moe}")


def _tensor_split(text: str) -> tuple[float, ...]:
    try:
        split = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise BadInputError(f"--tensor-split takes numbers separated by commas, got {text!r}") from None
    if len(split) > MAX_DEVICES or not all(math.isfinite(x) and x >= 0 for x in split) or not any(split):
        raise BadInputError(f"--tensor-split needs non-negative numbers, not all 0, got {text!r}")
    return split


def _devices(req: LlamaRequest, profile: Any) -> tuple[str | None, int, tuple[float, ...] | None]:
    """(backend, GPU count, tensor split): the options first, then the profile's GPUs (split by free memory, as
    llama.cpp's default split is each device's free memory at load time: src/llama-model.cpp load_tensors)."""
    backend, gpus, split = req.backend, req.gpus, None
    if profile is not None:
        if profile.gpus:
            gpus = gpus or min(len(profile.gpus), MAX_DEVICES)
            backend = backend or profile.gpus[0].backend
            free = [g.memory_free_bytes or g.memory_total_bytes or 0 for g in profile.gpus[:gpus]]
            if all(free):
                split = tuple(float(f) for f in free)
        else:
            backend = backend or "cpu"
    if req.tensor_split is not None:
        split = _tensor_split(req.tensor_split)
        gpus = gpus or len(split)
    if backend == "cpu":
        gpus = 0
    elif backend is not None and gpus == 0:
        gpus = 1  # a GPU backend named without --gpus: one device
    return backend, gpus, split


def _facts(req: LlamaRequest) -> tuple[ModelFacts, Any]:
    from advisor.gguf.facts import read_gguf_facts
    from advisor.hub.gguf import hub_facts, looks_like_hub_ref, parse_ref

    if not Path(req.model).exists() and (req.file or req.quant or req.revision or looks_like_hub_ref(req.model)):
        hub = hub_facts(parse_ref(req.model, req.file, req.quant, req.revision))
        return hub.facts, hub
    if req.file or req.quant or req.revision:
        raise BadInputError(f"{req.model}: --file, --quant and --revision are for a Hub reference (org/repo), "
                            "not a local file")
    return read_gguf_facts(req.model), None


def llama_estimate(req: LlamaRequest) -> LlamaEstimate:
    from advisor.app.estimate import llama_build
    from advisor.gguf.estimate import estimate

    _check(req)
    profile = None
    if req.hardware is not None:
        from advisor.app.advise import load_profile

        profile = load_profile(req.hardware)
    backend, gpus, split = _devices(req, profile)
    facts, hub = _facts(req)
    build, why = llama_build(req.llama_build, profile)
    settings = Settings(n_ctx=req.ctx, n_batch=req.batch, n_ubatch=req.ubatch, n_parallel=req.parallel,
                        flash_attn=req.flash_attn, cache_type_k=req.cache_type_k.lower(),
                        cache_type_v=req.cache_type_v.lower(), n_gpu_layers=req.gpu_layers, n_gpus=gpus,
                        swa_full=req.swa_full, backend=backend, tensor_split=split,  # type: ignore[arg-type]
                        n_cpu_moe=req.n_cpu_moe, llama_build=build)
    return LlamaEstimate(facts, estimate(facts, settings), backend, build, why, hub)
