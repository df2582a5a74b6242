"""Copy every artifact of one store into another, verified: ``fdshpo store backup|restore``.

Each artifact is read with its sha256 checked (a corrupt one is reported and not copied) and
written with the destination's write-once rule: an artifact already there with the same bytes is
skipped, one with different bytes is a conflict (reported, never overwritten). Pointers that
are meant to move (an experiment's ``latest.json``) are copied over the destination's. So a
backup can be refreshed into the same folder, and a restore never replaces finished runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import ArtifactExists, ArtifactStore, IntegrityError
from .layout import is_pointer


@dataclass
class MirrorReport:
    """What :func:`mirror` did, key by key."""

    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.conflicts or self.corrupt)


def mirror(source: ArtifactStore, destination: ArtifactStore, prefix: str = "") -> MirrorReport:
    """Copy the artifacts of ``source`` under ``prefix`` into ``destination``.

    Store errors other than a corrupt source artifact or a write-once conflict (an unreachable
    store, refused keys) are raised after the stores' own retries."""
    report = MirrorReport()
    for key in source.list(prefix):
        try:
            data = source.get_bytes(key)
        except IntegrityError:
            report.corrupt.append(key)
            continue
        if destination.exists(key) and destination.checksum(key) == source.checksum(key):
            report.unchanged.append(key)
            continue
        try:
            destination.put_bytes(key, data, overwrite=is_pointer(key))
        except ArtifactExists:
            report.conflicts.append(key)
            continue
        report.copied.append(key)
    return report
