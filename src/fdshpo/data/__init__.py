"""Datasets as normalised in-memory tensors, seeded minibatch streams and validation splits.

``load_dataset(name, root=None, path=..., store=..., download=...)`` loads a registered dataset
(``known_datasets()``: fashion-mnist-sample, fashion-mnist, mnist, cifar10, plus any added with
``register_dataset``); ``prepare_dataset`` writes the checksummed bundle a pipeline shares
between its steps and ``load_prepared`` reads it back.
"""

from .augment import random_crop_flip
from .batches import ShuffledBatches, eval_batches, split_validation
from .cifar import CifarFormatError
from .idx import IdxFormatError
from .prepare import (
    PreparedBundleError,
    PreparedDataset,
    load_prepared,
    prepare_dataset,
    write_prepared,
)
from .registry import (
    DataRequest,
    DatasetNotFound,
    default_data_root,
    known_datasets,
    load_dataset,
    register_dataset,
)
from .sample import TensorDataset, load_fashion_mnist_sample, normalise_images
from .standard import register_standard_datasets

register_standard_datasets()


def dataset_names() -> tuple[str, ...]:
    """Registered dataset names (what ``data.dataset`` in a config accepts)."""
    return tuple(known_datasets())


__all__ = ["CifarFormatError", "DataRequest", "DatasetNotFound", "IdxFormatError",
           "PreparedBundleError", "PreparedDataset", "load_prepared", "prepare_dataset",
           "write_prepared",
           "ShuffledBatches", "TensorDataset", "dataset_names", "default_data_root", "eval_batches",
           "known_datasets", "load_dataset", "load_fashion_mnist_sample", "normalise_images",
           "random_crop_flip", "register_dataset", "split_validation"]
