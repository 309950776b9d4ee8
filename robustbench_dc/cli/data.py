"""``rbdc data list|check``: the datasets."""

from __future__ import annotations

import argparse

from robustbench_dc.cli._args import add_command, download_progress
from robustbench_dc.cli._output import table

__all__ = ["register", "cmd_data_list", "cmd_data_check"]


def cmd_data_check(args: argparse.Namespace) -> int:
    from robustbench_dc.data import dataset_info, load_dataset

    info = dataset_info(args.name)
    for split in ("train", "test"):
        ds = load_dataset(info.name, split, n=args.n, data_dir=args.data_dir, download=not args.no_download,
                          progress=download_progress(args))
        print(f"{info.name}/{split}: {len(ds)} examples, images {tuple(ds.images.shape[1:])}, "
              f"sha256 {ds.checksum[:16]}..., from {ds.source}")
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from robustbench_dc.data import DATASETS

    rows = [(i.name, i.num_classes, "x".join(map(str, i.shape)), i.train_size, i.test_size,
             f"{i.eps_linf:.4g}", "-" if i.eps_l2 is None else f"{i.eps_l2:g}", ", ".join(i.aliases))
            for i in DATASETS.values()]
    print(table(rows, ("dataset", "classes", "shape", "train", "test", "eps_linf", "eps_l2", "aliases")))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    data = add_command(sub, "data", help="datasets").add_subparsers(dest="sub", metavar="ACTION")
    add_command(data, "list", help="list the datasets").set_defaults(func=cmd_data_list)
    check = add_command(data, "check", help="locate (or download) a dataset and print its checksums")
    check.add_argument("name")
    check.add_argument("--data-dir", help="folder holding the dataset files")
    check.add_argument("-n", type=int, default=None, help="first n examples of each split")
    check.add_argument("--no-download", action="store_true", help="never download")
    check.set_defaults(func=cmd_data_check)
