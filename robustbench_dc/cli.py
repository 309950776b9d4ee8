"""The ``rbdc`` command (also ``python -m robustbench_dc``).

Only this module prints; the library logs. User errors (a bad spec, a missing dataset,
an invalid card) end with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from . import __version__
from ._text import table as _table

__all__ = ["main", "build_parser"]

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An error caused by the user's input; reported as one line with exit code 2."""


# ----------------------------------------------------------------------------- operators


def cmd_operators_list(args: argparse.Namespace) -> int:
    from .operators import ANGULARS, MAGNITUDES, OPERATORS, WEIGHTED, entry_point_operators

    print("Magnitude functions h(||x||)  (operator spec: '<magnitude>+<angular>', e.g. 'tanh+cos')")
    print(_table([(m.name, "yes" if m.bounded else "no", m.formula) for m in MAGNITUDES.values()],
                 ("magnitude", "bounded", "formula")))
    print()
    print("Angular functions g(theta)")
    print(_table([(a.name, a.formula) for a in ANGULARS.values()], ("angular", "formula")))
    print()
    print("Weighted variants (weighted=...): " + ", ".join(str(w) for w in WEIGHTED))
    print("Other specs: baseline (nn.Conv2d / nn.Linear); sphereconv, ballconv, tanhconv, ... (= <magnitude>+cos);")
    print("             path/to/file.py:Name or package.module:Name (a user operator)")
    extra = [(name, f"{spec.conv.__module__}.{getattr(spec.conv, '__qualname__', spec.conv)}", "registered")
             for name, spec in sorted(OPERATORS.items())]
    extra += [(name, ep.value, "entry point") for name, ep in sorted(entry_point_operators().items())]
    if extra:
        print()
        print(_table(extra, ("operator", "class", "source")))
    return 0


# ----------------------------------------------------------------------------- zoo


def cmd_zoo_list(args: argparse.Namespace) -> int:
    from .zoo import list_archs, list_cards

    cards = list_cards()
    rows = []
    for c in cards:
        params = ", ".join(f"{k}={v}" for k, v in {**c.arch_params, **c.operator_params}.items())
        ckpt = "yes" if c.checkpoint and (p := c.checkpoint_path()) is not None and p.is_file() else "no"
        recipe = c.recipe if isinstance(c.recipe, str) or c.recipe is None else "(inline)"
        rows.append((c.name, c.arch, c.operator, c.dataset, recipe, params, ckpt))
    print(_table(rows, ("name", "arch", "operator", "dataset", "recipe", "params", "trained")))
    print(f"\n{len(cards)} model cards; architectures: {', '.join(list_archs())}")
    return 0


def cmd_zoo_show(args: argparse.Namespace) -> int:
    from .zoo import get_card

    card = get_card(args.name)
    model = card.build()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"# {card.path}")
    print(card.model_dump_json(indent=2, exclude_none=True))
    print(f"parameters: {n_params:,}")
    if args.verbose:
        print(model)
    return 0


# ----------------------------------------------------------------------------- data


def cmd_data_check(args: argparse.Namespace) -> int:
    from .data import dataset_info, load_dataset

    info = dataset_info(args.name)
    for split in ("train", "test"):
        ds = load_dataset(info.name, split, n=args.n, data_dir=args.data_dir, download=not args.no_download)
        print(f"{info.name}/{split}: {len(ds)} examples, images {tuple(ds.images.shape[1:])}, "
              f"sha256 {ds.checksum[:16]}..., from {ds.source}")
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from .data import DATASETS

    rows = [(i.name, i.num_classes, "x".join(map(str, i.shape)), i.train_size, i.test_size,
             f"{i.eps_linf:.4g}", "-" if i.eps_l2 is None else f"{i.eps_l2:g}", ", ".join(i.aliases))
            for i in DATASETS.values()]
    print(_table(rows, ("dataset", "classes", "shape", "train", "test", "eps_linf", "eps_l2", "aliases")))
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rbdc", description="robustbench-dc: adversarial robustness of decoupled convolution operators")
    parser.add_argument("--version", action="version", version=f"robustbench-dc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug information")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ops = sub.add_parser("operators", help="the decoupled operator family").add_subparsers(dest="sub", metavar="ACTION")
    ops.add_parser("list", help="list magnitude/angular functions and registered operators").set_defaults(
        func=cmd_operators_list)

    zoo = sub.add_parser("zoo", help="model zoo cards").add_subparsers(dest="sub", metavar="ACTION")
    zoo.add_parser("list", help="list the model cards").set_defaults(func=cmd_zoo_list)
    show = zoo.add_parser("show", help="show one card and its network")
    show.add_argument("name")
    show.add_argument("--verbose", action="store_true", help="print the module tree")
    show.set_defaults(func=cmd_zoo_show)

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="sub", metavar="ACTION")
    data.add_parser("list", help="list the datasets").set_defaults(func=cmd_data_list)
    check = data.add_parser("check", help="locate (or download) a dataset and print its checksums")
    check.add_argument("name")
    check.add_argument("--data-dir", help="folder holding the dataset files")
    check.add_argument("-n", type=int, default=None, help="first n examples of each split")
    check.add_argument("--no-download", action="store_true", help="never download")
    check.set_defaults(func=cmd_data_check)

    for register in _extensions():
        register(sub)
    return parser


def _extensions() -> list[Callable[[argparse._SubParsersAction], None]]:
    """The ``register(subparsers)`` functions of the sub-command modules."""
    from . import cli_engine, cli_leaderboard, cli_lipschitz, cli_plot, cli_protocol, cli_reproduce

    return [cli_protocol.register, cli_engine.register, cli_lipschitz.register, cli_plot.register,
            cli_leaderboard.register, cli_reproduce.register]


def _user_error_types() -> tuple[type[BaseException], ...]:
    from .data import DataError
    from .operators import UnknownOperatorError
    from .zoo import CardError

    return (UserError, DataError, CardError, UnknownOperatorError, ValueError, FileNotFoundError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from .runtime import configure_allocator

    configure_allocator()
    func = getattr(args, "func", None)
    if func is None:
        # ``rbdc`` or ``rbdc zoo`` without an action: show the relevant help.
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
        return EXIT_USER_ERROR
    try:
        return int(func(args) or 0)
    except _user_error_types() as exc:
        if args.verbose:
            raise
        message = " ".join(str(exc).split())
        print(f"rbdc: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("rbdc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
