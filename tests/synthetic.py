"""Tiny synthetic datasets in the canonical on-disk formats, for end-to-end tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


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
