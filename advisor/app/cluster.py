"""Workflows for more than one machine: plans for a cluster of profiles, plans for a fleet (one per profile), and
running one node's part of a multi-node plan (``advisor run --plan PLAN --node N``).

A node's part is a list of steps (advisor.plan.NodeStep). Workers start their Ray node (``ray start --address``)
or their ``rpc-server`` and keep it until stopped; the head starts its Ray head, waits until every worker's Ray node
is alive (asked through Ray's own API, ``ray.nodes()``) or every rpc-server accepts connections, and then the
engine runs and is checked as on one machine. Whatever a node started is stopped when it exits (Ctrl-C, SIGTERM,
``--check``, a failure), unless ``--detach`` leaves it running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import AdvisorError, BadInputError, EngineMissingError, EngineError
from advisor.plan import NodePart, Plan
from advisor.probe.profile import HardwareProfile

#: Seconds the head waits for its workers by default (pulling a model or starting raylets takes a while).
WAIT_S = 600.0


# -- planning -------------------------------------------------------------------------------------------------------
def advise_cluster(profiles: list[HardwareProfile], request: Any) -> Any:
    """The planner's Recommendation for these machines (node 0 first)."""
    from advisor.app.advise import is_local_gguf
    from advisor.catalog.load import load_catalog
    from advisor.planner import Recommendation
    from advisor.planner.cluster import plan_gguf_cluster, recommend_cluster
    from advisor.rules import load_rules

    from dataclasses import replace

    from advisor.app.engines import choose

    request = replace(request, engines=choose(profiles[0], here=False))  # planned for the head's engines
    if is_local_gguf(request.model):
        from advisor.gguf.facts import read_gguf_facts

        plan = plan_gguf_cluster(profiles, load_rules(), read_gguf_facts(request.model), request)
        return Recommendation([plan], [], [plan])
    return recommend_cluster(profiles, load_catalog(), load_rules(), request)


def fleet_profiles(directory: Path) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        raise BadInputError(f"--hardware-dir {directory}: not a directory")
    files = sorted(p for p in d.iterdir() if p.suffix == ".json" and p.is_file())
    if not files:
        raise BadInputError(f"--hardware-dir {directory}: no *.json profile in it",
                            hint="write one per machine with 'advisor probe --json > DIR/NAME.json'")
    return files


def advise_fleet(directory: Path, request: Any) -> Iterator[dict[str, Any]]:
    """One JSON-ready object per profile in ``directory``: its file, host name and best plans, or the error that
    kept it from being planned (a bad profile or nothing fitting does not stop the others)."""
    from advisor.app.advise import advise, load_profile

    for path in fleet_profiles(directory):
        out: dict[str, Any] = {"file": str(path)}
        try:
            profile = load_profile(path)
            out["hostname"] = profile.hostname
            advice = advise(profile, request)
            if not advice.plans and advice.recommendation is not None:
                advice.recommendation.best()  # raises NothingFitsError naming the closest miss
            out["plans"] = [p.to_dict() for p in advice.plans]
        except AdvisorError as exc:
            out["error"] = exc.message
            out["exit_code"] = exc.exit_code
        yield out


# -- running a node's part ------------------------------------------------------------------------------------------
def node_part(plan: Plan, index: int) -> NodePart:
    if not plan.nodes:
        raise BadInputError("--node needs a multi-node plan (one with 'nodes'); this plan runs on one machine")
    for part in plan.nodes:
        if part.index == index:
            return part
    raise BadInputError(f"--node {index}: the plan has nodes {', '.join(str(p.index) for p in plan.nodes)}")


def ray_executable() -> str:
    exe = shutil.which("ray")
    if exe is None:
        raise EngineMissingError("'ray' is not on PATH", hint="install Ray where vLLM is: pip install ray")
    return exe


def ray_python(ray_exe: str) -> str:
    """The interpreter of the environment ``ray`` belongs to (its script sits next to it in bin/)."""
    for name in ("python", "python3"):
        cand = Path(ray_exe).parent / name
        if cand.exists():
            return str(cand)
    return sys.executable


#: Asked through Ray's own API: the nodes the GCS knows, alive or not.
_RAY_NODES = ("import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); "
              "print(json.dumps([{'ip': n['NodeManagerAddress'], 'alive': n['Alive']} for n in ray.nodes()])); "
              "ray.shutdown()")


