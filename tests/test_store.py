"""The artifact store contract, run over a local directory and a real SeaweedFS S3 server."""

from __future__ import annotations

import io
import json
import os
import time

import pytest

from fdshpo.store import (
    ArtifactExists,
    ArtifactNotFound,
    IntegrityError,
    LocalStore,
    StoreError,
    open_store,
)
from fdshpo.store.credentials import parse_endpoint, resolve_credentials


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(f"s3://{bucket}/some/prefix")


def test_round_trip_of_every_artifact_kind(store, tmp_path):
    digest = store.put_bytes("exp/a.bin", b"\x00\x01binary")
    assert len(digest) == 64 and store.checksum("exp/a.bin") == digest
    assert store.get_bytes("exp/a.bin") == b"\x00\x01binary"
    store.put_json("exp/b.json", {"x": [1.5, float("inf")], "y": None})
    assert store.get_json("exp/b.json") == {"x": [1.5, float("inf")], "y": None}
    source = tmp_path / "plot.png"
    source.write_bytes(os.urandom(3000))
    store.put_file("exp/plots/p.png", source)
    out = store.get_file("exp/plots/p.png", tmp_path / "copy" / "p.png")
    assert out.read_bytes() == source.read_bytes()
    assert store.exists("exp/b.json") and not store.exists("exp/nothing.json")
    assert store.list("exp/") == ["exp/a.bin", "exp/b.json", "exp/plots/p.png"]
    assert store.list("exp/pl") == ["exp/plots/p.png"]
    store.delete("exp/a.bin")
    assert not store.exists("exp/a.bin")
    with pytest.raises(ArtifactNotFound, match="no artifact 'exp/a.bin'"):
        store.get_bytes("exp/a.bin")


def test_finished_artifacts_are_never_silently_overwritten(store):
    store.put_json("run/schedule.json", {"lr": [0.1]})
    store.put_json("run/schedule.json", {"lr": [0.1]})  # the same bytes again: a no-op
    with pytest.raises(ArtifactExists, match="never overwritten"):
        store.put_json("run/schedule.json", {"lr": [0.2]})
    assert store.get_json("run/schedule.json") == {"lr": [0.1]}
    store.put_json("run/schedule.json", {"lr": [0.2]}, overwrite=True)
    assert store.get_json("run/schedule.json") == {"lr": [0.2]}


def test_listing_across_experiments(store):
    for exp in ("alpha", "beta"):
        for run in ("r1", "r2"):
            store.put_json(f"experiments/{exp}/runs/{run}/config.json", {"exp": exp})
    assert len(store.list("experiments/")) == 4
    assert store.list("experiments/beta/") == ["experiments/beta/runs/r1/config.json",
                                               "experiments/beta/runs/r2/config.json"]
    assert store.list("experiments/gamma/") == []


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", ".hidden", "a b", "a/./b"])
def test_invalid_keys_are_refused(tmp_path, key):
    with pytest.raises(ValueError, match="artifact key"):
        LocalStore(tmp_path).put_bytes(key, b"x")


