"""``rbdc zoo list|show``: the model cards."""

from __future__ import annotations

import argparse

from robustbench_dc.cli._args import add_command
from robustbench_dc.cli._output import table

__all__ = ["register", "cmd_zoo_list", "cmd_zoo_show"]


def cmd_zoo_list(args: argparse.Namespace) -> int:
    from robustbench_dc.zoo import list_archs, list_cards

    cards = list_cards()
    rows = []
    for c in cards:
        params = ", ".join(f"{k}={v}" for k, v in {**c.arch_params, **c.operator_params}.items())
        ckpt = "yes" if c.checkpoint and (p := c.checkpoint_path()) is not None and p.is_file() else "no"
        recipe = c.recipe if isinstance(c.recipe, str) or c.recipe is None else "(inline)"
        rows.append((c.name, c.arch, c.operator, c.dataset, recipe, params, ckpt))
    print(table(rows, ("name", "arch", "operator", "dataset", "recipe", "params", "trained")))
    print(f"\n{len(cards)} model cards; architectures: {', '.join(list_archs())}")
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
    add_command(zoo, "list", help="list the model cards").set_defaults(func=cmd_zoo_list)
    show = add_command(zoo, "show", help="show one card and its network (-v: also the module tree)")
    show.add_argument("name")
    show.set_defaults(func=cmd_zoo_show)
