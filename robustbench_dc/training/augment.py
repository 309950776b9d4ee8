"""Data augmentation on [0, 1] image tensors (no torchvision): random crop with padding, flips."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["random_crop", "random_flip", "augment"]


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad each image by ``padding`` pixels and crop back to its size at a random offset.

    One offset per image, drawn uniformly from ``[0, 2 * padding]`` in each direction.
    """
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_flip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image horizontally with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def augment(x: Tensor, crop_padding: int = 0, flip: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """Apply the recipe's augmentation (crop, then flip)."""
    if crop_padding:
        x = random_crop(x, crop_padding, generator)
    if flip:
        x = random_flip(x, generator)
    return x
