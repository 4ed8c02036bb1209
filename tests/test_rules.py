"""rules/: schema, the closed vocabulary of predicates and parameters (both ways), reasons and sources."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from advisor.rules import OTHER_TABLES, PARAMETERS, PREDICATES, RuleError, Subject, load_rules

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RULES = Path(__file__).resolve().parent.parent / "rules"


def _rule_tables():
    for path in sorted(RULES.glob("*.toml")):
        if path.name in OTHER_TABLES or path.name == "gpus.toml":
            continue
        yield path, tomllib.loads(path.read_text())


def test_rules_load():
    rules = load_rules(RULES)
    assert rules.rules and rules.gpus


def test_every_predicate_used_is_registered_and_every_registered_one_is_used():
    used = {name for _, data in _rule_tables() for rule in data["rule"] for name in rule.get("when", {})}
    assert used <= set(PREDICATES), used - set(PREDICATES)
    assert set(PREDICATES) <= used, f"registered but unused: {set(PREDICATES) - used}"


def test_every_parameter_set_is_known_and_every_known_one_is_set():
    used = {name for _, data in _rule_tables() for rule in data["rule"] for name in rule.get("set", {})}
    assert used == set(PARAMETERS), (used ^ set(PARAMETERS))


def test_every_rule_has_a_reason_and_a_source():
    for path, data in _rule_tables():
        for rule in data["rule"]:
            assert rule["reason"].strip() and rule["source"].strip(), (path.name, rule["id"])


def test_every_parameter_has_a_catch_all():
    load_rules(RULES).resolve(Subject())  # raises RuleError if a parameter has no default rule


@pytest.mark.parametrize("bad, message", [
    ('[[rule]]\nid = "x"\nreason = "r"\nsource = "s"\nwhen = { no_such = 1 }\n', "unknown predicate"),
    ('[[rule]]\nid = "x"\nreason = "r"\nsource = "s"\nset = { no_such = 1 }\n', "unknown parameter"),
    ('[[rule]]\nid = "x"\nreason = "r"\nsource = "s"\nextra = 1\n', "unknown (field|key)"),
    ('[[rule]]\nid = "x"\nreason = "r"\nsource = "s"\nset = { ctx_floor = "big" }\n', "must be int"),
    ('[[rule]]\nid = "x"\nreason = ""\nsource = "s"\n', "reason and a source"),
])
def test_bad_rules_are_refused(tmp_path, bad, message):
    (tmp_path / "x.toml").write_text("schema = 1\n" + bad)
    with pytest.raises(RuleError, match=message):
        load_rules(tmp_path)


def test_gpu_table_gives_compute_capability_by_name():
    rules = load_rules(RULES)
    assert rules.gpu_spec("Tesla T4", "nvidia").compute_capability == "7.5"
    assert rules.gpu_spec("NVIDIA A100-SXM4-80GB MIG device 0", "nvidia").compute_capability == "8.0"
    assert rules.gpu_spec("NVIDIA GeForce RTX 3060", "nvidia").compute_capability == "8.6"
    assert all(g.source for g in rules.gpus)


#: GPUs of the recordings (tests/data) and the common 2020-2026 GPUs as their drivers name them: each must be
#: known by a datasheet row of rules/gpus.toml, never by the catch-all.
COMMON_GPUS = [
    ("NVIDIA GeForce RTX 2080 SUPER", "nvidia"), ("NVIDIA GeForce RTX 2080", "nvidia"), ("Tesla T4", "nvidia"),
    ("NVIDIA GeForce RTX 3060", "nvidia"), ("NVIDIA GeForce RTX 3090", "nvidia"), ("NVIDIA L40S", "nvidia"),
    ("NVIDIA GeForce RTX 4080 SUPER", "nvidia"), ("NVIDIA H100 80GB HBM3", "nvidia"),
    ("NVIDIA A100-SXM4-80GB MIG device 0", "nvidia"), ("NVIDIA RTX 4000 SFF Ada Generation", "nvidia"),
    ("NVIDIA GeForce GTX 1660 Ti", "nvidia"), ("Arcturus GL-XL [Instinct MI100]", "amd"),
    ("Navi 22 [Radeon RX 6700/6700 XT / 6800M]", "amd"), ("Vega 20 WKS GL-XE [Radeon Pro VII]", "amd"),
    ("Apple M1", "apple"), ("Apple M2", "apple"), ("Apple M3 Max", "apple"),
    ("NVIDIA GeForce RTX 5090", "nvidia"), ("NVIDIA GeForce RTX 5060 Ti", "nvidia"),
    ("NVIDIA GeForce RTX 4090 Laptop GPU", "nvidia"), ("NVIDIA GeForce RTX 4060", "nvidia"),
    ("NVIDIA GeForce RTX 3070", "nvidia"), ("NVIDIA GeForce RTX 2060", "nvidia"), ("NVIDIA RTX A6000", "nvidia"),
    ("NVIDIA RTX 6000 Ada Generation", "nvidia"), ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "nvidia"),
    ("NVIDIA A10", "nvidia"), ("NVIDIA L4", "nvidia"), ("NVIDIA A100-PCIE-40GB", "nvidia"),
    ("NVIDIA H100 PCIe", "nvidia"), ("NVIDIA H200", "nvidia"), ("NVIDIA B200", "nvidia"),
    ("NVIDIA Jetson AGX Orin", "nvidia"), ("Orin (nvgpu)", "nvidia"), ("NVIDIA Thor", "nvidia"),
    ("AMD Instinct MI300X", "amd"), ("AMD Instinct MI355X", "amd"), ("AMD Instinct MI250X", "amd"),
    ("AMD Radeon RX 7900 XTX", "amd"), ("AMD Radeon RX 9070 XT", "amd"), ("AMD Radeon RX 6800 XT", "amd"),
    ("Intel(R) Arc(TM) B580 Graphics", "intel"), ("Intel(R) Arc(TM) A770 Graphics", "intel"),
    ("Apple M4 Max", "apple"), ("Apple M4 Pro", "apple"), ("Apple M2 Ultra", "apple"), ("Apple M5", "apple"),
]


@pytest.mark.parametrize("name, vendor", COMMON_GPUS)
def test_gpu_table_knows_the_recorded_and_common_gpus(name, vendor):
    spec = load_rules(RULES).gpu_spec(name, vendor)
    assert spec is not None and not spec.derived and spec.vendor == vendor, (name, spec)
    assert spec.bandwidth_gbs > 50 and spec.source and "fallback" not in spec.source


def test_gpu_table_rows_by_datasheet():
    """Spot checks against the vendors' pages (rules/gpus.toml sources): the tier and the core count matter."""
    rules = load_rules(RULES)
    assert rules.gpu_spec("Apple M4 Max", "apple", cores=40).bandwidth_gbs == 546.0
    assert rules.gpu_spec("Apple M4 Max", "apple", cores=32).bandwidth_gbs == 410.0
    assert rules.gpu_spec("Apple M4 Max", "apple").bandwidth_gbs == 410.0  # unknown cores: the lower tier
    assert rules.gpu_spec("NVIDIA H200", "nvidia").bandwidth_gbs == 4800.0
    assert rules.gpu_spec("NVIDIA RTX A6000", "nvidia").bandwidth_gbs == 768.0
    assert rules.gpu_spec("NVIDIA L40", "nvidia").bandwidth_gbs == 864.0  # not L4 (300)
    assert rules.gpu_spec("NVIDIA L4", "nvidia").bandwidth_gbs == 300.0
    assert rules.gpu_spec("NVIDIA GeForce RTX 4070 Ti SUPER", "nvidia").bandwidth_gbs == 672.0
    assert rules.gpu_spec("Navi 22 [Radeon RX 6700/6700 XT / 6800M]", "amd").bandwidth_gbs == 384.0


