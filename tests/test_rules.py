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
