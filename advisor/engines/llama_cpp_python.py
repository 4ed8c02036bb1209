"""llama-cpp-python's server, ``python -m llama_cpp.server`` (abetlen/llama-cpp-python llama_cpp/server/settings.py):
the llama.cpp engine ``advisor setup`` installs, and the one used when ``llama-server`` is not on PATH.

Its flags are the pydantic field names of ``ModelSettings``/``ServerSettings`` (checked with ``--help`` on 0.3.36).
It has no ``/health``, no slots (one request at a time) and no ``timings`` in replies; the model loads before the
port opens, so the port staying closed is "still loading".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from advisor.engines import Engine, Failure, Http, Launch, Ready, Sampling, first_line
from advisor.engines.llama_server import classify_llama_cpp
from advisor.plan import LLAMA_CPP, LLAMA_CPP_PYTHON, LlamaCppSettings, ModelRef, PlanFileError

MODULE = "llama_cpp.server"

#: KV cache types as ggml type ids: the server takes ``--type_k``/``--type_v`` as integers (settings.py), the ids of
#: ``enum ggml_type`` in ggml/include/ggml.h (same numbers as gguf's GGMLQuantizationType).
GGML_TYPE_IDS = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "iq4_nl": 20, "bf16": 30}
#: Quantized V needs flash attention ("quantized V cache was requested, but this requires Flash Attention").
UNQUANTIZED = ("f32", "f16", "bf16")

# Variables the server reads over its own arguments: __main__.py takes HOST, PORT and CONFIG_FILE from the
# environment before the command line, and pydantic-settings fills any unset field (API_KEY, MODEL...) from it.
SHADOWING_ENV = ("HOST", "PORT", "CONFIG_FILE", "API_KEY", "MODEL", "MODEL_ALIAS", "CHAT_FORMAT")


#: Sampling defaults: none. The server's ModelSettings/ServerSettings have no sampling fields (checked with
#: ``python -m llama_cpp.server --help`` on 0.3.36: only --last_n_tokens_size touches sampling); the defaults live in
#: each request's pydantic model (llama_cpp/server/types.py temperature 0.8, top_p 0.95...). So a plan's sampling is
#: not passed; the client must send it (the planner says so in the plan's reasons).
SAMPLING_FLAGS: dict[str, str] = {}

#: What the server cannot do (its ModelSettings has no n_cpu_moe or tensor overrides, one slot, no sampling
#: defaults): the planner reads these and plans around them.
FLAGS = {"n_cpu_moe": False, "parallel": False, "sampling": False}


def model_args(model: ModelRef, local_path: str | None) -> list[str]:
    """``--model PATH``; for a Hub file ``--hf_model_repo_id REPO --model FILE`` (llama_cpp/server/model.py loads it
    with Llama.from_pretrained)."""
    if local_path is None and model.path is None and model.repo and model.files:
        return ["--hf_model_repo_id", model.repo, "--model", model.files[0]]
    return ["--model", local_path or model.path or (model.files[0] if model.files else model.id)]


def _bool(value: bool) -> str:
    return "true" if value else "false"  # cli.py _parse_bool_arg accepts true/false


def build_args(settings: LlamaCppSettings, model: list[str], flags: Mapping[str, bool] | None = None,
               sampling: Sampling | None = None) -> list[str]:
    """Model and settings flags, without host, port and API key.

    ``parallel`` has no equivalent (the server serves one request at a time, app.py's lock): the planner plans one
    slot for this engine. ``sampling`` is accepted like the other engines' and left out: the server has no flags
    for sampling defaults (SAMPLING_FLAGS).
    """
    if settings.n_cpu_moe is not None:
        raise PlanFileError("llama-cpp-python's server cannot keep experts on the CPU (no n_cpu_moe): run the plan "
                            "with llama-server, or plan without expert offload")
    args = [
        *model,
        "--n_ctx", str(settings.ctx),
        "--n_batch", str(settings.batch),
        "--n_ubatch", str(settings.ubatch),
        "--n_gpu_layers", str(settings.n_gpu_layers),
        # use_mlock defaults to llama_supports_mlock() (True on Linux): say what the plan says.
        "--use_mlock", _bool(settings.mlock),
        "--use_mmap", _bool(settings.mmap),
        # The server's default logits_all=True (llama_cpp/server/settings.py) keeps an n_ctx x n_vocab float32 score
        # array (llama_cpp/llama.py: 2.5 GB for 4096 x 151936) that the planner does not count, and runs the output
        # matmul over every prompt token. advisor never asks for prompt logprobs.
        "--logits_all", "false",
    ]  # fmt: skip
    quantized_v = settings.cache_type_v not in UNQUANTIZED
    if settings.flash_attn == "on" or (settings.flash_attn == "auto" and quantized_v):
        args += ["--flash_attn", "true"]
    elif settings.flash_attn == "off":
        args += ["--flash_attn", "false"]
    for flag, name in (("--type_k", settings.cache_type_k), ("--type_v", settings.cache_type_v)):
        if name != "f16":  # f16 is the library default
            if name not in GGML_TYPE_IDS:
                raise PlanFileError(f"KV cache type {name!r} is not one of {', '.join(GGML_TYPE_IDS)}")
            args += [flag, str(GGML_TYPE_IDS[name])]
    if settings.threads is not None:
        args += ["--n_threads", str(settings.threads)]
    if settings.tensor_split:
        args += ["--tensor_split", *(f"{x:g}" for x in settings.tensor_split)]
    if settings.main_gpu is not None:
        args += ["--main_gpu", str(settings.main_gpu)]
    return args


def command(exe: str | None, args: list[str], settings: Any, host: str, port: int, api_key: str | None,
            flags: Mapping[str, bool], offline: bool = True) -> Launch:
    """``exe`` is the Python interpreter that has llama_cpp installed."""
    argv = [exe or "python3", "-m", MODULE, *args, "--host", host, "--port", str(port)]
    # The key goes through the environment (ServerSettings.api_key is a pydantic-settings field: API_KEY), so it is
    # not on the command line that `ps` shows.
    env = {"API_KEY": api_key} if api_key else {}
    return Launch(argv=argv, env=env, unset=SHADOWING_ENV)


def ready(http: Http, base_url: str, headers: Mapping[str, str]) -> Ready:
    """``/v1/models`` = 200 (with the key when one is set): there is no /health (404, verified here)."""
    status, _ = http.get(f"{base_url}/v1/models", headers, 3.0)
    return Ready(status == 200, "" if status == 200 else f"/v1/models answered {status}")


def classify(log: str) -> Failure | None:
    line = first_line(log, ("model path does not exist",))
    if line:
        return Failure("model", line, retry=False)
    line = first_line(log, ("modulenotfounderror:",))  # a traceback's last line, not an optional-import warning
    if line:
        return Failure("missing", f"{line} (install with: pip install 'llama-cpp-python[server]')", retry=False)
    failure = classify_llama_cpp(log)
    if failure:
        return failure
    # The load error a traceback ends with (_internals.py: "Failed to load model from file").
    line = first_line(log, ("failed to load model from file",))
    if line:
        return Failure("model", f"the model file cannot be loaded: {line}", retry=False)
    return None


ENGINE = Engine(name=LLAMA_CPP_PYTHON, backend=LLAMA_CPP, args=build_args, model_args=model_args, command=command,
                ready=ready, classify=classify, flags=FLAGS)
