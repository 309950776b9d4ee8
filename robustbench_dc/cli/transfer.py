"""``rbdc transfer``: black-box transfer attacks, crafted on sources and scored on targets."""

from __future__ import annotations

import argparse
from typing import Any

from robustbench_dc.cli._args import add_attack_args, add_command, attacks_from_args, load_test_data
from robustbench_dc.cli._output import print_masking_warnings, print_results, write_results

__all__ = ["register", "cmd_transfer"]


def _models(items: list[str], seed: int) -> dict[str, Any]:
    """``CARD[@CHECKPOINT]`` items -> {item: ModelChoice}, each built once (without ``@``: the
    checkpoint the card records, if any)."""
    from robustbench_dc.zoo import resolve_model

    out = {}
    for item in dict.fromkeys(items):
        card, _, ckpt = item.partition("@")
        out[item] = resolve_model(card, checkpoint=ckpt or None, seed=seed)
    return out


def cmd_transfer(args: argparse.Namespace) -> int:
    from robustbench_dc.errors import UsageError
    from robustbench_dc.evaluation import evaluate_transfer

    # A model named as both source and target is the same object: its cell is white-box.
    choices = _models(args.source + args.target, args.seed)
    names = {item: item.partition("@")[0] for item in choices}
    if len(set(names.values())) < len(names):
        names = {item: item for item in choices}
    sources = {names[i]: choices[i].model for i in dict.fromkeys(args.source)}
    targets = {names[i]: choices[i].model for i in dict.fromkeys(args.target)}
    datasets = {c.dataset for c in choices.values()}
    if len(datasets) != 1:
        raise UsageError(f"transfer: sources and targets must share one dataset, got {sorted(datasets)}")
    dataset = datasets.pop()
    ds = load_test_data(args, dataset)
    specs = attacks_from_args(args)
    res = evaluate_transfer(sources, targets, ds.to_float(), ds.labels, specs, cache_dir=args.cache,
                            batch_size=args.batch_size, dataset=dataset, progress=not args.quiet)
    print(f"transfer (black-box): {len(sources)} source(s) x {len(targets)} target(s), first {len(ds.labels)} "
          f"test examples ({res.n_crafted} crafted, {res.n_cached} from cache)")
    print_results(res.cells)
    for target, flag in res.flags.items():
        print_masking_warnings([flag], target)
    write_results(args, "transfer", res, ds.checksum)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "transfer", help="black-box transfer attacks: craft on sources, score on targets")
    p.add_argument("--source", action="append", required=True, metavar="CARD[@CHECKPOINT]")
    p.add_argument("--target", action="append", required=True, metavar="CARD[@CHECKPOINT]")
    p.add_argument("--cache", help="folder caching crafted examples (each crafted once)")
    add_attack_args(p)
    p.set_defaults(func=cmd_transfer)
