"""S3 as an artifact store, through the ``minio`` client (MinIO, SeaweedFS, AWS S3, ...).

``s3://bucket/prefix``: the artifact ``key`` is the object ``prefix/key`` and its sha256 is the
object's user metadata ``x-amz-meta-sha256``. A put is one PUT (or one multipart upload that
completes atomically), so a reader never sees a partial object.

Write-once artifacts are created with a conditional PUT (``If-None-Match: *``): the server
writes the object only if the key is absent, so of concurrent writers exactly one succeeds
and the others get ``PreconditionFailed`` (then compare checksums: equal bytes are a no-op,
different ones :class:`~fdshpo.store.ArtifactExists`). minio 7.2's ``put_object`` cannot send
that header (it renames unknown headers ``X-Amz-Meta-...``), so the request goes through the
client's own signed request call, ``Minio._execute`` (what ``put_object`` itself uses; minio is
pinned to 7.2.x for it; minio 8 has ``put_object(extra_headers=...)``). Before its first
create-only write a store probes once that the server honours the header (AWS S3 and MinIO
document it; SeaweedFS 4.48 is tested) and refuses to write to one that ignores it.
A create-only write is one PUT, so at most 5 GiB. A compare-and-write (moving a pointer,
:meth:`~fdshpo.store.ArtifactStore.swap_bytes`) is a PUT with ``If-Match: <the ETag of the
version whose sha256 was expected>``; before its first one a store probes likewise that the
server refuses a stale ``If-Match`` (SeaweedFS 4.48 does; AWS S3 and MinIO document it).

The store's clock (:meth:`~fdshpo.store.ArtifactStore.age`, lease expiry) is the server's: one
HEAD request's ``Date`` minus the object's ``Last-Modified``, both to the second.

Failures: transient errors (connection resets and refusals, timeouts, 5xx, ``SlowDown``) are
retried with exponential backoff (0.5 s, 1 s, 2 s ...) within ``deadline`` seconds (default 15);
wrong credentials, a missing bucket or an unreachable endpoint then end in a :class:`StoreError`
saying what to fix. Messages name the endpoint and bucket, never the keys.
"""

from __future__ import annotations

import email.utils
import io
import secrets
import time
from collections.abc import Callable
from typing import TypeVar

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from .base import ArtifactNotFound, ArtifactStore, StoreError, sha256_hex
from .credentials import Credentials, Endpoint

T = TypeVar("T")

_META_KEY = "sha256"
_TRANSIENT_CODES = {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout",
                    "OperationAborted", "RequestTimeTooSkewed", "ConditionalRequestConflict"}
#: S3 answers the caller handles itself (absent key, key already there).
_PASS_THROUGH_CODES = {"NoSuchKey", "NoSuchObject", "PreconditionFailed"}
#: Objects under a part starting with "." are fdshpo's own (the conditional-write probe).
_PROBE_PREFIX = ".fdshpo-probe"
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                     "InvalidToken", "ExpiredToken", "TokenRefreshRequired", "InvalidSecurity"}


