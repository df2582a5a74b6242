"""An image-classification inner problem: dataset + network + batching + seeds -> InnerTasks.

Seeds are derived per purpose from the run seed S (:func:`fdshpo.seeds.derive_seed`), never
global: for outer step s and replica r,

    validation split   derive_seed(S, "split", s)      (a new split each outer step, shared by
                                                         replicas)
    network init       derive_seed(S, "init", r)       (a replica keeps its init across steps)
    batch order        derive_seed(S, "order", s, r)   (+ epoch inside ShuffledBatches)

so every outer step of every replica is reproducible from S alone, and no two streams share a
seed. With ``resample=False`` every outer step reuses outer step 0's split and batch order
(s = 0 above: common random numbers), so the validation losses of two outer steps differ only
through their schedules; that is what ``select="best"`` and backtracking compare, and what every
trial of a black-box search already gets (all its trials run on outer step 0). The final
retraining has streams of its own (:func:`fdshpo.tune.retrain.retrain_and_test`).
With ``val_index`` set (e.g. from a prepared bundle, :func:`fdshpo.data.load_prepared`) every
outer step uses that fixed held-out split instead. ``augment=True`` applies the seeded random
crop (4 pixels) and horizontal flip of :func:`fdshpo.data.random_crop_flip` to training batches
(the CIFAR-10 recipe). ``shard=(rank, world_size)`` gives that rank's shard of every training
and validation batch (a rank of a data-parallel inner run, :mod:`fdshpo.engines.shards`): the
same batches, split.

The split tensors of the last outer step asked for are kept on the device, so the many trials of a
search (all on outer step 0) copy the training split once rather than once per trial (measured:
0.1 s of a 0.6 s trial on full Fashion-MNIST). They are only read, never written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data.augment import random_crop_flip
from ..data.batches import ShuffledBatches, eval_batches, split_validation
from ..data.sample import TensorDataset
from ..models import build_model
from ..seeds import derive_seed
from .state import InnerTask


@dataclass(frozen=True)
class ClassificationProblem:
    """Factory of :class:`~fdshpo.tune.state.InnerTask` for ``tune`` (a ``TaskFactory``)."""

    dataset: TensorDataset
    network: str = "lenet"
    batch_size: int = 128
    val_fraction: float = 0.05
    val_batch_size: int = 1000
    seed: int = 0
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    augment: bool = False
    init: str = "default"
    resample: bool = True
    shard: tuple[int, int] | None = None
    val_index: torch.Tensor | None = field(default=None, compare=False, repr=False)
    _split_cache: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    @classmethod
    def from_prepared(cls, prepared, network: str = "lenet", fixed_split: bool = True,
                      **options) -> ClassificationProblem:
        """The problem over a :class:`~fdshpo.data.PreparedDataset`: its dataset, its
        validation fraction, and (``fixed_split``) its fixed validation split."""
        return cls(prepared.dataset, network, val_fraction=prepared.val_fraction,
                   val_index=prepared.val_index if fixed_split else None, **options)

    def split(self, outer_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(train_index, val_index) of the training set for ``outer_step``."""
        n = len(self.dataset.train_images)
        if self.val_index is None:
            return split_validation(n, self.val_fraction, self.split_seed(outer_step))
        held_out = torch.zeros(n, dtype=torch.bool)
        held_out[self.val_index] = True
        return (~held_out).nonzero().flatten(), self.val_index

    def batches(self, inputs: torch.Tensor, targets: torch.Tensor, num_steps: int, seed: int
                ) -> ShuffledBatches:
        """The training stream over (inputs, targets), augmented when ``augment`` is set."""
        return ShuffledBatches(inputs, targets, self.batch_size, num_steps, seed,
                               augment=random_crop_flip if self.augment else None,
                               shard=self.shard)

    def split_seed(self, outer_step: int) -> int:
        return derive_seed(self.seed, "split", self._stream_step(outer_step))

    def init_seed(self, replica: int) -> int:
        return derive_seed(self.seed, "init", replica)

    def order_seed(self, outer_step: int, replica: int) -> int:
        return derive_seed(self.seed, "order", self._stream_step(outer_step), replica)

    def _stream_step(self, outer_step: int) -> int:
        """The outer step whose split and batch order ``outer_step`` draws (see ``resample``)."""
        return outer_step if self.resample else 0

    def model(self, replica: int = 0, seed: int | None = None) -> torch.nn.Module:
        """A fresh network: replica ``replica``'s initialisation, or ``seed``'s when given."""
        net = build_model(self.network, self.dataset.input_shape, self.dataset.num_classes,
                          self.init_seed(replica) if seed is None else seed, init=self.init)
        return net.to(device=self.device, dtype=self.dtype)

    def split_tensors(self, outer_step: int) -> tuple[torch.Tensor, ...]:
        """(train_x, train_y, val_x, val_y) of ``outer_step`` on the device, in the dtype (the
        last outer step's are cached; see the module docstring)."""
        cached = self._split_cache.get(outer_step)
        if cached is None:
            ds = self.dataset
            train_index, val_index = (i.to(self.device) for i in self.split(outer_step))
            x = ds.train_images.to(self.device, self.dtype)
            y = ds.train_labels.to(self.device)
            cached = (x[train_index], y[train_index], x[val_index], y[val_index])
            self._split_cache.clear()
            self._split_cache[outer_step] = cached
        return cached

    def __call__(self, outer_step: int, replica: int, num_steps: int) -> InnerTask:
        train_x, train_y, val_x, val_y = self.split_tensors(outer_step)
        train = self.batches(train_x, train_y, num_steps, self.order_seed(outer_step, replica))
        return InnerTask(self.model(replica), train,
                         eval_batches(val_x, val_y, self.val_batch_size, self.shard))
