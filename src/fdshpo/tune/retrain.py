"""Final evaluation: retrain from scratch with a schedule, report test accuracy.

The learned schedule is stretched to the retraining horizon (segment k of n covers steps
[ceil(k T'/n), ceil((k+1) T'/n)) of the new horizon T'), training uses the whole training set
(train + validation) from a fresh initialisation with seeds of its own, and the test set is
scored in eval mode (BatchNorm running statistics).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..data.batches import eval_batches
from ..engines.base import InnerRunDiverged
from ..engines.inner import load_state, train
from ..schedule import Schedule
from ..seeds import derive_seed
from .problem import ClassificationProblem


@dataclass(frozen=True)
class Evaluation:
    """Test accuracy and loss of a network retrained with a schedule.

    When the retraining diverged, ``diverged`` says where (``{"step", "hyperparameters",
    "message"}``) and the scores are None. ``backoff`` records a retraining retried with the
    learning rates scaled by ``lr_scale`` after the first attempt diverged. ``collapsed``: the
    loss stayed finite but the network scores about chance (:func:`is_collapsed`).
    """

    test_accuracy: float | None
    test_loss: float | None
    final_train_loss: float | None
    num_steps: int
    diverged: dict | None = None
    backoff: dict | None = None
    collapsed: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


#: The fraction of the way from chance to a perfect score below which a retraining has collapsed.
COLLAPSE_FRACTION = 0.1


def is_collapsed(test_accuracy: float, num_classes: int) -> bool:
    """Whether a finished retraining learned next to nothing: accuracy a < c + 0.1 (1 - c), with
    chance c = 1 / num_classes (below 19% for 10 classes, 55% for 2). A schedule at the edge of
    stability can end there with a finite loss, which no divergence check catches."""
    chance = 1.0 / num_classes
    return test_accuracy < chance + COLLAPSE_FRACTION * (1.0 - chance)


#: What :func:`retrain_and_evaluate` does when retraining diverges.
RETRAIN_DIVERGENCE_POLICIES = ("report", "halve_lr")


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
    """Train a fresh network on the full training set with ``schedule`` stretched to
    ``num_steps`` (default: the schedule's horizon), then score it on the test set.

    The retraining's initialisation and batch order have seeds of their own, derived from
    ``seed`` (default: the problem's): ``derive_seed(seed, "retrain-init")`` and
    ``derive_seed(seed, "retrain-order")``, so it shares no stream with any tuning run.
    ``Evaluation.collapsed`` flags a network that ends about as good as chance.

    Raises InnerRunDiverged (naming the step and the values) when training diverges.
    """
    num_steps = num_steps or schedule.num_steps
    schedule = schedule.stretched(num_steps)
    ds = problem.dataset
    x = ds.train_images.to(problem.device, problem.dtype)
    y = ds.train_labels.to(problem.device)
    seed = problem.seed if seed is None else seed
    model = problem.model(seed=derive_seed(seed, "retrain-init"))
    batches = problem.batches(x, y, num_steps, derive_seed(seed, "retrain-order"))
    last = []
    state = train(model, nn.functional.cross_entropy, batches, schedule,
                  on_step=lambda t, loss: last.append(loss) if t == num_steps - 1 else None)
    trained = load_state(model, state)
    acc, loss = accuracy_and_loss(trained, ds.test_images.to(problem.device, problem.dtype),
                                  ds.test_labels.to(problem.device))
    return Evaluation(acc, loss, float(last[-1]), num_steps,
                      collapsed=is_collapsed(acc, ds.num_classes))


def retrain_and_evaluate(problem: ClassificationProblem, schedule: Schedule,
                         num_steps: int | None = None, seed: int | None = None,
                         on_diverged: str = "report") -> Evaluation:
    """:func:`retrain_and_test`, with a diverged retraining as a result rather than an error.

    ``on_diverged``: ``"report"`` returns the divergence (``Evaluation.diverged``);
    ``"halve_lr"`` retrains once more with every learning rate halved and records that it did
    (``Evaluation.backoff``), reporting the second attempt's divergence if it diverges too.
    """
    if on_diverged not in RETRAIN_DIVERGENCE_POLICIES:
        raise ValueError(f"on_diverged must be one of {list(RETRAIN_DIVERGENCE_POLICIES)}, got "
                         f"{on_diverged!r}")
    num_steps = num_steps or schedule.num_steps
    try:
        return retrain_and_test(problem, schedule, num_steps, seed)
    except InnerRunDiverged as first:
        if on_diverged == "report":
            return Evaluation(None, None, None, num_steps, first.to_dict())
        backoff = {"lr_scale": 0.5, "first_attempt": first.to_dict()}
    halved = schedule.with_values({"lr": schedule.values["lr"] * backoff["lr_scale"]})
    try:
        evaluation = retrain_and_test(problem, halved, num_steps, seed)
    except InnerRunDiverged as second:
        return Evaluation(None, None, None, num_steps, second.to_dict(), backoff)
    return replace(evaluation, backoff=backoff)
