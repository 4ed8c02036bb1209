"""`advisor probe` as a user runs it: the real console script in a subprocess, live and on a replayed machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from advisor.cli._errors import format_error
from advisor.errors import HardwareFileError
from advisor.probe import cpu, memory
from advisor.probe.profile import HardwareProfile
from tests.replay import DATA

ADVISOR = shutil.which("advisor", path=str(Path(sys.executable).parent)) or "advisor"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([ADVISOR, *args], capture_output=True, text=True, env=env or dict(os.environ), timeout=60)


@pytest.fixture(scope="module")
def live_profile() -> dict:
    done = run("probe", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_probe_json_on_this_machine(live_profile):
    """The CI machine: valid JSON, no GPU, CPU features and memory as /proc says."""
    assert live_profile["schema"] == 1 and live_profile["os"] == "linux"
    assert live_profile["gpus"] == []
    text = Path("/proc/cpuinfo").read_text()
    first = cpu.parse_cpuinfo(text)[0]
    if "flags" in first:
        assert set(live_profile["cpu"]["features"]) == cpu.normalise_x86(first["flags"].split())
    assert live_profile["cpu"]["logical_cores"] == text.count("processor\t:")
    meminfo = memory.parse_meminfo(Path("/proc/meminfo").read_text())
    assert live_profile["memory"]["total_bytes"] == meminfo["MemTotal"]
    assert live_profile["disk"]["free_bytes"] > 0
    HardwareProfile.from_dict(live_profile)  # what it prints, it reads back


def test_table_output_and_hardware_roundtrip(live_profile, tmp_path):
    saved = tmp_path / "box.json"
    saved.write_text(json.dumps(live_profile))
    again = run("probe", "--json", "--hardware", str(saved))
    assert again.returncode == 0 and json.loads(again.stdout) == live_profile
    table = run("probe", "--hardware", str(saved))
    assert table.returncode == 0
    assert "CPU" in table.stdout and "Memory" in table.stdout and "GPUs" in table.stdout


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not JSON"),
        ('{"schema": 99}', "schema 99 is not supported"),
        ('{"schema": 1, "gpus": [{"index": 0}]}', "missing"),
        ('{"schema": 1, "cpu": {"cores": 4}}', "unknown key 'cores'"),
        ('{"schema": 1, "memory": {"total_bytes": "lots"}}', "expected an integer"),
        ("[]", "expected a JSON object"),
    ],
)
def test_bad_hardware_file_is_one_line(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    done = run("probe", "--hardware", str(bad))
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "advisor probe --json" in lines[0]
    assert "Traceback" not in done.stderr


def test_missing_hardware_file(tmp_path):
    done = run("probe", "--hardware", str(tmp_path / "nope.json"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    done = run("probe", "--hardware", str(bad), env={**os.environ, "ADVISOR_DEBUG": "1"})
    assert done.returncode != 0 and "Traceback" in done.stderr and "HardwareFileError" in done.stderr


def test_unknown_option_is_a_usage_error():
    done = run("probe", "--frobnicate")
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_format_error_names_the_next_command():
    line, code = format_error(HardwareFileError("box.json: unknown field 'x'"))
    assert code == 2 and line.startswith("advisor: error: box.json") and "advisor probe --json" in line
    line, code = format_error(RuntimeError("boom"))
    assert code == 1 and "ADVISOR_DEBUG=1" in line


def test_replayed_machine_through_the_real_command(machine):
    """ADVISOR_SYSROOT and PATH replay a recorded machine through the installed console script."""
    machine.copy("/proc/cpuinfo", DATA / "cpu" / "linux-unknown-sapphirerapids")
    machine.file("/proc/meminfo", "MemTotal: 263921408 kB\nMemAvailable: 250000000 kB\n")
    done = subprocess.run([ADVISOR, "probe", "--json"], capture_output=True, text=True, env=machine.environ())
    assert done.returncode == 0, done.stderr
    profile = json.loads(done.stdout)
    assert profile["cpu"]["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"amx_int8", "amx_bf16", "avx512_bf16", "avx_vnni"} <= set(profile["cpu"]["features"])
    assert profile["cpu"]["isa_level"] == "v4"
    assert profile["memory"]["total_bytes"] == 263921408 * 1024
    assert profile["gpus"] == []
    # The replay must not describe the machine running it: its Python packages are not in the recording.
    assert profile["runtimes"]["llama_cpp_python"]["installed"] is False


@pytest.mark.parametrize(
    "args",
    [[], ["probe"], ["recommend"], ["run"], ["ps"], ["stop"], ["estimate"], ["setup"], ["catalog"],
     ["catalog", "list"], ["catalog", "show"]],  # fmt: skip
)
def test_every_command_has_help(args):
    """A typer upgrade that breaks the command surface fails here (typer 0.26+ ships no click)."""
    done = run(*args, "--help")
    assert done.returncode == 0 and "Usage" in done.stdout and "Traceback" not in done.stderr
