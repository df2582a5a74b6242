"""No secret echoed: a URL's user info, with a secret that itself holds '/' and '@', never
reaches a message, an event or the index, whichever entry point it came in by (--s3-endpoint,
AWS_ENDPOINT_URL, --store s3:// and file://, a config's store.uri, a data source)."""

from __future__ import annotations

import pytest
import yaml

from fdshpo.cli import main
from fdshpo.store import open_store
from fdshpo.store.credentials import has_userinfo, redact_userinfo
from fdshpo.tracking.reader import list_runs
from fdshpo.tracking.recorder import RunRecorder

#: a secret with both characters that ended the redaction early: '/' and '@'
SECRET = "Sl/sh@At-9f2c"
USERINFO = f"admin:{SECRET}"
PIECES = ("admin", "Sl/sh", "sh@At", "At-9f2c", "9f2c")


def assert_hidden(text: str) -> None:
    assert not [p for p in PIECES if p in text], text


@pytest.mark.parametrize("text, shown", [
    (f"http://{USERINFO}@minio:9000", "http://***@minio:9000"),
    (f"{USERINFO}@minio:9000", "***@minio:9000"),
    (f"s3://{USERINFO}@bucket/prefix", "s3://***@bucket/prefix"),
    (f"file://{USERINFO}@host/srv/store", "file://***@host/srv/store"),
    (f"cannot open 'https://{USERINFO}@h:1' now", "cannot open 'https://***@h:1' now"),
    ("file:///srv/st@re", "file:///srv/st@re"),       # no authority, no user info
    ("./st@re", "./st@re"), ("/srv/st@re", "/srv/st@re"),   # plain paths
    ("http://minio:9000", "http://minio:9000"),
])
def test_redaction_hides_everything_up_to_the_last_at(text, shown):
    assert redact_userinfo(text) == shown
    assert has_userinfo(text) == (text != shown)


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.mark.parametrize("argv, shown", [
    (["--store", "s3://bucket", "--s3-endpoint", f"http://{USERINFO}@minio:9000"],
     "S3 endpoint 'http://***@minio:9000' carries user info"),
    (["--store", "s3://bucket", "--s3-endpoint", f"{USERINFO}@minio:9000"],
     "S3 endpoint '***@minio:9000' carries user info"),
    (["--store", f"s3://{USERINFO}@bucket/prefix"],
     "store URI 's3://***@bucket/prefix' carries user info (an '@' after the scheme)"),
    (["--store", f"file://{USERINFO}@host/srv/store"],
     "store URI 'file://***@host/srv/store' carries user info (an '@' after the scheme)"),
])
def test_every_command_line_entry_point_hides_the_secret(keys, capsys, argv, shown):
    assert main(["runs", "list", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fdshpo: error: {shown}: put no keys in")
    assert_hidden(err)


def test_the_endpoint_from_the_environment_hides_the_secret(keys, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"https://{USERINFO}@minio:9000")
    assert main(["runs", "list", "--store", "s3://bucket"]) == 2
    err = capsys.readouterr().err
    assert "S3 endpoint 'https://***@minio:9000' carries user info" in err
    assert_hidden(err)


@pytest.mark.parametrize("key, value, shown", [
    ("uri", f"s3://{USERINFO}@bucket/p", "store.uri: store URI 's3://***@bucket/p' carries "
                                         "user info"),
    ("uri", f"file://{USERINFO}@host/p", "store.uri: store URI 'file://***@host/p' carries "
                                         "user info"),
    ("endpoint", f"http://{USERINFO}@minio:9000",
     "store.endpoint: S3 endpoint 'http://***@minio:9000' carries user info"),
])
def test_a_config_store_with_user_info_is_refused_without_the_secret(tmp_path, key, value,
                                                                     shown):
    from fdshpo.config.experiment import load_config
    from fdshpo.errors import UserError

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"experiment": "x", "network": "mlp",
                                    "data": {"dataset": "fashion-mnist-sample"},
                                    "schedule": {"horizon": 20}, "store": {key: value}}))
    with pytest.raises(UserError) as info:
        load_config(path)
    assert shown in str(info.value)
    assert_hidden(str(info.value))


def test_a_data_source_locator_is_redacted(tmp_path, keys):
    from fdshpo.data import DatasetNotFound, load_dataset

    with pytest.raises(DatasetNotFound) as info:
        load_dataset("cifar10", root=tmp_path / "root", store=f"s3://{USERINFO}@bucket/data")
    message = str(info.value)
    assert "object store s3://***@bucket/data: StoreError: store URI 's3://***@bucket/data' " \
           "carries user info" in message
    assert_hidden(message)


def test_a_failure_message_is_recorded_and_indexed_without_the_secret(tmp_path):
    store = open_store(tmp_path)
    recorder = RunRecorder(store, "exp", "run-1")
    recorder.start({"lr": 0.1})
    recorder.fail(f"could not reach http://{USERINFO}@minio:9000 (timed out)")
    texts = [store.get_bytes(k).decode() for k in store.list("")]
    assert any("could not reach http://***@minio:9000 (timed out)" in t for t in texts)
    for text in texts:
        assert_hidden(text)
    (row,) = list_runs(store).rows
    assert row["error"] == "could not reach http://***@minio:9000 (timed out)"
