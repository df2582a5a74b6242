"""Copy every artifact of one store into another, verified: ``fdshpo store backup|restore``.

Each artifact is read with its sha256 checked (a corrupt one is reported and not copied) and
written with the destination's write-once rule: an artifact already there with the same bytes is
skipped, one with different bytes is a conflict (reported, never overwritten). So a backup can be
refreshed into the same folder, and a restore never replaces finished runs.

The source may be live (runs writing, the index compacting, leases renewing):

- a key listed but gone when it is read (a compacted index entry, a superseded lease
  generation, a finished replica's inner checkpoints) is skipped and reported as ``vanished``;
- an experiment's ``latest.json`` only moves forward: it is copied when the destination has
  none, a damaged one, or one naming a run that finished earlier
  (:func:`~fdshpo.store.layout.moves_forward`), else kept and reported; pointers are copied
  after everything else, so one never names a run not yet copied;
- ``skip`` leaves keys out; a restore (:func:`restore_skips`) leaves out what describes writers
  at work in the source (run leases, the compactor's lease, inner checkpoints:
  :func:`~fdshpo.store.layout.is_live_state`) and the run index, which the restore command then
  rebuilds from the restored run folders, so that it lists exactly what they hold.

Any other store error (an unreachable store, refused keys) is raised after the stores' own
retries.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from .base import ArtifactExists, ArtifactNotFound, ArtifactStore, IntegrityError, sha256_hex
from .layout import INDEX, is_live_state, is_pointer, moves_forward


@dataclass
class MirrorReport:
    """What :func:`mirror` did, key by key."""

    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)   # listed, deleted before it was read
    kept: list[str] = field(default_factory=list)       # pointers newer in the destination
    skipped: list[str] = field(default_factory=list)    # left out by ``skip``

    @property
    def ok(self) -> bool:
        return not (self.conflicts or self.corrupt)


def restore_skips(key: str) -> bool:
    """What a restore leaves out: live state (:func:`~fdshpo.store.layout.is_live_state`) and
    the run index (rebuilt from the restored runs instead)."""
    return is_live_state(key) or key.startswith(f"{INDEX}/")


def mirror(source: ArtifactStore, destination: ArtifactStore, prefix: str = "",
           skip: Callable[[str], bool] | None = None) -> MirrorReport:
    """Copy the artifacts of ``source`` under ``prefix`` into ``destination`` (see the module
    docstring), pointers last."""
    report = MirrorReport()
    for key in sorted(source.list(prefix), key=lambda k: (is_pointer(k), k)):
        if skip is not None and skip(key):
            report.skipped.append(key)
            continue
        try:
            data = source.get_bytes(key)
        except ArtifactNotFound:
            report.vanished.append(key)
            continue
        except IntegrityError:
            report.corrupt.append(key)
            continue
        if destination.exists(key) and destination.checksum(key) == sha256_hex(data):
            report.unchanged.append(key)
            continue
        if is_pointer(key) and key.endswith("/latest.json"):
            try:
                ours = json.loads(data)
            except ValueError:
                ours = None
            if not isinstance(ours, dict):
                report.corrupt.append(key)
                continue
            # a compare-and-write: a finish racing the copy can never be moved back
            moved = destination.update_json(
                key, lambda current, ours=ours: ours if moves_forward(current, ours) else None)
            (report.copied if moved else report.kept).append(key)
            continue
        try:
            destination.put_bytes(key, data, overwrite=is_pointer(key))
        except ArtifactExists:
            report.conflicts.append(key)
            continue
        report.copied.append(key)
    return report
