"""Plans as text: the engine command (shell), a systemd unit and a compose service. Pure string builders over the
command the plan's engine runs (advisor.engines.launch); the caller resolves what lies outside the plan (another
engine path, the model cache, advisor's home, the user) into a ``Target``.

Every value is escaped for the format it lands in, or refused (BadInputError) when no escaping keeps it one value:
- shell: ``shlex.quote`` (POSIX sh quoting; any string is safe inside single quotes);
- systemd (systemd.service(5) "Command lines", systemd.syntax(7), systemd.unit(5) "Specifiers"): words are
  double-quoted with C-style backslash escapes, ``%`` becomes ``%%`` (specifiers) and ``$`` becomes ``$$`` (variable
  expansion in ExecStart); control characters (a newline would end the setting and start another) are refused;
- YAML (compose): every scalar that comes from data is a double-quoted scalar with YAML escapes (YAML 1.2 §5.7,
  §7.3.1), so no value can become a key, a list item or a document;
- names: a model id from GGUF metadata (``general.name``) or a file name never becomes a name as it is: the service
  name keeps ``[a-z0-9_-]`` (Compose spec: service names ``[a-zA-Z0-9._-]+``), the description printable ASCII.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from advisor.errors import BadInputError
from advisor.plan import LLAMA_CPP, Plan

if TYPE_CHECKING:
    from advisor.engines import Launch

#: Container images of the engines' own projects (llama.cpp's server images, vLLM's OpenAI server image).
IMAGES = {
    ("llama.cpp", "nvidia"): "ghcr.io/ggml-org/llama.cpp:server-cuda",
    ("llama.cpp", "amd"): "ghcr.io/ggml-org/llama.cpp:server-rocm",
    ("llama.cpp", "none"): "ghcr.io/ggml-org/llama.cpp:server",
    ("vllm", "nvidia"): "vllm/vllm-openai:latest",
    ("vllm", "amd"): "rocm/vllm:latest",
}
PORT = 8080
#: The engines' own names for the API key variable: llama-server reads LLAMA_API_KEY (common/arg.cpp, --api-key
#: set_env), llama-cpp-python's server API_KEY (llama_cpp/server/settings.py, a pydantic-settings field), vLLM
#: VLLM_API_KEY (vllm/envs.py).
API_KEY_VARS = {"llama-server": "LLAMA_API_KEY", "llama-cpp-python": "API_KEY", "vllm": "VLLM_API_KEY"}
#: Where the model cache lives inside the engines' images (both run as root: HOME=/root).
CONTAINER_HF_HOME = "/root/.cache/huggingface"


class DeployError(BadInputError):
    hint = "use --format shell, or pass a plan whose values are plain"


@dataclass(frozen=True)
class Target:
    """What the caller resolved for a deployment: ``exe`` the engine's absolute path when it replaces the one the
    plan's engine names (llama-server, or a Python engine's interpreter); ``env`` variables the service needs
    (HF_HOME, ADVISOR_HOME); ``api_key_file`` an EnvironmentFile that may hold the key (never the key itself);
    ``user`` the account to run as; ``hf_home`` the host's model cache to mount into a container."""

    exe: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    api_key_file: str | None = None
    user: str | None = None
    hf_home: str = "~/.cache/huggingface"
    port: int = PORT


def launch(plan: Plan, host: str = "127.0.0.1", port: int = PORT, exe: str | None = None) -> Launch:
    """What ``advisor run --plan`` starts for this plan (the same builder, advisor.engines.launch); ``exe`` replaces
    the executable the plan's engine names (llama-server's path, or a Python engine's interpreter)."""
    from dataclasses import replace

    from advisor.engines import launch as engine_launch

    if exe is not None:
        plan = replace(plan, engine=replace(plan.engine_ref, exe=exe))
    return engine_launch(plan, host, port)


def argv(plan: Plan, host: str = "127.0.0.1", port: int = PORT, exe: str | None = None) -> list[str]:
    """The command ``advisor run --plan`` starts for this plan."""
    return launch(plan, host, port, exe).argv


def shell(plan: Plan, port: int = PORT) -> str:
    return shlex.join(argv(plan, port=port)) + "\n"


# -- names ------------------------------------------------------------------------------------------------------------


def service_name(model_id: str) -> str:
    """A model id as a service name: lower-case letters, digits, '-' and '_', at most 63 characters."""
    name = re.sub(r"[^a-z0-9_-]+", "-", model_id.lower()).strip("-_")[:63].strip("-_")
    return name or "model"


