#!/usr/bin/env python
"""Build the bundled MNIST sample, ``robustbench_dc/data/sample/mnist_sample.{npz,json}``.

Takes the first ``--train-per-class`` training and ``--test-per-class`` test examples of
each digit (canonical order, so the result is deterministic) from the four canonical
MNIST idx files, saves them with ``np.savez_compressed`` (uint8 images N x 28 x 28,
uint8 labels) and writes a JSON manifest with the npz sha256, the source files'
sha256, the counts, this command and the numpy version. Fails if the npz exceeds
``--max-bytes`` (2 MB).

Usage::

    python scripts/make_mnist_sample.py --source ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from robustbench_dc.data.dataset import content_checksum
from robustbench_dc.data.download import atomic_write, file_digest
from robustbench_dc.data.mnist import IDX_FILES, find_idx_file, read_mnist_split
from robustbench_dc.data.sample import SAMPLE_JSON, SAMPLE_NPZ, first_per_class

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "robustbench_dc" / "data" / "sample"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, required=True, help="folder with the four canonical MNIST idx .gz files")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--train-per-class", type=int, default=600)
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--max-bytes", type=int, default=2_000_000, help="size limit of the npz (default 2 MB)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the sample and its manifest; return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    per_class = {"train": args.train_per_class, "test": args.test_per_class}

    arrays: dict[str, np.ndarray] = {}
    counts: dict[str, dict[str, int]] = {}
    content: dict[str, str] = {}
    for split, k in per_class.items():
        images, labels = read_mnist_split(args.source, split)
        idx = first_per_class(labels, k)
        arrays[f"{split}_images"] = np.ascontiguousarray(images[idx, 0])
        arrays[f"{split}_labels"] = labels[idx].astype(np.uint8)
        counts[split] = {"total": len(idx), "per_class": k}
        content[split] = content_checksum(torch.from_numpy(images[idx]), torch.from_numpy(labels[idx]))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    npz_path = args.out_dir / SAMPLE_NPZ
    with atomic_write(npz_path) as f:
        np.savez_compressed(f, **arrays)
        f.flush()
        size = f.tell()
        if size > args.max_bytes:  # raising inside the block discards the file
            raise SystemExit(f"error: {SAMPLE_NPZ} would be {size} bytes, over the limit of {args.max_bytes}")

    sources = {}
    for split in per_class:
        for name in IDX_FILES[split]:
            path = find_idx_file(args.source, name)
            assert path is not None  # read_mnist_split found it
            sources[path.name] = file_digest(path, "sha256")
    manifest = {
        "dataset": "mnist-sample",
        "description": "first N training and test examples of each MNIST digit, canonical order",
        "file": SAMPLE_NPZ,
        "sha256": file_digest(npz_path, "sha256"),
        "bytes": size,
        "counts": counts,
        "content_sha256": content,
        "content_sha256_note": ("robustbench_dc.data.content_checksum of each split (uint8 N x 1 x 28 x 28 images, "
                                "int64 labels); equals ImageDataset.checksum"),
        "source_sha256": sources,
        "command": " ".join(["python", "scripts/make_mnist_sample.py", *argv]),
        "numpy_version": np.__version__,
    }
    (args.out_dir / SAMPLE_JSON).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {npz_path} ({size} bytes, sha256 {manifest['sha256']}) and {SAMPLE_JSON}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
