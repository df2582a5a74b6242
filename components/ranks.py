"""One replica's inner run as a data-parallel job: what ``torchrun`` starts on every rank.

    torchrun --nnodes NODES --nproc-per-node PROCS -m fdshpo.components.ranks \\
        CONFIG_JSON STATE_JSON REPLICA DATASET OUT [--run-id RUN_ID] [--owner OWNER] \\
        [--timeout SECONDS]

(CONFIG_JSON and STATE_JSON are files holding the experiment config and the tune state, as the
``inner`` component gets them, or ``env:NAME`` for an environment variable holding them; DATASET
the prepared dataset file, or ``-`` for the config's dataset from the registry, as prepare
loads it; OUT where rank 0 writes the record: a file, or ``store:RUN_ID`` for the run's
:func:`record_key` in the config's store, which the launcher reads.) Every rank joins the
process group torchrun describes (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``; gloo on CPU, NCCL with one GPU per rank, ``LOCAL_RANK``),
takes its shard of every batch of replica ``REPLICA``'s inner run
(:class:`~fdshpo.tune.problem.ClassificationProblem` ``shard=``) and runs
:meth:`~fdshpo.tune.step.OuterStep.run_replica` with the group, so every rank computes the
hypergradients of the whole batches (:mod:`fdshpo.engines.shards`). Only rank 0 writes: the
record of :func:`fdshpo.components.inner.inner_step`, plus ``distributed`` (nodes, processes
per node, backend; also in its ``engine``, which the outer step records), as JSON to OUT.

With a run (``OUT=store:RUN_ID``, or ``--run-id``) the inner run is checkpointed in the run's
store every ``checkpoint_every`` steps, as the single-process ``inner`` component's is
(:class:`~fdshpo.tracking.checkpoint.InnerCheckpointer` with the group: rank 0 alone decides
where every rank resumes, a retried job resumes from the newest intact checkpoint, and a replica
whose result is stored returns it without training). Rank 0 writes the checkpoints, the result
and the record through the run's lease as ``--owner`` (the pipeline job's ``kfp-job:<id>``,
which the launcher or the local runner holding the lease passes): it joins that lease before
the run (another job holding the run fails every rank with LeaseHeld) and every write is
fenced (refused with LeaseLost, writing nothing, once another job has taken the run over).

:func:`run_local` is how ``fdshpo run`` (and the ``inner`` component, when the config asks for
``resources.procs_per_node`` > 1 on one node) starts those ranks on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

#: Seconds a collective waits for the other ranks before the run fails (RankFailed).
DEFAULT_TIMEOUT_S = 600


def read_text(source: str) -> str:
    """The contents of file ``source``, or of environment variable NAME for ``env:NAME``."""
    if source.startswith("env:"):
        return os.environ[source.removeprefix("env:")]
    return Path(source).read_text()


def record_key(config, run_id: str, outer_step: int, replica: int) -> str:
    """Where ``OUT=store:RUN_ID`` puts a replica's record: ``distributed/<outer>-<replica>.json``
    under the run's prefix."""
    from fdshpo.store.layout import RunLayout

    layout = RunLayout(config.experiment, run_id)
    return layout.key(f"distributed/{int(outer_step):04d}-{int(replica):03d}.json")


def rank_record(config, state_json: str, replica: int, dataset_path: str, rank: int,
                world_size: int, local_rank: int, group, checkpointer=None) -> dict:
    """This rank's run of the replica, as the ``inner`` component's record (resumable with
    ``checkpointer``, an :class:`~fdshpo.tracking.checkpoint.InnerCheckpointer`)."""
    import dataclasses

    from fdshpo.components.common import load_dataset, problem_for, read_dataset
    from fdshpo.tune.state import TuneState

    state = TuneState.from_dict(json.loads(state_json))
    dataset = load_dataset(config) if dataset_path == "-" else read_dataset(dataset_path)
    problem = problem_for(config, dataset)
    if problem.device.startswith("cuda"):
        problem = dataclasses.replace(problem, device=f"cuda:{local_rank}")
    problem = dataclasses.replace(problem, shard=(rank, world_size))
    outer = config.outer_step()
    outer = dataclasses.replace(outer, engine_options={**outer.engine_options, "group": group})
    result = outer.run_replica(problem, state, replica, checkpointer=checkpointer)
    resumed = [] if checkpointer is None else [list(r) for r in checkpointer.resumed]
    return {**result.to_dict(), "device": problem.device, "resumed": resumed}


def rank_checkpointer(config, run_id: str, owner: str, shards):
    """The run's inner checkpointer on this rank: rank 0's writes through the run's lease,
    joined as ``owner`` (:func:`~fdshpo.components.common.held_recorder`); the other ranks'
    only read. LeaseHeld (on every rank) when another owner holds the run."""
    from fdshpo.components.common import held_recorder, open_run_store
    from fdshpo.store.layout import RunLayout
    from fdshpo.tracking.checkpoint import InnerCheckpointer

    held, failed = None, None
    if shards.rank == 0:
        try:
            held = held_recorder(config, run_id, owner)
        except Exception as error:  # every rank raises it
            failed = error
    shards.decide(failed, "run lease")
    if held is not None:
        return held.inner
    return InnerCheckpointer(open_run_store(config), RunLayout(config.experiment, run_id),
                             config.checkpoint_every)


