"""shell / systemd / compose renderings: golden files (regenerate with ADVISOR_REGEN_GOLDEN=1, never by hand, and
review the diff), each also read back by checkers independent of the renderer: ``systemd-analyze verify`` (systemd's
own unit parser), a parser of systemd's documented command-line grammar, PyYAML, and ``shlex``. Hostile model ids
and file names (GGUF ``general.name``) must come back as exactly one value, or be refused.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from advisor.catalog.load import load_catalog
from advisor.errors import BadInputError
from advisor.planner import Request, plan_for_model
from advisor.probe.profile import Cpu, Gpu, HardwareProfile, Memory
from advisor.render import deploy as formats
from advisor.rules import load_rules

GOLDEN = Path(__file__).parent / "data" / "golden" / "recommend"
MIB, GIB = 1 << 20, 1 << 30
#: Fixed paths so that the goldens do not depend on the machine.
TARGET = formats.Target(exe="/usr/local/bin/llama-server",
                        env={"ADVISOR_HOME": "/home/ai/.local/share/advisor", "HF_HOME": "/home/ai/.cache/huggingface"},
                        api_key_file="/home/ai/.local/share/advisor/api-key.env", hf_home="/home/ai/.cache/huggingface")
VLLM_TARGET = dataclasses.replace(TARGET, exe="/opt/advisor/engines/vllm/bin/python")

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _box(vendor, name, mib):
    backend = {"nvidia": "cuda", "amd": "rocm"}[vendor]
    return HardwareProfile(cpu=Cpu(physical_cores=8, logical_cores=16, usable_cores=16),
                           memory=Memory(total_bytes=64 * GIB, usable_bytes=60 * GIB),
                           gpus=[Gpu(index=0, vendor=vendor, name=name, backend=backend,
                                     memory_total_bytes=mib * MIB, memory_free_bytes=mib * MIB)])


CASES = {
    "t4-phi3-vllm": ("nvidia", "Tesla T4", 15360, "microsoft/Phi-3-mini-4k-instruct", "vllm"),
    "rtx3060-qwen-coder-llama": ("nvidia", "NVIDIA GeForce RTX 3060", 12288, "qwen2.5-coder-7b-instruct", "auto"),
    "mi100-qwen3-llama": ("amd", "Arcturus GL-XL [Instinct MI100]", 32752, "qwen3-8b", "auto"),
}


def _plan(case: str):
    vendor, name, mib, model, backend = CASES[case]
    return plan_for_model(_box(vendor, name, mib), load_catalog(), load_rules(), model, Request(backend=backend))


def _target(plan) -> formats.Target:
    return VLLM_TARGET if plan.backend == "vllm" else TARGET


def _render(plan, fmt: str, vendor: str) -> str:
    return {"shell": lambda: formats.shell(plan), "systemd": lambda: formats.systemd(plan, _target(plan)),
            "compose": lambda: formats.compose(plan, vendor, _target(plan))}[fmt]()


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("fmt", ["shell", "systemd", "compose"])
def test_golden(case, fmt):
    plan = _plan(case)
    text = _render(plan, fmt, CASES[case][0])
    path = GOLDEN / f"{case}.{fmt}"
    if os.environ.get("ADVISOR_REGEN_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text
    check = {"shell": check_shell, "systemd": check_systemd, "compose": check_compose}[fmt]
    check(text, plan, CASES[case][0])


def test_compose_gpu_flags():
    plan = plan_for_model(_box("nvidia", "Tesla T4", 15360), load_catalog(), load_rules(), "qwen3-4b")
    assert "driver: nvidia" in formats.compose(plan, "nvidia")
    amd = formats.compose(plan, "amd")
    assert "/dev/kfd" in amd and "/dev/dri" in amd


# -- independent checkers -------------------------------------------------------------------------------------------


def check_shell(text: str, plan, vendor: str) -> None:
    assert text.endswith("\n")
    assert shlex.split(text) == formats.argv(plan)


def systemd_settings(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections -> (key, value) in order, by systemd.syntax(7): '[Section]' lines, 'Key=value', '#' comments.
    Lines ending in a backslash would continue: the renderer never writes one."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        assert not line.endswith("\\"), line
        if not line.strip() or line.startswith(("#", ";")):
            continue
        m = re.fullmatch(r"\[([A-Za-z]+)\]", line)
        if m:
            current = sections.setdefault(m.group(1), [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None and re.fullmatch(r"[A-Za-z]+", key), line
        current.append((key, value))
    return sections


_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"',
              "'": "'", "s": " "}


def systemd_words(value: str, variables: bool = True) -> list[str]:
    """ExecStart= as systemd reads it (systemd.service(5) "Command lines"): specifiers first ('%%' is '%', any other
    '%x' would be replaced: refused here), then words split at whitespace with single/double quotes and C escapes,
    then '$$' is '$' and '$VAR' / '${VAR}' would be replaced (refused here). Environment= has no variables
    (systemd.exec(5): "The "$" character has no special meaning"): ``variables=False``."""
    assert not re.search(r"%[^%]", value.replace("%%", "")), f"unescaped specifier in {value!r}"
    value = value.replace("%%", "%")
    words, i, n = [], 0, len(value)
    while i < n:
        while i < n and value[i] in " \t":
            i += 1
        if i >= n:
            break
        word, quote = "", None
        while i < n and (quote or value[i] not in " \t"):
            c = value[i]
            if c == "\\":
                nxt = value[i + 1]
                assert nxt in _C_ESCAPES, f"escape \\{nxt} in {value!r}"
                word += _C_ESCAPES[nxt]
                i += 2
                continue
            if quote is None and c in "\"'":
                quote = c
            elif c == quote:
                quote = None
            else:
                word += c
            i += 1
        assert quote is None, f"unbalanced quoting in {value!r}"
        words.append(word)
    if not variables:
        return words
    out = []
    for w in words:
        assert not re.search(r"\$(?!\$)", w.replace("$$", "")), f"variable expansion in {w!r}"
        out.append(w.replace("$$", "$"))
    return out


def check_systemd(text: str, plan, vendor: str, target: formats.Target | None = None) -> None:
    target = target or _target(plan)
    sections = systemd_settings(text)
    assert set(sections) == {"Unit", "Service", "Install"}
    service = sections["Service"]
    keys = [k for k, _ in service]
    assert keys.count("ExecStart") == 1 and "ExecStartPre" not in keys and "ExecStartPost" not in keys, keys
    exec_start = dict(service)["ExecStart"]
    words = systemd_words(exec_start)
    assert words == formats.argv(plan, port=target.port, exe=target.exe)
    assert Path(words[0]).is_absolute()
    assert dict(service)["Restart"] == "on-failure"
    env = [systemd_words(v, variables=False) for k, v in service if k == "Environment"]
    assert all(len(e) == 1 for e in env), env
    env = [e[0] for e in env]
    launch_env = formats.launch(plan, port=target.port, exe=target.exe).env
    assert sorted(env) == sorted(f"{k}={v}" for k, v in {**launch_env, **target.env}.items())
    assert [v for k, v in service if k == "EnvironmentFile"] == [f"-{target.api_key_file}"]
    assert not any("KEY=" in v for _, v in service), "an API key inline"
    assert [v for k, v in service if k == "User"] == ([target.user] if target.user else [])
    unit = dict(sections["Unit"])
    assert list(unit) == ["Description", "After", "Wants"]
    assert re.fullmatch(r"advisor: [ -~]+ on (llama\.cpp|vllm)", unit["Description"]) and "%" not in unit["Description"]
    if SYSTEMD_ANALYZE:
        verify_with_systemd(text, target.exe)


def verify_with_systemd(text: str, exe: str | None) -> None:
    """systemd's own parser: ``systemd-analyze verify`` on the unit, its executable replaced by a real one."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        fake = Path(d) / "engine"
        fake.write_text("#!/bin/sh\nexit 0\n")
        fake.chmod(0o755)
        unit = Path(d) / "advisor-test.service"
        first = text.split("ExecStart=", 1)[1].split(" ", 1)[0]
        unit.write_text(text.replace(f"ExecStart={first}", f"ExecStart={fake}", 1).replace("User=", "#User=", 1))
        done = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and unit.name not in done.stderr, done.stderr


