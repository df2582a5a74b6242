"""A local directory as an artifact store (the embedded default, e.g. ``./fdshpo-store``).

Layout: the artifact ``key`` is the file ``ROOT/key`` (browsable as-is) and its sha256 is in
``ROOT/.sha256/key``. Writes go to a temporary file in the same directory and are renamed into
place (atomic on POSIX), the checksum before the data, so a crash never leaves a readable
artifact without its checksum.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .base import ArtifactNotFound, ArtifactStore, StoreError

_META = ".sha256"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStore(ArtifactStore):
    """Artifacts as files under ``root`` (created on first write)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"store path {self.root} exists and is not a directory; "
                             "give a directory path")
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / key

    def _meta(self, key: str) -> Path:
        return self.root / _META / key

    def _raw_put(self, key: str, data: bytes, sha256: str) -> None:
        try:
            _atomic_write(self._meta(key), sha256.encode())
            _atomic_write(self._path(key), data)
        except OSError as exc:
            raise StoreError(f"cannot write {key!r} under {self.root}: {exc.strerror}; "
                             "check the path and its permissions") from None

    def _raw_get(self, key: str) -> tuple[bytes, str | None]:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ArtifactNotFound(f"{self.uri}: no artifact {key!r}") from None
        return data, self._read_meta(key)

    def _read_meta(self, key: str) -> str | None:
        try:
            return self._meta(key).read_text().strip() or None
        except FileNotFoundError:
            return None

    def _raw_checksum(self, key: str) -> str | None:
        if not self._path(key).is_file():
            raise ArtifactNotFound(f"{self.uri}: no artifact {key!r}")
        return self._read_meta(key)

    def _raw_list(self, prefix: str) -> list[str]:
        if not self.root.is_dir():
            return []
        # walk only the deepest directory the prefix names
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        if not start.is_dir():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith("."):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return keys

    def _raw_delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        self._meta(key).unlink(missing_ok=True)
