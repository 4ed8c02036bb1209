"""Hostile and broken input: every case is exit 2 with one ``advisor: error:`` line on stderr, quickly, never a
traceback (exit 1), a hang or unbounded memory.

The commands run in-process through ``advisor.cli.main.main`` (the console entry point, with its error mapping),
so a case costs milliseconds; GGUF files are gguf's own writer's output (tests/ggufgen.py) edited as data
(tests/gguf_doc.py). Readers that could block (FIFOs) run under a watchdog thread.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from advisor.probe.profile import Cpu, Gpu, HardwareProfile, Memory
from tests import ggufgen
from tests.gguf_doc import ARRAY, STRING, parse

GIB = 1 << 30


def cli(capsys: Any, *args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``advisor ARGS`` run in this process; fails if it takes over ``timeout``."""
    from advisor.cli.main import main

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            main(list(args))
            box["code"] = 0
        except SystemExit as exc:
            box["code"] = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"advisor {' '.join(a[:40] for a in args)} hung for {timeout} s"
    assert "error" not in box, box.get("error")
    out, err = capsys.readouterr()
    return box["code"], out, err


def assert_bad_input(capsys: Any, *args: str, text: str = "", timeout: float = 60.0) -> str:
    code, out, err = cli(capsys, *args, timeout=timeout)
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("advisor: error: "), err
    assert text in lines[0], lines[0]
    return lines[0]


def profile_dict(**memory: int) -> dict[str, Any]:
    profile = HardwareProfile(
        cpu=Cpu(model="test cpu", physical_cores=8, logical_cores=16, usable_cores=16, features=["avx2"]),
        memory=Memory(total_bytes=64 * GIB, available_bytes=60 * GIB, usable_bytes=60 * GIB),
        gpus=[Gpu(index=0, vendor="nvidia", name="NVIDIA GeForce RTX 3060", backend="cuda",
                  memory_total_bytes=12 * GIB, memory_free_bytes=12 * GIB, compute_capability="8.6")])
    return profile.to_dict()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return ggufgen.write(tmp_path / "tiny.gguf", ggufgen.Spec(), sparse=True)


# -- special files and sizes ----------------------------------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo.gguf"
    os.mkfifo(path)
    return path


def test_a_device_as_hardware_profile() -> None:
    """In a child limited to 1 GiB of address space: reading /dev/zero whole must never be what happens."""
    import resource
    import subprocess

    from tests.test_run_engine import ADVISOR

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    done = subprocess.run([ADVISOR, "recommend", "--hardware", "/dev/zero"], capture_output=True, text=True,
                          timeout=60, preexec_fn=limit)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "a device, not a regular file" in done.stderr


def test_a_fifo_is_refused_by_every_reader(capsys, fifo: Path, tmp_path: Path) -> None:
    plain = tmp_path / "fifo"
    os.mkfifo(plain)
    assert_bad_input(capsys, "recommend", "--hardware", str(plain), text="FIFO", timeout=20)
    assert_bad_input(capsys, "estimate", str(fifo), text="FIFO", timeout=20)
    assert_bad_input(capsys, "run", "--plan", str(plain), "--dry-run", text="FIFO", timeout=20)
    assert_bad_input(capsys, "catalog", "add", str(fifo), text="FIFO", timeout=20)
    plan = tmp_path / "plan.json"  # a plan naming a FIFO as its model: refused when the run resolves it
    plan.write_text(json.dumps({"schema": 1, "backend": "llama.cpp", "model": {"id": "m", "path": str(fifo)},
                                "settings": {"ctx": 512}}))
    assert_bad_input(capsys, "run", "--plan", str(plan), "--check", text="FIFO", timeout=60)


def test_a_directory_as_a_file(capsys, tmp_path: Path) -> None:
    d = tmp_path / "dir.gguf"
    d.mkdir()
    assert_bad_input(capsys, "estimate", str(d))
    assert_bad_input(capsys, "recommend", "--hardware", str(tmp_path), text="")


