"""Engine command builders (pure), readiness checks against a fake server, failure classification from log text."""

from __future__ import annotations

import pytest

from advisor import engines
from advisor.engines import llama_cpp_python, llama_server, vllm
from advisor.plan import EngineRef, LlamaCppSettings, ModelRef, Plan, PlanFileError, VllmSettings
from advisor.runner.seams import UrllibHttp
from tests.fake_openai import FakeOpenAI

NEW_HELP = """
-fa,   --flash-attn [on|off|auto]       set Flash Attention use ('on', 'off', or 'auto', default: 'auto')
-fit,  --fit [on|off]                   whether to adjust unset arguments to fit in device memory
--offline                               Offline mode
--no-webui                              Disable the Web UI
-lm,   --load-mode MODE                 model loading mode (default: auto)
-ncmoe, --n-cpu-moe N                   keep the MoE weights of the first N layers in the CPU
"""
OLD_HELP = """
-fa,   --flash-attn                     enable Flash Attention (default: disabled)
-ngl,  --gpu-layers N                   number of layers to store in VRAM
"""


def largs(settings: LlamaCppSettings, path: str, flags: dict[str, bool] | None = None,
          sampling: dict[str, float] | None = None) -> list[str]:
    return llama_server.build_args(settings, ["-m", path], flags, sampling)


def test_llama_server_build_args_current_build() -> None:
    s = LlamaCppSettings(n_gpu_layers=33, ctx=8192, parallel=2, cache_type_k="q8_0", cache_type_v="q8_0",
                         flash_attn="on", threads=8, mmap=False, tensor_split=[3.0, 1.0])  # fmt: skip
    args = largs(s, "/m/x.gguf")
    assert args[:2] == ["-m", "/m/x.gguf"]
    joined = " ".join(args)
    for part in ("-c 8192", "-np 2", "-ngl 33", "-ctk q8_0", "-ctv q8_0", "-fa on", "-t 8", "--load-mode none",
                 "-ts 3,1", "--fit off"):  # fmt: skip
        assert part in joined
    assert "--no-mmap" not in args and "--mlock" not in args  # gone from common/arg.cpp: --load-mode took over
    assert "--host" not in args and "--port" not in args and "--api-key" not in args


def test_llama_server_load_mode_spellings() -> None:
    """common/arg.cpp -lm/--load-mode: auto|none|mmap|mlock|mmap+mlock; older builds had --mlock and --no-mmap."""
    old = llama_server.flags_from_help(OLD_HELP)
    cases = {(True, False): ([], []), (True, True): (["--load-mode", "mmap+mlock"], ["--mlock"]),
             (False, True): (["--load-mode", "mlock"], ["--mlock", "--no-mmap"]),
             (False, False): (["--load-mode", "none"], ["--no-mmap"])}
    for (mmap, mlock), (new_args, old_args) in cases.items():
        s = LlamaCppSettings(mmap=mmap, mlock=mlock)
        assert llama_server._load_mode(s, llama_server.FLAGS) == new_args
        assert llama_server._load_mode(s, old) == old_args


def test_llama_server_fit_on_leaves_layers_to_llama_cpp() -> None:
    args = largs(LlamaCppSettings(n_gpu_layers=99, fit=True), "m.gguf")
    assert "-ngl" not in args and args[args.index("--fit") + 1] == "on"


def test_llama_server_old_build_features() -> None:
    flags = llama_server.flags_from_help(OLD_HELP)
    assert not any(flags[k] for k in ("fit", "flash_attn_value", "offline", "no_webui", "load_mode", "n_cpu_moe"))
    args = largs(LlamaCppSettings(flash_attn="on"), "m.gguf", flags)
    assert "--fit" not in args and args[-1] == "-fa"
    assert "-fa" not in largs(LlamaCppSettings(flash_attn="auto"), "m.gguf", flags)
    assert llama_server.flags_from_help(NEW_HELP) == llama_server.FLAGS
    assert llama_server.flags_from_help("") == llama_server.FLAGS


