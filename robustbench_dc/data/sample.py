"""The bundled MNIST sample: a class-balanced subset of real MNIST shipped in the package.

``sample/mnist_sample.npz`` holds ``train_images`` / ``test_images`` (uint8, N x 28 x 28)
and ``train_labels`` / ``test_labels`` (uint8, N): the first 600 training and the
first 100 test examples of each digit, in canonical order. ``sample/mnist_sample.json``
records how it was made (``scripts/make_mnist_sample.py``) and the sha256 of the npz,
which :func:`read_sample_split` checks before using the file.
"""

from __future__ import annotations

import hashlib
import io
import json
from importlib import resources
from typing import Any

import numpy as np

from robustbench_dc.data.errors import DataError

__all__ = ["SAMPLE_NPZ", "SAMPLE_JSON", "first_per_class", "read_sample_manifest", "read_sample_split"]

#: File names inside ``robustbench_dc/data/sample/``.
SAMPLE_NPZ = "mnist_sample.npz"
SAMPLE_JSON = "mnist_sample.json"


def first_per_class(labels: np.ndarray, per_class: int, num_classes: int = 10) -> np.ndarray:
    """Indices of the first ``per_class`` examples of each class, in their original order.

    Raises:
        ValueError: some class has fewer than ``per_class`` examples.
    """
    labels = np.asarray(labels)
    chosen: list[np.ndarray] = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} examples, fewer than per_class={per_class}")
        chosen.append(idx[:per_class])
    return np.sort(np.concatenate(chosen))


def _sample_file(name: str) -> Any:
    return resources.files("robustbench_dc.data").joinpath("sample").joinpath(name)


def read_sample_manifest() -> dict[str, Any]:
    """The JSON record of the bundled sample (sha256, counts, sources, command, numpy version)."""
    try:
        return json.loads(_sample_file(SAMPLE_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the bundled sample manifest {SAMPLE_JSON}: {exc}") from exc


def read_sample_split(split: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Read one split of the bundled sample after checking the npz sha256 against the JSON.

    Returns:
        ``(images, labels, source)``: uint8 (N, 1, 28, 28), int64 (N,), and the npz path.

    Raises:
        DataError: the files are missing, the sha256 differs from the manifest, or the
            arrays are malformed.
    """
    manifest = read_sample_manifest()
    resource = _sample_file(SAMPLE_NPZ)
    try:
        raw = resource.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the bundled sample {SAMPLE_NPZ}: {exc}") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != manifest.get("sha256"):
        raise DataError(
            f"the bundled sample {SAMPLE_NPZ} has sha256 {digest} but {SAMPLE_JSON} records "
            f"{manifest.get('sha256')}; rebuild it with scripts/make_mnist_sample.py"
        )
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28) or labels.shape != (len(images),):
        raise DataError(
            f"malformed bundled sample: {split} images {images.dtype} {images.shape}, labels {labels.shape}"
        )
    return images[:, None, :, :], labels.astype(np.int64), str(resource)
