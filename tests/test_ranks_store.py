"""The torchrun worker (fdshpo.components.ranks) and the run's store: inner checkpoints resumed
by the ranks of a retried step, rank 0's writes under the run's lease as the owner its launcher
passes, refused when another job holds or took over the run."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

if sys.platform != "linux":  # spawn + gloo on loopback is what CI runs
    pytestmark = pytest.mark.skip("gloo ranks are tested on Linux")

ROOT = Path(__file__).resolve().parents[1]


def small_config(tmp_path, checkpoint_every=4):
    """configs/demo.yaml over a 12-step horizon on 2 local ranks, its store in tmp_path."""
    from fdshpo.config import load_config

    config = load_config(ROOT / "configs" / "demo.yaml")
    return dataclasses.replace(
        config, schedule=dataclasses.replace(config.schedule, horizon=12),
        resources=dataclasses.replace(config.resources, procs_per_node=2),
        store=dataclasses.replace(config.store, uri=str(tmp_path / "store")),
        checkpoint_every=checkpoint_every)


def start(config, tmp_path) -> tuple[str, str]:
    """(state JSON of outer step 0, the prepared dataset's path)."""
    from fdshpo.components.common import load_dataset, save_dataset
    from fdshpo.tune.state import TuneState

    save_dataset(load_dataset(config), tmp_path / "dataset.pt")
    schedule = config.initial_schedule()
    state = TuneState(schedule, config.optimizer().init(schedule))
    return json.dumps(state.to_dict()), str(tmp_path / "dataset.pt")


def newest_lease_owner(config, run_id) -> str:
    from fdshpo.components.common import open_run_store
    from fdshpo.store.layout import RunLayout

    store = open_run_store(config)
    newest = store.list(RunLayout(config.experiment, run_id).lease)[-1]
    return store.get_json(newest)["owner"]


def test_a_retried_data_parallel_step_resumes_its_inner_checkpoints_bit_for_bit(
        tmp_path, monkeypatch):
    """Run A: 2 torchrun ranks uninterrupted. Run B: the worker's ranks interrupted after
    inner step 10 (checkpoints 4 and 8 in the store), then retried with torchrun: it resumes at
    8 and gives A's record bit for bit; rank 0 wrote under the caller's lease."""
    import multiprocessing

    import checkpoint_ranks

    from fdshpo.components.common import held_recorder, open_run_store
    from fdshpo.components.ranks import run_local
    from fdshpo.store.layout import RunLayout

    monkeypatch.setenv("FDSHPO_TORCH_THREADS", "1")
    config = small_config(tmp_path)
    state_json, dataset = start(config, tmp_path)
    store = open_run_store(config)
    owner = "kfp-job:test"
    records = {}
    for run_id in ("run-a", "run-b"):
        layout = RunLayout(config.experiment, run_id)
        if run_id == "run-b":
            ctx = multiprocessing.get_context("spawn")
            procs = [ctx.Process(target=checkpoint_ranks.worker_main,
                                 args=(r, 2, str(tmp_path), json.dumps(config.to_dict()),
                                       state_json, dataset, run_id, 10)) for r in range(2)]
            for p in procs:
                p.start()
            for p in procs:
                p.join(240)
            assert [p.exitcode for p in procs] == [0, 0]
            assert [k.rsplit("/", 1)[1] for k in store.list(layout.inner_checkpoints(0, 0))] \
                == ["00000004.pt", "00000008.pt"]
        rec = held_recorder(config, run_id, owner)  # the inner step holds the run's lease
        records[run_id] = run_local(config, state_json, 0, dataset, timeout_s=120,
                                    run_id=run_id, owner=owner)
        del rec
        assert store.list(layout.inner_checkpoints(0, 0)) == []  # removed by rank 0
        assert store.exists(layout.replica_result(0, 0))
        assert newest_lease_owner(config, run_id) == owner
    a, b = records["run-a"], records["run-b"]
    assert a["resumed"] == [] and b["resumed"] == [[0, 0, 8]]
    assert a["distributed"] == b["distributed"] == {
        "nodes": 1, "procs_per_node": 2, "world_size": 2, "backend": "gloo"}
    assert b["val_loss"] == a["val_loss"]
    stored = [store.get_json(RunLayout(config.experiment, r).replica_result(0, 0))
              for r in ("run-a", "run-b")]
    assert stored[1]["train_losses"] == stored[0]["train_losses"]
    for name, grads in a["grads"].items():
        assert torch.equal(torch.tensor(b["grads"][name]), torch.tensor(grads)), name


def test_the_ranks_refuse_a_run_another_job_holds_and_write_nothing(tmp_path):
    from fdshpo.components.common import held_recorder, open_run_store
    from fdshpo.components.ranks import run_local
    from fdshpo.store.layout import RunLayout

    config = small_config(tmp_path)
    state_json, dataset = start(config, tmp_path)
    other = held_recorder(config, "run", "kfp-job:other")
    with pytest.raises(RuntimeError) as failed:
        run_local(config, state_json, 0, dataset, timeout_s=60, run_id="run",
                  owner="kfp-job:mine")
    assert "LeaseHeld" in str(failed.value)
    assert "is being written by kfp-job:other" in str(failed.value)
    layout, store = RunLayout(config.experiment, "run"), open_run_store(config)
    assert store.list(layout.inner_checkpoints(0, 0)) == []
    assert not store.exists(layout.replica_result(0, 0))
    assert newest_lease_owner(config, "run") == "kfp-job:other"
    del other


def test_rank_0_record_is_refused_once_another_job_took_the_run_over(tmp_path):
    """The record write of OUT=store:RUN_ID goes through rank 0's fenced store."""
    from fdshpo.components.common import held_recorder, open_run_store
    from fdshpo.components.ranks import record_key, write_out
    from fdshpo.store.layout import RunLayout
    from fdshpo.store.lease import Lease, LeaseLost

    config = small_config(tmp_path)
    rec = held_recorder(config, "run", "kfp-job:1")  # rank 0 joined job 1's lease
    record = {"outer_step": 0, "replica": 1, "val_loss": 0.5}
    write_out(record, "store:run", config, rec.inner.store)
    store, key = open_run_store(config), record_key(config, "run", 0, 1)
    assert store.get_json(key) == record
    store.delete(key)
    lease_prefix = RunLayout(config.experiment, "run").lease
    peer = Lease(store, lease_prefix, "run", "kfp-job:1")  # another step of job 1 lets it go
    peer.acquire()
    peer.release()
    Lease(store, lease_prefix, "run", "kfp-job:2").acquire()  # job 2 takes the run over
    with pytest.raises(LeaseLost, match="kfp-job:2 took the lease over"):
        write_out(record, "store:run", config, rec.inner.store)
    assert not store.exists(key)


def test_the_worker_needs_the_owner_to_write_to_a_run():
    from fdshpo.components.ranks import main

    with pytest.raises(SystemExit) as exited:
        main(["c.json", "s.json", "0", "-", "store:run"])
    assert exited.value.code == 2