def check_compose(text: str, plan, vendor: str, target: formats.Target | None = None) -> None:
    target = target or _target(plan)
    doc = yaml.safe_load(text)
    assert list(doc) == ["services"] and len(doc["services"]) == 1
    (name, service), = doc["services"].items()
    assert re.fullmatch(r"[a-z0-9_-]{1,63}", name)
    allowed = {"image", "restart", "command", "ports", "environment", "volumes", "healthcheck", "deploy", "devices",
               "group_add", "ipc"}
    assert set(service) <= allowed, set(service) - allowed
    assert "privileged" not in service and "cap_add" not in service and "network_mode" not in service
    assert service["restart"] == "unless-stopped"
    assert service["command"] == formats.container_args(plan, target.port)
    assert service["ports"] == [f"127.0.0.1:{target.port}:{target.port}"]
    volumes = [{"type": "bind", "source": target.hf_home, "target": formats.CONTAINER_HF_HOME}]
    if plan.model.path:
        folder = str(Path(plan.model.path).parent)
        volumes.append({"type": "bind", "source": folder, "target": folder, "read_only": True})
    assert service["volumes"] == volumes
    assert f"127.0.0.1:{target.port}/health" in " ".join(service["healthcheck"]["test"])
    assert service.get("devices", []) == (["/dev/kfd", "/dev/dri"] if vendor == "amd" else [])


