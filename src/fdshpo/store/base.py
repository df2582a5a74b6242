"""The artifact store interface: keyed, checksummed, write-once blobs.

Every artifact is stored with the sha256 of its bytes; :meth:`ArtifactStore.get_bytes` recomputes
it and raises :class:`IntegrityError` on a mismatch. ``put_*`` never silently replaces a finished
artifact: with ``overwrite=False`` (the default) writing different bytes to an existing key
raises :class:`ArtifactExists`, while writing the very same bytes again is a no-op (so a retried
or resumed step can repeat its writes). The write-once rule holds under concurrency: a backend
creates the key atomically only if it is absent (``O_EXCL``-style locally, ``If-None-Match: *``
on S3), so of several writers racing to one key with different bytes exactly one succeeds.
Pointers that are meant to move (an experiment's latest schedule) are moved with
:meth:`ArtifactStore.update_json`: read, decide, then a compare-and-write
(:meth:`ArtifactStore.swap_bytes`: written only if the key still holds what was read), retried
when another writer got in between; a reader sees one whole version, never a mix.
:meth:`ArtifactStore.age` tells how long ago a key was written by the store's own clock (what
lease expiry is measured with, :mod:`fdshpo.store.lease`).

Keys are ``/``-separated relative paths of safe characters (letters, digits, ``._-=+@``); no
part is empty or starts with ``.``. Implementations provide the ``_raw_*`` primitives; integrity and
the write-once rule live here, once.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from ..errors import UserError

#: File mode of every artifact a local store writes and of every file fetched from a store:
#: readable by whoever serves the store's folder (its report pages are a static site); the
#: store holds no credentials (records refuse them).
ARTIFACT_MODE = 0o644

_KEY_PART = re.compile(r"^[A-Za-z0-9_=+@-][A-Za-z0-9._=+@-]*$")


def iso_utc(epoch: float) -> str:
    """``epoch`` seconds as an ISO 8601 UTC timestamp to the second: 2026-12-07T17:24:23Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class StoreError(UserError):
    """The store cannot be used as configured (credentials, bucket, endpoint, path)."""


class ArtifactNotFound(StoreError, KeyError):
    """No artifact under the key."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ArtifactExists(StoreError):
    """A different artifact is already stored under the key (finished artifacts are final)."""


class IntegrityError(StoreError):
    """The bytes read back do not match the sha256 recorded when they were written."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_bytes(obj) -> bytes:
    """Canonical JSON bytes of ``obj`` (sorted keys, so equal objects give equal bytes)."""
    return json.dumps(obj, sort_keys=True, indent=1, allow_nan=True).encode()


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid artifact key, else raise ``ValueError`` saying why."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"artifact key must be a non-empty string, got {key!r}")
    for part in key.split("/"):
        if part in ("", ".", "..") or not _KEY_PART.match(part):
            raise ValueError(
                f"invalid artifact key {key!r}: use '/'-separated parts of letters, digits and "
                "'._=+@-', no part empty or starting with '.'")
    return key


def check_name(name: str, what: str) -> str:
    """Validate one key part (an experiment or run name)."""
    if not isinstance(name, str) or "/" in name or name in ("", ".", "..") \
            or not _KEY_PART.match(name):
        raise ValueError(
            f"invalid {what} {name!r}: use letters, digits and '._=+@-' (not starting with '.')")
    return name


