"""Run records in an artifact store: writing them, reading them back, finding them.

    recorder     RunRecorder: a run's records, checkpoints, report and index entry, written
    checkpoint   outer and inner checkpoints, and resuming from them
    reader       listing, loading and comparing runs (no torch)
    index        the run index: one segment per finished run (no torch)
    query        the --where / --sort language over index entries (no torch)
    reindex      rebuilding and verifying the index (no torch)
    selection    which outer step a run returned, its val loss, the engine that ran (no torch)
    overview     the experiments overview page (no torch)

Reading paths import no torch; the public names of :mod:`fdshpo.tracking.recorder` are
imported on first use.
"""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "RunRecorder": "recorder", "new_run_id": "recorder", "latest_finished": "recorder",
    "latest_schedule": "recorder", "check_no_credentials": "recorder",
})