def description(model_id: str, limit: int = 120) -> str:
    """A model id as printable ASCII for a one-line description (anything else becomes '_')."""
    text = re.sub(r"[^A-Za-z0-9 ._:/+@()-]", "_", model_id)[:limit]
    return text or "model"


# -- systemd ----------------------------------------------------------------------------------------------------------

_SYSTEMD_PLAIN = re.compile(r"[A-Za-z0-9_./:,+=@-]+")
#: A user name as useradd(8) accepts it (NAME_REGEX default), or a numeric uid.
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}|[0-9]{1,10}")


def _no_control(value: str, what: str) -> None:
    bad = [c for c in value if ord(c) < 32 or ord(c) == 127 or c in "\u2028\u2029\x85"]
    if bad:
        raise DeployError(f"{what} {value[:60]!r} holds a control character ({bad[0]!r}): it cannot be written "
                          "into a unit file safely")


def systemd_word(value: str, what: str = "the argument", first: bool = False) -> str:
    """One ExecStart word: plain when it is made of safe characters, else double-quoted with C escapes. The first
    word is never left plain with one of the executable prefixes ("@", "-", ":", "+", "!": systemd.service(5))."""
    _no_control(value, what)
    escaped = value.replace("%", "%%").replace("$", "$$")
    if _SYSTEMD_PLAIN.fullmatch(value) and not (first and value.startswith(("@", "-", ":", "+", "!"))):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _systemd_value(value: str, what: str) -> str:
    """A double-quoted assignment for Environment= (systemd.exec(5): quoted, backslash escapes, specifiers)."""
    _no_control(value, what)
    return '"' + value.replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd(plan: Plan, target: Target) -> str:
    """A systemd service unit: absolute ExecStart, restart on failure, the model cache and advisor's home in the
    environment, the API key from an optional EnvironmentFile, ``User=`` when asked."""
    run = launch(plan, port=target.port, exe=target.exe)
    if not PurePosixPath(run.argv[0]).is_absolute():
        raise DeployError(f"systemd needs the engine's absolute path, not {run.argv[0]!r} ({plan.engine_ref.name} is "
                          "not installed where this plan was made)",
                          hint="install it ('advisor setup'), or give its path with --engine-path")
    words = [systemd_word(a, "the command argument", first=i == 0) for i, a in enumerate(run.argv)]
    lines = [
        "[Unit]",
        f"Description=advisor: {description(plan.model.id)} on {plan.backend}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={' '.join(words)}",
    ]
    for key, value in sorted({**run.env, **target.env}.items()):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise DeployError(f"{key[:40]!r} is not an environment variable name")
        lines.append(f"Environment={_systemd_value(f'{key}={value}', key)}")
    if target.api_key_file:
        path = target.api_key_file
        _no_control(path, "the API key file")
        if not PurePosixPath(path).is_absolute() or re.search(r"\s", path):
            raise DeployError(f"the API key file must be an absolute path without spaces, not {path[:60]!r}")
        var = API_KEY_VARS.get(plan.engine_ref.name, "API_KEY")
        lines += [f"# To require an API key, put {var}=<key> in this file (mode 0600); it is optional.",
                  f"EnvironmentFile=-{path.replace('%', '%%')}"]
    if target.user is not None:
        if not _USER.fullmatch(target.user):
            raise DeployError(f"--user {target.user[:40]!r} is not a user name")
        lines.append(f"User={target.user}")
    lines += ["Restart=on-failure", "RestartSec=5", "", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


# -- compose ----------------------------------------------------------------------------------------------------------


def yaml_str(value: str) -> str:
    """A YAML double-quoted scalar: backslash, quote and every non-printable character escaped."""
    out = []
    for c in value:
        o = ord(c)
        if c in '"\\':
            out.append("\\" + c)
        elif o < 0x20 or o == 0x7F or 0x80 <= o <= 0x9F or c in "\u2028\u2029\ufeff" or 0xD800 <= o <= 0xDFFF:
            out.append(f"\\x{o:02x}" if o <= 0xFF else f"\\u{o:04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def is_jetson(gpu_names: list[str], arch: str) -> bool:
    """An NVIDIA Jetson (Tegra iGPU, JetPack/L4T): aarch64 with a GPU nvidia-smi names "Orin (nvgpu)" (JetPack 6),
    or Xavier / Jetson / Tegra."""
    return arch in ("aarch64", "arm64") and any(
        re.search(r"orin|xavier|jetson|tegra|nvgpu", n, re.IGNORECASE) for n in gpu_names)


def compose(plan: Plan, vendor: str, target: Target | None = None, os_name: str = "linux",
            jetson: bool = False) -> str:
    """A compose service; NVIDIA GPUs through deploy.resources.reservations.devices (Compose spec 'GPU support'),
    AMD through /dev/kfd and /dev/dri (ROCm docs 'Docker: running ROCm containers'). Restarts unless stopped; the
    healthcheck asks the engine's /health (llama.cpp's server images install curl and declare the same check in
    .devops/*.Dockerfile; vLLM's image has Python, so the check uses urllib)."""
    target = target or Target()
    if os_name == "darwin":
        raise DeployError("containers on macOS run in a Linux VM without Metal: the engine would run on the CPU only",
                          hint="run it natively: 'advisor recommend --format shell' prints the command (put it in "
                          "a launchd plist to keep it running), or 'advisor run --detach'")
    if jetson:
        raise DeployError("no compose service for a Jetson: the llama.cpp and vLLM images carry the desktop/server "
                          "CUDA stack, which does not drive the Tegra GPU of JetPack (L4T)",
                          hint="use jetson-containers' L4T images (github.com/dusty-nv/jetson-containers: "
                          "'jetson-containers run $(autotag llama_cpp)'), or --format systemd")
    image = IMAGES.get((plan.backend, vendor)) or IMAGES.get((plan.backend, "none"), "vllm/vllm-openai:latest")
    port = target.port
    args = container_args(plan, port)
    health = f"http://127.0.0.1:{port}/health"
    if plan.backend == LLAMA_CPP:
        test = ["CMD", "curl", "-f", health]
    else:
        test = ["CMD", "python3", "-c", f"import urllib.request; urllib.request.urlopen({health!r}, timeout=5)"]
    lines = [
        "services:",
        f"  {service_name(plan.model.id)}:",
        f"    image: {yaml_str(image)}",
        "    restart: unless-stopped",
        "    command:",
        *[f"      - {yaml_str(a)}" for a in args],
        "    ports:",
        f'      - "127.0.0.1:{port}:{port}"',
        "    environment:",
        f"      HF_HOME: {yaml_str(CONTAINER_HF_HOME)}",
        "    volumes:",
        "      - type: bind",
        f"        source: {yaml_str(target.hf_home)}",
        f"        target: {yaml_str(CONTAINER_HF_HOME)}",
    ]
    if plan.model.path:  # a local model: its directory, read-only, at the same path
        folder = str(PurePosixPath(plan.model.path).parent)
        lines += ["      - type: bind", f"        source: {yaml_str(folder)}", f"        target: {yaml_str(folder)}",
                  "        read_only: true"]
    lines += ["    healthcheck:", f"      test: [{', '.join(yaml_str(t) for t in test)}]", "      interval: 30s",
              "      timeout: 10s", "      retries: 3", "      start_period: 10m"]
    if vendor == "nvidia":
        lines += ["    deploy:", "      resources:", "        reservations:", "          devices:",
                  "            - driver: nvidia", "              count: all", "              capabilities: [gpu]"]
    elif vendor == "amd":
        lines += ["    devices:", "      - /dev/kfd", "      - /dev/dri", "    group_add:", "      - video"]
    if plan.backend != LLAMA_CPP:
        lines += ["    ipc: host"]
    return "\n".join(lines) + "\n"


def container_args(plan: Plan, port: int) -> list[str]:
    """The container's command: the image's entrypoint is the engine (llama-server; vLLM's OpenAI server, which
    takes the model as its first argument), so the command is the plan's arguments for llama-server or vLLM as that
    image runs them, listening on every interface inside the container."""
    from dataclasses import replace

    from advisor.engines import launch as engine_launch
    from advisor.plan import DEFAULT_ENGINE, EngineRef

    image_engine = replace(plan, engine=EngineRef(DEFAULT_ENGINE[plan.backend], source="the container image"))
    full = engine_launch(image_engine, "0.0.0.0", port).argv
    if plan.backend == LLAMA_CPP:
        return full[1:]
    args = full[3:]  # after "python3 -m <module>"
    return [args[1], *args[2:]] if args[:1] == ["--model"] else args