def write_out(record: dict, out: str, config, store=None) -> None:
    """Rank 0's record to OUT: a file (written whole, then renamed), or ``store:RUN_ID``'s
    :func:`record_key` in ``store`` (rank 0's fenced store: LeaseLost, and nothing written,
    once another job holds the run)."""
    if out.startswith("store:"):
        key = record_key(config, out.removeprefix("store:"), record["outer_step"],
                         record["replica"])
        store.put_json(key, record, overwrite=True)
    else:
        partial = Path(out).with_suffix(".partial")
        partial.write_text(json.dumps(record))
        partial.replace(out)


def main(argv: list[str] | None = None) -> int:
    """Run this rank (module docstring). A rank's exception is recorded for torchrun
    (:func:`torch.distributed.elastic.multiprocessing.errors.record`), so its summary of the
    failed job, which :func:`run_local` shows and a TrainJob's launcher logs, names the error,
    not only the exit status."""
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_main)(argv)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fdshpo.components.ranks",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("config_json", help="file holding the experiment config as JSON")
    parser.add_argument("state_json", help="file holding the tune state as JSON")
    parser.add_argument("replica", type=int)
    parser.add_argument("dataset", help="the prepared dataset file")
    parser.add_argument("out", help="where rank 0 writes the replica's record (JSON): a file, "
                        "or store:RUN_ID")
    parser.add_argument("--run-id", help="the run whose store keeps the inner checkpoints "
                        "(default: RUN_ID of OUT=store:RUN_ID; neither: no checkpoints)")
    parser.add_argument("--owner", help="the run lease's owner rank 0 writes as (kfp-job:<id>); "
                        "needed with a run")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds a rank waits for the others in a collective")
    args = parser.parse_args(argv)
    run_id = args.run_id or (args.out.removeprefix("store:") if args.out.startswith("store:")
                             else None)
    if run_id and not args.owner:
        parser.error("rank 0 writes to the run's store only under the run's lease: pass "
                     "--owner, the owner label of the job holding it (kfp-job:<job id>)")

    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from fdshpo.components.common import config_from_json
    from fdshpo.engines.shards import ShardGroup

    config = config_from_json(read_text(args.config_json))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = config.resources.gpus > 0 and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=args.timeout))
    try:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        checkpointer = None
        if run_id:
            checkpointer = rank_checkpointer(config, run_id, args.owner,
                                             ShardGroup(dist.group.WORLD))
        record = rank_record(config, read_text(args.state_json), args.replica,
                             args.dataset, rank, world_size, local_rank, dist.group.WORLD,
                             checkpointer)
        if rank == 0:
            record["distributed"] = {"nodes": config.resources.nodes,
                                     "procs_per_node": config.resources.procs_per_node,
                                     "world_size": world_size, "backend": backend}
            if record["engine"] is not None:  # the outer step's record keeps the engine's
                record["engine"]["distributed"] = record["distributed"]
            write_out(record, args.out, config,
                      None if checkpointer is None else checkpointer.store)
    finally:
        dist.destroy_process_group()
    return 0


def run_local(config, state_json: str, replica: int, dataset_path: str,
              timeout_s: float = DEFAULT_TIMEOUT_S, run_id: str | None = None,
              owner: str | None = None) -> dict:
    """The replica's record from ``resources.procs_per_node`` ranks started on this machine
    with torchrun (``--standalone``: rendezvous on a free local port); with ``run_id``, inner
    checkpoints in that run's store, rank 0 writing under its lease as ``owner`` (the caller's
    own label: the caller holds the lease, rank 0 joins it).

    Raises:
        UserError: ``resources.nodes`` > 1 (more than one node needs a cluster).
        RuntimeError: a rank failed (torchrun's exit status and the tail of its output).
    """
    from fdshpo.errors import UserError

    res = config.resources
    if res.nodes > 1:
        raise UserError(f"resources.nodes is {res.nodes}: a run on this machine starts the "
                        "ranks of one node only; run a multi-node experiment on a cluster, or "
                        "set resources.nodes: 1")
    with tempfile.TemporaryDirectory(prefix="fdshpo-ranks-") as tmp:
        config_path, state_path = Path(tmp) / "config.json", Path(tmp) / "state.json"
        config_path.write_text(json.dumps(config.to_dict()))
        state_path.write_text(state_json)
        out = Path(tmp) / "record.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes",
                   "1", "--nproc-per-node", str(res.procs_per_node), "-m",
                   "fdshpo.components.ranks", str(config_path), str(state_path), str(replica),
                   str(dataset_path), str(out), "--timeout", str(timeout_s)]
        if run_id:
            if not owner:
                raise ValueError("run_local with a run_id needs the owner label of the lease "
                                 "its caller holds")
            command += ["--run-id", run_id, "--owner", owner]
        env = dict(os.environ)
        threads = env.get("FDSHPO_TORCH_THREADS") or str(
            max(1, (os.cpu_count() or 1) // res.procs_per_node))
        env.update(FDSHPO_TORCH_THREADS=threads, OMP_NUM_THREADS=threads)
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
            raise RuntimeError(f"the data-parallel inner run of replica {replica} "
                               f"({res.procs_per_node} local ranks) failed with exit status "
                               f"{done.returncode}:\n{tail}")
        return json.loads(out.read_text())


if __name__ == "__main__":
    sys.exit(main())
