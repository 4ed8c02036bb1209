"""Facts of a GGUF on the Hub from its header alone: the real huggingface_hub client against
tests/fake_hub.py, the results compared with advisor.gguf.facts over the same local file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from advisor.hub import gguf as hub_gguf
from advisor.errors import BadInputError, DownloadError
from advisor.gguf.facts import read_gguf_facts
from advisor.hub.gguf import HubRef, facts_to_json, hub_facts
from tests import ggufgen
from tests.fake_hub import FakeHub, fake_hub_fixture  # noqa: F401 - the fake_hub fixture

ADVISOR = shutil.which("advisor", path=str(Path(sys.executable).parent)) or "advisor"


def _same(hub: object, local: object) -> None:
    a, b = facts_to_json(hub), facts_to_json(local)  # type: ignore[arg-type]
    for k in ("path", "files"):
        a.pop(k), b.pop(k)
    assert a == b


def test_facts_equal_local_file(tmp_path: Path, fake_hub: FakeHub) -> None:
    f = ggufgen.write(tmp_path / "tiny-Q8_0.gguf", ggufgen.TINY["llama"])
    fake_hub.add("org/tiny-GGUF", {"tiny-Q8_0.gguf": f})
    hf = hub_facts(HubRef("org/tiny-GGUF", "tiny-Q8_0.gguf"))
    _same(hf.facts, read_gguf_facts(f))
    assert hf.facts.path == "org/tiny-GGUF/tiny-Q8_0.gguf"
    assert hf.files == ("tiny-Q8_0.gguf",) and not hf.from_cache
    assert all(q.range and q.range.startswith("bytes=0-") for q in fake_hub.range_gets)


def test_quant_picks_the_file(tmp_path: Path, fake_hub: FakeHub) -> None:
    a = ggufgen.write(tmp_path / "m-Q8_0.gguf", ggufgen.TINY["llama"])
    b = ggufgen.write(tmp_path / "m-F16.gguf", ggufgen.TINY["qwen2"])
    fake_hub.add("org/m-GGUF", {"m-Q8_0.gguf": a, "sub/m-F16.gguf": b, "README.md": a})
    assert hub_facts(HubRef("org/m-GGUF", quant="q8_0")).files == ("m-Q8_0.gguf",)
    hf = hub_facts(hub_gguf.parse_ref("org/m-GGUF:F16"))
    assert hf.files == ("sub/m-F16.gguf",) and hf.facts.architecture == "qwen2"
    with pytest.raises(BadInputError, match="2 GGUF files"):
        hub_facts(HubRef("org/m-GGUF"))
    with pytest.raises(DownloadError, match="no Q4_K_M GGUF in org/m-GGUF"):
        hub_facts(HubRef("org/m-GGUF", quant="Q4_K_M"))


def test_split_model_is_one_model(tmp_path: Path, fake_hub: FakeHub) -> None:
    first = ggufgen.write(tmp_path / "s.gguf", ggufgen.TINY["llama"], split_max_tensors=12)
    shards = sorted(tmp_path.glob("s-*-of-*.gguf"))
    assert len(shards) > 1
    fake_hub.add("org/split", {f"Q8_0/{p.name}": p for p in shards})
    # any shard names the model, as for a local file
    hf = hub_facts(HubRef("org/split", f"Q8_0/{shards[-1].name}"))
    local = read_gguf_facts(first)
    _same(hf.facts, local)
    assert hf.files == tuple(f"Q8_0/{p.name}" for p in shards)
    assert {t.file_index for t in hf.facts.tensors} == set(range(len(shards)))
    assert len(fake_hub.range_gets) == len(shards)


def test_large_header_grows_the_range_and_reads_far_less_than_the_file(tmp_path: Path,
                                                                        fake_hub: FakeHub) -> None:
    # Qwen2.5-0.5B shapes with its 151936-token vocabulary and merges: the header is larger than the first range.
    f = ggufgen.write(tmp_path / "qwen-Q8_0.gguf", ggufgen.QWEN2_05B, sparse=True)
    local = read_gguf_facts(f)
    assert local.data_offset > hub_gguf.FIRST_RANGE_BYTES
    fake_hub.add("Qwen/Qwen2.5-0.5B-Instruct-GGUF", {"qwen-Q8_0.gguf": f})
    hf = hub_facts(HubRef("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen-Q8_0.gguf"))
    _same(hf.facts, local)
    gets = fake_hub.range_gets
    assert len(gets) >= 2 and all(q.range for q in gets)
    size = f.stat().st_size
    assert fake_hub.bytes_sent < size / 20, (fake_hub.bytes_sent, size)
    print(f"fetched {fake_hub.bytes_sent} bytes of a {size}-byte file (header {local.data_offset})")


def test_second_call_is_served_from_disk_cache(tmp_path: Path, fake_hub: FakeHub,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    f = ggufgen.write(tmp_path / "tiny-Q8_0.gguf", ggufgen.TINY["qwen3"])
    fake_hub.add("org/tiny-GGUF", {"tiny-Q8_0.gguf": f})
    first = hub_facts(HubRef("org/tiny-GGUF", quant="Q8_0"))
    fake_hub.reset_counts()
    again = hub_facts(HubRef("org/tiny-GGUF", quant="Q8_0"))
    assert again.from_cache and fake_hub.requests == []
    assert again.facts == first.facts and again.facts.metadata == first.facts.metadata
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: the cache still answers
    assert hub_facts(HubRef("org/tiny-GGUF", "tiny-Q8_0.gguf")).from_cache
    assert fake_hub.requests == []


# -- the real CLI: one clear line, no traceback --------------------------------------------------------------------


def _cli(hub: FakeHub, home: Path, *args: str, offline: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env.update(HF_ENDPOINT=hub.url, ADVISOR_HOME=str(home), NO_PROXY="127.0.0.1,localhost")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([ADVISOR, *args], capture_output=True, text=True, check=False, env=env, timeout=60)


def _one_line(r: subprocess.CompletedProcess[str], expect: str, code: int) -> None:
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("advisor: error: "), r.stderr
    assert expect in lines[0], lines[0]


def test_cli_estimate_hub_matches_local(tmp_path: Path, fake_hub: FakeHub) -> None:
    f = ggufgen.write(tmp_path / "tiny-Q8_0.gguf", ggufgen.TINY["gemma3"])
    fake_hub.add("org/tiny-GGUF", {"tiny-Q8_0.gguf": f})
    r = _cli(fake_hub, tmp_path / "home", "estimate", "org/tiny-GGUF:Q8_0", "--json", "--ctx", "2048")
    assert r.returncode == 0, r.stderr
    hub = json.loads(r.stdout)
    local = json.loads(_cli(fake_hub, tmp_path / "home", "estimate", str(f), "--json", "--ctx", "2048").stdout)
    assert hub["total_bytes"] == local["total_bytes"] and hub["devices"] == local["devices"]
    assert hub["model"]["repo"] == "org/tiny-GGUF" and hub["model"]["repo_files"] == ["tiny-Q8_0.gguf"]


def test_cli_errors_are_one_line(tmp_path: Path, fake_hub: FakeHub) -> None:
    good = ggufgen.write(tmp_path / "good.gguf", ggufgen.TINY["llama"])
    notgguf = tmp_path / "readme.gguf"
    notgguf.write_bytes(b"<html>not a model</html>" * 10)
    cut_header = tmp_path / "cut-header.gguf"
    cut_header.write_bytes(good.read_bytes()[:3000])
    cut_data = tmp_path / "cut-data.gguf"
    cut_data.write_bytes(good.read_bytes()[:-100])
    v1 = tmp_path / "v1.gguf"
    v1.write_bytes(b"GGUF" + (1).to_bytes(4, "little") + good.read_bytes()[8:4000])
    fake_hub.add("org/r", {"good.gguf": good, "readme.gguf": notgguf, "cut-header.gguf": cut_header,
                           "cut-data.gguf": cut_data, "v1.gguf": v1})
    home = tmp_path / "home"
    _one_line(_cli(fake_hub, home, "estimate", "org/r", "--file", "readme.gguf"), "not a GGUF file", 2)
    _one_line(_cli(fake_hub, home, "estimate", "org/r", "--file", "cut-header.gguf"), "truncated", 2)
    _one_line(_cli(fake_hub, home, "estimate", "org/r", "--file", "cut-data.gguf"), "truncated", 2)
    _one_line(_cli(fake_hub, home, "estimate", "org/r", "--file", "v1.gguf"), "unsupported GGUF version 1", 2)
    _one_line(_cli(fake_hub, home, "estimate", "org/missing", "--file", "good.gguf"),
              "repository not found: org/missing", 4)
    _one_line(_cli(fake_hub, home, "estimate", "org/r", "--file", "nope.gguf"), "nope.gguf is not in org/r", 4)
    _one_line(_cli(fake_hub, home, "estimate", "org/r", "--file", "good.gguf", "--revision", "v9"),
              "revision not found", 4)
    _one_line(_cli(fake_hub, home, "estimate", "org/r", "--file", "good.gguf", offline=True), "HF_HUB_OFFLINE", 4)
    # nothing listens there any more: no network
    dead = FakeHub()
    dead.server.server_close()
    _one_line(_cli(dead, tmp_path / "home2", "estimate", "org/r", "--file", "good.gguf"), "cannot reach the Hub", 4)


def test_recommend_plans_a_hub_gguf_outside_the_catalog(tmp_path: Path, fake_hub: FakeHub) -> None:
    f = ggufgen.write(tmp_path / "tiny-Q8_0.gguf", ggufgen.TINY["llama"])
    fake_hub.add("someone/not-in-catalog-GGUF", {"tiny-Q8_0.gguf": f})
    home = tmp_path / "home"
    prof = _cli(fake_hub, home, "probe", "--json")
    assert prof.returncode == 0, prof.stderr
    (tmp_path / "p.json").write_text(prof.stdout)
    r = _cli(fake_hub, home, "recommend", "--model", "someone/not-in-catalog-GGUF:Q8_0", "--hardware",
             str(tmp_path / "p.json"), "--json")
    assert r.returncode == 0, r.stderr
    model = json.loads(r.stdout)["plans"][0]["model"] if "plans" in json.loads(r.stdout) else None
    assert model is not None, r.stdout[:500]
    assert model["repo"] == "someone/not-in-catalog-GGUF" and model["files"] == ["tiny-Q8_0.gguf"]
    assert model["path"] is None and model["revision"] == fake_hub.repos["someone/not-in-catalog-GGUF"].sha
    plan = json.loads(r.stdout)["plans"][0]  # the engine command names the Hub file, not a local path
    hub_file = {"llama-server": ["-hfr", "someone/not-in-catalog-GGUF", "-hff", "tiny-Q8_0.gguf"],
                "llama-cpp-python": ["--hf_model_repo_id", "someone/not-in-catalog-GGUF", "--model", "tiny-Q8_0.gguf"]}
    assert plan["args"][:4] == hub_file[plan["engine"]["name"]]
