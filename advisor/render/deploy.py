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
    exe = ["llama-server"] if plan.backend == LLAMA_CPP else ["vllm", "serve"]
    args = list(plan.args)
    if plan.backend != LLAMA_CPP and args[:1] == ["--model"]:
        args = [args[1], *args[2:]]  # `vllm serve MODEL ...`
    return [*exe, *args, "--host", host, "--port", str(port)]


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
    args = argv(plan, host="0.0.0.0", port=port)[1:] if plan.backend == LLAMA_CPP else argv(plan, "0.0.0.0", port)[2:]
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


def _yaml(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