# -- injection --------------------------------------------------------------------------------------------------------

HOSTILE_IDS = [
    "evil\n[Service]\nExecStartPre=/bin/sh -c 'touch /tmp/pwned'",
    "x\nprivileged: true\nvolumes:\n  - /:/host",
    'q" \n    privileged: true\n    x: "',
    "%h%n$HOME${PATH};rm -rf /",
    "name with spaces and 'quotes' and \\backslash",
    "\u2028line separator\u0085next line\ufeff",
    "",
    "-" * 5000,
]


def _hostile(case: str, model_id: str, filename: str):
    """The golden plan, with the model id and the local file name an attacker chose (GGUF general.name)."""
    plan = _plan(case)
    path = f"/models/{filename}"
    model = dataclasses.replace(plan.model, id=model_id, path=path, repo=None, files=[])
    return dataclasses.replace(plan, model=model)  # the engine's arguments are built from the model and settings


@pytest.mark.parametrize("model_id", HOSTILE_IDS)
@pytest.mark.parametrize("case", ["rtx3060-qwen-coder-llama", "mi100-qwen3-llama"])
def test_hostile_model_ids_stay_one_value(model_id: str, case: str) -> None:
    plan = _hostile(case, model_id, "model.gguf")
    vendor = CASES[case][0]
    check_systemd(formats.systemd(plan, TARGET), plan, vendor)
    check_compose(formats.compose(plan, vendor, TARGET), plan, vendor)
    check_shell(formats.shell(plan), plan, vendor)


@pytest.mark.parametrize("filename", ["50% off $HOME.gguf", "a b\\c\"d'e.gguf", "semi ; colon.gguf", ";",
                                      "${IFS}x.gguf", "ünï ©ode.gguf"])
def test_odd_file_names_stay_one_argument(filename: str) -> None:
    plan = _hostile("rtx3060-qwen-coder-llama", "m", filename)
    check_systemd(formats.systemd(plan, TARGET), plan, "nvidia")
    check_compose(formats.compose(plan, "nvidia", TARGET), plan, "nvidia")
    check_shell(formats.shell(plan), plan, "nvidia")


@pytest.mark.parametrize("filename", ["new\nline.gguf", "tab\there.gguf", "cr\r.gguf", "nul\x00.gguf"])
def test_control_characters_in_a_unit_are_refused(filename: str) -> None:
    plan = _hostile("rtx3060-qwen-coder-llama", "m", filename)
    with pytest.raises(BadInputError, match="control character"):
        formats.systemd(plan, TARGET)
    check_compose(formats.compose(plan, "nvidia", TARGET), plan, "nvidia")  # YAML escapes them
    check_shell(formats.shell(plan), plan, "nvidia")  # sh single quotes keep them


