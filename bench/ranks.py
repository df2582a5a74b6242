"""The cost of a data-parallel inner run: 1 process against 2 gloo ranks, and bytes reduced.

    python bench/ranks.py [--horizon 20] [--batch 128] [--repeats 2] [--out FILE.json]

LeNet-5 on random 28x28 batches, (7, 1, 1) segments (K = 9), both engines. For each engine:
one process with the whole batches (``group=None``), then 2 gloo ranks (spawned, file://
rendezvous, loopback, 1 thread each) with half of every batch each, every process warmed up
with a 7-step run of each engine first. Reported per inner step,
in plain SGD steps of one process with the whole batch on 1 thread: the step cost of each, and
their ratio (2 ranks / 1 process: below 1 when the halves run in parallel faster than the
reductions cost), and the bytes one rank reduces per step and collectives per step
(:class:`fdshpo.engines.shards.ShardGroup` counts them).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from steps import LOSS, make_batches, plain_steps, schedule  # noqa: E402

from fdshpo.engines.choose import prepare_engine  # noqa: E402
from fdshpo.models import LeNet5  # noqa: E402

ENGINES = ("forward", "reverse")


def run(engine: str, horizon: int, batch: int, rank: int, world: int, group) -> dict:
    """One inner run on this rank's half of every batch: seconds, and the reductions."""
    torch.manual_seed(0)
    model = LeNet5()
    train = make_batches(horizon, batch, (1, 28, 28), "cpu", seed=1)
    val = make_batches(2, batch, (1, 28, 28), "cpu", seed=2)
    if world > 1:
        half = batch // world
        train = [(x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half])
                 for x, y in train]
        val = [(x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half])
               for x, y in val]
    runner, _ = prepare_engine(model, LOSS, train, schedule(horizon), engine=engine,
                               group=group)
    start = time.perf_counter()
    runner.run(runner.init(), train, val)
    seconds = time.perf_counter() - start
    shards = runner.shards
    return {"seconds": seconds,
            "bytes_per_step": None if shards is None else shards.bytes_reduced / horizon,
            "collectives_per_step": None if shards is None else shards.collectives / horizon}


def rank_main(rank: int, world: int, tmp: str, horizon: int, batch: int) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank,
                            world_size=world, timeout=timedelta(seconds=300))
    for e in ENGINES:  # a fresh process: first calls pay for imports and warm-up
        run(e, 7, batch, rank, world, dist.group.WORLD)
    out = {e: run(e, horizon, batch, rank, world, dist.group.WORLD) for e in ENGINES}
    Path(f"{tmp}/rank-{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


def two_ranks(horizon: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=rank_main, args=(r, 2, tmp, horizon, batch))
                 for r in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(900)
        return json.loads(Path(f"{tmp}/rank-0.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--horizon", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    plain_steps(LeNet5(), make_batches(3, args.batch, (1, 28, 28), "cpu"))  # warm-up
    for e in ENGINES:
        run(e, 7, args.batch, 0, 1, None)
    rounds = []
    for _ in range(args.repeats):
        torch.manual_seed(0)
        model = LeNet5()
        batches = make_batches(args.horizon, args.batch, (1, 28, 28), "cpu", seed=1)
        start = time.perf_counter()
        plain_steps(model, batches)
        plain = (time.perf_counter() - start) / args.horizon
        one = {e: run(e, args.horizon, args.batch, 0, 1, None) for e in ENGINES}
        two = two_ranks(args.horizon, args.batch)
        rounds.append({"plain_step_s": plain, "one": one, "two": two})
    rows = {}
    for e in ENGINES:
        one = sorted(r["one"][e]["seconds"] / args.horizon / r["plain_step_s"] for r in rounds)
        two = sorted(r["two"][e]["seconds"] / args.horizon / r["plain_step_s"] for r in rounds)
        ratio = sorted(r["two"][e]["seconds"] / r["one"][e]["seconds"] for r in rounds)
        rows[e] = {"one_process_plain_steps": one, "two_ranks_plain_steps": two,
                   "ratio_two_over_one": ratio,
                   "bytes_per_step": rounds[0]["two"][e]["bytes_per_step"],
                   "collectives_per_step": rounds[0]["two"][e]["collectives_per_step"]}
    result = {"command": "python " + " ".join(sys.argv), "machine": platform.processor() or
              platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "network": "LeNet-5 (61,706 params)", "segments": "(7, 1, 1)",
              "horizon": args.horizon, "batch": args.batch, "rows": rows, "rounds": rounds}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
