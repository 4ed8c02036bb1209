"""Multi-node plans as text: the commands each node runs, in order (shell), and a LeaderWorkerSet (Kubernetes).

Everything a shell sees is quoted with shlex; YAML strings are double-quoted scalars. Pure string builders.
"""

from __future__ import annotations

import shlex

from advisor.errors import BadInputError
from advisor.plan import LLAMA_CPP, VLLM, NodePart, NodeStep, Plan
from advisor.render import deploy

#: The API port of the engine on the head.
PORT = deploy.PORT


def engine_argv(plan: Plan, host: str = "127.0.0.1", port: int = PORT) -> list[str]:
    """The head's engine command: ``vllm serve MODEL ...`` or ``llama-server ... --rpc ...``."""
    return deploy.argv(plan, host=host, port=port)


def _line(step: NodeStep, argv: list[str]) -> str:
    env = [f"{k}={shlex.quote(v)}" for k, v in sorted(step.env.items())]
    return " ".join([*env, shlex.join(argv)])


def ordered_steps(plan: Plan) -> list[tuple[NodePart, NodeStep]]:
    """Every node's steps in the order they must run: the Ray head first, then the workers' Ray nodes or
    rpc-servers, then the engine on the head once they are all up."""
    first, rest, last = [], [], []
    for node in plan.nodes:
        for step in node.steps:
            if step.kind == "engine":
                last.append((node, step))
            elif step.kind == "ray-head":
                first.append((node, step))
            else:
                rest.append((node, step))
    return first + rest + last


def shell(plan: Plan, port: int = PORT) -> str:
    """Per node what to run, in order, as comments and quoted command lines."""
    if not plan.nodes:
        return deploy.shell(plan, port)
    out = [f"# {plan.model.id} ({plan.model.quant or plan.model.format}) on {plan.backend} across "
           f"{len(plan.nodes)} nodes; run each step on the node it names, in this order"]
    for i, (node, step) in enumerate(ordered_steps(plan), 1):
        what = {"ray-head": "start the Ray head", "ray-worker": "join the Ray cluster",
                "rpc-server": "expose this node's devices to the head", "engine": "start the engine once every "
                "worker is up"}.get(step.kind, step.kind)
        out.append(f"# {i}. node {node.index} ({node.role}, {node.host}): {what}")
        argv = engine_argv(plan, port=port) if step.kind == "engine" else step.argv
        out.append(_line(step, argv))
    return "\n".join(out) + "\n"


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def k8s(plan: Plan, port: int = PORT, image: str = "vllm/vllm-openai:latest") -> str:
    """A LeaderWorkerSet (sigs.k8s.io/lws, the layout vLLM's docs use for multi-node serving on Kubernetes:
    docs/deployment/frameworks/lws.md): one group of ``len(nodes)`` pods, the leader runs the Ray head and then
    ``vllm serve``, each worker joins the leader's Ray head (LWS_LEADER_ADDRESS); each pod asks for its node's GPUs,
    and a Service exposes the leader's port."""
    if plan.backend != VLLM or not plan.nodes:
        raise BadInputError("--format k8s prints a LeaderWorkerSet for multi-node vLLM plans only",
                            hint="use --format shell for llama.cpp RPC and one-machine plans")
    name = "vllm-" + "".join(c if c.isalnum() else "-" for c in plan.model.id.lower())[:40].strip("-")
    head, size = plan.nodes[0], len(plan.nodes)
    ray_port = next((s.port for s in head.steps if s.kind == "ray-head" and s.port), 6379)
    serve = shlex.join(engine_argv(plan, host="0.0.0.0", port=port))
    wait = (f"until [ \"$(ray status 2>/dev/null | grep -c ' node_')\" -ge {size} ]; do sleep 5; done")
    leader = f"ray start --head --port={ray_port} && {wait} && exec {serve}"
    worker = f"ray start --address=$(LWS_LEADER_ADDRESS):{ray_port} --block"
    gpu_key = "nvidia.com/gpu"

    def container(role: str, command: str, gpus: int) -> list[str]:
        lines = [
            f"          - name: {_q(role)}",
            f"            image: {_q(image)}",
            "            command:",
            f"              - {_q('sh')}",
            f"              - {_q('-c')}",
            f"              - {_q(command)}",
            "            resources:",
            "              limits:",
            f"                {gpu_key}: {_q(str(gpus))}",
            "              requests:",
            f"                {gpu_key}: {_q(str(gpus))}",
            "            volumeMounts:",
            f"              - mountPath: {_q('/dev/shm')}",
            f"                name: {_q('dshm')}",
        ]
        if role == "vllm-leader":
            lines[2:2] = ["            ports:", f"              - containerPort: {port}"]
        return lines

    volumes = ["        volumes:", f"          - name: {_q('dshm')}", "            emptyDir:",
               f"              medium: {_q('Memory')}"]
    out = [
        "apiVersion: leaderworkerset.x-k8s.io/v1",
        "kind: LeaderWorkerSet",
        "metadata:",
        f"  name: {_q(name)}",
        "spec:",
        "  replicas: 1",
        "  leaderWorkerTemplate:",
        f"    size: {size}",
        f"    restartPolicy: {_q('RecreateGroupOnPodRestart')}",
        "    leaderTemplate:",
        "      metadata:",
        "        labels:",
        f"          role: {_q('leader')}",
        "      spec:",
        "        containers:",
        *container("vllm-leader", leader, head.gpus),
        *volumes,
        "    workerTemplate:",
        "      spec:",
        "        containers:",
        *container("vllm-worker", worker, max((n.gpus for n in plan.nodes[1:]), default=head.gpus)),
        *volumes,
        "---",
        "apiVersion: v1",
        "kind: Service",
        "metadata:",
        f"  name: {_q(name + '-leader')}",
        "spec:",
        "  ports:",
        f"    - name: {_q('http')}",
        f"      port: {port}",
        f"      targetPort: {port}",
        "  selector:",
        f"    leaderworkerset.sigs.k8s.io/name: {_q(name)}",
        f"    role: {_q('leader')}",
        f"  type: {_q('ClusterIP')}",
    ]
    return "\n".join(out) + "\n"


__all__ = ["shell", "k8s", "engine_argv", "ordered_steps", "LLAMA_CPP"]
