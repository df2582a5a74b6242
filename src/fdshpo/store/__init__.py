"""Artifact stores: a local directory or S3 (MinIO, SeaweedFS, AWS), one small interface.

    store = open_store("./fdshpo-store")                 # a path or file:///abs/path
    store = open_store("s3://bucket/prefix", s3_endpoint="http://127.0.0.1:9000")
    store.put_json("a/b.json", {...}); store.get_json("a/b.json")

See :mod:`fdshpo.store.base` for the contract (sha256-verified, write-once) and
:mod:`fdshpo.store.credentials` for where the endpoint and keys come from.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .base import (
    ArtifactExists,
    ArtifactNotFound,
    ArtifactStore,
    IntegrityError,
    StoreError,
    check_key,
    sha256_hex,
)
from .local import LocalStore

DEFAULT_STORE = "./fdshpo-store"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def default_store_uri() -> str:
    """``FDSHPO_STORE`` if set, else ``./fdshpo-store``."""
    return os.environ.get("FDSHPO_STORE") or DEFAULT_STORE


def open_store(uri: str | os.PathLike | None = None, s3_endpoint: str | None = None,
               **s3_options) -> ArtifactStore:
    """The store named by ``uri``: a path, ``file://...`` or ``s3://bucket[/prefix]``.

    ``uri`` defaults to :func:`default_store_uri`. For S3 the endpoint comes from
    ``s3_endpoint`` or ``AWS_ENDPOINT_URL`` and the keys from the environment or a mounted
    Secret (:mod:`fdshpo.store.credentials`). Nothing is contacted until the first operation.

    Raises StoreError for an unsupported scheme, a missing bucket name or missing keys.
    """
    uri = os.fspath(uri) if uri is not None else default_store_uri()
    if isinstance(uri, str) and uri.startswith("s3://"):
        from .credentials import parse_endpoint, resolve_credentials
        from .s3 import S3Store

        parts = urlsplit(uri)
        if not parts.netloc:
            raise StoreError(f"store URI {uri!r} has no bucket; use s3://BUCKET[/PREFIX]")
        if not _BUCKET.match(parts.netloc):
            raise StoreError(f"invalid bucket name {parts.netloc!r} in {uri!r}: use 3-63 "
                             "lowercase letters, digits, '.' and '-'")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return S3Store(parts.netloc, parts.path.strip("/"), parse_endpoint(s3_endpoint),
                       resolve_credentials(), region=region, **s3_options)
    if uri.startswith("file://"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise StoreError(f"store URI {uri!r} names a remote host; use file:///ABS/PATH")
        return LocalStore(Path(unquote(parts.path)))
    if "://" in uri:
        raise StoreError(f"unsupported store URI {uri!r}: use a directory path, "
                         "file:///ABS/PATH or s3://BUCKET[/PREFIX]")
    return LocalStore(uri)


__all__ = [
    "DEFAULT_STORE", "ArtifactExists", "ArtifactNotFound", "ArtifactStore", "IntegrityError",
    "LocalStore", "StoreError", "check_key", "default_store_uri", "open_store", "sha256_hex",
]