def test_llama_server_command_keeps_key_off_argv() -> None:
    flags = llama_server.flags_from_help(NEW_HELP)
    launch = llama_server.command("/bin/llama-server", ["-m", "m.gguf"], LlamaCppSettings(), "127.0.0.1", 8123,
                                  "sekret", flags)  # fmt: skip
    assert launch.argv[0] == "/bin/llama-server"
    assert launch.argv[launch.argv.index("--port") + 1] == "8123"
    assert "--offline" in launch.argv and "--no-webui" in launch.argv
    assert "sekret" not in " ".join(launch.argv) and launch.env == {"LLAMA_API_KEY": "sekret"}
    env = launch.environ({"LLAMA_ARG_PORT": "1", "PATH": "/bin"})
    assert "LLAMA_ARG_PORT" not in env and env["PATH"] == "/bin"


def test_llama_cpp_python_flags() -> None:
    s = LlamaCppSettings(n_gpu_layers=-1, ctx=2048, cache_type_k="q8_0", cache_type_v="q4_0", flash_attn="auto",
                         parallel=4)  # fmt: skip
    args = llama_cpp_python.build_args(s, ["--model", "/m.gguf"])
    joined = " ".join(args)
    assert "--model /m.gguf" in joined and "--n_ctx 2048" in joined and "--n_gpu_layers -1" in joined
    assert "--type_k 8" in joined and "--type_v 2" in joined  # ggml.h enum ggml_type ids
    assert "--flash_attn true" in joined  # quantized V needs flash attention
    assert "--use_mlock false" in joined
    assert "parallel" not in joined
    launch = llama_cpp_python.command("/py", args, s, "127.0.0.1", 9000, "k", {})
    assert launch.argv[:3] == ["/py", "-m", "llama_cpp.server"]
    assert launch.env == {"API_KEY": "k"} and "HOST" in launch.unset and "PORT" in launch.unset
    with pytest.raises(PlanFileError):
        llama_cpp_python.build_args(LlamaCppSettings(cache_type_k="q3_zz"), ["--model", "m"])
    with pytest.raises(PlanFileError, match="n_cpu_moe"):  # the server has no such setting: never dropped silently
        llama_cpp_python.build_args(LlamaCppSettings(n_cpu_moe=3), ["--model", "m"])


def test_model_arguments_per_engine() -> None:
    hub = ModelRef(id="x", repo="org/x-GGUF", files=["x-Q4_K_M.gguf"], revision="abc")
    assert llama_server.model_args(hub, None) == ["-hfr", "org/x-GGUF", "-hff", "x-Q4_K_M.gguf"]
    assert llama_server.model_args(hub, "/c/x.gguf") == ["-m", "/c/x.gguf"]
    assert llama_cpp_python.model_args(hub, None) == ["--hf_model_repo_id", "org/x-GGUF", "--model", "x-Q4_K_M.gguf"]
    assert llama_cpp_python.model_args(hub, "/c/x.gguf") == ["--model", "/c/x.gguf"]
    st = ModelRef(id="y", repo="org/y", revision="abc", format="safetensors")
    assert vllm.model_args(st, None) == ["--model", "org/y", "--revision", "abc"]
    assert vllm.model_args(st, "/snap/y") == ["--model", "/snap/y"]


SAMPLING = {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0, "repetition_penalty": 1.05,
            "max_new_tokens": 32768}


def test_llama_server_sampling_defaults() -> None:
    """The model's sampling as llama-server's defaults (README --temp/--top-p/--top-k/--min-p/--repeat-penalty);
    max_new_tokens is not passed (-n would cap every request)."""
    args = largs(LlamaCppSettings(), "m.gguf", sampling=SAMPLING)
    assert args[-10:] == ["--temp", "0.6", "--top-p", "0.95", "--top-k", "20", "--min-p", "0",
                          "--repeat-penalty", "1.05"]
    assert "-n" not in args and "--n-predict" not in args
    assert largs(LlamaCppSettings(), "m.gguf") == largs(LlamaCppSettings(), "m.gguf", sampling={})