def test_local_checksum_mismatch_is_detected(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes("ck/state.pt", b"good bytes")
    (tmp_path / "ck" / "state.pt").write_bytes(b"evil bytes")
    with pytest.raises(IntegrityError, match="corrupt: sha256"):
        store.get_bytes("ck/state.pt")


def test_s3_checksum_mismatch_is_detected(s3_bucket, s3_env):
    from minio import Minio

    store = open_store(f"s3://{s3_bucket}")
    store.put_bytes("ck/state.pt", b"good bytes")
    # rewrite the object behind fdshpo's back, keeping the recorded checksum
    raw = Minio(s3_env.endpoint.split("//")[1], s3_env.access_key, s3_env.secret_key,
                secure=False)
    raw.put_object(s3_bucket, "ck/state.pt", io.BytesIO(b"evil bytes"), 10,
                   metadata={"sha256": store.checksum("ck/state.pt")})
    with pytest.raises(IntegrityError, match="corrupt: sha256"):
        store.get_bytes("ck/state.pt")


def test_the_local_server_holds_a_volume_per_bucket_whatever_the_free_disk(s3_server):
    """Each bucket takes a volume; left to itself ``weed mini`` caps volumes at free disk / 128 MB
    (21 on a CI machine, whose 22nd test bucket then failed to write). The cap is explicit."""
    import urllib.request

    url = f"http://127.0.0.1:{s3_server.ports['master']}/dir/status"
    with urllib.request.urlopen(url, timeout=10) as answer:
        topology = json.load(answer)["Topology"]
    assert topology["Max"] == s3_server.max_volumes == 1000


def test_s3_multipart_sized_checkpoint(s3_bucket):
    store = open_store(f"s3://{s3_bucket}/ckpt")
    data = os.urandom(12 * 2**20)  # above the 5 MiB part size: a multipart upload
    store.put_bytes("inner/00000200.pt", data)
    assert store.get_bytes("inner/00000200.pt") == data
    assert store.list("inner/") == ["inner/00000200.pt"]


def test_wrong_credentials_give_a_clear_error_without_the_secret(s3_bucket, s3_env,
                                                                 monkeypatch):
    secret = "Wr0ngSecretValue-Do-Not-Print-7f3a"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    store = open_store(f"s3://{s3_bucket}")
    with pytest.raises(StoreError) as info:
        store.put_json("x.json", {"a": 1})
    message = str(info.value)
    assert "refused the credentials" in message and "AWS_SECRET_ACCESS_KEY" in message
    assert secret not in message and secret not in repr(info.value)
    assert secret not in repr(store.__dict__) and secret not in repr(store)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(StoreError, match="refused the credentials"):
        open_store(f"s3://{s3_bucket}").exists("x.json")


def test_missing_bucket_says_how_to_create_it(s3_env):
    with pytest.raises(StoreError, match=r"bucket does not exist; create it with "
                                         r"`fdshpo store init s3://no-such-bucket`"):
        open_store("s3://no-such-bucket/p").list("")


def test_unreachable_endpoint_fails_after_the_retry_deadline(s3_env):
    """The contract: transient errors are retried until ``deadline`` (15 s by default), then
    raised. The bound below is that deadline with a generous margin, not a speed target."""
    store = open_store("s3://bucket-x", s3_endpoint="http://127.0.0.1:9", deadline=1.5)
    started = time.monotonic()
    with pytest.raises(StoreError, match="cannot reach S3 endpoint http://127.0.0.1:9.*"
                                         "check --s3-endpoint, that the server"):
        store.get_bytes("a")
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 1.5 + 20  # it retried (after 0.5 s and 1 s), then gave up


def test_store_init_creates_a_missing_bucket(s3_env):
    store = open_store("s3://made-by-init/prefix")
    assert store.ensure_bucket() is True
    assert store.ensure_bucket() is False
    store.put_json("a.json", [1])
    assert store.get_json("a.json") == [1]


def test_store_uris(tmp_path, monkeypatch):
    assert open_store(tmp_path).uri == tmp_path.resolve().as_uri()
    assert open_store(tmp_path.as_uri()).root == tmp_path.resolve()
    monkeypatch.setenv("FDSHPO_STORE", str(tmp_path / "env"))
    assert open_store().root == (tmp_path / "env").resolve()
    with pytest.raises(StoreError, match="unsupported store URI 'gs://x'"):
        open_store("gs://x")
    with pytest.raises(StoreError, match="invalid bucket name 'B_'"):
        open_store("s3://B_/x")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    assert open_store("s3://my-bucket/a/b/", s3_endpoint="http://h:1").uri == "s3://my-bucket/a/b"


def test_tls_is_on_by_default_except_on_loopback(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert parse_endpoint("minio.example.com:9000").secure
    assert not parse_endpoint("127.0.0.1:9000").secure
    assert not parse_endpoint("localhost:9000").secure
    assert not parse_endpoint("http://minio-service.kubeflow:9000").secure
    assert parse_endpoint("https://10.0.0.1").secure
    assert parse_endpoint(None).url == "https://s3.amazonaws.com"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    assert parse_endpoint(None).url == "http://127.0.0.1:8333"
    for bad in ("http://:9000", "http://h:port", "http://h:9000/path", "ftp://h"):
        with pytest.raises(StoreError, match=f"S3 endpoint '{bad}' "):
            parse_endpoint(bad)


@pytest.mark.parametrize("where", ["endpoint", "bare endpoint", "uri", "environment"])
def test_user_info_in_a_url_is_refused_and_never_echoed(where, monkeypatch):
    secret = "S3cr3t-In-A-Url-9f2c"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with pytest.raises(StoreError) as info:
        if where == "endpoint":
            open_store("s3://bucket", s3_endpoint=f"http://admin:{secret}@minio:9000")
        elif where == "bare endpoint":
            open_store("s3://bucket", s3_endpoint=f"admin:{secret}@minio:9000")
        elif where == "uri":
            open_store(f"s3://admin:{secret}@bucket/prefix")
        else:
            monkeypatch.setenv("AWS_ENDPOINT_URL", f"https://admin:{secret}@minio:9000")
            open_store("s3://bucket")
    message = str(info.value)
    assert "carries user info" in message and "AWS_ACCESS_KEY_ID" in message
    assert secret not in message and secret not in repr(info.value) and "***@" in message


def test_credentials_from_files_and_a_mounted_secret(tmp_path):
    (tmp_path / "ak").write_text("file-access\n")
    (tmp_path / "sk").write_text("file-secret\n")
    creds = resolve_credentials({"AWS_ACCESS_KEY_ID_FILE": str(tmp_path / "ak"),
                                 "AWS_SECRET_ACCESS_KEY_FILE": str(tmp_path / "sk")})
    assert (creds.access_key, creds.secret_key) == ("file-access", "file-secret")
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    (secret_dir / "accesskey").write_text("minio")
    (secret_dir / "secretkey").write_text("minio123")
    creds = resolve_credentials({"FDSHPO_S3_SECRET_DIR": str(secret_dir)})
    assert (creds.access_key, creds.secret_key) == ("minio", "minio123")
    assert "minio123" not in repr(creds)
    env = {"AWS_ACCESS_KEY_ID": "e", "AWS_SECRET_ACCESS_KEY": "f",
           "FDSHPO_S3_SECRET_DIR": str(secret_dir)}
    assert resolve_credentials(env).secret_key == "f"
    with pytest.raises(StoreError, match="no S3 credentials found: set AWS_ACCESS_KEY_ID"):
        resolve_credentials({"FDSHPO_S3_SECRET_DIR": str(tmp_path / "none")})


def test_json_is_canonical(tmp_path):
    store = LocalStore(tmp_path)
    store.put_json("a.json", {"b": 1, "a": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": 2, "b": 1}
    store.put_json("a.json", {"a": 2, "b": 1})  # equal object, equal bytes: no conflict


@pytest.mark.parametrize("same_bytes", [False, True])
def test_data_without_its_checksum_is_a_conflict_never_written(store, same_bytes):
    """A file dropped into a local store, or an object put without fdshpo's metadata: a
    create-only write must not report it as its own (a read would then fail)."""
    key, ours = "experiments/e/runs/r/config.json", b'{"a": 1}'
    there = ours if same_bytes else b'{"b": 2}'
    if isinstance(store, LocalStore):
        path = store.root / key
        path.parent.mkdir(parents=True)
        path.write_bytes(there)
    else:
        store._client.put_object(store.bucket, store._object(key), io.BytesIO(there),
                                 len(there))
    with pytest.raises(ArtifactExists) as info:
        store.put_bytes(key, ours)
    assert str(info.value) == (
        f"{store.uri}: {key!r} already holds data without a recorded sha256 (not written by "
        "fdshpo, or its checksum was lost); it is left as is: remove it if it is not needed, "
        "or write to a new key")
    with pytest.raises(IntegrityError, match="has no recorded sha256"):
        store.get_bytes(key)


def test_the_local_servers_identity_file_is_created_private(tmp_path, monkeypatch):
    """The file holding the server's keys is 0600 from its creation (not chmod-ed after),
    also when it exists already from an earlier start."""
    import pathlib

    from fdshpo.store import server as server_module

    seen = []

    def no_server(command, **kwargs):  # launch nothing: record the identity file's mode
        seen.append(identity.stat().st_mode & 0o777)
        raise OSError("not launched in this test")

    monkeypatch.setattr(server_module.subprocess, "Popen", no_server)
    monkeypatch.setattr(pathlib.Path, "chmod", lambda *a, **k: None)  # only creation counts
    identity = tmp_path / "s3-identity.json"
    old = os.umask(0o002)
    try:
        for existing_mode in (None, 0o664):
            if existing_mode is not None:
                os.chmod(identity, existing_mode)
            with pytest.raises(OSError, match="not launched"):
                server_module.SeaweedServer(tmp_path).start()
    finally:
        os.umask(old)
    assert seen == [0o600, 0o600]
    assert json.loads(identity.read_text())["identities"][0]["name"] == "fdshpo"
