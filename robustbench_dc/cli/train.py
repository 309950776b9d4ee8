"""``rbdc train``: train a model naturally or adversarially."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from robustbench_dc.cli._args import (
    add_command,
    add_data_args,
    add_model_args,
    check_data_name,
    data_name,
    download_progress,
    model_from_args,
)

__all__ = ["register", "cmd_train"]


def cmd_train(args: argparse.Namespace) -> int:
    from robustbench_dc.data import load_dataset
    from robustbench_dc.errors import gather
    from robustbench_dc.params import parse_params
    from robustbench_dc.training import RecipeError, get_recipe, list_recipes, train
    from robustbench_dc.training.distributed import init_from_env, leave

    # under torchrun: one of several data-parallel processes, of which rank 0 alone prints and writes
    joined = init_from_env()
    main = joined.rank == 0
    say = print if main else (lambda *_, **__: None)

    def the_recipe(spec: Any) -> Any:
        overrides = parse_params(args.set, what="--set")
        if args.epochs is not None:
            overrides["epochs"] = args.epochs
        if args.iterations is not None:
            overrides["iterations"] = args.iterations
        overrides.setdefault("seed", args.seed)
        return get_recipe(spec, **overrides)

    # every problem of the command line at once: the model's, the data's and the recipe's
    choice, _, recipe = gather(lambda: model_from_args(args, seed=args.seed, pretrained=False),
                               lambda: check_data_name(args),
                               lambda: None if args.recipe is None else the_recipe(args.recipe))
    if recipe is None:
        if choice.recipe is None:
            raise RecipeError(f"recipe: the model has none; pass --recipe NAME ({', '.join(list_recipes())})")
        recipe = the_recipe(choice.recipe)
    data = data_name(args, choice.dataset)
    progress = download_progress(args)
    train_set = load_dataset(data, "train", n=args.n_train, data_dir=args.data_dir, progress=progress)
    test_set = (load_dataset(data, "test", n=args.n_test, data_dir=args.data_dir, progress=progress)
                if args.n_test != 0 else None)
    out = Path(args.out)
    say(f"training {choice.name} on {data} ({len(train_set)} examples) with recipe {recipe.name} -> {out}")
    try:
        result = train(choice.model, train_set, recipe, out_dir=out, eval_data=test_set, progress=not args.quiet,
                       resume=not args.restart)
    finally:
        leave()
    for rec in result.history:
        line = f"  epoch {rec['epoch']:3d}  loss {rec['loss']:.4f}  train acc {100 * rec['train_accuracy']:.1f}%"
        if "eval_accuracy" in rec:
            line += f"  test acc {100 * rec['eval_accuracy']:.1f}%"
        say(line + f"  ({rec['images_per_second']:.0f} img/s)")
    say(f"weights: {result.checkpoint}\nsha256:  {result.sha256}")
    if joined.size > 1:
        # Everything is written and the process group is gone: end this process here, skipping the
        # interpreter's teardown. CI once saw a rank abort after a finished run ("terminate called without an
        # active exception", SIGABRT, from gloo's C++ threads), and torchrun then reports the whole run failed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from robustbench_dc.training import list_recipes

    p = add_command(sub, "train", help="train a model naturally or adversarially")
    add_model_args(p, checkpoint=False, untrained=False)
    p.add_argument("--recipe", help=f"training recipe (default: the card's): {', '.join(list_recipes())}")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set epochs=2 --set adversarial.eps=0.2")
    p.add_argument("--epochs", type=int)
    p.add_argument("--iterations", type=int)
    add_data_args(p, "train on")
    p.add_argument("--n-train", type=int, default=None, help="first n training examples")
    p.add_argument("--n-test", type=int, default=1000, help="first n test examples for per-epoch accuracy (0: none)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, model.pt, train.json)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and of the recipe")
    p.set_defaults(func=cmd_train)