def ray_nodes(ray_exe: str, address: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    done = subprocess.run([ray_python(ray_exe), "-c", _RAY_NODES, address], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    if done.returncode != 0:
        raise EngineError(f"Ray at {address} did not answer: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(what: str, ready: Callable[[], bool], timeout: float, info: Callable[[str], None],
               interval: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    info(f"waiting for {what} (up to {timeout:.0f} s)")
    while not ready():
        if time.monotonic() > deadline:
            raise EngineError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(interval)


@dataclass
class NodeRun:
    """What one node started; ``stop()`` ends it all (Ray's own ``ray stop`` for Ray nodes)."""

    plan: Plan
    part: NodePart
    info: Callable[[str], None]
    procs: list[subprocess.Popen] = field(default_factory=list)
    log_dir: Path | None = None
    keep: bool = False  # --detach after a good check: what the node started outlives advisor

    def _env(self, env: dict[str, str]) -> dict[str, str]:
        return {**os.environ, "RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0"), **env}

    def start(self, timeout: float) -> None:
        for step in self.part.steps:
            if step.kind in ("ray-head", "ray-worker"):
                self._ray(step.argv, step.env, step.port if step.kind == "ray-head" else None, timeout)
            elif step.kind == "rpc-server":
                self._rpc(step.argv, step.env, step.port, timeout)

    def _ray(self, argv: list[str], env: dict[str, str], port: int | None, timeout: float) -> None:
        """``ray start ... --block`` as a child in its own session: it keeps the node's Ray processes (GCS, raylet,
        workers) as its descendants, so stopping the node ends exactly what it started (never ``ray stop``, which
        ends every Ray process of the user on the machine)."""
        exe = ray_executable()
        self.info(f"node {self.part.index}: {' '.join(argv)}")
        proc = self._spawn([exe, *argv[1:], "--block"], env, "ray")
        if port:  # the head: its GCS port opens
            wait_until(f"the Ray head on {self.part.host}:{port}",
                       lambda: _exited(proc) or port_open(self.part.host, port), timeout, self.info, 0.5)
        else:  # a worker: Ray's own API lists its node as alive
            head = argv[argv.index("--address") + 1]

            def joined() -> bool:
                if _exited(proc):
                    return True
                try:
                    return any(n["alive"] and n["ip"] == self.part.host for n in ray_nodes(exe, head))
                except (EngineError, subprocess.TimeoutExpired, ValueError):
                    return False

            wait_until(f"node {self.part.index} ({self.part.host}) alive in the Ray cluster at {head}", joined,
                       timeout, self.info, 2.0)
        if proc.poll() is not None:
            raise EngineError(f"'{' '.join(argv)}' exited with code {proc.returncode}"
                                   + (f"; log: {self._log(proc)}" if self._log(proc) else ""))

    def _spawn(self, argv: list[str], env: dict[str, str], name: str) -> subprocess.Popen:
        log = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = open(self.log_dir / f"{name}-node{self.part.index}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(argv, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=self._env(env), start_new_session=True)
        self.procs.append(proc)
        return proc

    def _log(self, proc: subprocess.Popen) -> str:
        out = getattr(proc.stdout, "name", None) if proc.stdout else None
        return str(out) if out else ""

    def _rpc(self, argv: list[str], env: dict[str, str], port: int | None, timeout: float) -> None:
        from advisor.setup.rpc import rpc_server_path

        exe = rpc_server_path()
        self.info(f"node {self.part.index}: {' '.join([exe, *argv[1:]])}")
        proc = self._spawn([exe, *argv[1:]], env, f"rpc-server-{port}")
        host = argv[argv.index("-H") + 1] if "-H" in argv else "127.0.0.1"
        wait_until(f"rpc-server on {host}:{port}", lambda: _exited(proc) or port_open(host, port or 0), timeout,
                   self.info, 0.2)
        if proc.poll() is not None:
            raise EngineError(f"rpc-server exited with code {proc.returncode} before listening on {host}:{port}")

    def wait_for_workers(self, timeout: float) -> None:
        """Head only: every worker's Ray node alive, or every rpc-server accepting connections."""
        workers = [p for p in self.plan.nodes if p.role == "worker"]
        ray_head = next((s for s in self.part.steps if s.kind == "ray-head"), None)
        if ray_head is not None:
            exe = ray_executable()
            address = f"{self.part.host}:{ray_head.port}"
            want = len(workers) + 1
            alive: list[int] = [0]

            def ready() -> bool:
                try:
                    alive[0] = sum(1 for n in ray_nodes(exe, address) if n["alive"])
                except (EngineError, subprocess.TimeoutExpired, ValueError):
                    return False
                return alive[0] >= want

            wait_until(f"{want} alive Ray nodes at {address}", ready, timeout, self.info, 2.0)
            self.info(f"Ray cluster at {address}: {alive[0]} nodes alive")
            return
        for w in workers:
            for step in w.steps:
                if step.kind == "rpc-server" and step.port:
                    host = step.argv[step.argv.index("-H") + 1] if "-H" in step.argv else w.host
                    wait_until(f"rpc-server of node {w.index} at {host}:{step.port}",
                               lambda h=host, p=step.port: port_open(h, p), timeout, self.info, 0.5)

    def engine_env(self) -> dict[str, str]:
        return next((dict(s.env) for s in self.part.steps if s.kind == "engine"), {})

    def stop(self) -> None:
        """SIGTERM to each started process group, then SIGKILL to whatever of their process trees is left (Ray's
        workers run in sessions of their own: they are found as descendants, by pid, before the first signal)."""
        for proc in self.procs:
            tree = descendants(proc.pid)
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait()
            for pid in tree:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        self.procs.clear()

    def block(self) -> None:
        """Keep the node's services until Ctrl-C / SIGTERM (or until an rpc-server exits by itself)."""
        while True:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise EngineError(f"rpc-server exited with code {proc.returncode}")
            time.sleep(1.0)


def _exited(proc: subprocess.Popen) -> bool:
    return proc.poll() is not None


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except OSError:
        pass


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc/PID/stat field 4 is the parent), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def start_node(plan: Plan, index: int, info: Callable[[str], None], timeout: float | None = None,
               log_dir: Path | None = None, check: bool = False, detach: bool = False, engine: bool = True,
               json_output: bool = False) -> NodeRun | None:
    """Start node ``index``'s part of ``plan``. Returns the running head when the engine is to follow (the caller
    starts and checks it, then calls ``stop()`` unless it detaches); otherwise handles the whole part itself:
    ``check`` starts, verifies and stops, ``detach`` leaves it running, else it serves until Ctrl-C / SIGTERM."""
    part = node_part(plan, index)
    run = NodeRun(plan, part, info, log_dir=log_dir)
    wait = timeout or WAIT_S
    old = signal.signal(signal.SIGTERM, _interrupt)
    keep = False
    try:
        t0 = time.monotonic()
        run.start(wait)
        if part.role == "head":
            run.wait_for_workers(wait)
        ready_s = round(time.monotonic() - t0, 3)
        info(f"node {index} ({part.role}, {part.host}) ready in {ready_s:.1f} s")
        if part.role == "head" and engine:
            os.environ.update(run.engine_env())
            keep = True  # the caller owns it from here
            return run
        if json_output:
            sys.stdout.write(json.dumps({"node": index, "role": part.role, "host": part.host, "ready_s": ready_s,
                                         "steps": [s.kind for s in part.steps if s.kind != "engine"],
                                         "pids": [p.pid for p in run.procs]}) + "\n")
            sys.stdout.flush()
        if check:
            return None
        if detach:
            keep = True
            info(f"left running: pids {', '.join(str(p.pid) for p in run.procs)}")
            return None
        info("serving until Ctrl-C")
        run.block()
        return None
    except KeyboardInterrupt:
        info(f"node {index}: stopping")
        return None
    finally:
        if not keep:
            run.stop()
            signal.signal(signal.SIGTERM, old)  # a head that goes on to its engine keeps Ctrl-C-like SIGTERM


def head_engine(plan: Plan, python: str | None) -> Plan:
    """The plan with the engine this head machine runs for it: an RPC head's llama-server (the one ``advisor setup
    --rpc`` built, else PATH's; llama-cpp-python's server accepts ``rpc_servers`` but 0.3.36 never hands it to
    llama.cpp), or this machine's vLLM."""
    from dataclasses import replace

    from advisor import engines
    from advisor.app import engines as engine_choice
    from advisor.app.advise import hardware

    if plan.llama_cpp is not None and plan.llama_cpp.rpc_servers:
        from advisor.setup.rpc import server_path

        ref = engine_choice._llama_server(server_path())
    else:
        llama, vllm = engine_choice.choose(hardware(None), here=True, python=python)
        ref = vllm if plan.vllm is not None else llama
    return replace(plan, engine=ref, args=engines.argv(ref, plan.settings, plan.model, plan.sampling))


def run_node(source: Any, opts: Any, index: int, no_engine: bool, report: Any, show: Callable[[Any], None],
             json_output: bool) -> None:
    """``advisor run --plan PLAN --node N``: the node's services, then (head) the engine, checked as on one machine
    (advisor.app.serve.start); what the node started is stopped when the engine stops, unless it is left running."""
    from advisor.app import serve
    from advisor.app.advise import hardware, machine_key
    from advisor.store import state

    if source.plan_file is None or opts.dry_run:
        raise BadInputError("--node runs a node's part of a multi-node plan: give --plan FILE (no --dry-run)")
    plan = serve.load_plan(source.plan_file)
    node_part(plan, index)  # a bad --node is bad input before anything starts
    run = start_node(plan, index, report.info, opts.timeout, state.logs_dir(), opts.check_only, opts.detach,
                     engine=not no_engine, json_output=json_output)
    if run is None:
        return
    result = None
    try:
        plan = head_engine(plan, opts.python)
        result = serve.start(plan, machine_key(hardware(None)), opts, report, show)
        if result.error is not None:
            if json_output and not result.ok and result.process is None:
                print(json.dumps(result.to_dict(), indent=2))
            raise result.error
    except KeyboardInterrupt:
        report.info(f"node {index}: stopping")
    finally:
        if not (opts.detach and result is not None and result.ok):
            run.stop()
