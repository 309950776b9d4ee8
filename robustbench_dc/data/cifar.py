"""Reader for the CIFAR-10 python format (``cifar-10-batches-py``).

Each batch file is a pickled dict with ``b'data'`` (uint8 array, N x 3072, channel-
major rows of 32x32 pixels) and ``b'labels'`` (list of N ints in 0..9). The canonical
files were written by Python 2 with protocol 2; the array is pickled through
``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``.

Pickles run code on load, so batches are read with :class:`_RestrictedUnpickler`,
which resolves only the few numpy names needed to rebuild a plain array (plus
``_codecs.encode`` restricted to latin-1, which Python 3 uses to pickle ``bytes`` at
protocol 2) and refuses every other global.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import IO, Any, Callable, cast

import numpy as np

from robustbench_dc.data.errors import DataError

try:  # numpy >= 2
    from numpy._core import multiarray as numpy_multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as numpy_multiarray  # type: ignore[no-redef]

__all__ = ["CIFAR10_FILES", "read_cifar_batch", "read_cifar10_split", "load_restricted_pickle"]

#: split -> batch files of that split, in canonical order.
CIFAR10_FILES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}


def _reconstruct(subtype: type, shape: Any, dtype: Any) -> np.ndarray:
    """``numpy``'s array reconstructor, limited to plain ``numpy.ndarray``."""
    if subtype is not np.ndarray:
        raise DataError(f"refusing to unpickle array subtype {subtype!r}")
    return cast(np.ndarray, numpy_multiarray._reconstruct(subtype, shape, dtype))


def _frombuffer(buf: bytes, dtype: np.dtype, shape: tuple[int, ...], order: str) -> np.ndarray:
    """Rebuild an array pickled with protocol 5 (what ``numpy._core.numeric._frombuffer`` does)."""
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if order == "F" else "C")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` limited to latin-1, the only use protocol-2 pickles make of it."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise DataError(f"refusing to unpickle _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild dicts, lists, bytes, ints, strings and plain numpy
    arrays, and nothing else: any other global (``os.system``, ``builtins.eval``, ...)
    raises :class:`DataError` before it is resolved, so no code from the file runs."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file, encoding="bytes")

    def find_class(self, module: str, name: str) -> Any:
        """Return an allow-listed global; raise DataError for every other one."""
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to unpickle global {module}.{name}: a CIFAR batch holds only "
                "dicts, lists, bytes, ints and uint8 arrays"
            ) from None


def load_restricted_pickle(path: str | Path) -> Any:
    """Load a pickle file with :class:`_RestrictedUnpickler` (``encoding="bytes"``).

    Raises:
        DataError: the file is unreadable, is not a valid pickle, or references a
            global outside the allow-list.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f).load()
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise DataError(f"cannot read pickle {path}: {type(exc).__name__}: {exc}") from exc


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch file.

    Returns:
        ``(images, labels)``: uint8 (N, 3, 32, 32) and int64 (N,), in file order.

    Raises:
        DataError: the file is not a dict with ``b'data'`` (uint8, N x 3072) and
            ``b'labels'`` (N ints in 0..9), or cannot be read.
    """
    path = Path(path)
    batch = load_restricted_pickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"corrupt CIFAR batch {path}: expected keys b'data' and b'labels', got {keys}")
    data, raw_labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"corrupt CIFAR batch {path}: expected b'data' uint8 (N, 3072), got {desc}")
    try:
        labels = np.asarray(raw_labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"corrupt CIFAR batch {path}: b'labels' is not a list of ints") from exc
    if labels.shape != (len(data),):
        raise DataError(
            f"corrupt CIFAR batch {path}: {len(data)} images but labels of shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"corrupt CIFAR batch {path}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar10_split(folder: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one split of CIFAR-10 from a ``cifar-10-batches-py`` folder.

    Args:
        folder: folder holding ``data_batch_1..5`` (train) and/or ``test_batch`` (test).
        split: "train" or "test".

    Returns:
        ``(images, labels)``: uint8 (N, 3, 32, 32) and int64 (N,), batches concatenated
        in canonical order.

    Raises:
        DataError: a batch file is missing or corrupt.
    """
    folder = Path(folder)
    parts = [read_cifar_batch(folder / name) for name in CIFAR10_FILES[split]]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