def test_user_and_paths_are_checked() -> None:
    plan = _plan("rtx3060-qwen-coder-llama")
    text = formats.systemd(plan, dataclasses.replace(TARGET, user="llm"))
    check_systemd(text, plan, "nvidia", dataclasses.replace(TARGET, user="llm"))
    for user in ["root\nExecStartPre=/bin/sh", "a b", "", "x" * 40]:
        with pytest.raises(BadInputError):
            formats.systemd(plan, dataclasses.replace(TARGET, user=user))
    for exe in [None, "llama-server", "relative/llama-server"]:
        with pytest.raises(BadInputError, match="absolute path"):
            formats.systemd(plan, dataclasses.replace(TARGET, exe=exe))
    with pytest.raises(BadInputError):
        formats.systemd(plan, dataclasses.replace(TARGET, api_key_file="/tmp/key file"))
    odd = dataclasses.replace(TARGET, env={"HF_HOME": "/data/50% \"hf\" $cache"})
    check_systemd(formats.systemd(plan, odd), plan, "nvidia", odd)


def test_compose_refuses_macos_and_jetson() -> None:
    plan = _plan("rtx3060-qwen-coder-llama")
    with pytest.raises(BadInputError, match="Metal") as info:
        formats.compose(plan, "none", TARGET, os_name="darwin")
    assert "--format shell" in info.value.hint and "launchd" in info.value.hint
    with pytest.raises(BadInputError, match="Tegra") as info:
        formats.compose(plan, "nvidia", TARGET, jetson=True)
    assert "jetson-containers" in info.value.hint
    assert formats.is_jetson(["Orin (nvgpu)"], "aarch64") and not formats.is_jetson(["NVIDIA GH200 480GB"], "aarch64")
    assert not formats.is_jetson(["Orin (nvgpu)"], "x86_64")


# -- end to end: a GGUF whose general.name is an attack ---------------------------------------------------------------


def test_recommend_systemd_for_a_hostile_gguf(tmp_path: Path, capsys: Any) -> None:
    from tests import ggufgen
    from tests.test_hardening_inputs import cli, profile_dict

    evil = "evil\n[Service]\nExecStartPre=/bin/touch /tmp/pwned\n%h $HOME"
    model = ggufgen.write(tmp_path / "50% $x.gguf", ggufgen.Spec(extra_kv=(("general.name", evil),)), sparse=True)
    profile = tmp_path / "p.json"
    import json

    profile.write_text(json.dumps(profile_dict()))
    engine = tmp_path / "llama-server"
    engine.write_text("#!/bin/sh\nexit 0\n")
    engine.chmod(0o755)
    code, out, err = cli(capsys, "recommend", "--model", str(model), "--hardware", str(profile), "--format",
                         "systemd", "--engine-path", str(engine), "--user", "llm")
    assert code == 0, err
    service = systemd_settings(out)["Service"]
    assert [k for k, _ in service].count("ExecStart") == 1 and "ExecStartPre" not in dict(service)
    words = systemd_words(dict(service)["ExecStart"])
    assert words[0] == str(engine) and words[words.index("-m") + 1] == str(model)
    if SYSTEMD_ANALYZE:
        verify_with_systemd(out, str(engine))
    code, out, err = cli(capsys, "recommend", "--model", str(model), "--hardware", str(profile), "--format",
                         "compose")
    assert code == 0, err
    doc = yaml.safe_load(out)
    (service,) = doc["services"].values()
    assert "privileged" not in service and service["command"][service["command"].index("-m") + 1] == str(model)


@pytest.mark.parametrize("edit, text", [
    (lambda d: d.update(os="darwin"), "without Metal"),
    (lambda d: (d.update(arch="aarch64"), d["gpus"][0].update(name="Orin (nvgpu)", unified_memory=True)), "Tegra"),
])
def test_recommend_compose_refusals(tmp_path: Path, capsys: Any, edit: Any, text: str) -> None:
    import json

    from tests.test_hardening_inputs import assert_bad_input, profile_dict

    doc = profile_dict()
    edit(doc)
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps(doc))
    assert_bad_input(capsys, "recommend", "--hardware", str(profile), "--format", "compose", "--max-size", "2",
                     text=text)