@pytest.mark.parametrize("name, vendor, bandwidth, tflops", [
    # names that an earlier, more generic row used to take (vendors' datasheets, as rules/gpus.toml cites them)
    ("NVIDIA RTX A1000", "nvidia", None, None),  # no A100 row: its name contains "A100"
    ("NVIDIA H800 PCIe", "nvidia", 2000.0, 756.0),  # the PCIe H100 board, not the SXM module
    ("NVIDIA H800", "nvidia", 3350.0, 989.0),
    ("NVIDIA H200 NVL", "nvidia", 4800.0, 835.0),  # 600 W: 1,671 sparse TFLOPS against the SXM's 1,979
    ("NVIDIA GeForce RTX 5080 Laptop GPU", "nvidia", 896.0, None),  # 256-bit 28 Gbps, not the desktop's 960
    ("NVIDIA GeForce RTX 5070 Laptop GPU", "nvidia", 384.0, None),  # 128-bit 24 Gbps, not the desktop's 672
    ("Tesla V100-PCIE-32GB", "nvidia", 900.0, 113.0),  # 1.38 GHz boost against the SXM2 module's 1.53
    ("Orin (nvgpu)", "nvidia", 102.4, 15.0),  # the GPU's 8 SMs, not the module's TOPS with its DLAs
    ("AMD Instinct MI300A", "amd", 5300.0, 980.6),  # 228 CUs against the MI300X's 304
    ("AMD Radeon RX 9070 XT", "amd", 640.0, 195.0),  # RDNA4: 1024 dense FP16 WMMA FLOPs per CU-clock
    ("AMD Radeon RX 6800", "amd", 512.0, 32.3),  # 60 CUs, not the 6800 XT's 72
    ("AMD Radeon RX 6600", "amd", 224.0, 17.9),  # 28 CUs at 14 Gbps, not the 6600 XT
    ("Radeon RX Vega 56", "amd", 409.6, 21.1),
])
def test_gpu_rows_a_generic_row_used_to_take(name, vendor, bandwidth, tflops):
    spec = load_rules(RULES).gpu_spec(name, vendor)
    if bandwidth is None and tflops is None:
        assert spec is None or spec.derived or "A100" not in spec.match, (name, spec and spec.match)
        return
    assert spec is not None and not spec.derived, name
    assert bandwidth is None or spec.bandwidth_gbs == bandwidth, (name, spec.match)
    assert tflops is None or spec.fp16_tflops == tflops, (name, spec.match)


