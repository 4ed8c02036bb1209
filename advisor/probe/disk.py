"""Free space where models will be stored (huggingface_hub's cache directory), not of "/"."""

from __future__ import annotations

from advisor import settings
from advisor.probe.profile import Disk
from advisor.system import System


def detect(system: System) -> Disk:
    path = settings.model_cache_dir(system.env)
    if not system.live:
        # A replayed machine's disk is not on this one; report where models would go and nothing else.
        return Disk(path=str(path))
    usage = system.disk_usage(path)
    if usage is None:
        return Disk(path=str(path))
    total, free = usage
    return Disk(path=str(path), free_bytes=free, total_bytes=total)
