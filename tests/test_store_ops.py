"""Operating a store: `fdshpo store init` refuses placeholder keys and sets up a bucket-scoped
user's policy; `fdshpo store backup|restore` copy a real SeaweedFS store to a directory and back,
verified, never overwriting finished artifacts."""

from __future__ import annotations

import pytest

from fdshpo.cli import main
from fdshpo.schedule import Schedule
from fdshpo.store import LocalStore, open_store
from fdshpo.store.admin import bucket_policy, read_user_keys
from fdshpo.store.base import StoreError
from fdshpo.store.layout import latest_pointer
from fdshpo.tracking.recorder import RunRecorder


def test_placeholder_keys_are_refused_before_anything_is_contacted(monkeypatch, capsys,
                                                                   tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "REPLACE_WITH_ROOT_USER")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "REPLACE_WITH_ROOT_PASSWORD")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    assert main(["store", "init", "s3://fdshpo"]) == 2
    err = capsys.readouterr().err
    assert "the S3 access key from the environment is still the placeholder REPLACE_WITH_..." \
        in err and "k8s/**/*.env" in err and "cannot reach" not in err
    user = tmp_path / "user"
    user.mkdir()
    (user / "accesskey").write_text("fdshpo-pipelines")
    (user / "secretkey").write_text("REPLACE_WITH_SECRET_KEY_OF_AT_LEAST_8_CHARACTERS\n")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "root")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "root-password")
    assert main(["store", "init", "s3://fdshpo", "--minio-user-dir", str(user)]) == 2
    assert f"the S3 secret key from the Secret mounted at {user} is still the placeholder" \
        in capsys.readouterr().err


def test_the_bucket_users_keys_must_be_its_own(s3_env, tmp_path, capsys):
    user = tmp_path / "user"
    user.mkdir()
    (user / "accesskey").write_text(s3_env.access_key)
    (user / "secretkey").write_text(s3_env.secret_key)
    assert main(["store", "init", "s3://scoped", "--minio-user-dir", str(user)]) == 2
    out, err = capsys.readouterr()
    assert "created bucket: s3://scoped" in out
    assert "the bucket user's access key equals the root user's" in err
    (user / "secretkey").write_text("short")
    with pytest.raises(StoreError, match="fewer than 8 characters"):
        read_user_keys(user)


def test_the_bucket_policy_allows_this_bucket_only():
    policy = bucket_policy("fdshpo")
    resources = {r for s in policy["Statement"] for r in s["Resource"]}
    assert resources == {"arn:aws:s3:::fdshpo", "arn:aws:s3:::fdshpo/*"}
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert {"s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:DeleteObject"} <= actions
    assert not [a for a in actions if "*" in a or "Bucket" in a and a not in (
        "s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads")]
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])


def record_run(store, run_id: str, lr: float) -> None:
    recorder = RunRecorder(store, "exp", run_id)
    recorder.start({"experiment": "exp", "lr": lr})
    recorder.finish(Schedule.constant(10, lr=lr, momentum=0.0, weight_decay=0.0), report=False)


def test_backup_and_restore_round_trip_a_real_store(s3_bucket, tmp_path, capsys):
    source_uri = f"s3://{s3_bucket}/team"
    source = open_store(source_uri)
    record_run(source, "run-a", 0.1)
    record_run(source, "run-b", 0.2)
    keys = source.list("")
    backup = tmp_path / "backup"
    assert main(["store", "backup", str(backup), "--store", source_uri]) == 0
    assert f"{len(keys)} copied, 0 already there" in capsys.readouterr().out
    local = LocalStore(backup)
    assert local.list("") == keys
    assert all(local.get_bytes(k) == source.get_bytes(k) for k in keys)
    assert main(["store", "backup", str(backup), "--store", source_uri]) == 0  # refresh
    assert f"0 copied, {len(keys)} already there" in capsys.readouterr().out

    restored_uri = f"s3://{s3_bucket}/restored"
    assert main(["store", "restore", str(backup), "--store", restored_uri]) == 0
    restored = open_store(restored_uri)
    assert restored.list("") == keys
    assert restored.get_json(latest_pointer("exp"))["run_id"] == "run-b"


def test_restore_reports_conflicts_and_corruption_and_overwrites_nothing(s3_bucket, tmp_path,
                                                                          capsys):
    backup = LocalStore(tmp_path / "backup")
    record_run(backup, "run-a", 0.1)
    target_uri = f"s3://{s3_bucket}/live"
    target = open_store(target_uri)
    config_key = "experiments/exp/runs/run-a/config.json"
    target.put_json(config_key, {"someone": "else"})
    (tmp_path / "backup" / "experiments/exp/runs/run-a/metrics.json").write_text("{}tampered")
    assert main(["store", "restore", str(tmp_path / "backup"), "--store", target_uri]) == 1
    err = capsys.readouterr().err
    assert f"conflict (different bytes already there, left as is): {config_key}" in err
    assert "corrupt in the source (sha256 mismatch, not copied): " \
           "experiments/exp/runs/run-a/metrics.json" in err
    assert target.get_json(config_key) == {"someone": "else"}
    assert not target.exists("experiments/exp/runs/run-a/metrics.json")
    assert target.exists("experiments/exp/runs/run-a/run.json")
