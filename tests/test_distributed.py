"""Data-parallel hypergradients (``group=``): 2 gloo ranks on uneven shards give the result of
one process with the whole batches, every rank the same bits; a dead rank is a clear error.

Each test spawns its ranks (tests/shard_ranks.py) with a file:// rendezvous, loopback only, one
thread per rank, bounded by a join timeout.
"""

from __future__ import annotations

import json
import multiprocessing
import sys

import pytest
import torch
from shard_ranks import CASES, run_case

from fdshpo.engines.shards import shard_of, shard_sizes

TOLERANCE = 1e-10
JOIN_S = 240


def spawn_ranks(tmp_path, cases, timeout_s=60.0, die_at=None, world_size=2, stall_s=0.0):
    """Run the ranks to the end; their exit codes."""
    import shard_ranks

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=shard_ranks.rank_main,
                         args=(r, world_size, str(tmp_path), cases, timeout_s,
                               die_at if r == 1 else None, stall_s))
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


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def test_two_uneven_ranks_give_one_process_result_both_engines_with_clamp(tmp_path):
    names = list(CASES)
    assert spawn_ranks(tmp_path, names) == [0, 0]
    worst = {}
    for name in names:
        ranks = [torch.load(tmp_path / f"{name}-{r}.pt") for r in range(2)]
        for key in ("train_losses",):
            assert torch.equal(ranks[0][key], ranks[1][key]), name
        assert ranks[0]["val_loss"] == ranks[1]["val_loss"], name
        for hp in ranks[0]["grads"]:
            assert torch.equal(ranks[0]["grads"][hp], ranks[1]["grads"][hp]), (name, hp)
        whole = run_case(name, None)
        got = ranks[0]
        errors = [relative(got["train_losses"], whole.train_losses),
                  abs(got["val_loss"] - whole.val_loss) / abs(whole.val_loss)]
        errors += [relative(got["grads"][hp], whole.grads[hp]) for hp in whole.grads]
        worst[name] = max(errors)
        if name == "auto":
            assert got["engine"] == whole.engine.engine
    print("max relative error per case:", {k: f"{v:.1e}" for k, v in worst.items()})
    assert max(worst.values()) < TOLERANCE, worst


def test_the_clamp_bites_in_the_clamped_cases():
    """The clamped cases differ from the unclamped ones (the mask is not all ones)."""
    clamped, free = run_case("forward-clamp", None), run_case("forward", None)
    assert relative(clamped.grads["lr"], free.grads["lr"]) > 1e-3


def test_a_dead_rank_is_a_clear_error_within_the_timeout(tmp_path):
    timeout_s = 20.0
    codes = spawn_ranks(tmp_path, ["forward"], timeout_s=timeout_s, die_at=2)
    assert codes[1] == 3
    assert codes[0] not in (0, None)
    error = json.loads((tmp_path / "error-0.json").read_text())
    assert error["type"] == "RankFailed", error
    assert "rank 0 of 2" in error["message"] and "another rank died" in error["message"]
    assert error["seconds"] < timeout_s + 10


def test_a_hung_rank_is_a_clear_error_after_the_timeout(tmp_path):
    timeout_s = 4.0
    codes = spawn_ranks(tmp_path, ["reverse"], timeout_s=timeout_s, die_at=3, stall_s=12.0)
    assert codes[0] not in (0, None)
    error = json.loads((tmp_path / "error-0.json").read_text())
    assert error["type"] == "RankFailed", error
    assert "within the process group's timeout" in error["message"]
    assert error["seconds"] < 12.0


def test_shard_sizes_cover_the_batch_near_equally():
    assert shard_sizes(10, 3) == [4, 3, 3]
    assert shard_sizes(1, 2) == [1, 0]
    x, y = torch.arange(10.0), torch.arange(10)
    pieces = [shard_of(x, y, r, 3) for r in range(3)]
    assert torch.equal(torch.cat([p[1] for p in pieces]), y)


def test_group_without_torch_distributed_initialised_says_so():
    from shard_ranks import problem

    import fdshpo

    model, train, val, schedule = problem("mlp")
    with pytest.raises(ValueError, match="init_process_group"):
        fdshpo.hypergradient(model, torch.nn.functional.cross_entropy, train, val, schedule,
                             engine="forward", group=object())


if sys.platform != "linux":  # spawn + gloo on loopback is what CI runs
    pytestmark = pytest.mark.skip("gloo ranks are tested on Linux")