def test_llama_cpp_python_has_no_sampling_flags() -> None:
    """``python -m llama_cpp.server --help`` (0.3.36) has no sampling-default flags: nothing is invented."""
    assert llama_cpp_python.SAMPLING_FLAGS == {}
    plain = llama_cpp_python.build_args(LlamaCppSettings(), ["--model", "/m.gguf"])
    assert llama_cpp_python.build_args(LlamaCppSettings(), ["--model", "/m.gguf"], sampling=SAMPLING) == plain


def test_vllm_sampling_defaults_as_generation_config() -> None:
    import json

    args = vllm.build_args(VllmSettings(), ["--model", "/models/tiny"], sampling=SAMPLING)
    config = json.loads(args[args.index("--override-generation-config") + 1])
    assert config == SAMPLING  # vLLM's own keys: get_diff_sampling_param reads exactly these
    assert "--override-generation-config" not in vllm.build_args(VllmSettings(), ["--model", "/models/tiny"])


def test_vllm_command() -> None:
    s = VllmSettings(max_model_len=512, max_num_seqs=4, dtype="bfloat16", cpu_kv_cache_gib=1, enforce_eager=True)
    launch = vllm.command("/venv/bin/python", vllm.build_args(s, ["--model", "/models/tiny"]), s, "127.0.0.1", 8001,
                          "k", {})
    assert launch.argv[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(launch.argv)
    for part in ("--model /models/tiny", "--max-model-len 512", "--max-num-seqs 4", "--dtype bfloat16",
                 "--enforce-eager", "--host 127.0.0.1", "--port 8001", "--gpu-memory-utilization 0.9"):  # fmt: skip
        assert part in joined
    assert launch.env == {"HF_HUB_OFFLINE": "1", "VLLM_API_KEY": "k", "VLLM_CPU_KVCACHE_SPACE": "1"}


def test_one_builder_for_plan_and_run() -> None:
    """engines.launch (what runs) extends engines.argv (what the plan holds) with the executable, host and port;
    with the model on disk only the model's arguments change."""
    ref = ModelRef(id="x", repo="org/x-GGUF", files=["x.gguf"])
    for engine in (EngineRef("llama-server", exe="/bin/llama-server"), EngineRef("llama-cpp-python", exe="/py")):
        s = LlamaCppSettings(ctx=8192, threads=4)
        plan = Plan(model=ref, backend="llama.cpp", llama_cpp=s, engine=engine,
                    args=engines.argv(engine, s, ref, {}))
        argv = engines.launch(plan, "127.0.0.1", 8080).argv
        start = argv.index(plan.args[0])
        assert argv[0] == engine.exe and argv[start:start + len(plan.args)] == plan.args
        local = engines.launch(plan, "127.0.0.1", 8080, local_path="/c/x.gguf").argv
        model = engines.get(engine.name).model_args(ref, None)
        rest = [a for a in plan.args if a not in model]
        assert all(a in local for a in rest) and "/c/x.gguf" in local


KV_V1 = (
    "(EngineCore_DP0 pid=123) ValueError: To serve at least one request with the models's max seq len (32768), "
    "(4.00 GiB KV cache is needed, which is larger than the available KV cache memory (1.50 GiB). Based on the "
    "available memory, the estimated maximum model length is 12290. Try increasing `gpu_memory_utilization` or "
    "decreasing `max_model_len` when initializing the engine.\n"
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore_DP0': 1}"
)
KV_V0 = ("ValueError: The model's max seq len (8192) is larger than the maximum number of tokens that can be stored "
         "in KV cache (3000). Try increasing gpu_memory_utilization or decreasing max_model_len")  # fmt: skip
DERIVED = ("pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig\n  Value error, "
           "User-specified max_model_len (4096) is greater than the derived max_model_len (max_position_embeddings=512 "
           "or model_max_length=None in model's config.json).")  # fmt: skip


def test_vllm_classifies_kv_cache_errors() -> None:
    f = vllm.classify(KV_V1)
    assert f and f.kind == "kv_cache" and f.retry and f.fix == {"max_model_len": 12288}
    f = vllm.classify(KV_V0)
    assert f and f.kind == "kv_cache" and f.fix == {"max_model_len": 2816}
    f = vllm.classify(DERIVED)
    assert f and f.fix == {"max_model_len": 512}
    f = vllm.classify("ValueError: Free memory on device (3.27/15.98 GiB) on startup is less than desired GPU memory")
    assert f and f.kind == "oom" and f.fix == {"gpu_memory_utilization": 0.18}
    f = vllm.classify("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert f and f.kind == "oom" and f.retry and not f.fix
    f = vllm.classify("RuntimeError: Unsupported CPU attention configuration: head_dim=16 isa=2 kv_cache_idx=0")
    assert f and f.kind == "model" and not f.retry
    assert vllm.classify("INFO No module named 'intel_extension_for_pytorch'\nall fine") is None


@pytest.mark.parametrize(
    ("log", "kind", "retry"),
    [
        ("ggml_backend_cuda_buffer_type_alloc_buffer: allocating 144817.04 MiB on device 0: cudaMalloc failed: "
         "out of memory\nllama_model_load: error loading model: unable to allocate CUDA0 buffer", "oom", True),
        ("ggml_aligned_malloc: insufficient memory (attempted to allocate 24414.06 MB)\n"
         "ValueError: Failed to create llama_context", "oom", True),
        ("llama_model_load: error loading model: tensor 'blk.0.ffn_gate.weight' data is not within the file bounds, "
         "model is corrupted or incomplete\nValueError: Failed to load model from file: /m.gguf", "model", False),
        ("llama_model_load: error loading model: unknown model architecture: 'foo'", "model", False),
        ("ValueError: Model path does not exist: /nope.gguf", "model", False),
        ("ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 8000): address already in use",
         "port", False),
        ("llama_init_from_model: quantized V cache was requested, but this requires Flash Attention\n"
         "ValueError: Failed to create llama_context", "exited", True),
        ("ModuleNotFoundError: No module named 'uvicorn'", "missing", False),
    ],
)  # fmt: skip
def test_llama_cpp_python_classify(log: str, kind: str, retry: bool) -> None:
    failure = llama_cpp_python.classify(log)
    assert failure is not None and (failure.kind, failure.retry) == (kind, retry)


def test_llama_server_classify_exit_lines() -> None:
    f = llama_server.classify_llama_cpp("main: exiting due to HTTP server error")
    assert f and f.kind == "port"
    assert llama_server.classify_llama_cpp("srv load_model: loading model\nall good") is None


def test_registry() -> None:
    assert engines.get("llama-server") is llama_server.ENGINE
    assert engines.get("vllm").backend == "vllm"
    with pytest.raises(KeyError):
        engines.get("ollama")


def test_readiness_llama_server_waits_for_health_then_models() -> None:
    http = UrllibHttp()
    with FakeOpenAI(health=[503, 200]) as fake:
        first = llama_server.ready(http, fake.url, {})
        second = llama_server.ready(http, fake.url, {})
    assert not first.ready and first.detail == "loading model"
    assert second.ready
    assert [r[1] for r in fake.requests] == ["/health", "/health", "/v1/models"]


def test_readiness_vllm_and_python_need_the_key() -> None:
    http = UrllibHttp()
    with FakeOpenAI(api_key="k") as fake:
        assert not vllm.ready(http, fake.url, {}).ready  # /v1/models is guarded
        assert vllm.ready(http, fake.url, engines.auth_headers("k")).ready
        assert llama_cpp_python.ready(http, fake.url, engines.auth_headers("k")).ready
        assert not llama_cpp_python.ready(http, fake.url, {}).ready
    with pytest.raises(OSError):  # nothing listens any more: "not listening yet" to the executor
        llama_cpp_python.ready(http, fake.url, {})
