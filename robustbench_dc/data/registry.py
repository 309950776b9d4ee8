"""Dataset metadata: shapes, classes, normalization constants and standard budgets.

``DATASETS`` maps each canonical dataset name to a :class:`DatasetInfo`;
:func:`canonical_name` resolves the accepted aliases ("fmnist", "cifar-10", ...)
and :func:`dataset_info` returns the record for any accepted name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Mapping

from robustbench_dc._text import did_you_mean
from robustbench_dc.data.errors import DataError

__all__ = ["DATASETS", "DatasetInfo", "canonical_name", "dataset_info", "SPLITS"]

#: The two splits every dataset provides.
SPLITS: tuple[str, str] = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model or an attack needs to know about a dataset.

    Attributes:
        name: canonical name ("mnist", "fashion-mnist", "cifar10", "mnist-sample").
        num_classes: number of labels (all datasets here have 10).
        shape: one image as (C, H, W).
        mean: per-channel normalization mean, for inputs in [0, 1].
        std: per-channel normalization standard deviation, for inputs in [0, 1].
        classes: class names, index i is label i.
        eps_linf: the standard L-inf budget for this dataset, in [0, 1] pixel units.
        eps_l2: the standard L2 budget, or None where the literature has no standard one.
        eps_linf_large: an L-inf budget at which any correct attack drives accuracy to (almost)
            zero (the masking check ``accuracy-not-zero-at-large-eps``).
        display_name: the name figures and reports print ("CIFAR-10").
        base: for a subset (the bundled sample), the dataset it is drawn from ("mnist"): models
            built for one are built for the other, and it has the base's budgets.
        train_size: number of training examples in the full dataset.
        test_size: number of test examples in the full dataset.
        aliases: other accepted spellings of ``name``.
    """

    name: str
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    eps_linf: float
    eps_l2: float | None
    eps_linf_large: float
    display_name: str
    train_size: int
    test_size: int
    aliases: tuple[str, ...] = ()
    base: str | None = None

    @property
    def base_name(self) -> str:
        """The dataset this one is drawn from, else its own name."""
        return self.base or self.name


_MNIST = DatasetInfo(
    name="mnist",
    num_classes=10,
    shape=(1, 28, 28),
    mean=(0.1307,),
    std=(0.3081,),
    classes=tuple(str(i) for i in range(10)),
    eps_linf=0.3,
    eps_l2=2.0,
    eps_linf_large=1.0,
    display_name="MNIST",
    train_size=60_000,
    test_size=10_000,
)

_INFOS = (
    _MNIST,
    DatasetInfo(
        name="fashion-mnist",
        num_classes=10,
        shape=(1, 28, 28),
        mean=(0.2860,),
        std=(0.3530,),
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        eps_linf=0.1,
        eps_l2=None,
        eps_linf_large=1.0,
        display_name="Fashion-MNIST",
        train_size=60_000,
        test_size=10_000,
        aliases=("fashion_mnist", "fashionmnist", "fmnist"),
    ),
    DatasetInfo(
        name="cifar10",
        num_classes=10,
        shape=(3, 32, 32),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        classes=(
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
        eps_linf=8 / 255,
        eps_l2=0.5,
        eps_linf_large=0.5,
        display_name="CIFAR-10",
        train_size=50_000,
        test_size=10_000,
        aliases=("cifar-10", "cifar_10"),
    ),
    # The bundled sample: MNIST's constants, 600 train / 100 test examples per class.
    replace(_MNIST, name="mnist-sample", display_name="MNIST (sample)", train_size=6_000, test_size=1_000,
            aliases=("mnist_sample",), base="mnist"),
)

#: Canonical name -> metadata, read-only.
DATASETS: Mapping[str, DatasetInfo] = MappingProxyType({info.name: info for info in _INFOS})

_ALIASES: dict[str, str] = {
    alias: info.name for info in _INFOS for alias in (info.name, *info.aliases)
}


def canonical_name(name: str) -> str:
    """Return the canonical dataset name for ``name`` or any of its aliases (case-insensitive).

    Raises:
        DataError: the name is not a known dataset; the message lists the known names.
    """
    key = name.strip().lower()
    if key not in _ALIASES:
        known = ", ".join(
            f"{info.name}" + (f" ({', '.join(info.aliases)})" if info.aliases else "")
            for info in _INFOS
        )
        raise DataError(f"unknown dataset {name!r}{did_you_mean(key, _ALIASES)}; known: {known}")
    return _ALIASES[key]


def dataset_info(name: str) -> DatasetInfo:
    """Return the :class:`DatasetInfo` of a dataset given by name or alias.

    Raises:
        DataError: the name is not a known dataset.
    """
    return DATASETS[canonical_name(name)]