class S3Store(ArtifactStore):
    """Artifacts as objects under ``s3://bucket/prefix``.

    Args:
        bucket, prefix: where the artifacts live (the prefix may be empty).
        endpoint: host and TLS choice (:func:`~fdshpo.store.credentials.parse_endpoint`).
        credentials: the keys (:func:`~fdshpo.store.credentials.resolve_credentials`).
        region: optional region name.
        connect_timeout / read_timeout: per-request socket timeouts in seconds.
        deadline: seconds within which a failing operation is retried before giving up.
        endpoint_hint: where the user set the endpoint (``store.endpoint``,
            ``--s3-endpoint``, ``AWS_ENDPOINT_URL``), named by an unreachable endpoint's error.
    """

    def __init__(self, bucket: str, prefix: str, endpoint: Endpoint, credentials: Credentials,
                 region: str | None = None, connect_timeout: float = 4.0,
                 read_timeout: float = 60.0, deadline: float = 15.0,
                 endpoint_hint: str = "--s3-endpoint / AWS_ENDPOINT_URL") -> None:
        self.bucket = bucket
        self.endpoint_hint = endpoint_hint  # where the endpoint was set, for messages
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.deadline = float(deadline)
        self._credentials = credentials  # its repr hides the keys
        self._source = credentials.source
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=False, maxsize=10)
        self._client = Minio(endpoint.host, access_key=credentials.access_key,
                             secret_key=credentials.secret_key,
                             session_token=credentials.session_token, secure=endpoint.secure,
                             region=region, http_client=http)
        self._bucket_checked = False
        self._conditional_checked: set[str] = set()

    # -- error handling ------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        for secret in (self._credentials.secret_key, self._credentials.session_token):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _where(self) -> str:
        return f"S3 endpoint {self.endpoint.url}, bucket {self.bucket!r}"

    def _fail(self, exc: Exception, what: str) -> StoreError:
        if isinstance(exc, S3Error):
            if exc.code in _CREDENTIAL_CODES:
                return StoreError(self._redact(
                    f"{self._where()} refused the credentials from {self._source} "
                    f"({exc.code}) while trying to {what}: check AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY (or the mounted Secret) and the bucket's policy"))
            if exc.code == "NoSuchBucket":
                return self._no_bucket()
            return StoreError(self._redact(
                f"{self._where()}: cannot {what}: {exc.code}: {exc.message}"))
        if isinstance(exc, urllib3.exceptions.HTTPError):
            reason = getattr(exc, "reason", None) or exc
            return StoreError(self._redact(
                f"cannot reach {self._where()} to {what} within {self.deadline:.0f}s "
                f"({type(reason).__name__}): check {self.endpoint_hint}, that "
                "the server is running, and http:// vs https://"))
        if isinstance(exc, InvalidResponseError):
            return StoreError(self._redact(
                f"{self._where()}: cannot {what}: the endpoint answered HTTP "
                f"{getattr(exc, '_code', '?')} without an S3 error body; is it an S3 server? "
                f"check {self.endpoint_hint}"))
        return StoreError(self._redact(f"{self._where()}: cannot {what}: {exc}"))

    def _no_bucket(self) -> StoreError:
        return StoreError(
            f"{self._where()}: the bucket does not exist; create it with "
            f"`fdshpo store init s3://{self.bucket}` (or ask the store's administrator)")

    @staticmethod
    def _transient(exc: Exception) -> bool:
        if isinstance(exc, S3Error):
            return exc.code in _TRANSIENT_CODES
        if isinstance(exc, InvalidResponseError):
            return (getattr(exc, "_code", 0) or 0) >= 500
        return isinstance(exc, (ServerError, urllib3.exceptions.HTTPError))

    def _call(self, what: str, fn: Callable[[], T], check_bucket: bool = True) -> T:
        if check_bucket and not self._bucket_checked:
            if not self._call("check the bucket", self._bucket_exists, check_bucket=False):
                raise self._no_bucket()
            self._bucket_checked = True
        started, delay = time.monotonic(), 0.5
        while True:
            try:
                return fn()
            except S3Error as exc:
                if exc.code in _PASS_THROUGH_CODES:
                    raise
                error = exc
            except (ServerError, InvalidResponseError, urllib3.exceptions.HTTPError) as exc:
                error = exc
            if not self._transient(error) or time.monotonic() - started + delay > self.deadline:
                raise self._fail(error, what) from None
            time.sleep(delay)
            delay = min(delay * 2, 4.0)

    def _bucket_exists(self) -> bool:
        return self._client.bucket_exists(self.bucket)

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    # -- bucket management ---------------------------------------------------------------------
    def ensure_bucket(self) -> bool:
        """Create the bucket if it is missing; True when it was created."""
        if self._call("check the bucket", self._bucket_exists, check_bucket=False):
            self._bucket_checked = True
            return False
        self._call("create the bucket", lambda: self._client.make_bucket(self.bucket),
                   check_bucket=False)
        self._bucket_checked = True
        return True

    # -- primitives ----------------------------------------------------------------------------
    def _raw_put(self, key: str, data: bytes, sha256: str) -> None:
        self._call(f"write {key!r}", lambda: self._client.put_object(
            self.bucket, self._object(key), io.BytesIO(data), len(data),
            metadata={_META_KEY: sha256}))

    def _raw_create(self, key: str, data: bytes, sha256: str) -> str | None:
        self._check_conditional_writes("If-None-Match")
        for _ in range(3):  # the key may vanish between the refused PUT and the stat
            try:
                self._call(f"write {key!r}",
                           lambda: self._conditional_put(self._object(key), data, sha256))
                return None
            except S3Error as exc:
                if exc.code != "PreconditionFailed":
                    raise self._fail(exc, f"write {key!r}") from None
            try:
                return self._raw_checksum(key) or self.NO_CHECKSUM
            except ArtifactNotFound:
                continue
        raise StoreError(f"{self._where()}: {key!r} kept appearing and disappearing while "
                         "writing it; is another process deleting it?")

    def _raw_replace(self, key: str, data: bytes, sha256: str, expected: str) -> bool:
        self._check_conditional_writes("If-Match")
        try:
            stat = self._stat(key)
        except ArtifactNotFound:
            return False
        if _recorded_sha256(stat) != expected or not stat.etag:
            return False
        try:
            self._call(f"write {key!r}", lambda: self._conditional_put(
                self._object(key), data, sha256, {"If-Match": f'"{stat.etag}"'}))
        except S3Error as exc:
            if exc.code not in ("PreconditionFailed", "NoSuchKey"):
                raise self._fail(exc, f"write {key!r}") from None
            return False  # another writer replaced (or removed) it since the stat
        return True

    def _conditional_put(self, name: str, data: bytes, sha256: str,
                         condition: dict | None = None) -> None:
        """PUT ``data`` only if ``condition`` holds (default ``If-None-Match: *``: no object
        ``name`` exists), signed by the minio client (minio 7.2.x: ``Minio._execute``)."""
        execute = getattr(self._client, "_execute", None)
        if execute is None:
            import minio

            raise StoreError(f"minio {minio.__version__} has no Minio._execute, which fdshpo "
                             "needs for conditional writes; install minio>=7.2.20,<7.3")
        response = execute("PUT", self.bucket, name, body=data, headers={
            **(condition or {"If-None-Match": "*"}), "Content-Length": str(len(data)),
            "Content-Type": "application/octet-stream", f"x-amz-meta-{_META_KEY}": sha256},
            no_body_trace=True)
        response.close()

    def _check_conditional_writes(self, header: str) -> None:
        """Once per store and header: create a probe object with ``If-None-Match: *``, then
        write it again under ``header`` (``If-None-Match: *`` again, or ``If-Match`` with a
        stale ETag): that second write must be refused. Raises StoreError for a server that
        ignores the header."""
        if header in self._conditional_checked:
            return
        name = self._object(f"{_PROBE_PREFIX}/{secrets.token_hex(8)}")
        what = "probe conditional writes"
        second = {"If-None-Match": "*"} if header == "If-None-Match" \
            else {"If-Match": '"' + "0" * 32 + '"'}

        def put(data: bytes, condition: dict | None = None) -> None:
            self._call(what, lambda: self._conditional_put(name, data, sha256_hex(data),
                                                           condition))

        try:
            put(b"first")
            try:
                put(b"second", second)
                honoured = False
            except S3Error as exc:
                if exc.code != "PreconditionFailed":
                    raise
                honoured = True
        except S3Error as exc:
            if exc.code != "NotImplemented":  # a server that refuses the header outright
                raise self._fail(exc, what) from None
            honoured = False
        finally:
            self._call("remove the probe",
                       lambda: self._client.remove_object(self.bucket, name))
        if not honoured:
            raise StoreError(
                f"{self._where()} does not support conditional writes "
                f"({'If-None-Match: *' if header == 'If-None-Match' else 'If-Match'}): a "
                "conditional PUT that had to be refused was not, so concurrent writers could "
                "silently overwrite finished artifacts or move pointers backwards. Use a server "
                "that honours them (AWS S3 and MinIO document it; SeaweedFS 4.48 is tested)")
        self._conditional_checked.add(header)

    def _raw_get(self, key: str) -> tuple[bytes, str | None]:
        def get():
            response = self._client.get_object(self.bucket, self._object(key))
            try:
                return response.read(), response.headers.get(f"x-amz-meta-{_META_KEY}")
            finally:
                response.close()
                response.release_conn()

        try:
            return self._call(f"read {key!r}", get)
        except S3Error:
            raise ArtifactNotFound(f"{self.uri}: no artifact {key!r}") from None

    def _stat(self, key: str):
        try:
            return self._call(f"stat {key!r}",
                              lambda: self._client.stat_object(self.bucket, self._object(key)))
        except S3Error:
            raise ArtifactNotFound(f"{self.uri}: no artifact {key!r}") from None

    def _raw_checksum(self, key: str) -> str | None:
        return _recorded_sha256(self._stat(key))

    def _raw_age(self, key: str) -> float:
        stat = self._stat(key)
        date = (stat.metadata or {}).get("Date")
        if not date or stat.last_modified is None:
            raise StoreError(f"{self._where()} sent no Date or Last-Modified for {key!r}, so "
                             "the store's clock cannot be read (lease expiry needs it); is it "
                             "an S3 server?")
        return (email.utils.parsedate_to_datetime(date) - stat.last_modified).total_seconds()

    def _raw_list(self, prefix: str) -> list[str]:
        full = self._object(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0

        def listing():
            names = (o.object_name[strip:] for o in self._client.list_objects(
                self.bucket, prefix=full, recursive=True) if not o.is_dir)
            return [n for n in names if not any(p.startswith(".") for p in n.split("/"))]

        return self._call(f"list {prefix!r}", listing)

    def _raw_delete(self, key: str) -> None:
        self._call(f"delete {key!r}",
                   lambda: self._client.remove_object(self.bucket, self._object(key)))


def _recorded_sha256(stat) -> str | None:
    """The sha256 an object's user metadata records (None: not written by fdshpo)."""
    meta = stat.metadata or {}
    return meta.get(f"x-amz-meta-{_META_KEY}") or meta.get(_META_KEY)
