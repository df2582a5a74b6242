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
from fdshpo.store.layout import RunLayout, is_live_state, latest_pointer
from fdshpo.store.s3 import S3Store
from fdshpo.tracking import index
from fdshpo.tracking.reader import list_runs
from fdshpo.tracking.recorder import RunRecorder
from fdshpo.tracking.reindex import reindex


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
    runs = [k for k in keys if k.startswith("experiments/") and not is_live_state(k)]
    assert restored.list("experiments/") == runs
    assert restored.get_json(latest_pointer("exp"))["run_id"] == "run-b"
    assert list_runs(restored).rows == list_runs(source).rows


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


def test_a_live_store_backs_up_and_restores_into_a_store_that_reindex_leaves_unchanged(
        s3_bucket, tmp_path, capsys, monkeypatch):
    """The source moves on between the backup's listing and its copies (a run starts and
    finishes, the index compacts the entries listed, a lease is released): what vanished is
    reported, not fatal. The restore leaves out leases and inner checkpoints, keeps the
    destination's newer latest.json, and its run index equals what `runs reindex` builds."""
    monkeypatch.setattr(index, "COMPACT_AT", 4)
    source_uri = f"s3://{s3_bucket}/live"
    source = open_store(source_uri)
    for i in range(3):
        record_run(source, f"run-{i}", 0.1 * (i + 1))
    running = RunRecorder(source, "exp", "running")
    running.start({"experiment": "exp", "lr": 0.5})               # holds its lease
    source.put_bytes(RunLayout("exp", "running").inner_checkpoint(0, 0, 10), b"state",
                     overwrite=True)
    real_list, moved = S3Store.list, []

    def live_list(self, prefix=""):  # the backup's listing, then the store moves on
        keys = real_list(self, prefix)
        if self.uri == source.uri and not moved:
            moved.append(True)
            record_run(source, "run-3", 0.4)    # compacts the loose entries listed above
            running.close()
        return keys

    monkeypatch.setattr(S3Store, "list", live_list)
    backup = tmp_path / "backup"
    assert main(["store", "backup", str(backup), "--store", source_uri]) == 0
    out = capsys.readouterr().out
    assert " vanished while copying (deleted by the live source)" in out
    assert "  vanished before it was read (compacted, released or superseded), skipped: " \
           "index/exp/entries/" in out
    monkeypatch.setattr(S3Store, "list", real_list)

    target_uri = f"s3://{s3_bucket}/target"
    target = open_store(target_uri)
    later = RunRecorder(target, "exp", "run-9", clock=lambda: 4_000_000_000.0)
    later.start({"experiment": "exp", "lr": 0.9})
    later.finish(Schedule.constant(10, lr=0.9, momentum=0.0, weight_decay=0.0), report=False)
    assert main(["store", "restore", str(backup), "--store", target_uri]) == 0
    out = capsys.readouterr().out
    assert "left out (leases, inner checkpoints, the run index)" in out
    assert "  kept the destination's pointer to a run that finished later: " \
           "experiments/exp/latest.json" in out
    assert "rebuilt the run index of 1 experiment(s) (5 run(s)) from the restored run " \
           "folders" in out
    assert target.get_json(latest_pointer("exp"))["run_id"] == "run-9"
    assert [k for k in target.list("") if is_live_state(k)] == [
        k for k in target.list("experiments/exp/runs/run-9/") if "/lease/" in k]
    listed = list_runs(target)
    assert [(r["run_id"], r["status"]) for r in listed.rows] == [
        ("run-0", "complete"), ("run-1", "complete"), ("run-2", "complete"),
        ("run-9", "complete"), ("running", "incomplete")]
    result = reindex(target)
    assert result.problems == [] and list_runs(target).rows == listed.rows
