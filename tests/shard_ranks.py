"""The ranks of tests/test_distributed.py: each a spawned process in a 2-rank gloo group.

    rank_main(rank, world_size, out_dir, cases, timeout_s, die_at)

Joins a gloo group through ``file://OUT_DIR/rendezvous`` (one thread per rank, loopback only),
runs ``fdshpo.hypergradient(..., group=WORLD)`` for each case on this rank's uneven shard of
every batch (:func:`uneven`), and saves each result to ``OUT_DIR/CASE-RANK.pt`` (tensors do not
travel well through queues). ``die_at``: this rank exits abruptly after that inner step of the
first case (after sleeping ``stall_s``: a rank that hangs); the other writes the error it got,
and how long it waited, to ``OUT_DIR/error-RANK.json``.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta

import torch
from nets import batches_for, tiny_conv_bn, tiny_mlp
from torch import nn

#: name -> (network, engine, grad_clamp, recompute_every)
CASES = {
    "forward": ("mlp", "forward", None, None),
    "reverse": ("mlp", "reverse", None, 2),
    "forward-clamp": ("mlp", "forward", 0.05, None),
    "reverse-clamp": ("mlp", "reverse", 0.05, 2),
    "auto": ("mlp", "auto", None, None),
    "bn-forward": ("bn", "forward", None, None),
    "bn-reverse": ("bn", "reverse", None, 3),
}
#: cases that fail on purpose (tests/test_ranks_resume.py): rank 1's stream is Reshuffled
FAILING = {"reverse-reshuffled": ("mlp", "reverse", None, 2)}
NUM_STEPS = 6
#: examples in the training batch of each step; 2 gives rank 1 an empty shard
TRAIN_SIZES = (8, 7, 2, 9, 8, 5)
VAL_SIZES = (8, 5, 1)


def uneven(examples: int) -> list[int]:
    """Rank 0 takes n - floor(n / 3) examples of a batch, rank 1 the rest."""
    return [examples - examples // 3, examples // 3]


def problem(kind: str):
    """(model, train batches, val batches, schedule) of a case, whole batches."""
    from fdshpo import Schedule

    model = tiny_mlp(0) if kind == "mlp" else tiny_conv_bn(0)
    pool = batches_for(kind, len(TRAIN_SIZES) + len(VAL_SIZES), batch=max(TRAIN_SIZES), seed=3)
    sized = [(x[:n], y[:n]) for (x, y), n in zip(pool, TRAIN_SIZES + VAL_SIZES)]
    schedule = Schedule.constant(num_steps=NUM_STEPS, lr=0.3, momentum=0.8, weight_decay=1e-3,
                                 segments={"lr": 3, "momentum": 2, "weight_decay": 1})
    return model, sized[:len(TRAIN_SIZES)], sized[len(TRAIN_SIZES):], schedule


def shard(batches, rank: int):
    out = []
    for x, y in batches:
        sizes = uneven(len(y))
        start = sum(sizes[:rank])
        out.append((x[start:start + sizes[rank]], y[start:start + sizes[rank]]))
    return out


class ShardWise(nn.Module):
    """One process's reference for per-rank BatchNorm: ``inner`` applied to each rank's shard
    of the batch separately (each shard normalised with its own statistics), outputs joined."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        pieces = torch.split(x, uneven(len(x)))
        return torch.cat([self.inner(p) for p in pieces if len(p)])


class Reshuffled:
    """``batches``, each one's examples in reverse order on every second pass: a stream that
    reshuffles when reverse mode reads it again."""

    def __init__(self, batches) -> None:
        self.batches, self.passes = batches, 0

    def __iter__(self):
        self.passes += 1
        for x, y in self.batches:
            yield (x.flip(0), y.flip(0)) if self.passes % 2 == 0 else (x, y)


def run_case(name: str, rank: int | None, group=None, on_step=None):
    """The case's result: on rank ``rank``'s shards with ``group``, or (rank None) one process
    with the whole batches (BatchNorm cases: shard by shard, :class:`ShardWise`)."""
    from fdshpo import hypergradient

    kind, engine, clamp, every = {**CASES, **FAILING}[name]
    model, train, val, schedule = problem(kind)
    if rank is not None:
        train, val = shard(train, rank), shard(val, rank)
        if name.endswith("-reshuffled") and rank == 1:
            train = Reshuffled(train)
    elif kind == "bn":
        model = ShardWise(model)
    return hypergradient(model, nn.functional.cross_entropy, train, val, schedule,
                         engine=engine, grad_clamp=clamp, recompute_every=every,
                         group=group, on_step=on_step)


def rank_main(rank: int, world_size: int, out_dir: str, cases: list[str], timeout_s: float,
              die_at: int | None = None, stall_s: float = 0.0) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=timeout_s))

    def dying(state):
        if state.step == die_at:
            if stall_s:
                time.sleep(stall_s)
            os._exit(3)

    try:
        for name in cases:
            start = time.monotonic()
            try:
                result = run_case(name, rank, dist.group.WORLD,
                                  dying if die_at is not None else None)
            except Exception as error:
                with open(f"{out_dir}/error-{rank}.json", "w") as f:
                    json.dump({"type": type(error).__name__, "message": str(error),
                               "seconds": time.monotonic() - start}, f)
                raise
            torch.save({"val_loss": result.val_loss, "grads": result.grads,
                        "train_losses": result.train_losses, "engine": result.engine.engine},
                       f"{out_dir}/{name}-{rank}.pt")
    finally:
        if die_at is None:
            dist.destroy_process_group()


#: Seconds a test waits for each rank process before killing it.
JOIN_S = 240


def spawn(target, tmp_path, *args, world_size=2, per_rank=None) -> list[int | None]:
    """Run ``target(rank, world_size, tmp_path, *args, *per_rank(rank))`` in a spawned process
    per rank, wait up to JOIN_S each, kill what still runs; their exit codes."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=target, args=(r, world_size, str(tmp_path), *args,
                                              *(per_rank(r) if per_rank else ())))
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
