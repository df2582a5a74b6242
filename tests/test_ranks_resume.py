"""Inner checkpoints of a data-parallel run (2 gloo ranks, tests/checkpoint_ranks.py): rank 0
decides where every rank resumes and alone writes; an interrupted run resumed equals the
uninterrupted one bit for bit; rank 0's writes are fenced by the run's lease; a batch replay
mismatch on one rank is reported by every rank, naming it."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from shard_ranks import spawn

if sys.platform != "linux":  # spawn + gloo on loopback is what CI runs
    pytestmark = pytest.mark.skip("gloo ranks are tested on Linux")


def assert_same(a: dict, b: dict) -> None:
    assert a["val_loss"] == b["val_loss"]
    assert set(a["grads"]) == set(b["grads"])
    for name in a["grads"]:
        assert torch.equal(a["grads"][name], b["grads"][name]), name
    assert torch.equal(a["train_losses"], b["train_losses"])


def assert_equal_states(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):  # bit for bit (the losses of steps to come are NaN)
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=where)
    else:
        assert a == b, where


@pytest.mark.parametrize(("engine", "saved", "resumed_at"), [
    ("forward", [2, 4], 4),
    ("reverse", [6, 8], 8),  # in the backward sweep (progress 6 + 2 backward steps)
])
def test_an_interrupted_two_rank_run_resumes_bit_for_bit(tmp_path, engine, saved, resumed_at):
    import checkpoint_ranks

    assert spawn(checkpoint_ranks.rank_main, tmp_path, "resume", engine) == [0, 0]
    logs = [json.loads((tmp_path / f"resume-{r}.json").read_text()) for r in range(2)]
    for log in logs:
        assert log["saved"] == [f"{s:08d}.pt" for s in saved]
        assert log["resumed"] == [[0, 0, resumed_at]]  # every rank resumed where rank 0 did
        assert log["left"] == [] and log["result"]  # rank 0 stored the result, cleaned up
    for r in range(2):
        assert_same(torch.load(tmp_path / f"resumed-{r}.pt"),
                    torch.load(tmp_path / f"reference-{r}.pt"))
    # the claim rank 0's checkpoint rests on: every rank's engine state is the same bits after
    # every step, but for the fields each rank keeps of its own (RANK_OWN), which differ
    from fdshpo.tracking.checkpoint import RANK_OWN

    states = [torch.load(tmp_path / f"states-{r}.pt") for r in range(2)]
    assert sorted(states[0]) == sorted(states[1]) and len(states[0]) >= resumed_at
    for step, state in states[0].items():
        assert sorted(state) == sorted(states[1][step])
        for key, value in state.items():
            if key in RANK_OWN[engine]:
                assert not torch.equal(value, states[1][step][key])
            else:
                assert_equal_states(value, states[1][step][key], f"step {step}: {key}")


def test_rank_0_decides_where_every_rank_resumes(tmp_path):
    """Rank 1 reads another store whose newest checkpoint rank 0's store lacks: it resumes
    where rank 0 decides, and a rerun returns the result rank 0 stored (rank 1's store has
    none) without training."""
    import checkpoint_ranks

    assert spawn(checkpoint_ranks.rank_main, tmp_path, "decide", "forward") == [0, 0]
    logs = [json.loads((tmp_path / f"decide-{r}.json").read_text()) for r in range(2)]
    assert logs[0]["view"] == ["00000002.pt"]
    assert logs[1]["view"] == ["00000002.pt", "00000004.pt"]
    assert logs[0]["resumed"] == logs[1]["resumed"] == [[0, 0, 2]]
    assert [log["result"] for log in logs] == [True, False]
    for r in range(2):
        reference = torch.load(tmp_path / f"reference-{r}.pt")
        assert_same(torch.load(tmp_path / f"resumed-{r}.pt"), reference)
        assert_same(torch.load(tmp_path / f"again-{r}.pt"), reference)


def test_rank_0_writes_nothing_once_another_job_took_the_lease(tmp_path):
    import checkpoint_ranks

    from fdshpo.store import LocalStore
    from fdshpo.store.layout import RunLayout

    codes = spawn(checkpoint_ranks.rank_main, tmp_path, "lease", "forward")
    assert codes[0] != 0 and codes[1] != 0
    error = json.loads((tmp_path / "error-0.json").read_text())
    assert error["type"] == "LeaseLost"
    assert "kfp-job:2 took the lease over" in error["message"], error
    layout, store = RunLayout("e", "r"), LocalStore(tmp_path / "store")
    # the checkpoint of step 2 was written while job 1 held the run; nothing after step 3
    assert [k.rsplit("/", 1)[1] for k in store.list(layout.inner_checkpoints(0, 0))] == [
        "00000002.pt"]
    assert not store.exists(layout.replica_result(0, 0))


def test_a_replay_mismatch_on_one_rank_is_named_on_every_rank(tmp_path):
    """Rank 1's training stream reshuffles when read again: both ranks raise the ReplayError
    naming rank 1 and the step (rank 0 used to see only a failed collective)."""
    import shard_ranks

    assert spawn(shard_ranks.rank_main, tmp_path, ["reverse-reshuffled"], 60.0) == [1, 1]
    for r in range(2):
        error = json.loads((tmp_path / f"error-{r}.json").read_text())
        assert error["type"] == "ReplayError", error
        assert error["message"].startswith("rank 1 of 2 of the data-parallel run: "
                                           "train_batches gave a different batch for step ")
