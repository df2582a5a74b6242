"""A MinIO user scoped to one bucket, for ``fdshpo store init s3://BUCKET --minio-user-dir DIR``.

The in-cluster MinIO's root credentials stay with MinIO and the bucket-initialisation Job; that
Job creates the bucket, a policy allowing exactly what fdshpo and KFP's launcher do in it, and a
user with that policy, whose keys (``DIR/accesskey``, ``DIR/secretkey``: the mounted Secret every
pipeline pod gets) are the only ones handed on. The policy (:func:`bucket_policy`):

- ``s3:ListBucket``, ``s3:GetBucketLocation`` on the bucket (list, and the bucket check);
- ``s3:GetObject``, ``s3:PutObject``, ``s3:DeleteObject`` and the multipart-upload actions on
  ``BUCKET/*`` (read, write-once and pointer writes, removal of superseded inner checkpoints and
  of the conditional-write probe).

It uses MinIO's admin API (``minio.minioadmin.MinioAdmin``, in the ``minio`` client fdshpo
already pins); other S3 servers have their own IAM: give fdshpo keys limited to the bucket
there. No MinIO server can run on the development machine (MinIO ships source only), so the
admin calls themselves are exercised only on a cluster; the policy and the refusals are tested.
"""

from __future__ import annotations

from pathlib import Path

from .base import StoreError
from .credentials import Credentials, check_not_placeholder

OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                  "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts")
BUCKET_ACTIONS = ("s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads")


def bucket_policy(bucket: str) -> dict:
    """An IAM policy document allowing fdshpo's object operations in ``bucket`` only."""
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": list(BUCKET_ACTIONS),
         "Resource": [f"arn:aws:s3:::{bucket}"]},
        {"Effect": "Allow", "Action": list(OBJECT_ACTIONS),
         "Resource": [f"arn:aws:s3:::{bucket}/*"]},
    ]}


def policy_name(bucket: str) -> str:
    return f"fdshpo-{bucket}-readwrite"


def read_user_keys(directory: str | Path) -> Credentials:
    """The scoped user's keys from a mounted Secret (files ``accesskey`` and ``secretkey``).

    Raises StoreError when a file is missing or still holds a placeholder."""
    directory = Path(directory)
    try:
        keys = [(directory / name).read_text().strip() for name in ("accesskey", "secretkey")]
    except OSError as exc:
        raise StoreError(f"cannot read the bucket user's keys: {exc.filename}: {exc.strerror}; "
                         "mount the Secret with keys accesskey and secretkey there") from None
    user = Credentials(*keys, source=f"the Secret mounted at {directory}")
    check_not_placeholder(user)
    if len(user.secret_key) < 8:
        raise StoreError(f"the bucket user's secret key ({user.source}) has fewer than 8 "
                         "characters; MinIO refuses it")
    return user


def create_bucket_user(store, user: Credentials) -> str:
    """On the MinIO behind ``store`` (an :class:`~fdshpo.store.s3.S3Store` opened with the root
    credentials): add or update the bucket's policy and the user, and attach one to the other.
    Returns the policy's name.

    Raises StoreError when the user's keys equal the root keys or the server refuses."""
    from minio.credentials import StaticProvider
    from minio.minioadmin import MinioAdmin

    root = store._credentials
    if user.access_key == root.access_key:
        raise StoreError("the bucket user's access key equals the root user's: give the "
                         "pipelines their own keys (k8s/base/store.env) and keep the root keys "
                         "for MinIO (k8s/components/minio/minio-root.env)")
    admin = MinioAdmin(endpoint=store.endpoint.host,
                       credentials=StaticProvider(root.access_key, root.secret_key),
                       secure=store.endpoint.secure)
    name = policy_name(store.bucket)
    try:
        admin.policy_add(name, policy=bucket_policy(store.bucket))
        admin.user_add(user.access_key, user.secret_key)
        admin.policy_set(name, user=user.access_key)
    except Exception as exc:  # noqa: BLE001 - every admin failure becomes one clear message
        detail = store._redact(str(exc)).replace(user.secret_key, "***")
        raise StoreError(f"{store.endpoint.url} refused to set up the bucket user "
                         f"({type(exc).__name__}: {detail}); is it MinIO, and are the root "
                         "credentials right?") from None
    return name
