"""Loading a dataset split as an :class:`ImageDataset` (uint8 images, int64 labels, provenance).

Example::

    train, test = load_splits("cifar10", n_test=1000)   # first 1000 test images
    x = test.to_float()                                  # float32 in [0, 1], N x 3 x 32 x 32
    print(test.checksum)                                 # sha256 recorded with results
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from robustbench_dc.data.cifar import read_cifar10_split
from robustbench_dc.data.download import locate
from robustbench_dc.data.mnist import read_mnist_split
from robustbench_dc.data.registry import SPLITS, canonical_name, dataset_info
from robustbench_dc.data.sample import read_sample_split
from robustbench_dc.errors import InvalidParameterError

__all__ = ["ImageDataset", "load_dataset", "load_splits", "dataset_checksum", "content_checksum"]

log = logging.getLogger(__name__)

_READERS: dict[str, Callable[[Path, str], tuple[np.ndarray, np.ndarray]]] = {
    "mnist": read_mnist_split,
    "fashion-mnist": read_mnist_split,
    "cifar10": read_cifar10_split,
}


def content_checksum(images: torch.Tensor, labels: torch.Tensor) -> str:
    """sha256 hex of the raw bytes of ``images`` (uint8) followed by ``labels`` (int64, little-endian)."""
    h = hashlib.sha256()
    h.update(images.contiguous().numpy().tobytes())
    h.update(labels.contiguous().numpy().astype("<i8", copy=False).tobytes())
    return h.hexdigest()


@dataclass(frozen=True, eq=False, repr=False)
class ImageDataset:
    """One split of an image classification dataset.

    Attributes:
        name: canonical dataset name.
        split: "train" or "test".
        images: uint8 tensor, N x C x H x W.
        labels: int64 tensor, N.
        classes: class names; label i is ``classes[i]``.
        checksum: sha256 of the images and labels bytes (see :func:`content_checksum`).
        source: the folder or file the data was read from.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    checksum: str
    source: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be uint8 N x C x H x W, got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.images),):
            raise ValueError(
                f"labels must be int64 of shape ({len(self.images)},), "
                f"got {self.labels.dtype} {tuple(self.labels.shape)}"
            )

    @classmethod
    def from_arrays(
        cls, name: str, split: str, images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], source: str
    ) -> ImageDataset:
        """Build a dataset from uint8 / int64 numpy arrays, computing its checksum."""
        x = torch.from_numpy(np.ascontiguousarray(images))
        y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
        return cls(name, split, x, y, classes, content_checksum(x, y), source)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape={tuple(self.images.shape[1:])}, checksum={self.checksum[:12]}..., source={self.source!r})"
        )

    def to_float(self) -> torch.Tensor:
        """Images as float32 in [0, 1] (a new tensor, N x C x H x W)."""
        return self.images.to(torch.float32).div_(255.0)

    float = to_float  # defined last so the name does not shadow the builtin above


def load_dataset(
    name: str,
    split: str = "train",
    n: int | None = None,
    data_dir: str | Path | None = None,
    download: bool = True,
    progress: bool | None = None,
) -> ImageDataset:
    """Load one split of a dataset, optionally only its first ``n`` examples.

    Args:
        name: "mnist", "fashion-mnist" ("fashion_mnist", "fmnist"), "cifar10" ("cifar-10")
            or "mnist-sample" (bundled with the package; ``data_dir``/``download`` unused).
        split: "train" or "test".
        n: keep the first ``n`` examples in canonical order (RobustBench convention); None keeps all.
        data_dir: folder searched first for the files (see :mod:`robustbench_dc.data.download`).
        download: allow downloading missing files (``RBDC_OFFLINE=1`` also forbids it).
        progress: show a progress bar while downloading; None shows it only on a terminal.

    Raises:
        DataError: unknown dataset, corrupt files.
        DatasetNotFoundError: files not found and not downloadable.
        InvalidParameterError: ``n`` larger than the split (a ``ValueError``).
        ValueError: bad ``split``.
    """
    canonical = canonical_name(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    info = dataset_info(canonical)
    if canonical == "mnist-sample":
        images, labels, source = read_sample_split(split)
    else:
        folder = locate(canonical, split, data_dir=data_dir, download=download, progress=progress)
        images, labels = _READERS[canonical](folder, split)
        source = str(folder)
    if n is not None:
        if not 0 <= n <= len(labels):
            raise InvalidParameterError(
                f"n={n} is out of range for {canonical} {split}: expected 0 <= n <= {len(labels)} (the maximum)"
            )
        images, labels = images[:n], labels[:n]
    log.info("loaded %s %s: %d examples from %s", canonical, split, len(labels), source)
    return ImageDataset.from_arrays(canonical, split, images, labels, info.classes, source)


def load_splits(
    name: str,
    n_train: int | None = None,
    n_test: int | None = None,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> tuple[ImageDataset, ImageDataset]:
    """Load ``(train, test)`` of a dataset; ``n_train`` / ``n_test`` keep the first n of each.

    See :func:`load_dataset` for the arguments and errors.
    """
    train = load_dataset(name, "train", n=n_train, data_dir=data_dir, download=download)
    test = load_dataset(name, "test", n=n_test, data_dir=data_dir, download=download)
    return train, test


def dataset_checksum(
    name: str,
    split: str = "test",
    n: int | None = None,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> str:
    """The sha256 checksum of the examples :func:`load_dataset` returns for these arguments."""
    return load_dataset(name, split, n=n, data_dir=data_dir, download=download).checksum


def load_examples(dataset: str, n_examples: int | None = None, split: str = "test",
                  data_dir: str | Path | None = None, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n_examples`` of a split as RobustBench's ``load_cifar10(n_examples)`` returns
    them: float32 images in [0, 1], NCHW, and int64 labels (no casting of uint8 by the caller).

    Example::

        >>> x, y = load_examples("cifar10", 1000)          # x: (1000, 3, 32, 32) in [0, 1]
    """
    ds = load_dataset(dataset, split, n=n_examples, data_dir=data_dir, download=download)
    return ds.to_float(), ds.labels.to(torch.int64)
