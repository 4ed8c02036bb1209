"""A second, independent review of the golden files of `recommend --format shell|systemd|compose`
(tests/data/golden/recommend, written by tests/test_formats.py): the golden test says the output did not change;
these say it is valid for the program that reads it (tests/checkers.py):

- systemd units: a grammar check from systemd.syntax(7)/systemd.service(5), and systemd's own
  ``systemd-analyze verify`` (marker ``systemd``);
- compose files: a YAML parse and the Compose Specification's schema for the fields used;
- the command in each: llama-server's own flag table (llama.cpp common/arg.cpp), and the same command in all three.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests import checkers

GOLDEN = Path(__file__).parent / "data" / "golden" / "recommend"
UNITS = sorted(GOLDEN.glob("*.systemd"))
COMPOSE = sorted(GOLDEN.glob("*.compose"))
SHELL = sorted(GOLDEN.glob("*.shell"))


def test_there_are_goldens_to_review():
    assert len(UNITS) >= 3 and len(COMPOSE) >= 3 and len(SHELL) >= 3


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_systemd_unit_grammar(path):
    assert checkers.systemd_unit_problems(path.read_text()) == []


@pytest.mark.systemd
@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify(path):
    assert checkers.systemd_analyze_problems(path.read_text(), f"advisor-{path.stem}.service") == []


@pytest.mark.parametrize("path", COMPOSE, ids=lambda p: p.name)
def test_compose_schema(path):
    assert checkers.compose_problems(path.read_text()) == []


@pytest.mark.parametrize("path", SHELL, ids=lambda p: p.name)
def test_shell_command_parses_and_is_accepted(path):
    text = path.read_text()
    assert checkers.shell_problems(text) == []
    argv = shlex.split(text)
    if argv[0] == "llama-server":
        assert checkers.llama_server_argv_problems(argv) == []
    else:  # vLLM's OpenAI server module (vllm/entrypoints/openai/api_server.py) with --model
        assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"] and "--model" in argv


@pytest.mark.parametrize("stem", sorted({p.stem for p in SHELL}))
def test_one_command_in_all_three_formats(stem):
    """The unit runs the shell command (its program by absolute path); the compose service runs the same options in the engine's image (whose
    entrypoint is the program: llama-server; `vllm serve MODEL` in vllm/vllm-openai) listening on every interface."""
    shell = shlex.split((GOLDEN / f"{stem}.shell").read_text())
    unit = checkers.exec_start_argv((GOLDEN / f"{stem}.systemd").read_text())
    assert unit[1:] == shell[1:] and unit[0].startswith("/")  # systemd runs the program by its absolute path
    assert Path(unit[0]).name == shell[0] or Path(unit[0]).name.startswith("python") == shell[0].startswith("python")
    command = checkers.compose_command((GOLDEN / f"{stem}.compose").read_text())
    if shell[0] == "llama-server":
        expected = shell[1:]
    else:
        opts = shell[3:]
        i = opts.index("--model")
        expected = [opts[i + 1], *opts[:i], *opts[i + 2:]]
    expected[expected.index("--host") + 1] = "0.0.0.0"
    assert [a for a in command if a != "--no-webui"] == [a for a in expected if a != "--no-webui"]
    if shell[0] == "llama-server":
        assert checkers.llama_server_argv_problems(["llama-server", *command]) == []


def test_checkers_reject_broken_files():
    """Each checker can fail: a misspelt key, a bad Type=, two ExecStart=, unbalanced quotes, a wrong compose
    field, a bad port, an unknown llama-server flag."""
    good = (GOLDEN / UNITS[0].name).read_text()
    assert checkers.systemd_unit_problems(good.replace("Restart=", "Restrat="))
    assert checkers.systemd_unit_problems(good.replace("Type=simple", "Type=simpel"))
    assert checkers.systemd_unit_problems(good.replace("RestartSec=5", "RestartSec=soon"))
    exec_line = next(ln for ln in good.splitlines() if ln.startswith("ExecStart="))
    assert checkers.systemd_unit_problems(good.replace(exec_line, exec_line + "\n" + exec_line))
    assert checkers.systemd_unit_problems(good.replace(exec_line, exec_line + " '"))
    compose = COMPOSE[0].read_text()
    assert checkers.compose_problems(compose.replace("    ports:", "    port:"))
    assert checkers.compose_problems(compose.replace(':8080:8080"', ':eighty:8080"'))
    assert checkers.compose_problems(compose + "  bad: [unclosed\n")
    assert checkers.shell_problems("llama-server -m 'x.gguf\n")
    assert checkers.llama_server_argv_problems(["llama-server", "--n-gpu-layer", "3"])


@pytest.mark.systemd
def test_systemd_analyze_rejects_a_broken_unit():
    good = UNITS[0].read_text()
    assert checkers.systemd_analyze_problems(good.replace("Restart=", "Restrat="))
