"""The cost of a data-parallel inner run: 1 process against N ranks, and bytes reduced.

    python bench/ranks.py [--horizon 20] [--batch 128] [--repeats 2] [--ranks 2]
                          [--backend gloo|nccl] [--device cpu|cuda] [--out FILE.json]

LeNet-5 on random 28x28 batches, (7, 1, 1) segments (K = 9), both engines. For each engine:
one process with the whole batches (``group=None``), then ``--ranks`` ranks (spawned, file://
rendezvous, loopback, 1 thread each; with ``--device cuda`` rank r on GPU r, the usual
``--backend nccl``) with 1/N of every batch each, every process warmed up with a 7-step run
of each engine first. Reported per inner step, in plain SGD steps of one process with the whole
batch on 1 thread (on the device): the step cost of each, and their ratio (N ranks / 1 process:
below 1 when the shards run in parallel faster than the reductions cost; with 1 rank, what the
collectives alone cost), and the bytes one rank reduces per step and collectives per step
(:class:`fdshpo.engines.shards.ShardGroup` counts them). ``--ranks 1 --backend nccl --device
cuda`` is bench/device_run.sh's check that the data-parallel path runs on NCCL.
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
from steps import LOSS, make_batches, plain_steps, schedule, sync  # noqa: E402

from fdshpo.engines.choose import prepare_engine  # noqa: E402
from fdshpo.models import LeNet5  # noqa: E402

ENGINES = ("forward", "reverse")


def run(engine: str, horizon: int, batch: int, rank: int, world: int, group,
        device: str = "cpu") -> dict:
    """One inner run on this rank's 1/world of every batch: seconds, and the reductions."""
    torch.manual_seed(0)
    model = LeNet5().to(device)
    train = make_batches(horizon, batch, (1, 28, 28), device, seed=1)
    val = make_batches(2, batch, (1, 28, 28), device, seed=2)
    if world > 1:
        part = batch // world
        train = [(x[rank * part:(rank + 1) * part], y[rank * part:(rank + 1) * part])
                 for x, y in train]
        val = [(x[rank * part:(rank + 1) * part], y[rank * part:(rank + 1) * part])
               for x, y in val]
    runner, _ = prepare_engine(model, LOSS, train, schedule(horizon), engine=engine,
                               group=group)
    sync(device)
    start = time.perf_counter()
    runner.run(runner.init(), train, val)
    sync(device)
    seconds = time.perf_counter() - start
    shards = runner.shards
    return {"seconds": seconds,
            "bytes_per_step": None if shards is None else shards.bytes_reduced / horizon,
            "collectives_per_step": None if shards is None else shards.collectives / horizon}


def rank_main(rank: int, world: int, tmp: str, horizon: int, batch: int, backend: str,
              device: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
    dist.init_process_group(backend, init_method=f"file://{tmp}/rendezvous", rank=rank,
                            world_size=world, timeout=timedelta(seconds=300))
    for e in ENGINES:  # a fresh process: first calls pay for imports and warm-up
        run(e, 7, batch, rank, world, dist.group.WORLD, device)
    out = {e: run(e, horizon, batch, rank, world, dist.group.WORLD, device) for e in ENGINES}
    Path(f"{tmp}/rank-{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


def ranks(world: int, backend: str, device: str, horizon: int, batch: int) -> dict:
    """Rank 0's measurements of ``world`` spawned ranks (RuntimeError when a rank failed)."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=rank_main,
                             args=(r, world, tmp, horizon, batch, backend, device))
                 for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(900)
        codes = [p.exitcode for p in procs]
        if codes != [0] * world:
            raise RuntimeError(f"the {world} {backend} ranks exited with {codes}")
        return json.loads(Path(f"{tmp}/rank-0.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--horizon", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ranks", type=int, default=2, help="data-parallel ranks")
    parser.add_argument("--backend", default="gloo", choices=("gloo", "nccl"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cuda: rank r on GPU r (and the one process on GPU 0)")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    if args.backend == "nccl" and args.device != "cuda":
        parser.error("--backend nccl needs --device cuda")
    torch.set_num_threads(1)
    device = "cuda:0" if args.device == "cuda" else "cpu"
    plain_steps(LeNet5().to(device), make_batches(3, args.batch, (1, 28, 28), device))  # warm-up
    for e in ENGINES:
        run(e, 7, args.batch, 0, 1, None, device)
    rounds = []
    for _ in range(args.repeats):
        torch.manual_seed(0)
        model = LeNet5().to(device)
        batches = make_batches(args.horizon, args.batch, (1, 28, 28), device, seed=1)
        sync(device)
        start = time.perf_counter()
        plain_steps(model, batches)
        sync(device)
        plain = (time.perf_counter() - start) / args.horizon
        one = {e: run(e, args.horizon, args.batch, 0, 1, None, device) for e in ENGINES}
        many = ranks(args.ranks, args.backend, args.device, args.horizon, args.batch)
        rounds.append({"plain_step_s": plain, "one": one, "ranks": many})
    rows = {}
    for e in ENGINES:
        one = sorted(r["one"][e]["seconds"] / args.horizon / r["plain_step_s"] for r in rounds)
        many = sorted(r["ranks"][e]["seconds"] / args.horizon / r["plain_step_s"]
                      for r in rounds)
        ratio = sorted(r["ranks"][e]["seconds"] / r["one"][e]["seconds"] for r in rounds)
        rows[e] = {"one_process_plain_steps": one, "ranks_plain_steps": many,
                   "ratio_ranks_over_one": ratio,
                   "bytes_per_step": rounds[0]["ranks"][e]["bytes_per_step"],
                   "collectives_per_step": rounds[0]["ranks"][e]["collectives_per_step"]}
    result = {"command": "python " + " ".join(sys.argv), "machine": platform.processor() or
              platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "network": "LeNet-5 (61,706 params)", "segments": "(7, 1, 1)",
              "ranks": args.ranks, "backend": args.backend,
              "horizon": args.horizon, "batch": args.batch, "rows": rows, "rounds": rounds}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