class ArtifactStore(ABC):
    """Write-once, sha256-verified blobs under string keys. See the module docstring."""

    #: the store's URI (``file:///abs/path`` or ``s3://bucket/prefix``; never credentials)
    uri: str
    #: what :meth:`_raw_create` returns for an existing key with no recorded sha256
    NO_CHECKSUM = ""

    # -- primitives each backend provides ------------------------------------------------------
    @abstractmethod
    def _raw_put(self, key: str, data: bytes, sha256: str) -> None:
        """Store ``data`` atomically (a reader sees the old or the new object, never a part)."""

    @abstractmethod
    def _raw_create(self, key: str, data: bytes, sha256: str) -> str | None:
        """Store ``data`` only if ``key`` is absent, atomically (of concurrent creators exactly
        one succeeds). Returns None when it wrote ``data``, else the sha256 recorded for the
        artifact already stored there, or :attr:`NO_CHECKSUM` when that has none (data
        without its checksum is never taken for ours: it is a conflict)."""

    @abstractmethod
    def _raw_replace(self, key: str, data: bytes, sha256: str, expected: str) -> bool:
        """Store ``data`` only if ``key`` now holds the artifact whose recorded sha256 is
        ``expected``, atomically (of concurrent replacers of one version exactly one succeeds).
        True when it wrote ``data``; False when the key is absent or holds something else."""

    @abstractmethod
    def _raw_age(self, key: str) -> float:
        """Seconds since ``key`` was last written, by the store's clock; ArtifactNotFound."""

    @abstractmethod
    def _raw_get(self, key: str) -> tuple[bytes, str | None]:
        """(bytes, recorded sha256 or None); raise ArtifactNotFound when absent."""

    @abstractmethod
    def _raw_checksum(self, key: str) -> str | None:
        """The recorded sha256 of ``key`` (None if the object has none); ArtifactNotFound."""

    @abstractmethod
    def _raw_list(self, prefix: str) -> list[str]:
        """All keys starting with ``prefix`` (sorted)."""

    @abstractmethod
    def _raw_delete(self, key: str) -> None:
        """Remove ``key`` if present."""

    # -- the interface -------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, overwrite: bool = False) -> str:
        """Store ``data`` under ``key``; returns its sha256.

        Raises ArtifactExists when ``overwrite`` is False and different bytes are stored there.
        """
        check_key(key)
        data = bytes(data)
        digest = sha256_hex(data)
        if overwrite:
            self._raw_put(key, data, digest)
            return digest
        existing = self._raw_create(key, data, digest)
        if existing is None or existing == digest:
            return digest
        if existing == self.NO_CHECKSUM:
            raise ArtifactExists(
                f"{self.uri}: {key!r} already holds data without a recorded sha256 (not "
                "written by fdshpo, or its checksum was lost); it is left as is: remove it "
                "if it is not needed, or write to a new key")
        raise ArtifactExists(
            f"{self.uri}: {key!r} already holds a different artifact (sha256 "
            f"{existing}); finished artifacts are never overwritten: write to a new key "
            "(e.g. a new run id)")

    def swap_bytes(self, key: str, data: bytes, expected: str | None) -> bool:
        """Compare-and-write: store ``data`` under ``key`` only if the key now holds the
        artifact whose recorded sha256 is ``expected`` (None: only if the key is absent).

        Returns True when ``data`` is stored (also when those very bytes were already there),
        False when the key holds anything else: read it again and decide again
        (:meth:`update_json` does).
        """
        check_key(key)
        data = bytes(data)
        digest = sha256_hex(data)
        if expected is None:
            existing = self._raw_create(key, data, digest)
            return existing is None or existing == digest
        return self._raw_replace(key, data, digest, expected)

    def update_json(self, key: str, change: Callable[[object], object], attempts: int = 8
                    ) -> bool:
        """Read-modify-write of a moving pointer: ``change(current)`` gets the key's JSON
        (None when it is absent or damaged: an integrity failure or bytes that do not decode)
        and returns the new object, or None to leave the key as it is. The write is a
        :meth:`swap_bytes` against the version read, so a writer that got in between is never
        overwritten: then the key is read and ``change`` asked again, up to ``attempts`` times
        with short random pauses.

        Returns True when it wrote, False when ``change`` left the key. Raises StoreError when
        the key kept changing under it (``attempts`` times), or on any other store error.
        """
        for attempt in range(attempts):
            try:
                data = self.get_bytes(key)
            except ArtifactNotFound:
                current, expected = None, None
            except IntegrityError:  # damaged: replace the version that is there
                try:
                    expected = self.checksum(key)
                except IntegrityError:
                    raise IntegrityError(
                        f"{self.uri}: {key!r} has no recorded sha256, so it cannot be replaced "
                        "safely; delete it and retry") from None
                except ArtifactNotFound:
                    continue
                current = None
            else:
                expected = sha256_hex(data)
                try:
                    current = json.loads(data)
                except ValueError:
                    current = None
            new = change(current)
            if new is None:
                return False
            if self.swap_bytes(key, json_bytes(new), expected):
                return True
            time.sleep(random.uniform(0, 0.02 * 2 ** attempt))
        raise StoreError(f"{self.uri}: {key!r} kept changing while it was being updated "
                         f"({attempts} attempts); retry")

    def age(self, key: str) -> float:
        """Seconds since ``key`` was last written, by the store's own clock (S3: the server's
        ``Date`` minus the object's ``Last-Modified``, to the second; locally: now minus the
        file's modification time). Raises ArtifactNotFound."""
        check_key(key)
        return self._raw_age(key)

    def get_bytes(self, key: str) -> bytes:
        """The bytes stored under ``key``, verified against their recorded sha256.

        Raises ArtifactNotFound, or IntegrityError when the bytes do not match the checksum.
        """
        check_key(key)
        data, recorded = self._raw_get(key)
        actual = sha256_hex(data)
        if recorded is None:
            raise IntegrityError(
                f"{self.uri}: {key!r} has no recorded sha256 (it was not written by fdshpo); "
                "cannot verify it")
        if actual != recorded:
            raise IntegrityError(
                f"{self.uri}: {key!r} is corrupt: sha256 {actual} but {recorded} was recorded "
                "when it was written; rewrite it from its source or resume from an earlier "
                "checkpoint")
        return data

    def put_json(self, key: str, obj, overwrite: bool = False) -> str:
        """``put_bytes`` of canonical JSON (sorted keys, so equal objects give equal bytes)."""
        return self.put_bytes(key, json_bytes(obj), overwrite)

    def get_json(self, key: str):
        return json.loads(self.get_bytes(key))

    def put_file(self, key: str, path: str | Path, overwrite: bool = False) -> str:
        return self.put_bytes(key, Path(path).read_bytes(), overwrite)

    def get_file(self, key: str, path: str | Path) -> Path:
        """Write the verified artifact to ``path`` atomically (parents created), mode
        :data:`ARTIFACT_MODE`."""
        data = self.get_bytes(key)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False,
                                         prefix=f".{path.name}.") as tmp:
            os.fchmod(tmp.fileno(), ARTIFACT_MODE)
            tmp.write(data)
        shutil.move(tmp.name, path)
        return path

    def exists(self, key: str) -> bool:
        check_key(key)
        try:
            self._raw_checksum(key)
        except ArtifactNotFound:
            return False
        return True

    def checksum(self, key: str) -> str:
        """The sha256 recorded for ``key`` (no download). Raises ArtifactNotFound."""
        check_key(key)
        digest = self._raw_checksum(key)
        if digest is None:
            raise IntegrityError(f"{self.uri}: {key!r} has no recorded sha256")
        return digest

    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys that start with ``prefix`` (a plain string prefix, not a glob)."""
        return sorted(self._raw_list(prefix))

    def delete(self, key: str) -> None:
        """Remove ``key`` (used for superseded intermediate checkpoints only)."""
        check_key(key)
        self._raw_delete(key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"
