"""llama.cpp's own server, ``llama-server`` (ggml-org/llama.cpp tools/server/README.md, common/arg.cpp).

Flags differ between builds, so the few that changed are feature-detected from ``llama-server --help`` once, when
the engine is chosen (advisor.app.engines): ``--fit`` (automatic fitting, on by default where it exists),
``-fa on|off|auto`` (a bare flag on older builds), ``--load-mode`` (which replaced ``--mlock`` and ``--no-mmap``),
``--offline`` and ``--no-webui``. An unknown flag aborts llama-server at start-up (common/arg.cpp
common_params_parse: "error: invalid argument"), so a flag a build lacks is never passed to it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from advisor.engines import Engine, Failure, Http, Launch, Ready, Sampling, common_failure, first_line
from advisor.plan import LLAMA_CPP, LLAMA_SERVER, LlamaCppSettings, ModelRef, PlanFileError

#: The plan's sampling defaults (advisor.planner.assemble.SAMPLING_FIELDS) as llama-server flags (tools/server/
#: README.md "--temp N", "--top-k N", "--top-p N", "--min-p N", "--repeat-penalty N", the common sampling params): the
#: values a request that sets none of its own gets; a request's temperature/top_p... override them (tools/server
#: params_from_json_cmpl: json_value(data, "temperature", defaults.sampling.temp), defaults = the command line's).
SAMPLING_FLAGS = {"temperature": "--temp", "top_p": "--top-p", "top_k": "--top-k", "min_p": "--min-p",
                  "repetition_penalty": "--repeat-penalty"}
#: Why max_new_tokens is not passed: llama-server's -n/--n-predict is not only a default but a cap, applied to every
#: request including those asking for more (tools/server: "n_predict = %d exceeds server configuration, setting to").
SAMPLING_LEFT_OUT = "llama-server's -n/--n-predict would cap every request rather than set a default"

#: What the current release accepts (common/arg.cpp of the llama.cpp that llama-cpp-python 0.3.36 vendors):
#: - fit: ``-fit, --fit [on|off]``; flash_attn_value: ``-fa, --flash-attn [on|off|auto]`` (older: a bare ``-fa``);
#: - load_mode: ``-lm, --load-mode auto|none|mmap|mlock|mmap+mlock|dio`` (older builds: ``--mlock``, ``--no-mmap``);
#: - offline: ``--offline``; no_webui: ``--no-webui``;
#: - n_cpu_moe, parallel, sampling: what this server does that llama-cpp-python's does not (the planner asks).
FLAGS = {"fit": True, "flash_attn_value": True, "load_mode": True, "offline": True, "no_webui": True,
         "n_cpu_moe": True, "parallel": True, "sampling": True}


def flags_from_help(text: str) -> dict[str, bool]:
    """Read ``llama-server --help``. An empty text (help unavailable) means the current release's flags."""
    if not text.strip():
        return dict(FLAGS)
    return {
        **FLAGS,
        "fit": re.search(r"--fit\b", text) is not None,
        "flash_attn_value": re.search(r"--flash-attn\s+\[?on\|off", text) is not None,
        "load_mode": "--load-mode" in text,
        "offline": "--offline" in text,
        "no_webui": "--no-webui" in text,
        "n_cpu_moe": "--n-cpu-moe" in text,
    }


def sampling_args(sampling: Sampling | None) -> list[str]:
    """``--temp 0.7 --top-p 0.8 ...`` for the keys of SAMPLING_FLAGS that ``sampling`` has, in that order."""
    args: list[str] = []
    for key, flag in SAMPLING_FLAGS.items():
        if sampling and sampling.get(key) is not None:
            args += [flag, f"{sampling[key]:g}"]
    return args


def model_args(model: ModelRef, local_path: str | None) -> list[str]:
    """``-m PATH`` for a file on disk; else ``-hfr REPO -hff FILE`` (llama-server downloads it: README
    "--hf-repo", "--hf-file")."""
    if local_path is None and model.path is None and model.repo and model.files:
        return ["-hfr", model.repo, "-hff", model.files[0]]
    return ["-m", local_path or model.path or (model.files[0] if model.files else model.id)]


def _load_mode(settings: LlamaCppSettings, flags: Mapping[str, bool]) -> list[str]:
    """mmap/mlock as this build spells them; nothing for the default (mmap on, no mlock)."""
    if settings.mmap and not settings.mlock:
        return []
    if flags.get("load_mode", True):
        mode = {(True, True): "mmap+mlock", (False, True): "mlock", (False, False): "none"}
        return ["--load-mode", mode[(settings.mmap, settings.mlock)]]
    return (["--mlock"] if settings.mlock else []) + ([] if settings.mmap else ["--no-mmap"])


