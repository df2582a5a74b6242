"""Networks by name: ``build_model(name, input_shape, num_classes, seed, init="default")``.

Names: ``mlp`` (one hidden layer of 128), ``lenet`` (LeNet-5), ``wrn-D-K`` (wide ResNet of depth
D = 6n + 4 and width K, e.g. ``wrn-16-1``), plus any added with ``register_model``. Every network
works with ``torch.func.functional_call`` and the FDS engine (BatchNorm included).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .init import initialise
from .small import LeNet5, mlp
from .wrn import WideResNet, parse_wrn

#: ``builder(input_shape, num_classes) -> nn.Module``
Builder = Callable[[tuple[int, ...], int], nn.Module]
_BUILDERS: dict[str, Builder] = {
    "mlp": lambda shape, classes: mlp(shape, classes),
    "lenet": lambda shape, classes: LeNet5(shape[0], classes, shape[-1]),
}


def register_model(name: str, builder: Builder, *, overwrite: bool = False) -> None:
    """Make ``build_model(name, ...)`` call ``builder(input_shape, num_classes)``."""
    if name in _BUILDERS and not overwrite:
        raise ValueError(f"network {name!r} is already registered; pass overwrite=True")
    if parse_wrn(name):
        raise ValueError(f"{name!r} is the built-in wide ResNet family; pick another name")
    _BUILDERS[name] = builder


def is_known_model(name: str) -> bool:
    """Whether ``build_model`` knows ``name``: registered, or of the 'wrn-D-K' family."""
    return name in _BUILDERS or parse_wrn(name) is not None


def known_models() -> list[str]:
    """Registered network names, plus the 'wrn-D-K' family."""
    return sorted(_BUILDERS) + ["wrn-D-K"]


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, seed: int,
                init: str = "default") -> nn.Module:
    """The network ``name`` for inputs of ``input_shape`` (C, H, W), initialised from ``seed``
    with ``init`` ('default' or 'xavier'); the global RNG is untouched.

    Raises ValueError for an unknown name (listing the known ones) or a bad wrn-D-K.
    """
    wrn = parse_wrn(name)
    if wrn is not None:
        def builder(shape, classes):
            return WideResNet(wrn[0], wrn[1], shape[0], classes)
    elif name in _BUILDERS:
        builder = _BUILDERS[name]
    else:
        raise ValueError(f"unknown network {name!r}; known networks are {known_models()} "
                         "(e.g. wrn-16-1)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return initialise(builder(tuple(input_shape), num_classes), init)
