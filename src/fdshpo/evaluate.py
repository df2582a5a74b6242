"""Final evaluation: retrain from scratch with a schedule, report test accuracy.

The learned schedule is stretched to the retraining horizon (segment k of n covers steps
[ceil(k T'/n), ceil((k+1) T'/n)) of the new horizon T'), training uses the whole training set
(train + validation), and the test set is scored in eval mode (BatchNorm running statistics).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .data.batches import eval_batches
from .inner import load_state, train
from .problem import ClassificationProblem
from .schedule import Schedule


@dataclass(frozen=True)
class Evaluation:
    """Test accuracy and loss of a network retrained with a schedule."""

    test_accuracy: float
    test_loss: float
    final_train_loss: float
    num_steps: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@torch.no_grad()
def accuracy_and_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                      batch_size: int = 1000) -> tuple[float, float]:
    """(fraction correct, mean cross-entropy) of ``model`` in eval mode over the given set."""
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    for x, y in eval_batches(inputs, targets, batch_size):
        out = model(x)
        correct += int((out.argmax(1) == y).sum())
        loss_sum += float(nn.functional.cross_entropy(out, y, reduction="sum"))
    model.train(was_training)
    return correct / len(inputs), loss_sum / len(inputs)


def retrain_and_test(problem: ClassificationProblem, schedule: Schedule,
                     num_steps: int | None = None, seed: int | None = None) -> Evaluation:
    """Train ``problem``'s network from its initialisation on the full training set with
    ``schedule`` stretched to ``num_steps`` (default: the schedule's horizon), then score it
    on the test set.

    Raises FloatingPointError (naming the step) when training diverges.
    """
    num_steps = num_steps or schedule.num_steps
    schedule = schedule.stretched(num_steps)
    ds = problem.dataset
    x = ds.train_images.to(problem.device, problem.dtype)
    y = ds.train_labels.to(problem.device)
    model = problem.model(0)
    batches = problem.batches(x, y, num_steps, problem.seed + 1 if seed is None else seed)
    last = []
    state = train(model, nn.functional.cross_entropy, batches, schedule,
                  on_step=lambda t, loss: last.append(loss) if t == num_steps - 1 else None)
    trained = load_state(model, state)
    acc, loss = accuracy_and_loss(trained, ds.test_images.to(problem.device, problem.dtype),
                                  ds.test_labels.to(problem.device))
    return Evaluation(acc, loss, float(last[-1]), num_steps)
