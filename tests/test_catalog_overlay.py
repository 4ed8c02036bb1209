"""The user catalog overlay: ``advisor catalog refresh`` against tests/fake_hub.py (the real
huggingface_hub client), ``advisor catalog add`` from a local GGUF, the fake Hub and a config.json directory, and
strict loading of a malformed overlay. Every command runs as the real installed CLI in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from advisor.catalog.load import load_catalog
from advisor.catalog.model import sized_variants
from advisor.settings import data_dir
from advisor.catalog.overlay import overlay_path
from tests import ggufgen
from tests.fake_hub import FakeHub, fake_hub_fixture  # noqa: F401 - the fake_hub fixture

ADVISOR = shutil.which("advisor", path=str(Path(sys.executable).parent)) or "advisor"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ADVISOR, *args], capture_output=True, text=True, check=False, timeout=120,
                          env={**os.environ, "NO_PROXY": "127.0.0.1,localhost", **(env or {})})


def _packaged_digest() -> str:
    h = hashlib.sha256()
    for p in sorted((data_dir() / "catalog").rglob("*")):
        if p.is_file():
            h.update(str(p).encode() + p.read_bytes())
    return h.hexdigest()


def _target() -> tuple[str, str, list[tuple[str, str]]]:
    """A catalog model with derived single-file GGUF variants: (id, repo, [(quant, file)] of two of them)."""
    for m in load_catalog(overlay=False).models:
        vs = [sv.variant for sv in sized_variants(m) if sv.variant.format == "gguf"
              and sv.size_source == "derived" and len(sv.variant.files) == 1]
        repos = {v.repo for v in vs}
        for repo in sorted(repos):
            mine = [v for v in vs if v.repo == repo]
            if len(mine) >= 2:
                return m.id, repo, [(v.quant, v.files[0]) for v in mine[:2]]
    raise AssertionError("no catalog model with two derived GGUF variants")


def test_refresh_records_measured_sizes_in_the_overlay(tmp_path: Path, fake_hub: FakeHub) -> None:
    model_id, repo, variants = _target()
    files = {}
    for i, (quant, name) in enumerate(variants):
        files[name] = ggufgen.write(tmp_path / f"f{i}.gguf", ggufgen.TINY["llama"])
    fake_hub.add(repo, files)
    before = _packaged_digest()
    r = run("catalog", "refresh", model_id, "--json")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    measured = {v["quant"]: v for v in doc["variants"] if v["status"] == "measured"}
    assert set(measured) == {q for q, _ in variants}
    assert any(v["status"].startswith("not on the Hub") for v in doc["variants"])  # the repo's other quants
    # the tiny files are not the catalog's architecture: the header check says where they differ
    assert doc["architecture_mismatches"] and "n_layer" in " ".join(doc["architecture_mismatches"][0]["differences"])
    assert _packaged_digest() == before
    assert overlay_path().exists()
    show = json.loads(run("catalog", "show", model_id, "--json").stdout)
    for quant, name in variants:
        v = next(v for v in show["variants"] if v["quant"] == quant and v["repo"] == repo)
        assert v["size_source"] == "measured" and v["size_bytes"] == files[name].stat().st_size
        assert v["size_where"].startswith("advisor catalog refresh ") and "from the Hub listing" in v["size_where"]
    # one listing call for the repo, range requests for one header, nothing else
    listings = [q for q in fake_hub.requests if q.path.startswith("/api/models/")]
    assert len(listings) == 1
    assert all(q.range for q in fake_hub.range_gets)


def test_refresh_offline_changes_nothing(tmp_path: Path) -> None:
    model_id, _, _ = _target()
    r = run("catalog", "refresh", model_id, env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 4 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "HF_HUB_OFFLINE" in lines[0] and "nothing refreshed" in lines[0]
    assert not overlay_path().exists()


def _profile(tmp_path: Path) -> Path:
    p = tmp_path / "profile.json"
    r = run("probe", "--json")
    assert r.returncode == 0, r.stderr
    p.write_text(r.stdout)
    return p


@pytest.mark.engine  # needs llama-cpp-python installed (its run path starts or names that engine)
def test_add_local_gguf_then_list_and_recommend(tmp_path: Path) -> None:
    f = ggufgen.write(tmp_path / "mymodel-Q8_0.gguf",
                      ggufgen.Spec("llama", n_layer=3, n_embd=128, n_head=4, n_head_kv=2, n_ff=256, n_vocab=1000,
                                   wtype=ggufgen.T.Q8_0, extra_kv=(("general.license", "apache-2.0"),)))
    r = run("catalog", "add", str(f), "--id", "my-model", "--task", "code", "--task", "chat")
    assert r.returncode == 0, r.stderr
    listed = json.loads(run("catalog", "list", "--json").stdout)["models"]
    mine = next(m for m in listed if m["id"] == "my-model")
    assert mine["user"] and mine["tasks"] == ["code", "chat"] and mine["architecture"] == "llama"
    assert mine["license"] == "apache-2.0" and mine["quants"] == ["Q8_0"]
    assert "(user)" in run("catalog", "list").stdout
    show = json.loads(run("catalog", "show", "my-model", "--json").stdout)
    assert show["scores_missing"] == "user-added model" and show["variants"][0]["size_bytes"] == f.stat().st_size
    assert show["architecture"]["n_layer"] == 3
    rec = run("recommend", "--model", "my-model", "--hardware", str(_profile(tmp_path)), "--json")
    assert rec.returncode == 0, rec.stderr
    assert "my-model" in rec.stdout
    # advisor run finds the added model where it is on disk, never on the Hub.
    dry = run("run", "my-model", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert str(f) in json.loads(dry.stdout)["argv"]
    again = run("catalog", "add", str(f), "--id", "my-model")
    assert again.returncode == 2 and "already in the overlay" in again.stderr


def test_add_from_the_hub(tmp_path: Path, fake_hub: FakeHub) -> None:
    f = ggufgen.write(tmp_path / "x.gguf", ggufgen.TINY["qwen3moe"])
    fake_hub.add("someone/Tiny-MoE-GGUF", {"Tiny-MoE-Q8_0.gguf": f, "Tiny-MoE-F16.gguf": f})
    r = run("catalog", "add", "someone/Tiny-MoE-GGUF:Q8_0", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    m = doc["model"]
    assert m["repo"] == "someone/Tiny-MoE-GGUF" and m["variants"][0]["files"] == ["Tiny-MoE-Q8_0.gguf"]
    assert m["arch"]["name"] == "qwen3moe" and m["arch"]["n_expert"] == 8 and m["license"] == "unknown"
    assert 0 < m["params_active_b"] < m["params_total_b"]
    cat = load_catalog()
    assert doc["id"] in cat.user_ids and cat.get(doc["id"]).variants[0].size_bytes == f.stat().st_size


def test_add_from_a_config_json_directory(tmp_path: Path) -> None:
    d = tmp_path / "TinyLlama"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 300, "max_position_embeddings": 2048,
        "tie_word_embeddings": False}))
    header = json.dumps({"model.embed_tokens.weight": {"dtype": "BF16", "shape": [300, 64],
                                                        "data_offsets": [0, 38400]}}).encode()
    (d / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(38400))
    r = run("catalog", "add", str(d), "--task", "chat")
    assert r.returncode == 0, r.stderr
    show = json.loads(run("catalog", "show", "tinyllama", "--json").stdout)
    assert show["user"] and show["architecture"]["n_layer"] == 2 and show["context_native"] == 2048
    v = show["variants"][0]
    assert v["format"] == "safetensors" and v["quant"] == "bf16" and v["size_source"] == "measured"


@pytest.mark.parametrize("text, expect", [
    ("{not json", "not valid JSON"),
    ('{"schema": 1, "sizes": [{"model": "x"}]}', "missing"),
    ('{"schema": 1, "sizes": [], "extra": 1}', "extra"),
])
def test_malformed_overlay_is_one_clear_line(text: str, expect: str) -> None:
    p = overlay_path()
    p.parent.mkdir(parents=True)
    p.write_text(text)
    r = run("catalog", "list", "--json")
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(p) in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert expect in lines[0].lower() or expect in lines[0], lines[0]


# --------------------------------------------------------------------------------------------------------------------
# Discovery: new repositories of trusted publishers from the Hub's model list (tests/fake_hub.py /api/models)


def test_refresh_discovers_new_publisher_repos(tmp_path: Path, fake_hub: FakeHub) -> None:
    new = ggufgen.write(tmp_path / "new.gguf", ggufgen.TINY["llama"])
    odd = ggufgen.write(tmp_path / "odd.gguf", ggufgen.TINY["gemma2"])
    fake_hub.add("bartowski/Brand-New-1B-GGUF", {"Brand-New-1B-Q8_0.gguf": new, "Brand-New-1B-Q4_K_M.gguf": new},
                 created_at="2026-03-02T10:00:00.000Z", downloads=5)
    fake_hub.add("bartowski/No-Gguf-Here", {"README.md": new}, created_at="2026-02-01T00:00:00.000Z")
    fake_hub.add("bartowski/Odd-Arch-GGUF", {"Odd-Arch-Q8_0.gguf": odd}, created_at="2025-12-01T00:00:00.000Z",
                 downloads=900)
    known = next(v.repo for v in load_catalog(overlay=False).get("qwen3-4b-instruct-2507").all_variants()
                 if v.repo.startswith("bartowski/"))
    fake_hub.add(known, {"x-Q8_0.gguf": new}, created_at="2026-04-01T00:00:00.000Z")
    env = {"HF_ENDPOINT": fake_hub.url, "ADVISOR_HOME": str(tmp_path / "home")}
    env.pop("HF_HUB_OFFLINE", None)
    r = run("catalog", "refresh", "--no-sizes", "--discover", "--publisher", "bartowski", "--json", env=env)
    assert r.returncode == 0, r.stderr
    out = {o["repo"]: o for o in json.loads(r.stdout)["discovered"]}
    assert out["bartowski/Brand-New-1B-GGUF"]["status"] == "added"
    assert out["bartowski/No-Gguf-Here"]["status"] == "skipped"
    assert known not in out  # the catalog has it already
    # the Hub was asked for the list newest-first and by downloads, and only headers were read
    lists = [q for q in fake_hub.requests if q.path == "/api/models"]
    assert len(lists) == 2
    assert all(q.range for q in fake_hub.range_gets)
    r = run("catalog", "list", "--json", env=env)
    assert r.returncode == 0, r.stderr
    row = next(m for m in json.loads(r.stdout)["models"] if m["id"] == out["bartowski/Brand-New-1B-GGUF"]["model_id"])
    assert row["from_hub"] and row["fetched"] and row["released"] == "2026-03"
    chat = row["scores"]["chat"]
    assert chat["imputed"] and chat["method"] == "size-date" and 0 < chat["normalized"] < 100
    r = run("catalog", "show", row["id"], "--json", env=env)
    variants = {v["quant"]: v for v in json.loads(r.stdout)["variants"]}
    assert set(variants) == {"Q8_0", "Q4_K_M"} and variants["Q8_0"]["size_bytes"] == new.stat().st_size


@pytest.mark.parametrize("model_id", ["glm-4.5-air", "deepseek-v3.1"])
def test_a_user_added_gguf_is_sized_like_its_file(model_id, tmp_path):
    """`advisor catalog add` keeps what sizes the model in llama.cpp: GLM-4.5's NextN block (its -ngl slots) and
    a split-MLA file's latent cache (the config's head sizes come from the *_mla keys, the latent back from
    q_lora_rank), so the planner's catalog facts give the file's KV and layer slots; and a header refresh reports
    no mismatch with the catalog entry."""
    from advisor.app.catalog import _mismatches
    from advisor.catalog.facts import facts_from_catalog
    from advisor.catalog.load import load_catalog
    from advisor.catalog.overlay import model_from_facts
    from advisor.gguf.estimate import Settings, estimate
    from advisor.gguf.facts import read_gguf_facts
    from tests import gguf_from_catalog

    path = gguf_from_catalog.write(tmp_path / "m.gguf", model_id, "Q4_K_M")
    file = read_gguf_facts(path)
    user = model_from_facts(file, model_id="user/m", repo="user/m", files=["m.gguf"], size_bytes=file.file_bytes,
                            quant="Q4_K_M", tasks=["chat"], source="test", date="2026-12-04")
    cat = facts_from_catalog(user, user.all_variants()[0])
    s = Settings(n_ctx=8192, n_parallel=1, n_gpus=1, backend="cuda", n_gpu_layers=20)
    assert cat.n_layer_all == file.n_layer_all
    assert [d.kv_cache_bytes for d in estimate(cat, s).devices] == [d.kv_cache_bytes for d in estimate(file, s).devices]
    assert _mismatches(load_catalog().get(model_id).arch, file) == []
