"""Plans as text: the engine command (shell), a systemd unit and a compose service. Pure string builders; the rich
table lives in the CLI layer."""

from __future__ import annotations

import shlex

from advisor.plan import LLAMA_CPP, Plan

#: Container images of the engines' own projects (llama.cpp's server images, vLLM's OpenAI server image).
IMAGES = {
    ("llama.cpp", "nvidia"): "ghcr.io/ggml-org/llama.cpp:server-cuda",
    ("llama.cpp", "amd"): "ghcr.io/ggml-org/llama.cpp:server-rocm",
    ("llama.cpp", "none"): "ghcr.io/ggml-org/llama.cpp:server",
    ("vllm", "nvidia"): "vllm/vllm-openai:latest",
    ("vllm", "amd"): "rocm/vllm:latest",
}
PORT = 8080


def argv(plan: Plan, host: str = "127.0.0.1", port: int = PORT) -> list[str]:
    """The command ``advisor run --plan`` starts for this plan: the same builder (advisor.engines.launch)."""
    from advisor.engines import launch

    return launch(plan, host, port).argv


def shell(plan: Plan, port: int = PORT) -> str:
    return shlex.join(argv(plan, port=port)) + "\n"


def systemd(plan: Plan, port: int = PORT) -> str:
    name = plan.model.id
    return "\n".join([
        "[Unit]",
        f"Description=advisor: {name} on {plan.backend}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={shell(plan, port).strip()}",
        "Restart=on-failure",
        "RestartSec=5",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def compose(plan: Plan, vendor: str, port: int = PORT) -> str:
    """A compose service; NVIDIA GPUs through deploy.resources.reservations.devices (Compose spec 'GPU support'),
    AMD through /dev/kfd and /dev/dri (ROCm docs 'Docker: running ROCm containers')."""
    image = IMAGES.get((plan.backend, vendor)) or IMAGES.get((plan.backend, "none"), "vllm/vllm-openai:latest")
    args = _container_args(plan, port)
    lines = [
        "services:",
        f"  {plan.model.id.replace('.', '-')}:",
        f"    image: {image}",
        "    command:",
        *[f"      - {_yaml(a)}" for a in args],
        "    ports:",
        f'      - "{port}:{port}"',
        "    volumes:",
        "      - ~/.cache/huggingface:/root/.cache/huggingface",
    ]
    if vendor == "nvidia":
        lines += ["    deploy:", "      resources:", "        reservations:", "          devices:",
                  "            - driver: nvidia", "              count: all", "              capabilities: [gpu]"]
    elif vendor == "amd":
        lines += ["    devices:", "      - /dev/kfd", "      - /dev/dri", "    group_add:", "      - video"]
    if plan.backend != LLAMA_CPP:
        lines += ["    ipc: host"]
    return "\n".join(lines) + "\n"


def _container_args(plan: Plan, port: int) -> list[str]:
    """The container's command: the image's entrypoint is the engine (llama-server; vLLM's OpenAI server, which
    takes the model as its first argument), so the command is the plan's arguments for llama-server or vLLM as that
    image runs them, listening on every interface inside the container."""
    from dataclasses import replace

    from advisor.engines import launch
    from advisor.plan import DEFAULT_ENGINE, EngineRef

    image_engine = replace(plan, engine=EngineRef(DEFAULT_ENGINE[plan.backend], source="the container image"))
    full = launch(image_engine, "0.0.0.0", port).argv
    if plan.backend == LLAMA_CPP:
        return full[1:]
    args = full[3:]  # after "python3 -m <module>"
    return [args[1], *args[2:]] if args[:1] == ["--model"] else args


def _yaml(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
