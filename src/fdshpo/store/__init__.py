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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class StoreLocation:
    """Where a store URI points: ``kind`` "local" (``path``) or "s3" (``bucket``, ``prefix``)."""

    kind: str
    path: str = ""
    bucket: str = ""
    prefix: str = ""


def parse_store_uri(uri: str) -> StoreLocation:
    """Check a store URI without touching the store: a path, ``file:///ABS/PATH`` or
    ``s3://BUCKET[/PREFIX]``.

    Raises StoreError (user info redacted) for another scheme, user info (any ``@`` after
    ``scheme://``, :func:`~fdshpo.store.credentials.has_userinfo`), a remote file host or an
    invalid bucket name.
    """
    from .credentials import has_userinfo, redact_userinfo

    shown = redact_userinfo(uri)
    if "://" not in uri:
        return StoreLocation("local", path=uri)
    if has_userinfo(uri):
        raise StoreError(f"store URI {shown!r} carries user info (an '@' after the scheme): "
                         "put no keys in a URI; give them in AWS_ACCESS_KEY_ID / "
                         "AWS_SECRET_ACCESS_KEY (or AWS_*_FILE, or a mounted Secret)")
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise StoreError(f"store URI {shown!r} has no bucket; use s3://BUCKET[/PREFIX]")
        if not _BUCKET.match(parts.netloc):
            raise StoreError(f"invalid bucket name {parts.netloc!r} in {shown!r}: use 3-63 "
                             "lowercase letters, digits, '.' and '-'")
        return StoreLocation("s3", bucket=parts.netloc, prefix=parts.path.strip("/"))
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StoreError(f"store URI {shown!r} names a remote host; use file:///ABS/PATH")
        return StoreLocation("local", path=unquote(parts.path))
    raise StoreError(f"unsupported store URI {shown!r}: use a directory path, "
                     "file:///ABS/PATH or s3://BUCKET[/PREFIX]")


def open_store(uri: str | os.PathLike | None = None, s3_endpoint: str | None = None,
               endpoint_setting: str = "--s3-endpoint", **s3_options) -> ArtifactStore:
    """The store named by ``uri``: a path, ``file://...`` or ``s3://bucket[/prefix]``.

    ``uri`` defaults to :func:`default_store_uri`. For S3 the endpoint comes from
    ``s3_endpoint`` or ``AWS_ENDPOINT_URL`` and the keys from the environment or a mounted
    Secret (:mod:`fdshpo.store.credentials`). Nothing is contacted until the first operation.
    ``endpoint_setting`` names how the caller's user sets ``s3_endpoint`` (``--s3-endpoint``,
    a config's ``store.endpoint``): an unreachable endpoint's message says which to check.

    Raises StoreError for an invalid URI (:func:`parse_store_uri`) or missing keys.
    """
    uri = os.fspath(uri) if uri is not None else default_store_uri()
    location = parse_store_uri(uri)
    if location.kind == "local":
        return LocalStore(Path(location.path))
    from .credentials import parse_endpoint, resolve_credentials
    from .s3 import S3Store

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if s3_endpoint:
        hint = endpoint_setting
    elif os.environ.get("AWS_ENDPOINT_URL"):
        hint = "AWS_ENDPOINT_URL"
    else:
        hint = f"{endpoint_setting} / AWS_ENDPOINT_URL (neither is set: AWS S3)"
    return S3Store(location.bucket, location.prefix, parse_endpoint(s3_endpoint),
                   resolve_credentials(), region=region, endpoint_hint=hint, **s3_options)


__all__ = [
    "DEFAULT_STORE", "ArtifactExists", "ArtifactNotFound", "ArtifactStore", "IntegrityError",
    "LocalStore", "StoreError", "StoreLocation", "check_key", "default_store_uri", "open_store",
    "parse_store_uri", "sha256_hex",
]