def test_an_oversized_profile(capsys, tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    doc = profile_dict()
    doc["notes"] = ["x" * 1000] * 2000  # 2 MB of notes
    path.write_text(json.dumps(doc))
    assert_bad_input(capsys, "recommend", "--hardware", str(path), text="larger than")


@pytest.mark.parametrize("where", ["hardware", "plan"])
def test_deeply_nested_json(capsys, tmp_path: Path, where: str) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    if where == "hardware":
        assert_bad_input(capsys, "recommend", "--hardware", str(path), text="nested deeper")
    else:
        assert_bad_input(capsys, "run", "--plan", str(path), "--dry-run", text="nested deeper")


# -- profile values -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("edit, text", [
    (lambda d: d["memory"].update(total_bytes=-1), "memory.total_bytes"),
    (lambda d: d["memory"].update(usable_bytes=-5 * GIB), "memory.usable_bytes"),
    (lambda d: d["gpus"][0].update(memory_total_bytes=-1), "memory_total_bytes"),
    (lambda d: d["gpus"][0].update(compute_capability="garbage"), "compute_capability"),
    (lambda d: d["gpus"][0].update(compute_capability="8.6; rm -rf /"), "compute_capability"),
    (lambda d: d["gpus"][0].update(gfx_target="../../x"), "gfx_target"),
    (lambda d: d["gpus"][0].update(vendor="evil"), "vendor"),
    (lambda d: d["cpu"].update(usable_cores=-3), "usable_cores"),
    (lambda d: d["gpus"][0].update(index=-1), "index"),
    (lambda d: d.update(gpus=[d["gpus"][0]] * 1100), "GPUs"),
])
def test_impossible_profile_values(capsys, tmp_path: Path, edit: Any, text: str) -> None:
    doc = profile_dict()
    edit(doc)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    assert_bad_input(capsys, "recommend", "--hardware", str(path), text=text)


def test_nan_in_a_profile_is_not_json(capsys, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile_dict()).replace('"total_bytes": 68719476736', '"total_bytes": NaN'))
    assert "NaN" in path.read_text()
    assert_bad_input(capsys, "recommend", "--hardware", str(path), text="NaN")


# -- plan values ----------------------------------------------------------------------------------------------------


def _plan(tmp_path: Path, model: Path, **settings: Any) -> dict[str, Any]:
    base = {"schema": 1, "backend": "llama.cpp", "model": {"id": "tiny", "path": str(model)},
            "settings": {"n_gpu_layers": 0, "ctx": 512}}
    base["settings"].update(settings)
    return base


@pytest.mark.parametrize("edit, text", [
    (lambda p: p["settings"].update(ctx=-1), "ctx"),
    (lambda p: p["settings"].update(n_gpu_layers=-7), "n_gpu_layers"),
    (lambda p: p["settings"].update(parallel=0), "parallel"),
    (lambda p: p["settings"].update(ubatch=0), "ubatch"),
    (lambda p: p["settings"].update(threads=0), "threads"),
    (lambda p: p["settings"].update(ctx=2**40), "ctx"),
    (lambda p: p["settings"].update(cache_type_k="q8_0 --rpc evil:1"), "cache_type_k"),
    (lambda p: p["settings"].update(flash_attn="sometimes"), "flash_attn"),
    (lambda p: p["settings"].update(tensor_split=[1.0, -1.0]), "tensor_split"),
    (lambda p: p["settings"].update(tensor_split=[1.0] * 17), "tensor_split"),
    (lambda p: p.update(fallbacks=[{"settings": {"ctx": -4}, "reason": "r"}]), "fallbacks[0]"),
    (lambda p: p.update(fallbacks=[{"settings": {"nonsense": 1}, "reason": "r"}]), "fallbacks[0]"),
    (lambda p: p["model"].update(id="a\nb"), "model.id"),
    (lambda p: p["model"].update(repo="org/repo", files=["../../etc/passwd"], path=None), "model.files[0]"),
    (lambda p: p.update(backend="vllm", settings={"gpu_memory_utilization": 1.5}), "gpu_memory_utilization"),
    (lambda p: p.update(backend="vllm", settings={"max_num_seqs": 0}), "max_num_seqs"),
    (lambda p: p.update(backend="vllm", settings={"kv_cache_dtype": "fp8 --trust-remote-code"}), "kv_cache_dtype"),
])
def test_plan_settings_are_range_checked(capsys, tmp_path: Path, model: Path, edit: Any, text: str) -> None:
    plan = _plan(tmp_path, model)
    edit(plan)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    assert_bad_input(capsys, "run", "--plan", str(path), "--dry-run", text=text)