def test_titan_rtx_figure_is_not_doubled():
    """TITAN RTX (full TU102) runs FP16 with FP32 accumulate at the full rate: its 130 TFLOPS is not a GeForce
    half-rate figure (NVIDIA Turing whitepaper: 130.5 either way)."""
    from advisor.planner.speed import fp16_accumulate_tflops

    rules = load_rules(RULES)
    spec = rules.gpu_spec("NVIDIA TITAN RTX", "nvidia")
    match = rules.resolve(Subject())["fp32_accumulate_figure_match"]
    assert fp16_accumulate_tflops(spec.fp16_tflops, "NVIDIA TITAN RTX", match) == 130.0


def test_every_gpu_row_is_reachable_and_sourced():
    """No row hides behind an earlier, more generic one: each row's own first name example (its match with the
    regex syntax stripped) resolves to a row with the same bandwidth."""
    import re as _re

    rules = load_rules(RULES)
    for spec in rules.gpus:
        assert spec.source.strip()
        if spec.derived:
            continue
        first = _re.sub(r"\[(.)[^\]]*\]", r"\1", spec.match.split("|")[0])  # a class: its first member
        example = _re.sub(r"\\b|[\\^$()?]", "", first).replace(".*", " ")
        got = rules.gpu_spec(example, spec.vendor, spec.cores_at_least)
        assert got is not None and got.bandwidth_gbs == spec.bandwidth_gbs, (spec.match, example, got and got.match)


@pytest.mark.parametrize("model, memory", [
    ("AMD EPYC 7763 64-Core Processor", "server"),  # AMD EPYC 7003 product page: 8 DDR4 channels
    ("Intel(R) Xeon(R) Platinum 8480+", "server"),  # Intel ARK: 8 DDR5 channels
    ("Intel(R) Core(TM) Ultra 9 285", "ddr5"),  # Intel ARK: 24 cores, DDR5-6400, 2 channels
    ("AMD Ryzen 9 7950X 16-Core Processor", "ddr5"),  # AMD product page: AM5, DDR5 only, 2 channels
    ("13th Gen Intel(R) Core(TM) i9-13900K", "unknown"),  # Intel ARK: 24 cores, DDR4 or DDR5, 2 channels
    ("Intel(R) Xeon(R) E-2388G CPU @ 3.20GHz", "unknown"),  # Intel ARK: DDR4, 2 channels
    ("AMD Ryzen 5 7530U with Radeon Graphics", "unknown"),  # AMD product page: Zen 3, DDR4
])
def test_cpu_bandwidth_follows_the_memory_system_not_the_core_count(model, memory):
    """The CPU bandwidth default goes with the platform's memory channels and generation, which the model name
    tells and the core count does not: server parts above DDR5-only client parts above the rest, whatever the
    cores."""
    r = load_rules()
    got = r.resolve(Subject(cpu_model=model, physical_cores=24))["cpu_bandwidth_gbs"]
    rank = {"server": 3, "ddr5": 2, "unknown": 1}
    others = {m: r.resolve(Subject(cpu_model=n, physical_cores=24))["cpu_bandwidth_gbs"] for m, n in
              (("server", "AMD EPYC 9654"), ("ddr5", "Intel(R) Core(TM) Ultra 7 155H"), ("unknown", ""))}
    for kind, bw in others.items():
        assert (got > bw) == (rank[memory] > rank[kind]) and (got == bw) == (memory == kind), (model, kind)
