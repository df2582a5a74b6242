"""Seeded data augmentation on batches of image tensors (no PIL, no per-sample Python work).

``random_crop_flip(images, generator, padding=4)`` is the standard CIFAR augmentation done on a
whole (B, C, H, W) batch at once, on the batch's own device:

    padded = zero-pad images by ``padding`` on every side    (zero = the mean pixel, since the
                                                              images are already normalised)
    out[b] = padded[b, :, dy_b : dy_b + H, dx_b : dx_b + W]   dy_b, dx_b ~ U{0 .. 2 * padding}
    out[b] = flip(out[b], width)  with probability 1/2

All random draws come from ``generator`` (a CPU ``torch.Generator``), so the result is a
function of the batch and the generator's seed only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: ``augment(images, generator) -> images`` of the same shape, dtype and device.
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4,
                     flip: bool = True) -> torch.Tensor:
    """Random ``padding``-pixel translation (crop of the zero-padded image) and horizontal flip."""
    if images.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(images.shape)}")
    B, _, H, W = images.shape
    out = images
    if padding > 0:
        offsets = torch.randint(0, 2 * padding + 1, (2, B), generator=generator)
        offsets = offsets.to(images.device)
        padded = torch.nn.functional.pad(images, (padding,) * 4)
        rows = (offsets[0, :, None] + torch.arange(H, device=images.device))[:, :, None]
        cols = (offsets[1, :, None] + torch.arange(W, device=images.device))[:, None, :]
        batch = torch.arange(B, device=images.device)[:, None, None]
        # advanced indexing around the channel slice puts the indexed dims first: (B, H, W, C)
        out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(B, generator=generator) < 0.5).to(images.device)
        out = torch.where(mask[:, None, None, None], out.flip(3), out)
    return out.contiguous()
