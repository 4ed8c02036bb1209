"""The composition every command that plans shares: hardware (probed or read back) -> catalog and rules ->
the pure planner -> plans. It does the I/O the planner must not (probe, files, learned settings), and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advisor.errors import HardwareFileError
from advisor.plan import Plan
from advisor.probe.profile import HardwareProfile

if TYPE_CHECKING:  # the planner loads when a command plans, not when this module is imported
    from advisor.catalog.model import Catalog
    from advisor.planner import Recommendation, Request
    from advisor.rules import Rules


def load_profile(path: Path) -> HardwareProfile:
    """A profile written by ``advisor probe --json`` (every command's ``--hardware FILE``)."""
    from advisor.strict import MAX_PROFILE_BYTES, load_json

    data = load_json(path, MAX_PROFILE_BYTES, HardwareFileError)  # regular files only, bounded, depth-checked
    return HardwareProfile.from_dict(data, where=str(path))


def hardware(path: Path | None) -> HardwareProfile:
    """The saved profile at ``path``, else this machine, probed now."""
    if path is not None:
        return load_profile(path)
    from advisor.probe import probe

    return probe()


def machine_key(profile: HardwareProfile) -> str:
    """The key learned settings are stored under (advisor.store.state): what makes one machine's results another's."""
    from advisor.store import state
    return state.machine_key(profile.cpu.model, [(g.name, g.memory_total_bytes) for g in profile.gpus])


def learned_for(profile: HardwareProfile, model_ids: list[str]) -> dict[str, Mapping[str, Any]]:
    """What worked before on this machine, per model id (only those with a record)."""
    from advisor.store import state
    key = machine_key(profile)
    found = {}
    for model_id in model_ids:
        settings = state.learned_settings(key, model_id)
        if settings:
            found[model_id] = settings
    return found


def is_local_gguf(model: str | None) -> bool:
    return bool(model) and (model.endswith(".gguf") or Path(model).is_file())


@dataclass(frozen=True)
class Advice:
    plans: list[Plan]
    #: The planner's full answer for catalog models (None for a local GGUF file): rejections, why-not, notes.
    recommendation: Recommendation | None = None
    notes: list[str] = field(default_factory=list)


def with_engines(request: Request, profile: HardwareProfile, here: bool, python: str | None = None) -> Request:
    """``request`` with the engines of the machine planned for (advisor.app.engines), unless it names its own."""
    import dataclasses

    from advisor.app import engines

    if request.engines:
        return request
    return dataclasses.replace(request, engines=engines.choose(profile, here=here, python=python))


def advise(profile: HardwareProfile, request: Request, here: bool = False, python: str | None = None,
           measurements: bool = True) -> Advice:
    """Plans for ``request`` on ``profile`` (``here``: this machine, probed now), best first; raises
    NothingFitsError when a single model was asked for and does not fit. A local .gguf file is planned from its own
    header. Plans are built for the engines the machine runs (``with_engines``). With ``measurements``, speeds come
    from what ``advisor bench`` measured on this machine where it did (advisor.app.bench.apply_measurements)."""
    advice = _advise(profile, request, here, python)
    if measurements and advice.plans:
        from advisor.app.bench import apply_measurements
        import dataclasses
        advice = dataclasses.replace(advice, plans=apply_measurements(profile, advice.plans))
    return advice


def _advise(profile: HardwareProfile, request: Request, here: bool, python: str | None) -> Advice:
    from advisor.planner import plan_for_gguf
    from advisor.planner import recommend as plan_recommend
    from advisor.rules import load_rules

    request = with_engines(request, profile, here, python)
    rules = load_rules()
    if is_local_gguf(request.model):
        from advisor.gguf.facts import read_gguf_facts

        return Advice([plan_for_gguf(profile, rules, read_gguf_facts(request.model), request)])
    from advisor.catalog.load import load_catalog

    catalog = load_catalog()
    if request.model and _hub_gguf_outside_catalog(catalog, request.model):
        return Advice([_plan_hub_gguf(profile, rules, request)])
    learned = learned_for(profile, [m.id for m in catalog.models]) or None
    rec = plan_recommend(profile, catalog, rules, request, learned)
    return Advice(rec.plans, rec, list(rec.notes))


def _hub_gguf_outside_catalog(catalog: Catalog, model: str) -> bool:
    """A Hub reference (org/repo[:QUANT], org/repo/file.gguf) whose repo no catalog model or variant names: it is
    planned from its GGUF header like a local file (the catalog's own repos keep their curated plans)."""
    from advisor.hub.gguf import looks_like_hub_ref, parse_ref

    if not looks_like_hub_ref(model):
        return False
    repo = parse_ref(model).repo.lower()
    return not any(m.id == repo or m.repo.lower() == repo or any(v.repo.lower() == repo for v in m.all_variants())
                   for m in catalog.models)


def _plan_hub_gguf(profile: HardwareProfile, rules: Rules, request: Request) -> Plan:
    """plan_for_gguf over the header read from the Hub; the plan's ModelRef then names the repo, its files and the
    resolved commit instead of a path (advisor.hub.download.resolve fetches them at run time)."""
    import dataclasses

    from advisor.hub.gguf import hub_facts, parse_ref
    from advisor.planner import plan_for_gguf

    hub = hub_facts(parse_ref(request.model))
    plan = plan_for_gguf(profile, rules, hub.facts, request)
    from advisor.planner import assemble

    ref = dataclasses.replace(plan.model, id=hub.repo, path=None, repo=hub.repo, files=list(hub.files),
                              revision=hub.commit)
    args = assemble.plan_args(plan.engine_ref, plan.settings, ref, plan.sampling)  # the engine names the Hub file
    return dataclasses.replace(plan, model=ref, args=args, reasons=[r.replace(f"local file {hub.facts.path}",
                                                                   f"Hub file {hub.facts.path}")
                                                         for r in plan.reasons])