def test_a_nan_setting_in_a_plan(capsys, tmp_path: Path, model: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(_plan(tmp_path, model, tensor_split=[1.0])).replace("[1.0]", "[NaN]"))
    assert_bad_input(capsys, "run", "--plan", str(path), "--dry-run", text="NaN")


# -- options --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, text", [
    (["recommend", "--max-size", "nan"], "--max-size"),
    (["recommend", "--max-size", "inf"], "--max-size"),
    (["recommend", "--max-size", "-2"], "--max-size"),
    (["recommend", "--max-size", "1e308"], "--max-size"),
    (["recommend", "--max-size", "1e-300"], "--max-size"),
    (["run", "x.gguf", "--timeout", "1e308"], "--timeout"),
    (["run", "--auto", "--dry-run", "--max-size", "nan"], "--max-size"),
    (["run", "x.gguf", "--timeout", "nan"], "--timeout"),
    (["run", "x.gguf", "--timeout", "inf"], "--timeout"),
    (["run", "x.gguf", "--timeout", "-1"], "--timeout"),
    (["run", "x.gguf", "--host", ""], "--host"),
    (["run", "x.gguf", "--host", "   "], "--host"),
    (["run", "x.gguf", "--host", "bad host!"], "--host"),
    (["run", "x.gguf", "--host", "x" * 300], "--host"),
    (["recommend", "--task", "bogus"], "--task"),
    (["run", "--auto", "--dry-run", "--task", "bogus"], "--task"),
])
def test_bad_option_values(capsys, args: list[str], text: str) -> None:
    assert_bad_input(capsys, *args, text=text)


def test_gpus_100000_is_refused_quickly(capsys, model: Path) -> None:
    assert_bad_input(capsys, "estimate", str(model), "--gpus", "100000", text="--gpus", timeout=10)


@pytest.mark.parametrize("args", [["--tensor-split", "nan,1"], ["--tensor-split", "inf"], ["--parallel", "-5"],
                                  ["--gpu-layers", "-9"], ["--ctx", str(2**40)]])
def test_bad_estimate_options(capsys, model: Path, args: list[str]) -> None:
    assert_bad_input(capsys, "estimate", str(model), *args)


@pytest.mark.parametrize("command", [["estimate"], ["run", "--dry-run"], ["recommend", "--model"], ["catalog", "add"]])
def test_a_5000_character_model_name(capsys, command: list[str]) -> None:
    name = "m" * 5000 + ".gguf"
    assert_bad_input(capsys, *command, name)
    assert_bad_input(capsys, *command, "org/" + "r" * 5000)


@pytest.mark.parametrize("args", [
    ["estimate", "org/repo", "--file", "../../../etc/passwd.gguf"],
    ["estimate", "org/repo/../x.gguf"],
    ["estimate", "org/repo", "--file", "a/./b.gguf"],
    ["catalog", "add", "org/repo", "--file", "../x.gguf"],
])
def test_dot_dot_in_hub_file_names(capsys, args: list[str]) -> None:
    assert_bad_input(capsys, *args, text="inside a Hub repository")


# -- GGUF headers ---------------------------------------------------------------------------------------------------


def _edited(tmp_path: Path, model: Path, edit: Any, name: str = "edited.gguf") -> Path:
    doc = parse(model.read_bytes())
    edit(doc)
    out = tmp_path / name
    out.write_bytes(doc.to_bytes())
    with out.open("r+b") as fh:  # keep the data region: the tensors must fit in the file
        fh.truncate(max(out.stat().st_size, model.stat().st_size))
    return out


