"""Data-parallel hypergradients (``group=``): 2 gloo ranks on uneven shards give the result of
one process with the whole batches, every rank the same bits; a dead rank is a clear error.

Each test spawns its ranks (tests/shard_ranks.py) with a file:// rendezvous, loopback only, one
thread per rank, bounded by a join timeout.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from shard_ranks import CASES, rank_main, run_case, spawn

from fdshpo.data.batches import ShuffledBatches, shard_bounds
from fdshpo.engines.shards import shard_of

TOLERANCE = 1e-10

def spawn_ranks(tmp_path, cases, timeout_s=60.0, die_at=None, world_size=2, stall_s=0.0):
    """Run the ranks to the end (rank 1 dies after inner step ``die_at``); their exit codes."""
    return spawn(rank_main, tmp_path, cases, timeout_s, world_size=world_size,
                 per_rank=lambda r: (die_at if r == 1 else None, stall_s))


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
    stall_s = 20.0  # far beyond the timeout, so a loaded machine's slow setup cannot blur them
    codes = spawn_ranks(tmp_path, ["reverse"], timeout_s=timeout_s, die_at=3, stall_s=stall_s)
    assert codes[0] not in (0, None)
    error = json.loads((tmp_path / "error-0.json").read_text())
    assert error["type"] == "RankFailed", error
    assert "within the process group's timeout" in error["message"]
    assert error["seconds"] < stall_s  # the timeout ended it, not the stalled rank's return


def test_shards_cover_the_batch_near_equally():
    assert [shard_bounds(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert [shard_bounds(1, r, 2) for r in range(2)] == [(0, 1), (1, 1)]
    x, y = torch.arange(10.0), torch.arange(10)
    pieces = [shard_of(x, y, r, 3) for r in range(3)]
    assert torch.equal(torch.cat([p[1] for p in pieces]), y)


@pytest.mark.parametrize("augment", [False, True])
def test_sharded_shuffled_batches_join_into_the_whole_stream(augment):
    from fdshpo.data.augment import random_crop_flip

    x, y = torch.randn(50, 1, 8, 8), torch.arange(50)
    options = dict(augment=random_crop_flip if augment else None)
    whole = list(ShuffledBatches(x, y, 7, 9, seed=4, **options))
    shards = [list(ShuffledBatches(x, y, 7, 9, seed=4, shard=(r, 3), **options))
              for r in range(3)]
    for t, (xs, ys) in enumerate(whole):
        assert torch.equal(torch.cat([s[t][0] for s in shards]), xs)
        assert torch.equal(torch.cat([s[t][1] for s in shards]), ys)


def test_group_without_torch_distributed_initialised_says_so():
    from shard_ranks import problem

    import fdshpo

    model, train, val, schedule = problem("mlp")
    with pytest.raises(ValueError, match="init_process_group"):
        fdshpo.hypergradient(model, torch.nn.functional.cross_entropy, train, val, schedule,
                             engine="forward", group=object())


if sys.platform != "linux":  # spawn + gloo on loopback is what CI runs
    pytestmark = pytest.mark.skip("gloo ranks are tested on Linux")


def small_config(tmp_path, **resources):
    """configs/demo.yaml over a 12-step horizon, its resources overridden."""
    import dataclasses
    from pathlib import Path

    from fdshpo.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    schedule = dataclasses.replace(config.schedule, horizon=12)
    return dataclasses.replace(config, schedule=schedule,
                               resources=dataclasses.replace(config.resources, **resources))


def test_torchrun_ranks_give_the_replica_record_of_one_process(tmp_path):
    """fdshpo.components.ranks under torchrun, 2 gloo ranks: the record of one process (the
    demo runs in float32, so to float32 reduction noise)."""
    from fdshpo.components.common import load_dataset, problem_for, save_dataset
    from fdshpo.components.ranks import run_local
    from fdshpo.tune.state import TuneState

    config = small_config(tmp_path, procs_per_node=2)
    dataset = load_dataset(config)
    save_dataset(dataset, tmp_path / "dataset.pt")
    schedule = config.initial_schedule()
    state = TuneState(schedule, config.optimizer().init(schedule))
    record = run_local(config, json.dumps(state.to_dict()), 0, str(tmp_path / "dataset.pt"),
                       timeout_s=120)
    one = config.outer_step().run_replica(problem_for(config, dataset), state, 0)
    assert record["distributed"] == {"nodes": 1, "procs_per_node": 2, "world_size": 2,
                                     "backend": "gloo"}
    assert record["engine"]["engine"] == one.engine["engine"]
    assert record["engine"]["distributed"] == record["distributed"]  # the step record keeps it
    assert abs(record["val_loss"] - one.val_loss) <= 1e-5 * abs(one.val_loss)
    for name, grads in one.grads.items():
        got = torch.tensor(record["grads"][name])
        assert relative(got, torch.tensor(grads)) < 1e-3, name


@pytest.mark.parametrize("resources,message", [
    ({"procs_per_node": 0}, "resources.procs_per_node must be between 1 and 64"),
    ({"nodes": "two"}, "resources.nodes must be an integer"),
    ({"gpus": 1, "procs_per_node": 2}, "each rank on a node needs a GPU of its own"),
])
def test_resources_for_ranks_are_validated(resources, message):
    from fdshpo.config import ExperimentConfig
    from fdshpo.errors import UserError

    data = small_config(None).to_dict()
    data["resources"].update(resources)
    with pytest.raises(UserError, match=message):
        ExperimentConfig.from_dict(data)


def test_a_local_run_refuses_several_nodes(tmp_path):
    from fdshpo.components.ranks import run_local
    from fdshpo.errors import UserError

    with pytest.raises(UserError, match="resources.nodes is 2: a run on this machine"):
        run_local(small_config(tmp_path, nodes=2), "{}", 0, "unused")
