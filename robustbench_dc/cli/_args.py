"""Argument groups shared by the commands, and their mapping onto library calls.

The same flag means the same thing in every command:

- ``--dataset``: the dataset the *model* is built for (with ``--arch``; a card fixes its own);
- ``--data``: the data to train or evaluate on (default: the model's dataset);
- ``--quiet``: no progress bars (``--no-progress`` is a hidden alias);
- ``-v/--verbose``: debug logging and tracebacks, before or after the command name.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_command", "add_global_options", "add_model_args", "add_data_args", "add_attack_args",
           "model_from_args", "attacks_from_args", "check_data_name", "eps_arg", "load_test_data", "data_name",
           "download_progress"]


def _options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="log debug information (user errors then show their traceback)")
    parser.add_argument("--quiet", action="store_true", default=default, help="no progress bars")
    parser.add_argument("--no-progress", dest="quiet", action="store_true", default=default, help=argparse.SUPPRESS)


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """``-v/--verbose`` and ``--quiet`` on the top-level parser (their defaults live here)."""
    _options(parser, False)


# Every sub-command parser accepts the global options too; their default is SUPPRESS so that a
# flag given before the command name is not reset by the sub-parser's default.
_COMMON = argparse.ArgumentParser(add_help=False)
_options(_COMMON, argparse.SUPPRESS)


def add_command(sub: argparse._SubParsersAction, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """``sub.add_parser(name, ...)`` that also accepts the global options."""
    return sub.add_parser(name, parents=[_COMMON], **kwargs)


def add_model_args(p: argparse.ArgumentParser, *, checkpoint: bool = True, untrained: bool = True) -> None:
    """``--model CARD`` or ``--arch/--operator/--dataset/--param``, plus ``--checkpoint`` / ``--untrained``."""
    g = p.add_argument_group("model (a zoo card, or an architecture + operator)")
    g.add_argument("--model", help="zoo card name (see `rbdc zoo list`), a card YAML, or your own model: "
                                   "path/to/file.py:factory (a function or class returning the network; --param "
                                   "values are its arguments; needs --dataset)")
    g.add_argument("--arch", help="architecture, e.g. mnist2d, cnn9, resnet32 (or path/to/file.py:factory)")
    g.add_argument("--operator", default=None,
                   help="operator spec, e.g. baseline, tanh+cos, my_ops.py:MyOp (default: the card's, else baseline)")
    g.add_argument("--dataset", help="dataset the model is built for (mnist, fashion-mnist, cifar10); "
                                     "with --model, the card's")
    g.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="architecture or operator parameter (repeatable), e.g. --param width=0.25 --param rho=0.5")
    if checkpoint:
        g.add_argument("--checkpoint", help="weights to load (a model.pt or a training checkpoint); "
                                            "default with --model: the checkpoint the card records")
    if untrained:
        g.add_argument("--untrained", action="store_true",
                       help="with --model: do not load the card's checkpoint (weights from --seed)")


def add_data_args(p: argparse.ArgumentParser, what: str = "evaluate on") -> None:
    """``--data`` (the data to train/evaluate on) and ``--data-dir``."""
    p.add_argument("--data", help=f"dataset to {what} (default: the model's); e.g. mnist-sample")
    p.add_argument("--data-dir", help="folder holding the dataset files")


def model_from_args(args: argparse.Namespace, *, seed: int, pretrained: bool = True) -> Any:
    """:func:`robustbench_dc.zoo.resolve_model` called with the model arguments."""
    from robustbench_dc.params import parse_params
    from robustbench_dc.zoo import resolve_model

    return resolve_model(args.model, arch=args.arch, operator=args.operator, dataset=args.dataset,
                         params=parse_params(args.param, what="--param"),
                         checkpoint=getattr(args, "checkpoint", None),
                         pretrained=pretrained and not getattr(args, "untrained", False), seed=seed)


def check_data_name(args: argparse.Namespace) -> None:
    """``--data``, when given, names a known dataset (checked beside the model's arguments, so that
    every problem of a command line is reported at once)."""
    if getattr(args, "data", None):
        from robustbench_dc.data import dataset_info

        dataset_info(args.data)


def data_name(args: argparse.Namespace, model_dataset: str) -> str:
    """The data to train/evaluate on: ``--data``, else the model's dataset."""
    return args.data or model_dataset


def download_progress(args: argparse.Namespace) -> bool | None:
    """A dataset download's progress bar: off with ``--quiet``, else on a terminal."""
    return False if args.quiet else None


def eps_arg(text: str) -> float:
    """``--eps 8/255`` or ``--eps 0.0314``: a budget as argparse reads it (a bad one is a usage error)."""
    from robustbench_dc.errors import UsageError
    from robustbench_dc.params import parse_eps

    try:
        value = float(parse_eps(text))
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("eps: ")) from None
    return value


def add_attack_args(p: argparse.ArgumentParser, *, n_default: int = 1000) -> None:
    """The attack set, its overrides and the test data of ``rbdc evaluate`` / ``rbdc transfer``."""
    p.add_argument("--attack", action="append", metavar="NAME",
                   help="attack config from attacks/*.yaml or a YAML path (repeatable; default fgsm, bim, pgd)")
    p.add_argument("--backend", choices=("native", "torchattacks", "foolbox"), help="override every attack's backend")
    p.add_argument("--eps", type=eps_arg, help="override the budget: a number or a fraction like 8/255 (default: the "
                                                "dataset's standard eps)")
    p.add_argument("--steps", type=int, help="override the iterations of iterative attacks")
    add_data_args(p, "evaluate on")
    p.add_argument("-n", "--n", type=int, default=n_default, help=f"first n test examples (default {n_default})")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results (with provenance) to this JSON file")


def attacks_from_args(args: argparse.Namespace) -> list[Any]:
    """:func:`robustbench_dc.evaluation.configure_attacks` called with the attack arguments."""
    from robustbench_dc.evaluation import configure_attacks

    return configure_attacks(args.attack, eps=args.eps, backend=args.backend, steps=args.steps)


def load_test_data(args: argparse.Namespace, model_dataset: str) -> Any:
    """The first ``-n`` test examples of ``--data`` (default: the model's dataset)."""
    from robustbench_dc.data import load_dataset

    return load_dataset(data_name(args, model_dataset), "test", n=args.n, data_dir=args.data_dir,
                        progress=download_progress(args))