@pytest.mark.parametrize("edit, text", [
    (lambda d: d.set("llama.block_count", 12, float("nan")), "block_count"),
    (lambda d: d.set("llama.block_count", 6, float("inf")), "block_count"),
    (lambda d: d.set("llama.block_count", STRING, "two"), "block_count"),
    (lambda d: d.set("llama.block_count", 10, 2**40), "block_count"),
    (lambda d: d.set("llama.block_count", 5, -2), "block_count"),
    (lambda d: d.set("llama.embedding_length", 11, -64), "embedding_length"),
    (lambda d: d.set("llama.context_length", 11, -4096), "context_length"),
    (lambda d: d.set("llama.attention.head_count_kv", ARRAY, (5, [2, -2])), "head_count_kv"),
    (lambda d: d.set("llama.feed_forward_length", 12, 1e300), "feed_forward_length"),
    (lambda d: d.set("llama.rope.freq_base", 6, float("nan")), "rope.freq_base"),
    (lambda d: d.set("llama.expert_count", 4, 100000), "experts"),
    (lambda d: d.tensors.__setitem__(0, ("blk.x.attn_q.weight", *d.tensors[0][1:])), "blk.x."),
    (lambda d: d.tensors.__setitem__(0, ("blk.999.attn_q.weight", *d.tensors[0][1:])), "blk.999."),
    (lambda d: d.tensors.__setitem__(0, ("blk.\u0663.attn_q.weight", *d.tensors[0][1:])), "blk."),
    (lambda d: d.tensors.__setitem__(0, ("t" * 64, *d.tensors[0][1:])), "tensor name"),
    (lambda d: d.tensors.__setitem__(1, d.tensors[0]), "duplicate tensor"),
    (lambda d: d.kv.append(d.kv[0]), "duplicate key"),
    (lambda d: d.tensors.__setitem__(0, (d.tensors[0][0], [2**62, 2**62], *d.tensors[0][2:])), "INT64_MAX"),
    (lambda d: d.tensors.__setitem__(0, (d.tensors[0][0], d.tensors[0][1], d.tensors[0][2], 3)), "offset"),
    (lambda d: setattr(d, "n_tensors", 2**40), "tensors"),
    (lambda d: setattr(d, "n_kv", 2**40), "keys"),
    (lambda d: d.set("general.alignment", 4, 3), "alignment"),
])
def test_hostile_gguf_headers(capsys, tmp_path: Path, model: Path, edit: Any, text: str) -> None:
    bad = _edited(tmp_path, model, edit)
    line = assert_bad_input(capsys, "estimate", str(bad), timeout=30)
    assert text in line, line


def test_a_small_file_claiming_2_to_the_40_layers(capsys, tmp_path: Path, model: Path) -> None:
    bad = _edited(tmp_path, model, lambda d: d.set("llama.block_count", 10, 2**40))
    assert bad.stat().st_size < 400_000
    assert_bad_input(capsys, "estimate", str(bad), text="layers", timeout=30)
    assert_bad_input(capsys, "recommend", "--model", str(bad), text="layers", timeout=30)


def test_a_long_general_name_is_skipped_not_decoded(tmp_path: Path, model: Path) -> None:
    from advisor.gguf.facts import MAX_STRING_BYTES, read_gguf_facts

    big = _edited(tmp_path, model, lambda d: d.set("general.name", STRING, "n" * (MAX_STRING_BYTES + 1)))
    assert read_gguf_facts(big).name is None


@pytest.mark.parametrize("name", ["m-00000-of-00000.gguf", "m-00003-of-00002.gguf", "m-00000-of-00002.gguf"])
def test_impossible_split_names(capsys, tmp_path: Path, model: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(model.read_bytes())
    assert_bad_input(capsys, "estimate", str(path), text="shard")


# -- names from metadata are shown as text --------------------------------------------------------------------------


def test_a_hostile_general_name_is_shown_as_text(capsys, tmp_path: Path) -> None:
    """Rich markup ('[/bold]' raised MarkupError: exit 1) and terminal escapes (ESC ] 0; sets the title) in a GGUF's
    general.name are printed as text."""
    name = "[/bold] \x1b]0;pwned\x07 [link=http://x]y"
    bad = ggufgen.write(tmp_path / "evil.gguf", ggufgen.Spec(extra_kv=(("general.name", name),)), sparse=True)
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps(profile_dict()))
    for args in (["estimate", str(bad)], ["recommend", "--model", str(bad), "--hardware", str(profile)]):
        code, out, err = cli(capsys, *args)
        assert code == 0, err
        assert "\x1b" not in out + err and "[/bold]" in out and "\\x1b" in out


def test_an_unusable_advisor_home_is_one_line(capsys, tmp_path: Path, monkeypatch, model: Path) -> None:
    home = tmp_path / "home"
    home.write_text("a file where ADVISOR_HOME should be a directory")
    monkeypatch.setenv("ADVISOR_HOME", str(home))
    assert_bad_input(capsys, "catalog", "add", str(model), text="ADVISOR_HOME")
