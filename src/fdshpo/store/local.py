"""A local directory as an artifact store (the embedded default, e.g. ``./fdshpo-store``).

Layout under ``ROOT``:

- ``key``: the artifact's bytes (browsable as-is);
- ``.sha256/key``: its sha256;
- ``.pending/key/SHA256``: an empty marker that exists only while a write of those bytes is in
  flight (or after a writer was killed mid-way);
- ``.locks/NN``: lock files (``flock``), one of 64 stripes per key.

A write, under the key's lock: the marker, then the data (a temporary file fsynced and then
renamed into place, or hard-linked for a create-only write, which fails if the key exists),
then the checksum (the same way), then the marker is removed. Every file appears whole (rename
and link are atomic on POSIX). A writer killed between the data and the checksum leaves data
whose sha256 matches its marker: the next reader completes the write (rolls the checksum
forward) instead of calling the artifact corrupt; killed before the data, the old artifact and
its checksum are untouched (the stale marker is removed by the next look under the lock).
Readers take no lock; a reader that sees the data and checksum of two different writes re-reads
them under the lock.

The lock is ``fcntl.flock``: it serialises writers in every process on this machine. On a
network file system without ``flock`` the create-only write still relies on ``link`` (atomic on
NFSv3+), but concurrent overwrites of one key (``latest.json``) are only safe on a local disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .base import ARTIFACT_MODE, ArtifactNotFound, ArtifactStore, StoreError, sha256_hex

_META = ".sha256"
_PENDING = ".pending"
_LOCKS = ".locks"
_STRIPES = 64


def _write_temp(directory: Path, name: str, data: bytes) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".tmp-{name}.")
    try:
        os.fchmod(fd, ARTIFACT_MODE)  # mkstemp's 0600 would hide the pages from a web server
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one rename."""
    tmp = _write_temp(path.parent, path.name, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_create(path: Path, data: bytes) -> bool:
    """Create ``path`` with ``data`` in one hard link; False (nothing written) if it exists."""
    tmp = _write_temp(path.parent, path.name, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)
    return True


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

    def _pending(self, key: str, sha256: str | None = None) -> Path:
        folder = self.root / _PENDING / key
        return folder / sha256 if sha256 else folder

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        stripe = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % _STRIPES
        path = self.root / _LOCKS / f"{stripe:02d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _error(self, key: str, exc: OSError) -> StoreError:
        return StoreError(f"cannot write {key!r} under {self.root}: {exc.strerror}; "
                          "check the path and its permissions")

    @staticmethod
    def _clear_marker(marker: Path) -> None:
        marker.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: another cut-short write's marker
            marker.parent.rmdir()

    # -- writing -------------------------------------------------------------------------------
    def _write(self, key: str, data: bytes, sha256: str, create: bool) -> str | None:
        try:
            with self._lock(key):
                return self._write_locked(key, data, sha256, create)
        except OSError as exc:
            raise self._error(key, exc) from None

    def _write_locked(self, key: str, data: bytes, sha256: str, create: bool) -> str | None:
        """The write itself (the caller holds the key's lock)."""
        if create and self._path(key).is_file():
            return self._resolved_checksum(key) or self.NO_CHECKSUM
        marker = self._pending(key, sha256)
        _atomic_write(marker, b"")
        if create:
            if not _atomic_create(self._path(key), data):  # a writer without the lock
                self._clear_marker(marker)
                return self._resolved_checksum(key) or self.NO_CHECKSUM
        else:
            _atomic_write(self._path(key), data)
        _atomic_write(self._meta(key), sha256.encode())
        self._clear_marker(marker)
        return None

    def _raw_put(self, key: str, data: bytes, sha256: str) -> None:
        self._write(key, data, sha256, create=False)

    def _raw_create(self, key: str, data: bytes, sha256: str) -> str | None:
        return self._write(key, data, sha256, create=True)

    def _raw_replace(self, key: str, data: bytes, sha256: str, expected: str) -> bool:
        """Compare and write under the key's lock (every writer of the key takes it)."""
        try:
            with self._lock(key):
                if not self._path(key).is_file() or self._resolved_checksum(key) != expected:
                    return False
                self._write_locked(key, data, sha256, create=False)
        except OSError as exc:
            raise self._error(key, exc) from None
        return True

    def _raw_age(self, key: str) -> float:
        try:
            return time.time() - self._path(key).stat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            raise ArtifactNotFound(f"{self.uri}: no artifact {key!r}") from None

    # -- reading -------------------------------------------------------------------------------
    def _read_meta(self, key: str) -> str | None:
        try:
            return self._meta(key).read_text().strip() or None
        except FileNotFoundError:
            return None

    def _read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ArtifactNotFound(f"{self.uri}: no artifact {key!r}") from None

    def _settle(self, key: str) -> tuple[bytes, str | None]:
        """Data and checksum read under the key's lock, so with no write in flight: a write cut
        short (data in place, its marker left, checksum missing or older) is completed, and
        the markers of writers killed earlier (before their data) are removed."""
        data, recorded = self._read(key), self._read_meta(key)
        actual = sha256_hex(data)
        if actual != recorded and self._pending(key, actual).exists():
            _atomic_write(self._meta(key), actual.encode())
            recorded = actual
        if self._pending(key).is_dir():
            for marker in list(self._pending(key).iterdir()):
                self._clear_marker(marker)
        return data, recorded

    def _resolved_checksum(self, key: str) -> str | None:
        """The checksum, completing a cut-short write first (caller holds the key's lock)."""
        if self._pending(key).is_dir() and any(self._pending(key).iterdir()):
            return self._settle(key)[1]
        return self._read_meta(key)

    def _raw_get(self, key: str) -> tuple[bytes, str | None]:
        data, recorded = self._read(key), self._read_meta(key)
        if recorded == sha256_hex(data):
            return data, recorded
        try:  # a writer in flight, or one that was killed: look again under the lock
            with self._lock(key):
                return self._settle(key)
        except OSError:  # a read-only store: no lock, no repair
            return self._read(key), self._read_meta(key)

    def _raw_checksum(self, key: str) -> str | None:
        if not self._path(key).is_file():
            raise ArtifactNotFound(f"{self.uri}: no artifact {key!r}")
        if not self._pending(key).is_dir():
            return self._read_meta(key)
        try:
            with self._lock(key):
                return self._resolved_checksum(key)
        except OSError:
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
        with self._lock(key):
            self._path(key).unlink(missing_ok=True)
            self._meta(key).unlink(missing_ok=True)
            if self._pending(key).is_dir():
                for marker in self._pending(key).iterdir():
                    self._clear_marker(marker)
