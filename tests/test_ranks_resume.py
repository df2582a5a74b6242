"""Data-parallel runs that go wrong on one rank (2 gloo ranks): a batch replay mismatch on one
rank is reported by every rank, naming it."""

from __future__ import annotations

import json
import multiprocessing
import sys

import pytest

JOIN_S = 240

if sys.platform != "linux":  # spawn + gloo on loopback is what CI runs
    pytestmark = pytest.mark.skip("gloo ranks are tested on Linux")


def spawn(target, tmp_path, *args, world_size=2):
    """Run ``target(rank, world_size, tmp_path, *args)`` in each rank; their exit codes."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=target, args=(r, world_size, str(tmp_path), *args))
             for r in range(world_size)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_S)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return codes


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
