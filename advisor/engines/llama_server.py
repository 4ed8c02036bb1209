"""llama.cpp's own server, ``llama-server`` (ggml-org/llama.cpp tools/server/README.md; notes/exec.md §1).

Flags differ between builds, so the few that changed are feature-detected from ``llama-server --help`` once
(notes/exec.md §7): ``--fit`` (automatic fitting, on by default where it exists), ``-fa on|off|auto`` (a bare flag on
older builds), ``--offline`` and ``--no-webui``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from advisor.engines import (
    LLAMA_SERVER,
    Engine,
    Failure,
    Http,
    Launch,
    Ready,
    common_failure,
    first_line,
)
from advisor.plan import LLAMA_CPP, LlamaCppSettings


#: The plan's sampling defaults (advisor.planner.assemble.SAMPLING_FIELDS) as llama-server flags (tools/server/
#: README.md "--temp N", "--top-k N", "--top-p N", "--min-p N", "--repeat-penalty N", the common sampling params): the
#: values a request that sets none of its own gets; a request's temperature/top_p... override them (tools/server
#: params_from_json_cmpl: json_value(data, "temperature", defaults.sampling.temp), defaults = the command line's).
SAMPLING_FLAGS = {"temperature": "--temp", "top_p": "--top-p", "top_k": "--top-k", "min_p": "--min-p",
                  "repetition_penalty": "--repeat-penalty"}
#: Why max_new_tokens is not passed: llama-server's -n/--n-predict is not only a default but a cap, applied to every
#: request including those asking for more (tools/server: "n_predict = %d exceeds server configuration, setting to").
SAMPLING_LEFT_OUT = "llama-server's -n/--n-predict would cap every request rather than set a default"


def sampling_args(sampling: Mapping[str, float] | None) -> list[str]:
    """``--temp 0.7 --top-p 0.8 ...`` for the keys of SAMPLING_FLAGS that ``sampling`` has, in that order."""
    args: list[str] = []
    for key, flag in SAMPLING_FLAGS.items():
        if sampling and sampling.get(key) is not None:
            args += [flag, f"{sampling[key]:g}"]
    return args


@dataclass(frozen=True)
class Features:
    """What this llama-server build accepts. The defaults describe current builds (README @00dc8057)."""

    fit: bool = True  # -fit, --fit [on|off] (PR #16653, around b7450-b7600)
    flash_attn_value: bool = True  # -fa, --flash-attn [on|off|auto]; older builds: bare -fa
    offline: bool = True  # --offline: never reach the Hub (advisor downloads itself)
    no_webui: bool = True  # --no-webui
    #: -lm, --load-mode MODE (none|mmap|mlock|mmap+mlock|...) replaced --mlock and --no-mmap in current builds
    #: (common/arg.cpp of the llama.cpp that llama-cpp-python 0.3.36 vendors has no --mlock or --no-mmap left)
    load_mode: bool = True

    @classmethod
    def from_help(cls, text: str) -> Features:
        """Read ``llama-server --help``. An empty text (help unavailable) means the current defaults."""
        if not text.strip():
            return cls()
        return cls(
            fit=re.search(r"--fit\b", text) is not None,
            flash_attn_value=re.search(r"--flash-attn\s+\[?on\|off", text) is not None,
            offline="--offline" in text,
            no_webui="--no-webui" in text,
            load_mode="--load-mode" in text,
        )


def build_args(settings: LlamaCppSettings, model_path: str, features: Features | None = None,
               sampling: Mapping[str, float] | None = None) -> list[str]:
    """The plan's part of the command line: model, settings and sampling defaults, without host, port and API key.

    Always passes ``-c``: ``-c 0`` (the newest default) means the model's trained context, which can be 128k-1M
    tokens of KV cache (README ``--ctx-size``). ``-np`` is explicit because the default ``-1`` means 4 slots sharing
    one KV buffer (notes/exec.md §1.1).
    """
    f = features or Features()
    args = [
        "-m", model_path,
        "-c", str(settings.ctx),
        "-np", str(settings.parallel),
        "-b", str(settings.batch),
        "-ub", str(settings.ubatch),
        "-ctk", settings.cache_type_k,
        "-ctv", settings.cache_type_v,
    ]  # fmt: skip
    if not (settings.fit and f.fit):
        # --fit only adjusts arguments the user did not set; with explicit layers it must be off so that the
        # executor's back-off is deterministic (notes/exec.md §0 step 5, §1.1).
        args += ["-ngl", str(settings.n_gpu_layers)]
    if f.fit:
        args += ["--fit", "on" if settings.fit else "off"]
    if f.flash_attn_value:
        args += ["-fa", settings.flash_attn]
    elif settings.flash_attn == "on":
        args += ["-fa"]
    if settings.threads is not None:
        args += ["-t", str(settings.threads)]
    if f.load_mode and (settings.mlock or not settings.mmap):
        args += ["--load-mode", ("mmap+mlock" if settings.mmap else "mlock") if settings.mlock else "none"]
    elif not f.load_mode:
        args += ["--mlock"] if settings.mlock else []
        args += [] if settings.mmap else ["--no-mmap"]
    if settings.tensor_split:
        args += ["-ts", ",".join(f"{x:g}" for x in settings.tensor_split)]
    if settings.main_gpu is not None:
        args += ["-mg", str(settings.main_gpu)]
    if settings.n_cpu_moe is not None:
        args += ["--n-cpu-moe", str(settings.n_cpu_moe)]
    return args + sampling_args(sampling)


def command(
    exe: str,
    model_path: str,
    settings: LlamaCppSettings,
    host: str,
    port: int,
    api_key: str | None,
    help_text: str = "",
    sampling: Mapping[str, float] | None = None,
) -> Launch:
    features = Features.from_help(help_text)
    argv = [exe, *build_args(settings, model_path, features, sampling), "--host", host, "--port", str(port)]
    if features.offline:
        argv.append("--offline")
    if features.no_webui:
        argv.append("--no-webui")
    # The key travels in the environment (LLAMA_API_KEY, README "--api-key"), not on the command line `ps` shows.
    env = {"LLAMA_API_KEY": api_key} if api_key else {}
    # Every flag has a LLAMA_ARG_* twin (README); one left in the user's shell would silently change the run.
    return Launch(argv=argv, env=env, unset=("LLAMA_ARG_HOST", "LLAMA_ARG_PORT", "LLAMA_ARG_MODEL", "LLAMA_API_KEY"))


def ready(http: Http, base_url: str, headers: Mapping[str, str]) -> Ready:
    """``/health`` answers 503 "Loading model" while loading and 200 when ready (README "GET /health"); then
    ``/v1/models`` must answer too, as ramalama's check does (notes/exec.md §4)."""
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
# Context creation failures that smaller settings may fix (notes/exec.md §0 table: KV or compute buffers).
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


ENGINE = Engine(name=LLAMA_SERVER, backend=LLAMA_CPP, command=command, ready=ready, classify=classify_llama_cpp)


#: llama.cpp's own fitter: dry-runs the model with no_alloc and prints the settings that fit (PR #18070;
#: notes/memory.md §2.8 and §7). Run beside our plan, never instead of it.
FIT_TOOL = "llama-fit-params"


def fit_params_argv(tool: str, model_path: str, settings: LlamaCppSettings) -> list[str]:
    """``llama-fit-params`` for the plan's context, slots, KV types and flash attention, leaving the layers to it
    (it only fits what is not given: common/fit.cpp)."""
    return [tool, "-m", model_path, "-c", str(settings.ctx), "-np", str(settings.parallel),
            "-ctk", settings.cache_type_k, "-ctv", settings.cache_type_v, "-fa", settings.flash_attn]  # fmt: skip