def build_args(settings: LlamaCppSettings, model: list[str], flags: Mapping[str, bool] | None = None,
               sampling: Sampling | None = None) -> list[str]:
    """The plan's part of the command line: model, settings and sampling defaults, without host, port and API key.

    Always passes ``-c``: ``-c 0`` (the newest default) means the model's trained context, which can be 128k-1M
    tokens of KV cache (README ``--ctx-size``). ``-np`` is explicit because the default ``-1`` means 4 slots sharing
    one KV buffer (tools/server/server.cpp).
    """
    f = {**FLAGS, **(flags or {})}
    if settings.n_cpu_moe is not None and not f["n_cpu_moe"]:
        raise PlanFileError("this llama-server build has no --n-cpu-moe: plan without expert offload")
    args = [
        *model,
        "-c", str(settings.ctx),
        "-np", str(settings.parallel),
        "-b", str(settings.batch),
        "-ub", str(settings.ubatch),
        "-ctk", settings.cache_type_k,
        "-ctv", settings.cache_type_v,
    ]  # fmt: skip
    if not (settings.fit and f["fit"]):
        # --fit only adjusts arguments the user did not set; with explicit layers it must be off so that the
        # runner's back-off is deterministic (common/fit.cpp fits what is not given).
        args += ["-ngl", str(settings.n_gpu_layers)]
    if f["fit"]:
        args += ["--fit", "on" if settings.fit else "off"]
    if f["flash_attn_value"]:
        args += ["-fa", settings.flash_attn]
    elif settings.flash_attn == "on":
        args += ["-fa"]
    if settings.threads is not None:
        args += ["-t", str(settings.threads)]
    args += _load_mode(settings, f)
    if settings.tensor_split:
        args += ["-ts", ",".join(f"{x:g}" for x in settings.tensor_split)]
    if settings.main_gpu is not None:
        args += ["-mg", str(settings.main_gpu)]
    if settings.n_cpu_moe is not None:
        args += ["--n-cpu-moe", str(settings.n_cpu_moe)]
    return args + sampling_args(sampling)


def command(exe: str | None, args: list[str], settings: Any, host: str, port: int, api_key: str | None,
            flags: Mapping[str, bool], offline: bool = True) -> Launch:
    f = {**FLAGS, **flags}
    argv = [exe or "llama-server", *args, "--host", host, "--port", str(port)]
    if f["offline"] and offline:  # the model is on disk: never reach the Hub (README "--offline")
        argv.append("--offline")
    if f["no_webui"]:
        argv.append("--no-webui")
    # The key travels in the environment (LLAMA_API_KEY, README "--api-key"), not on the command line `ps` shows.
    env = {"LLAMA_API_KEY": api_key} if api_key else {}
    # Every flag has a LLAMA_ARG_* twin (README); one left in the user's shell would silently change the run.
    return Launch(argv=argv, env=env, unset=("LLAMA_ARG_HOST", "LLAMA_ARG_PORT", "LLAMA_ARG_MODEL", "LLAMA_API_KEY"))


def ready(http: Http, base_url: str, headers: Mapping[str, str]) -> Ready:
    """``/health`` answers 503 "Loading model" while loading and 200 when ready (README "GET /health"); then
    ``/v1/models`` must answer too, as containers/ramalama's readiness check asks."""
    status, body = http.get(f"{base_url}/health", headers, 3.0)
    if status == 503:
        return Ready(False, "loading model")
    if status != 200:
        return Ready(False, f"/health answered {status}")
    status, _ = http.get(f"{base_url}/v1/models", headers, 3.0)
    return Ready(status == 200, "" if status == 200 else f"/v1/models answered {status}")


# A model the library cannot read: no smaller configuration will help (texts seen here with truncated files, and
# llama-model-loader.cpp's "data is not within the file bounds, model is corrupted or incomplete").
CORRUPT_MARKERS = (
    "not within the file bounds",
    "failed to read key-value pairs",
    "failed to read magic",
    "invalid magic",
    "gguf_init_from_file",
    "unknown model architecture",
    "cannot find tokenizer",
    "error loading model:",
)
# Context creation failures that smaller settings may fix (src/llama-context.cpp: a KV or compute buffer that could
# not be allocated).
CONTEXT_MARKERS = (
    "failed to create context",
    "unable to create llama context",
    "failed to create llama_context",
    "failed to allocate compute pp buffers",
    "requires flash attention",
)


def classify_llama_cpp(log: str) -> Failure | None:
    """Shared by both llama.cpp engines: they run the same library and print the same lines."""
    failure = common_failure(log)
    if failure:
        return failure
    line = first_line(log, CORRUPT_MARKERS)
    if line:
        return Failure("model", f"the model file cannot be loaded: {line}", retry=False)
    line = first_line(log, CONTEXT_MARKERS)
    if line:
        return Failure("exited", f"context creation failed: {line}", retry=True)
    return None


ENGINE = Engine(name=LLAMA_SERVER, backend=LLAMA_CPP, args=build_args, model_args=model_args, command=command,
                ready=ready, classify=classify_llama_cpp, flags=FLAGS, flags_from_help=flags_from_help)


#: llama.cpp's own fitter: dry-runs the model with no_alloc and prints the settings that fit (ggml-org/llama.cpp
#: PR #18070, tools/fit-params). Run beside our plan, never instead of it.
FIT_TOOL = "llama-fit-params"


def fit_params_argv(tool: str, model_path: str, settings: LlamaCppSettings) -> list[str]:
    """``llama-fit-params`` for the plan's context, slots, KV types and flash attention, leaving the layers to it
    (it only fits what is not given: common/fit.cpp)."""
    return [tool, "-m", model_path, "-c", str(settings.ctx), "-np", str(settings.parallel),
            "-ctk", settings.cache_type_k, "-ctv", settings.cache_type_v, "-fa", settings.flash_attn]  # fmt: skip
