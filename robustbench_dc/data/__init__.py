"""MNIST, Fashion-MNIST and CIFAR-10 from their canonical files, plus a bundled MNIST sample.

Main entry points::

    from robustbench_dc.data import load_dataset, load_splits, make_loader, dataset_info

    test = load_dataset("cifar10", "test", n=1000)    # first 1000, uint8 N x 3 x 32 x 32
    loader = make_loader(test, batch_size=100)        # float [0, 1] batches
    dataset_info("cifar10").eps_linf                  # 8/255

Files are searched in ``data_dir``, ``$RBDC_DATA``, the user cache and (Fashion-MNIST)
``/usr/share/datasets/fashion-mnist``, and downloaded with checksum verification when
missing unless ``download=False`` or ``RBDC_OFFLINE=1``; see
:mod:`robustbench_dc.data.download`.
"""

from robustbench_dc.data.dataset import (
    ImageDataset,
    content_checksum,
    dataset_checksum,
    load_dataset,
    load_examples,
    load_splits,
)
from robustbench_dc.data.download import cache_dir, download_file
from robustbench_dc.data.errors import DataError, DatasetNotFoundError, DownloadError
from robustbench_dc.data.loaders import make_loader
from robustbench_dc.data.registry import DATASETS, DatasetInfo, canonical_name, dataset_info

__all__ = [
    "load_examples",
    "DATASETS",
    "DataError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DownloadError",
    "ImageDataset",
    "cache_dir",
    "canonical_name",
    "content_checksum",
    "dataset_checksum",
    "dataset_info",
    "download_file",
    "load_dataset",
    "load_splits",
    "make_loader",
]
