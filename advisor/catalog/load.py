"""Loading the catalog in use: the shipped TOML files (advisor.catalog.model parses them), then the user's overlay
(advisor.catalog.overlay: measured sizes and models added by the user) over them."""

from __future__ import annotations

from pathlib import Path

from advisor.catalog import overlay as user_overlay
from advisor.catalog.model import Catalog, CatalogError, Model, QuantFile, _build, _read_toml, load_model_file
from advisor import settings
from advisor.catalog.scale import ScaleFile


def load_catalog(data_dir: Path | None = None, overlay: bool = True) -> Catalog:
    """Load every ``models/*.toml`` and ``quants.toml`` under ``data_dir`` (default: the catalog of
    advisor.settings.data_dir), then the user overlay (measured sizes, user models) unless ``overlay`` is False."""
    d = Path(data_dir) if data_dir is not None else settings.data_dir() / "catalog"
    files = sorted((d / "models").glob("*.toml"))
    if not files:
        raise CatalogError(f"no catalog files under {d / 'models'}")
    models: list[Model] = []
    ids: dict[str, str] = {}
    for path in files:
        for m in load_model_file(path).model:
            if m.id in ids:
                raise CatalogError(f"{path.name}: model id {m.id!r} already defined in {ids[m.id]}")
            ids[m.id] = path.name
            models.append(m)
    for m in models:
        for succ in m.superseded_by:
            if succ not in ids:
                raise CatalogError(f"{ids[m.id]}: {m.id} is superseded_by {succ!r}, which is not a catalog model")
    quants = _build(QuantFile, _read_toml(d / "quants.toml"), "quants.toml")
    user_ids: frozenset[str] = frozenset()
    if overlay:
        path = user_overlay.overlay_path()
        if path.exists():
            ov = user_overlay.load_overlay(path)
            if ov is not None:
                models, user_ids = user_overlay.apply(models, ov, str(path))
    return Catalog(models=tuple(models), quants=quants, data_dir=d, user_ids=user_ids, scales=_scales(d))


def _scales(d: Path) -> ScaleFile:
    """catalog/scales.toml: one quality scale per task (advisor.catalog.scale)."""
    sf: ScaleFile = _build(ScaleFile, _read_toml(d / "scales.toml"), "scales.toml")
    tasks = {s.task for s in sf.scale}
    for s in sf.scale:
        if bool(s.primary) == bool(s.same_as):
            raise CatalogError(f"scales.toml: scale {s.task!r} needs either primary metrics or same_as")
        if s.same_as and s.same_as not in tasks:
            raise CatalogError(f"scales.toml: scale {s.task!r} borrows {s.same_as!r}, which has no scale")
    return sf
