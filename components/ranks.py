"""One replica's inner run as a data-parallel job: what ``torchrun`` starts on every rank.

    torchrun --nnodes NODES --nproc-per-node PROCS -m fdshpo.components.ranks \\
        CONFIG_JSON STATE_JSON REPLICA DATASET OUT [--timeout SECONDS]

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
The data-parallel run does not save inner checkpoints yet: a retried step starts the replica's
inner run again.

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
                world_size: int, local_rank: int, group) -> dict:
    """This rank's run of the replica, as the ``inner`` component's record."""
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
    result = outer.run_replica(problem, state, replica)
    return {**result.to_dict(), "device": problem.device, "resumed": []}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fdshpo.components.ranks",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("config_json", help="file holding the experiment config as JSON")
    parser.add_argument("state_json", help="file holding the tune state as JSON")
    parser.add_argument("replica", type=int)
    parser.add_argument("dataset", help="the prepared dataset file")
    parser.add_argument("out", help="where rank 0 writes the replica's record (JSON)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds a rank waits for the others in a collective")
    args = parser.parse_args(argv)

    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from fdshpo.components.common import config_from_json

    config = config_from_json(read_text(args.config_json))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = config.resources.gpus > 0 and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=args.timeout))
    try:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        record = rank_record(config, read_text(args.state_json), args.replica,
                             args.dataset, rank, world_size, local_rank, dist.group.WORLD)
        if rank == 0:
            record["distributed"] = {"nodes": config.resources.nodes,
                                     "procs_per_node": config.resources.procs_per_node,
                                     "world_size": world_size, "backend": backend}
            if record["engine"] is not None:  # the outer step's record keeps the engine's
                record["engine"]["distributed"] = record["distributed"]
            if args.out.startswith("store:"):
                from fdshpo.components.common import open_run_store

                key = record_key(config, args.out.removeprefix("store:"),
                                 record["outer_step"], args.replica)
                open_run_store(config).put_json(key, record, overwrite=True)
            else:
                partial = Path(args.out).with_suffix(".partial")
                partial.write_text(json.dumps(record))
                partial.replace(args.out)
    finally:
        dist.destroy_process_group()
    return 0


def run_local(config, state_json: str, replica: int, dataset_path: str,
              timeout_s: float = DEFAULT_TIMEOUT_S) -> dict:
    """The replica's record from ``resources.procs_per_node`` ranks started on this machine
    with torchrun (``--standalone``: rendezvous on a free local port).

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
