"""Multi-node plans on recorded and constructed machines: vLLM TP inside a node x PP across nodes, llama.cpp RPC, a
model that fits one node stays there; the per-node output (shell, LeaderWorkerSet) and fleets of profiles.

Expectations come from outside the planner: vLLM's documented multi-node layout (TP = GPUs per node, PP = nodes;
docs "Parallelism and Scaling"), vLLM's head-divisibility check, the recorded GPUs' memory, llama.cpp's device order
with --rpc (src/llama.cpp: RPC servers first), Metal's working-set budget from the probe's own rule.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from advisor.errors import NothingFitsError
from advisor.planner import Request, recommend
from advisor.planner.cluster import RAY_PORT, RPC_PORT, recommend_cluster, stage_layers
from advisor.probe import apple, nvidia
from advisor.probe.profile import Cpu, Gpu, HardwareProfile, Interconnect, Memory
from advisor.render import cluster as render
from tests.replay import DATA

GIB, MIB = 1 << 30, 1 << 20
ADVISOR = str(Path(sys.executable).parent / "advisor")
ID_405B = "llama-3.1-405b-instruct"


def recorded_h100(machine) -> Gpu:
    """The H100 80GB HBM3 of the nvidia_gpu_exporter capture, read through the real detector."""
    prefix = DATA / "nvidia" / "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01__"
    machine.tool("nvidia-smi", "nvidia_smi.py", NVSMI_QUERY_CSV=f"{prefix}query-gpu.idle.csv",
                 NVSMI_Q=f"{prefix}q.idle.txt", NVSMI_L=f"{prefix}nvidia-smi-L.txt")
    (gpu,) = nvidia.detect(machine.system()).gpus
    return gpu


def node(host: str, gpus: list[Gpu], ram_gib: int = 1024, iface: str | None = "ens3", ib: bool = False,
         os_name: str = "linux", arch: str = "x86_64") -> HardwareProfile:
    return HardwareProfile(
        os=os_name, arch=arch, hostname=host,
        cpu=Cpu(model="cpu", physical_cores=32, logical_cores=64, usable_cores=64, features=["avx2"]),
        memory=Memory(total_bytes=ram_gib * GIB, available_bytes=ram_gib * GIB, usable_bytes=ram_gib * GIB),
        gpus=[dataclasses.replace(g, index=i) for i, g in enumerate(gpus)],
        interconnect=Interconnect(default_interface=iface, infiniband=["mlx5_0"] if ib else [],
                                  infiniband_active=["mlx5_0"] if ib else []))


def rtx4090() -> Gpu:
    # 24564 MiB: the RTX 4090's memory.total as nvidia-smi reports it (24 GiB GDDR6X less the driver's reserve)
    return Gpu(index=0, vendor="nvidia", name="NVIDIA GeForce RTX 4090", backend="cuda",
               memory_total_bytes=24564 * MIB, memory_free_bytes=24100 * MIB, compute_capability="8.9")


def mac(host: str) -> HardwareProfile:
    mem = 128 * GIB
    budget = apple.gpu_budget({"hw.memsize": str(mem)})  # Metal's default working set, as the probe computes it
    gpu = Gpu(index=0, vendor="apple", name="Apple M3 Max", backend="metal", memory_total_bytes=budget,
              unified_memory=True, cores=40)
    return HardwareProfile(os="darwin", arch="aarch64", hostname=host, gpus=[gpu],
                           cpu=Cpu(model="Apple M3 Max", physical_cores=16, logical_cores=16, usable_cores=16,
                                   features=["neon", "dotprod"], performance_cores=12, efficiency_cores=4),
                           memory=Memory(total_bytes=mem, available_bytes=mem - 8 * GIB, usable_bytes=mem - 8 * GIB))


def test_405b_bf16_on_two_h100_nodes_is_tp8_pp2(machine, catalog, rules):
    h100 = recorded_h100(machine)
    nodes = [node(f"10.0.0.{i + 1}", [h100] * 8) for i in range(2)]
    request = Request(model=f"{ID_405B}:bf16", backend="vllm")
    with pytest.raises(NothingFitsError):
        recommend(nodes[0], catalog, rules, request).best()  # one node is not enough
    plan = recommend_cluster(nodes, catalog, rules, request).best()
    s = plan.vllm
    model = catalog.get(ID_405B)
    assert (s.tensor_parallel_size, s.pipeline_parallel_size) == (8, 2)
    assert model.arch.n_head % s.tensor_parallel_size == 0
    assert s.distributed_executor_backend == "ray"
    assert len(plan.memory) == 16  # one entry per rank
    for d in plan.memory:
        assert d.total_bytes <= d.capacity_bytes <= h100.memory_total_bytes
    # the bf16 checkpoint (2 bytes per parameter) spread over 16 ranks: each holds at least its 1/16th
    assert plan.memory[0].weights_bytes >= model.params_total_b * 1e9 * 2 / 16
    assert ["--tensor-parallel-size", "8"] == plan.args[plan.args.index("--tensor-parallel-size"):][:2]
    assert plan.args[plan.args.index("--pipeline-parallel-size") + 1] == "2"
    assert [p.role for p in plan.nodes] == ["head", "worker"]
    assert any("spans 2 nodes" in r for r in plan.reasons)


def test_70b_on_two_nodes_of_two_4090s_is_tp2_pp2(catalog, rules):
    nodes = [node(f"r{i}", [rtx4090()] * 2, ram_gib=128) for i in range(2)]
    plan = recommend_cluster(nodes, catalog, rules, Request(model="llama-3.3-70b-instruct", backend="vllm")).best()
    assert (plan.vllm.tensor_parallel_size, plan.vllm.pipeline_parallel_size) == (2, 2)
    assert all(d.total_bytes <= d.capacity_bytes for d in plan.memory)
    assert sorted(d.device for d in plan.memory) == ["node0.gpu0", "node0.gpu1", "node1.gpu0", "node1.gpu1"]


def test_two_macs_for_a_model_too_big_for_one_use_llama_rpc(catalog, rules):
    nodes = [mac("mac-a"), mac("mac-b")]
    request = Request(model=ID_405B)
    with pytest.raises(NothingFitsError):
        recommend(nodes[0], catalog, rules, request).best()
    plan = recommend_cluster(nodes, catalog, rules, request).best()
    assert plan.backend == "llama.cpp"
    s = plan.llama_cpp
    assert s.rpc_servers == [f"mac-b:{RPC_PORT}"]
    assert plan.args[plan.args.index("--rpc") + 1] == f"mac-b:{RPC_PORT}"
    # two identical Macs: the split follows each device's free memory, so it is even
    assert s.tensor_split == [0.5, 0.5]
    assert all(d.total_bytes <= d.capacity_bytes for d in plan.memory)
    assert [p.steps[0].kind for p in plan.nodes] == ["engine", "rpc-server"]
    assert plan.nodes[1].steps[0].argv[:5] == ["ggml-rpc-server", "-H", "mac-b", "-p", str(RPC_PORT)]


def test_a_model_that_fits_one_node_stays_on_one_node(machine, catalog, rules):
    h100 = recorded_h100(machine)
    nodes = [node(f"10.0.0.{i + 1}", [h100] * 8) for i in range(2)]
    plan = recommend_cluster(nodes, catalog, rules, Request(model="llama-3.1-8b-instruct")).best()
    assert plan.nodes == [] and (plan.vllm is None or plan.vllm.pipeline_parallel_size == 1)
    assert any("one node is enough" in r for r in plan.reasons)


def test_stage_layers_follow_vllm_get_pp_indices():
    # vllm/distributed/utils.py get_pp_indices: 126 layers / 2 stages = 63 each; 80 / 3 = 27, 27, 26 (the
    # remainder goes to the stages before the last)
    assert stage_layers(126, 2) == [63, 63]
    assert stage_layers(80, 3) == [27, 27, 26]
    assert sum(stage_layers(61, 4)) == 61


def test_shell_lists_each_node_in_order(machine, catalog, rules):
    nodes = [node(f"10.0.0.{i + 1}", [recorded_h100(machine)] * 8) for i in range(2)]
    plan = recommend_cluster(nodes, catalog, rules, Request(model=f"{ID_405B}:bf16", backend="vllm")).best()
    lines = [ln for ln in render.shell(plan).splitlines() if not ln.startswith("#")]
    argvs = [shlex.split(ln) for ln in lines]
    assert argvs[0][:3] == ["GLOO_SOCKET_IFNAME=ens3", "NCCL_SOCKET_IFNAME=ens3", "VLLM_HOST_IP=10.0.0.1"]
    assert argvs[0][3:] == ["ray", "start", "--head", "--port", str(RAY_PORT), "--node-ip-address", "10.0.0.1"]
    assert argvs[1][3:] == ["ray", "start", "--address", f"10.0.0.1:{RAY_PORT}", "--node-ip-address", "10.0.0.2"]
    serve = argvs[2][3:]
    from advisor.engines import launch

    assert serve == launch(plan, "127.0.0.1", render.PORT).argv  # what `advisor run --node 0` starts
    assert "meta-llama/Llama-3.1-405B-Instruct" in serve
    assert serve[serve.index("--distributed-executor-backend") + 1] == "ray"


def test_k8s_is_a_leader_worker_set_with_gpu_requests(machine, catalog, rules):
    nodes = [node(f"h{i}", [recorded_h100(machine)] * 8) for i in range(2)]
    plan = recommend_cluster(nodes, catalog, rules, Request(model=f"{ID_405B}:bf16", backend="vllm")).best()
    lws, service = yaml.safe_load_all(render.k8s(plan))
    assert lws["kind"] == "LeaderWorkerSet" and lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    tmpl = lws["spec"]["leaderWorkerTemplate"]
    assert tmpl["size"] == 2
    for role in ("leaderTemplate", "workerTemplate"):
        (c,) = tmpl[role]["spec"]["containers"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert c["command"][:2] == ["sh", "-c"]
    leader = tmpl["leaderTemplate"]["spec"]["containers"][0]["command"][2]
    assert "ray start --head" in leader and "--pipeline-parallel-size 2" in leader
    assert "$(LWS_LEADER_ADDRESS)" in tmpl["workerTemplate"]["spec"]["containers"][0]["command"][2]
    assert service["kind"] == "Service"


def test_two_profiles_naming_one_host_are_refused(catalog, rules):
    from advisor.errors import BadInputError

    with pytest.raises(BadInputError):
        recommend_cluster([node("same", []), node("same", [])], catalog, rules, Request())


def _write(path: Path, profile: HardwareProfile) -> Path:
    path.write_text(json.dumps(profile.to_dict()))
    return path


def test_fleet_prints_one_json_line_per_machine(tmp_path):
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    _write(fleet / "a.json", node("a", [rtx4090()], ram_gib=64))
    _write(fleet / "b.json", node("b", [], ram_gib=16))
    (fleet / "c.json").write_text("{not json")
    done = subprocess.run([ADVISOR, "recommend", "--hardware-dir", str(fleet), "--json", "--top", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(ln) for ln in done.stdout.splitlines()]
    assert [Path(x["file"]).name for x in lines] == ["a.json", "b.json", "c.json"]
    assert lines[0]["hostname"] == "a" and lines[0]["plans"][0]["model"]["id"]
    assert lines[1]["plans"] and lines[2]["exit_code"] == 2 and "not JSON" in lines[2]["error"]


def test_cli_multi_hardware_shell_and_bad_format(tmp_path):
    a = _write(tmp_path / "a.json", node("a", [rtx4090()] * 2, ram_gib=128))
    b = _write(tmp_path / "b.json", node("b", [rtx4090()] * 2, ram_gib=128))
    base = [ADVISOR, "recommend", "--hardware", str(a), "--hardware", str(b), "--model", "llama-3.3-70b-instruct",
            "--backend", "vllm"]
    done = subprocess.run([*base, "--format", "shell"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    cmds = [shlex.split(ln) for ln in done.stdout.splitlines() if not ln.startswith("#")]
    assert [next(t for t in c if "=" not in t) for c in cmds][:2] == ["ray", "ray"]
    assert "--pipeline-parallel-size" in cmds[2]
    done = subprocess.run([*base, "--format", "compose"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def _rpc_plan(tmp_path: Path) -> Path:
    from advisor.plan import LlamaCppSettings, ModelRef, NodePart, NodeStep, Plan

    plan = Plan(model=ModelRef(id="m", path=str(tmp_path / "m.gguf")), backend="llama.cpp",
                llama_cpp=LlamaCppSettings(rpc_servers=["127.0.0.1:1"]),
                nodes=[NodePart(0, "head", "127.0.0.1", 0, [NodeStep("engine")]),
                       NodePart(1, "worker", "127.0.0.1", 0, [NodeStep("rpc-server", ["ggml-rpc-server", "-H",
                                                                                      "127.0.0.1", "-p", "1"],
                                                                       {}, 1)])])
    f = tmp_path / "plan.json"
    f.write_text(json.dumps(plan.to_dict()))
    return f


@pytest.mark.parametrize("extra, text", [
    ([], "run each one's part"),
    (["--node", "5"], "--node 5: the plan has nodes 0, 1"),
])
def test_run_node_bad_input(tmp_path, extra, text):
    done = subprocess.run([ADVISOR, "run", "--plan", str(_rpc_plan(tmp_path)), *extra], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and text in done.stderr and "Traceback" not in done.stderr


def test_worker_whose_server_never_listens_is_stopped(tmp_path):
    """A fake rpc-server that never opens its port: the worker gives up after --timeout, exits 5, and the process
    it started is gone."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ggml-rpc-server"
    pid_file = tmp_path / "pid"
    fake.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 300\n")
    fake.chmod(0o755)
    env = {**__import__("os").environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin"}
    done = subprocess.run([ADVISOR, "run", "--plan", str(_rpc_plan(tmp_path)), "--node", "1", "--timeout", "2"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 5 and "gave up waiting for rpc-server" in done.stderr, done.stderr
    pid = int(pid_file.read_text())
    import psutil

    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_infiniband_everywhere_is_said_and_plans_round_trip(machine, catalog, rules):
    from advisor.plan import Plan

    nodes = [node(f"10.0.0.{i + 1}", [recorded_h100(machine)] * 8, ib=True) for i in range(2)]
    plan = recommend_cluster(nodes, catalog, rules, Request(model=f"{ID_405B}:bf16", backend="vllm")).best()
    assert any("InfiniBand" in r and "TP 16" in r for r in plan.reasons)
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
