"""Reader for the idx format of MNIST and Fashion-MNIST.

An idx file starts with a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then
``ndim`` big-endian uint32 sizes, then the values. MNIST and Fashion-MNIST use
type ``0x08`` (unsigned byte): images have 3 dimensions (N, 28, 28), labels 1 (N).
Files may be gzip-compressed (the canonical ``*.gz``) or not.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from robustbench_dc.data.errors import DataError

__all__ = ["IDX_FILES", "read_idx", "read_mnist_split", "find_idx_file"]

#: split -> (images file, labels file), canonical gzip names.
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

_UBYTE = 0x08


def find_idx_file(folder: Path, name: str) -> Path | None:
    """Return ``folder/name`` or its uncompressed twin (``name`` without ``.gz``), if either exists."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read an unsigned-byte idx file (gzip-compressed if its name ends in ``.gz``).

    Args:
        path: the file.
        ndim: the number of dimensions expected (3 for images, 1 for labels); None accepts any.

    Returns:
        A writable uint8 array with the shape recorded in the header.

    Raises:
        DataError: the file is unreadable, has a wrong magic number, an unexpected
            number of dimensions, or a payload size that does not match its header.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read idx file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE:
        raise DataError(
            f"corrupt idx file {path}: expected magic 0x0000{_UBYTE:02x}NN, "
            f"got 0x{raw[:4].hex() or '(empty)'}"
        )
    got_ndim = raw[3]
    if ndim is not None and got_ndim != ndim:
        raise DataError(f"corrupt idx file {path}: expected {ndim} dimensions, got {got_ndim}")
    header = 4 + 4 * got_ndim
    if len(raw) < header:
        raise DataError(f"corrupt idx file {path}: truncated header")
    shape = struct.unpack(f">{got_ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(
            f"corrupt idx file {path}: header says shape {shape} ({expected} bytes), "
            f"payload has {len(raw) - header} bytes"
        )
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(shape)


def read_mnist_split(folder: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one split of MNIST or Fashion-MNIST from a folder holding the idx files.

    Args:
        folder: folder with ``train-*`` / ``t10k-*`` idx files (``.gz`` or uncompressed).
        split: "train" or "test".

    Returns:
        ``(images, labels)``: uint8 (N, 1, 28, 28) and int64 (N,), in file order.

    Raises:
        DataError: a file is missing or corrupt, images are not 28x28, the counts of
            images and labels differ, or a label is outside 0..9.
    """
    folder = Path(folder)
    paths = []
    for name in IDX_FILES[split]:
        path = find_idx_file(folder, name)
        if path is None:
            raise DataError(f"missing idx file {folder / name}")
        paths.append(path)
    images = read_idx(paths[0], ndim=3)
    labels = read_idx(paths[1], ndim=1)
    if images.shape[1:] != (28, 28):
        raise DataError(f"corrupt idx file {paths[0]}: expected 28x28 images, got {images.shape[1:]}")
    if len(images) != len(labels):
        raise DataError(
            f"idx files {paths[0]} and {paths[1]} disagree: {len(images)} images but {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"corrupt idx file {paths[1]}: label {int(labels.max())} outside 0..9")
    return images[:, None, :, :], labels.astype(np.int64)
