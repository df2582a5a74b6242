"""A module's trainable parameters as one flat vector, and back.

The engine works on ``theta`` in R^P (P = total number of trainable parameter entries) so that
the tangents of K learned values form one (K, P) matrix, updated with a few large tensor ops.
``unflatten`` returns views into the flat vector, so it is free and differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ParamLayout:
    """Names, shapes and sizes of a module's trainable parameters, in ``named_parameters`` order."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    numels: tuple[int, ...]

    @classmethod
    def of(cls, model: nn.Module) -> ParamLayout:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("the model has no trainable parameters (requires_grad=True)")
        return cls(tuple(n for n, _ in named), tuple(p.shape for _, p in named),
                   tuple(p.numel() for _, p in named))

    @property
    def size(self) -> int:
        """P, the length of the flat vector."""
        return sum(self.numels)

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate ``tensors[name]`` (one per parameter) into a (P,) vector (a copy)."""
        return torch.cat([tensors[n].detach().reshape(-1) for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of the (P,) vector ``flat`` shaped like each parameter."""
        chunks = torch.split(flat, self.numels)
        return {n: c.view(s) for n, c, s in zip(self.names, chunks, self.shapes)}

    def flatten_module(self, model: nn.Module) -> torch.Tensor:
        """The module's current trainable parameters as a detached (P,) vector."""
        return self.flatten(dict(model.named_parameters()))


@dataclass(frozen=True)
class Footprint:
    """What an engine needs to know of a module's trainable parameters before it runs: P (the
    number of entries), and the device, dtype and bytes per entry (those of the first
    trainable parameter, which the engines work in)."""

    num_params: int
    device: torch.device
    dtype: torch.dtype
    itemsize: int

    @classmethod
    def of(cls, model: nn.Module) -> Footprint:
        """Raises ValueError when the model has no trainable parameters."""
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters (requires_grad=True)")
        first = params[0]
        return cls(sum(p.numel() for p in params), first.device, first.dtype,
                   first.element_size())
