"""A tracked, checkpointed tune run in its own process, for tests/test_resume.py.

    python tests/resume_driver.py STORE_DIR RUN_ID DELAY_SECONDS_PER_INNER_STEP ENGINE

Prints one JSON line: the final TuneState (without timings) and the inner resumptions.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from fdshpo import Schedule, SignOptimizer
from fdshpo.data import TensorDataset, load_fashion_mnist_sample
from fdshpo.data.batches import ShuffledBatches
from fdshpo.store import open_store
from fdshpo.tracking.recorder import RunRecorder
from fdshpo.tune.loop import InnerTask
from fdshpo.tune.problem import ClassificationProblem

HORIZON, OUTER_STEPS, REPLICAS, EVERY = 16, 2, 2, 4


class SlowBatches(ShuffledBatches):
    """ShuffledBatches that sleep before each batch (so a test can kill the run mid-step)."""

    delay = 0.0

    def __iter__(self):
        for batch in super().__iter__():
            time.sleep(self.delay)
            yield batch


def main() -> None:
    torch.set_num_threads(1)
    store_dir, run_id, delay, engine = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    SlowBatches.delay = delay
    full = load_fashion_mnist_sample()
    small = TensorDataset("sample-subset", full.train_images[:200], full.train_labels[:200],
                          full.test_images[:100], full.test_labels[:100], 10)
    problem = ClassificationProblem(small, "mlp", batch_size=32, val_fraction=0.1, seed=5)

    def make_task(outer_step: int, replica: int, num_steps: int) -> InnerTask:
        task = problem(outer_step, replica, num_steps)
        b = task.train_batches
        return InnerTask(task.model, SlowBatches(b.inputs, b.targets, b.batch_size,
                                                 b.num_steps, b.seed), task.val_batches)

    initial = Schedule.constant(HORIZON, lr=0.05, momentum=0.5, weight_decay=1e-4,
                                segments={"lr": 2}, bounds={"lr": (0.0, 1.0)})
    recorder = RunRecorder(open_store(store_dir), "resume", run_id, checkpoint_every=EVERY)
    resume = recorder.start({"horizon": HORIZON, "replicas": REPLICAS})
    result = recorder.tune(make_task, initial, SignOptimizer(), resume=resume,
                           outer_steps=OUTER_STEPS, replicas=REPLICAS, engine=engine)
    state = result.state.to_dict()
    for record in state["history"]:
        record.pop("seconds")
    print(json.dumps({"state": state, "resumed_outer": None if resume is None
                      else resume.next_outer_step, "resumed_inner": recorder.inner.resumed}))


if __name__ == "__main__":
    main()
