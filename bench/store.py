"""Checkpoint I/O cost: S3 (a local SeaweedFS) vs a plain file copy, and its share of a step.

    python bench/store.py [--repeats 5] [--steps 30] [--every 200] [--out FILE.json]

The checkpoint is a real inner state: LeNet-5 (61,706 parameters) with (7, 1, 1) learned
segments, i.e. K = 9 tangent columns, encoded by :func:`fdshpo.tracking.checkpoint.encode_state`.
Measured in one process, medians over ``--repeats`` (the machine is shared and noisy):

- ``s3_write_ratio`` / ``s3_read_ratio``: time of ``put_bytes`` / ``get_bytes`` (sha256
  included) to a SeaweedFS server on 127.0.0.1, over ``shutil.copyfile`` of the same bytes
  between two local files (the baseline), plus both throughputs in MB/s;
- ``checkpoint_share``: one checkpoint (encode + put + pruning the older ones, as
  :class:`fdshpo.tracking.checkpoint.InnerCheckpointer` does it) over ``every`` FDS inner steps
  plus that
  checkpoint, with the FDS step time measured on the same model (target: under 5% at the default
  interval), for the S3 store and for a local-directory store.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from torch import nn

from fdshpo import Schedule
from fdshpo.engines.forward import ForwardEngine
from fdshpo.models import LeNet5
from fdshpo.store import LocalStore, open_store
from fdshpo.store.layout import RunLayout
from fdshpo.store.server import SeaweedServer
from fdshpo.tracking.checkpoint import DEFAULT_EVERY, InnerCheckpointer, encode_state

BATCH = 128


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="FDS steps timed for the share")
    parser.add_argument("--every", type=int, default=DEFAULT_EVERY)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = LeNet5()
    horizon = max(args.steps, 7) + 2
    schedule = Schedule.constant(horizon, lr=0.05, momentum=0.9, weight_decay=5e-4,
                                 segments={"lr": 7})
    engine = ForwardEngine(model, nn.functional.cross_entropy, schedule)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(BATCH, 1, 28, 28, generator=gen),
                torch.randint(0, 10, (BATCH,), generator=gen)) for _ in range(horizon)]
    state = engine.advance(engine.init(), batches[:2], until=2)  # warm-up
    step_seconds = timed(lambda: engine.advance(state, batches[2:2 + args.steps],
                                                until=2 + args.steps)) / args.steps
    # a state with every column live, as late in a run
    full = engine.advance(engine.init(), batches, until=horizon)
    data = encode_state(full, {"fingerprint": "bench"})
    mb = len(data) / 2**20

    with tempfile.TemporaryDirectory() as tmp, SeaweedServer(Path(tmp) / "s3") as server:
        server.create_bucket("bench")
        os.environ.update(server.environment())
        s3 = open_store("s3://bench/store")
        local = LocalStore(Path(tmp) / "local")
        src, dst = Path(tmp) / "src.pt", Path(tmp) / "dst.pt"
        src.write_bytes(data)
        copy, write, read = [], [], []
        for i in range(args.repeats):  # interleaved, so load changes hit all three alike
            copy.append(timed(lambda: shutil.copyfile(src, dst)))
            write.append(timed(lambda i=i: s3.put_bytes(f"ck/{i}.pt", data)))
            read.append(timed(lambda i=i: s3.get_bytes(f"ck/{i}.pt")))
        share = {}
        for name, store in (("s3", s3), ("local", local)):
            ckpt = InnerCheckpointer(store, RunLayout("bench", name), every=args.every)
            for step in range(args.repeats + ckpt.keep):
                ckpt.save(full._replace(step=step), 0, 0, "bench")
            per = ckpt.saved_seconds / (args.repeats + ckpt.keep)
            share[name] = {"checkpoint_seconds": per,
                           "share": per / (args.every * step_seconds + per)}
        server.stop()

    med = statistics.median
    result = {
        "command": "python bench/store.py " + " ".join(argv or sys.argv[1:]),
        "date": date.today().isoformat(), "machine": f"{platform.node()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
        "checkpoint_mib": round(mb, 2),
        "file_copy_seconds": med(copy), "s3_write_seconds": med(write),
        "s3_read_seconds": med(read),
        "s3_write_ratio": med(write) / med(copy), "s3_read_ratio": med(read) / med(copy),
        "file_copy_mb_s": mb / med(copy), "s3_write_mb_s": mb / med(write),
        "s3_read_mb_s": mb / med(read),
        "fds_step_seconds": step_seconds, "every": args.every,
        "checkpoint_share": share,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
