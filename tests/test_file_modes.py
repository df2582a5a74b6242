"""Files fdshpo writes for others to read are 0644 (a store's pages are a static site; a
fetched file is shared), whatever the process's umask."""

from __future__ import annotations

import os
import stat

from fdshpo.store import open_store
from fdshpo.store.base import ARTIFACT_MODE


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_store_artifacts_and_fetched_files_are_world_readable(tmp_path):
    old = os.umask(0o077)  # a strict umask: mkstemp's 0600 is what a user would get
    try:
        store = open_store(tmp_path / "store")
        store.put_bytes("experiments/e/runs/r/report.html", b"<html></html>")
        store.put_bytes("overview.html", b"<html>1</html>", overwrite=True)
        fetched = store.get_file("overview.html", tmp_path / "copy" / "overview.html")
    finally:
        os.umask(old)
    assert ARTIFACT_MODE == 0o644
    assert _mode(tmp_path / "store" / "experiments/e/runs/r/report.html") == 0o644
    assert _mode(tmp_path / "store" / "overview.html") == 0o644
    assert _mode(fetched) == 0o644

