"""``rbdc zoo list|show``: the model cards."""

from __future__ import annotations

import argparse

from robustbench_dc.cli._args import add_command
from robustbench_dc.cli._output import duration, table

__all__ = ["register", "cmd_zoo_list", "cmd_zoo_show", "cmd_zoo_train"]


def _training_estimate(card_name: str) -> str:
    """How long ``rbdc zoo train CARD`` took on this kind of machine, from its timing log."""
    from robustbench_dc.training import measured_training_seconds

    seconds = measured_training_seconds(card_name)
    if seconds is None:
        return "time unknown: never trained on this kind of machine"
    return f"~{duration(seconds)} here"


def cmd_zoo_list(args: argparse.Namespace) -> int:
    from robustbench_dc.zoo import list_archs, list_cards, weights_status

    cards = list_cards()
    rows = []
    for c in cards:
        params = ", ".join(f"{k}={v}" for k, v in {**c.arch_params, **c.operator_params}.items())
        status = weights_status(c)
        weights = {"shipped": "shipped with the package", "cached": "trained here (cache)",
                   "downloadable": "downloadable"}.get(status) or f"rbdc zoo train {c.name} ({_training_estimate(c.name)})"
        recipe = c.recipe if isinstance(c.recipe, str) or c.recipe is None else "(inline)"
        rows.append((c.name, c.arch, c.operator, c.dataset, recipe, params, weights))
    print(table(rows, ("name", "arch", "operator", "dataset", "recipe", "params", "weights")))
    print(f"\n{len(cards)} model cards; architectures: {', '.join(list_archs())}")
    return 0


def cmd_zoo_train(args: argparse.Namespace) -> int:
    """``rbdc zoo train CARD``: the card's recipe on its dataset, into the cache, resumable."""
    import sys

    from robustbench_dc.training import train_card
    from robustbench_dc.zoo import get_card, weights_dir

    card = get_card(args.name)
    print(f"training {card.name} with its recipe {card.recipe} -> {weights_dir(card)}", flush=True)

    def epoch(record: dict) -> None:
        print(f"  epoch {record['epoch']:3d}  loss {record['loss']:.4f}  train acc {100 * record['train_accuracy']:.1f}%",
              flush=True)

    path = train_card(card, data_dir=args.data_dir, progress=not args.quiet and sys.stderr.isatty(),
                      restart=args.restart, command=getattr(args, "command_line", None), on_epoch_end=epoch)
    print(f"weights: {path}\nload_model({card.name!r}) and --model {card.name} use them now")
    return 0


def cmd_zoo_show(args: argparse.Namespace) -> int:
    from robustbench_dc.zoo import get_card

    card = get_card(args.name)
    model = card.build()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"# {card.path}")
    print(card.model_dump_json(indent=2, exclude_none=True))
    print(f"parameters: {n_params:,}")
    if args.verbose:
        print(model)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    zoo = add_command(sub, "zoo", help="model zoo cards").add_subparsers(dest="sub", metavar="ACTION")
    add_command(zoo, "list", help="list the model cards and where their weights are").set_defaults(func=cmd_zoo_list)
    train = add_command(zoo, "train", help="train a card with its recipe into the cache ($RBDC_HOME/models/CARD)",
                        description="Train the card's network with its recipe on its dataset (seed 0), resuming an "
                                    "interrupted run; load_model(CARD) and --model CARD find the weights afterwards.")
    train.add_argument("name", help="the card (rbdc zoo list)")
    train.add_argument("--data-dir", help="folder holding the dataset files")
    train.add_argument("--restart", action="store_true", help="start again instead of resuming")
    train.set_defaults(func=cmd_zoo_train)
    show = add_command(zoo, "show", help="show one card and its network (-v: also the module tree)")
    show.add_argument("name")
    show.set_defaults(func=cmd_zoo_show)
