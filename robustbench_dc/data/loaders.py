"""Batching an :class:`ImageDataset` for training and evaluation."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from robustbench_dc.data.dataset import ImageDataset

__all__ = ["make_loader"]


def make_loader(
    ds: ImageDataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader yielding ``(images, labels)``: float32 in [0, 1] (B x C x H x W) and int64 (B).

    Runs in the calling process (``num_workers=0``). The shuffling order comes from a
    ``torch.Generator`` seeded with ``seed``, so the same seed gives the same batches
    regardless of the global RNG state.

    Raises:
        ValueError: ``batch_size`` is smaller than 1.
    """
    if batch_size < 1:
        raise ValueError(f"expected batch_size >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        TensorDataset(ds.to_float(), ds.labels),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=0,
        generator=generator,
    )
