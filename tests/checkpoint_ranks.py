"""The ranks of tests/test_ranks_resume.py: a checkpointed data-parallel inner run on 2 gloo ranks.

    rank_main(rank, world_size, out_dir, scenario, engine)

Each rank joins a gloo group through ``file://OUT_DIR/rendezvous`` (loopback, one thread), runs
:meth:`fdshpo.tracking.checkpoint.InnerCheckpointer.run` with ``group=WORLD`` on its uneven shard
of tests/shard_ranks.py's MLP problem, and saves what the test compares under OUT_DIR:

- ``resume``: the uninterrupted run (``reference-RANK.pt``); then a checkpointed run that both
  ranks interrupt after inner step CRASH[engine] (the single-process resume tests' hook), every
  rank's engine state after every inner step (``states-RANK.pt``), and the resumed run
  (``resumed-RANK.pt``, ``resume-RANK.json``). Rank 1's store is fenced by a lease it never
  holds: any write by rank 1 would fail.
- ``decide``: rank 0 and rank 1 read different stores (OUT/a, OUT/b). After the interrupted run
  (rank 0 wrote its checkpoints to a), rank 0 copies a into b and then deletes the newest
  checkpoint from a: on its own, rank 1 would resume from the newer one. The resumed run, and
  a run after it that finds rank 0's stored result (rank 1's batches would fail if read).
- ``lease``: rank 0 writes through a store fenced by the lease of ``kfp-job:1``; after inner
  step 3 another job takes the run over. What each rank raised goes to ``error-RANK.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import timedelta

import torch
from shard_ranks import problem, shard

import fdshpo  # noqa: F401  (fdshpo.reproducible first)

#: engine -> (recompute interval, progress step after which both ranks are interrupted)
CRASH = {"forward": (None, 5), "reverse": (2, 9)}
EVERY = 2
LEARN = ("lr", "momentum", "weight_decay")


class Crash(Exception):
    pass


def save_result(result, path: str) -> None:
    torch.save({"val_loss": result.val_loss, "grads": result.grads,
                "train_losses": result.train_losses}, path)


def rank_main(rank: int, world_size: int, out_dir: str, scenario: str, engine: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    import torch.distributed as dist

    from fdshpo import hypergradient
    from fdshpo.store import LocalStore
    from fdshpo.store.layout import RunLayout
    from fdshpo.store.lease import Lease
    from fdshpo.tracking.checkpoint import InnerCheckpointer
    from fdshpo.tune.loop import InnerTask

    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=60))
    group = dist.group.WORLD
    every, crash = CRASH[engine]
    loss = torch.nn.functional.cross_entropy
    layout = RunLayout("e", "r")

    def task():
        model, train, val, schedule = problem("mlp")
        return InnerTask(model, shard(train, rank), shard(val, rank)), schedule

    def run(ckpt, on_step=None, t=None):
        t_, schedule = task()
        t = t or t_
        return ckpt.run(t, schedule, LEARN, loss, 0, 0, on_step=on_step, engine=engine,
                        recompute_every=every, group=group)

    def lease(root, owner):
        return Lease(LocalStore(root), layout.lease, "run e/r", owner)

    def interrupted(ckpt, states: dict) -> None:
        """The checkpointed run, both ranks interrupted after inner step ``crash``."""
        def interrupt(state):
            states[state.step] = {k: v.clone() if isinstance(v, torch.Tensor) else v
                                  for k, v in state.to_tensors().items()}
            if state.step == crash:
                raise Crash

        try:
            run(ckpt, interrupt)
        except Crash:
            return
        raise AssertionError("the run was not interrupted")

    try:
        if scenario in ("resume", "decide"):
            t, schedule = task()
            save_result(hypergradient(t.model, loss, t.train_batches, t.val_batches, schedule,
                                      LEARN, engine=engine, recompute_every=every, group=group),
                        f"{out_dir}/reference-{rank}.pt")
        if scenario == "resume":
            root = f"{out_dir}/store"
            store = LocalStore(root) if rank == 0 else lease(root, "never-held").fence()
            ckpt = InnerCheckpointer(store, layout, every=EVERY)
            states: dict = {}
            interrupted(ckpt, states)
            torch.save(states, f"{out_dir}/states-{rank}.pt")
            saved = [k.rsplit("/", 1)[1] for k in ckpt.checkpoints(0, 0)]
            save_result(run(ckpt), f"{out_dir}/resumed-{rank}.pt")
            dist.barrier()  # rank 0 has stored the result and cleaned up
            with open(f"{out_dir}/resume-{rank}.json", "w") as f:
                json.dump({"saved": saved, "resumed": ckpt.resumed,
                           "left": ckpt.checkpoints(0, 0),
                           "result": store.exists(layout.replica_result(0, 0))}, f)
        elif scenario == "decide":
            store = LocalStore(f"{out_dir}/{'ab'[rank]}")
            ckpt = InnerCheckpointer(store, layout, every=EVERY)
            interrupted(ckpt, {})
            dist.barrier()
            if rank == 0:
                shutil.copytree(f"{out_dir}/a", f"{out_dir}/b", dirs_exist_ok=True)
                store.delete(ckpt.checkpoints(0, 0)[-1])
            dist.barrier()
            rank_view = [k.rsplit("/", 1)[1] for k in ckpt.checkpoints(0, 0)]
            save_result(run(ckpt), f"{out_dir}/resumed-{rank}.pt")

            def untouchable():
                raise AssertionError("rank 0's stored result should have been used")
                yield

            t, _ = task()
            again = run(ckpt, t=InnerTask(t.model, untouchable(), t.val_batches))
            save_result(again, f"{out_dir}/again-{rank}.pt")
            with open(f"{out_dir}/decide-{rank}.json", "w") as f:
                json.dump({"view": rank_view, "resumed": ckpt.resumed,
                           "result": store.exists(layout.replica_result(0, 0))}, f)
        elif scenario == "lease":
            root = f"{out_dir}/store"
            if rank == 0:
                held = lease(root, "kfp-job:1")
                held.acquire()
                store = held.fence()
            else:
                store = LocalStore(root)
            ckpt = InnerCheckpointer(store, layout, every=EVERY)

            def take_over(state):
                if rank == 0 and state.step == 3:
                    peer = lease(root, "kfp-job:1")  # another step of job 1 lets it go ...
                    peer.acquire()
                    peer.release()
                    lease(root, "kfp-job:2").acquire()  # ... and job 2 takes the run

            try:
                run(ckpt, take_over)
            except Exception as error:
                with open(f"{out_dir}/error-{rank}.json", "w") as f:
                    json.dump({"type": type(error).__name__, "message": str(error)}, f)
                raise
    finally:
        dist.destroy_process_group()


class Interrupted(Exception):
    pass


def worker_main(rank: int, world_size: int, out_dir: str, config_json: str, state_json: str,
                dataset: str, run_id: str, crash: int) -> None:
    """The torchrun worker's own code (:func:`fdshpo.components.ranks.rank_record`) on 2 gloo
    ranks, checkpointed in the run's store, both ranks interrupted after inner step ``crash``
    (rank 0 writes the checkpoints; the run's lease is not involved here)."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ["FDSHPO_TORCH_THREADS"] = "1"  # as run_local's ranks on a 2-core machine
    import torch.distributed as dist

    from fdshpo.components.common import config_from_json, open_run_store
    from fdshpo.components.ranks import rank_record
    from fdshpo.store.layout import RunLayout
    from fdshpo.tracking.checkpoint import InnerCheckpointer

    class Interrupting(InnerCheckpointer):
        def run(self, *args, on_step=None, **options):
            def interrupt(state):
                if state.step == crash:
                    raise Interrupted

            return super().run(*args, on_step=interrupt, **options)

    config = config_from_json(config_json)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=60))
    try:
        ckpt = Interrupting(open_run_store(config), RunLayout(config.experiment, run_id),
                            config.checkpoint_every)
        try:
            rank_record(config, state_json, 0, dataset, rank, world_size, 0, dist.group.WORLD,
                        ckpt)
        except Interrupted:
            return
        raise AssertionError("the run was not interrupted")
    finally:
        dist.destroy_process_group()
