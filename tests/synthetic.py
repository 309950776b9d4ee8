"""Tiny synthetic datasets in the canonical on-disk formats, for end-to-end tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_learnable_mnist(folder: Path, n_train: int = 256, n_test: int = 64, seed: int = 0) -> Path:
    """MNIST-layout idx files whose images carry a class-dependent bright stripe (learnable)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = (rng.random((n, 28, 28)) * 60).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 + 2 * int(c): 4 + 2 * int(c), 4:24] = 255
        _write_idx(folder / names[split][0], images)
        _write_idx(folder / names[split][1], labels)
    return folder


def mnist_sample_tensors(n_test: int) -> tuple["torch.Tensor", ...]:
    """The bundled MNIST sample as float tensors: (x_train, y_train, first n_test x_test, y_test)."""
    from robustbench_dc.data import load_dataset

    tr = load_dataset("mnist-sample", split="train", download=False)
    te = load_dataset("mnist-sample", split="test", n=n_test, download=False)
    return tr.to_float(), tr.labels, te.to_float(), te.labels


def train_small(model: "torch.nn.Module", x: "torch.Tensor", y: "torch.Tensor", epochs: int, lr: float,
                reseed: bool = False) -> "torch.nn.Module":
    """A few epochs of Adam in fixed batch order (seeded), gradients cleared, eval mode."""
    import torch
    import torch.nn.functional as F

    if reseed:
        torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    model.train()
    for _ in range(epochs):
        for i in range(0, x.shape[0], 64):
            idx = perm[i: i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p in model.parameters():
        p.grad = None
    return model.eval()
