"""Datasets as normalised in-memory tensors, seeded minibatch streams and validation splits."""

from .batches import ShuffledBatches, eval_batches, split_validation
from .sample import TensorDataset, load_fashion_mnist_sample

__all__ = ["ShuffledBatches", "TensorDataset", "eval_batches", "load_fashion_mnist_sample",
           "split_validation"]
