"""``rbdc train``, ``rbdc evaluate`` and ``rbdc transfer``: the engine from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

__all__ = ["register", "add_model_args", "resolve_model", "parse_params", "ModelChoice"]


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["rho=0.5", "widths=[8,16,32]"]`` -> ``{"rho": 0.5, "widths": [8, 16, 32]}`` (YAML values)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param/--set: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def add_model_args(p: argparse.ArgumentParser, checkpoint: bool = True) -> None:
    """``--model CARD`` or ``--arch/--operator/--dataset/--param``, plus ``--checkpoint``."""
    g = p.add_argument_group("model (a zoo card, or an architecture + operator)")
    g.add_argument("--model", help="zoo card name (see `rbdc zoo list`) or path to a card YAML")
    g.add_argument("--arch", help="architecture, e.g. mnist2d, cnn9, resnet32")
    g.add_argument("--operator", default=None, help="operator spec, e.g. baseline, tanh+cos, my_ops.py:MyOp")
    g.add_argument("--dataset", help="dataset the model is built for (mnist, fashion-mnist, cifar10)")
    g.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="architecture or operator parameter (repeatable), e.g. --param width=0.25 --param rho=0.5")
    if checkpoint:
        g.add_argument("--checkpoint", help="weights to load (a model.pt or training checkpoint)")


class ModelChoice:
    """What the model arguments resolved to."""

    def __init__(self, name: str, model: nn.Module, dataset: str, recipe: Any = None) -> None:
        self.name, self.model, self.dataset, self.recipe = name, model, dataset, recipe


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a ``model.pt`` or a training checkpoint (``{"model": state}``), ``weights_only``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint: {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    model.load_state_dict(state)


def resolve_model(args: argparse.Namespace, seed: int = 0) -> ModelChoice:
    """Build the model the arguments describe (seeded), loading ``--checkpoint`` if given."""
    from .zoo import build_model, get_card, split_params

    torch.manual_seed(seed)
    params = parse_params(getattr(args, "param", None))
    if args.model:
        if args.arch:
            raise ValueError("--model and --arch: give one of them")
        card = get_card(args.model)
        arch_extra, op_extra = split_params(card.arch, params)  # --param overrides the card
        model = build_model(card.arch, args.operator or card.operator, dataset=card.dataset,
                            **{**card.arch_params, **arch_extra}, **{**card.operator_params, **op_extra})
        name, dataset, recipe = card.name, card.dataset, card.recipe
    elif args.arch:
        if not args.dataset:
            raise ValueError("--arch needs --dataset (mnist, fashion-mnist, cifar10)")
        operator = args.operator or "baseline"
        model = build_model(args.arch, operator, dataset=args.dataset, **params)
        name, dataset, recipe = f"{args.arch}-{operator}", args.dataset, None
    else:
        raise ValueError("model: give --model CARD or --arch ARCH --dataset DATASET [--operator SPEC]")
    if getattr(args, "checkpoint", None):
        load_weights(model, args.checkpoint)
    return ModelChoice(name, model, dataset, recipe)


def _data_name(args: argparse.Namespace, model_dataset: str) -> str:
    return args.data or model_dataset


# ----------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .training import get_recipe, train

    choice = resolve_model(args, seed=args.seed)
    recipe_spec = args.recipe or choice.recipe
    if recipe_spec is None:
        from .training import list_recipes

        raise ValueError(f"recipe: the model has none; pass --recipe NAME ({', '.join(list_recipes())})")
    overrides = parse_params(args.set)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    overrides.setdefault("seed", args.seed)
    recipe = get_recipe(recipe_spec, **overrides)
    data_name = _data_name(args, choice.dataset)
    train_set = load_dataset(data_name, "train", n=args.n_train, data_dir=args.data_dir)
    test_set = load_dataset(data_name, "test", n=args.n_test, data_dir=args.data_dir) if args.n_test != 0 else None
    out = Path(args.out)
    print(f"training {choice.name} on {data_name} ({len(train_set)} examples) with recipe {recipe.name} -> {out}")
    result = train(choice.model, train_set, recipe, out_dir=out, eval_data=test_set, progress=not args.quiet,
                   resume=not args.restart)
    for rec in result.history:
        line = f"  epoch {rec['epoch']:3d}  loss {rec['loss']:.4f}  train acc {100 * rec['train_accuracy']:.1f}%"
        if "eval_accuracy" in rec:
            line += f"  test acc {100 * rec['eval_accuracy']:.1f}%"
        print(line + f"  ({rec['images_per_second']:.0f} img/s)")
    print(f"weights: {result.checkpoint}\nsha256:  {result.sha256}")
    return 0


# ----------------------------------------------------------------------------- evaluate


def _attack_specs(args: argparse.Namespace) -> list[Any]:
    from .attacks import load_attack_config

    names = args.attack or ["fgsm-linf", "bim-linf", "pgd-linf"]
    specs = []
    for name in names:
        spec = load_attack_config(name)
        changes: dict[str, Any] = {}
        if args.eps is not None:
            changes["eps"] = args.eps
        if args.backend is not None:
            changes["backend"] = args.backend
        if args.steps is not None and spec.name not in ("fgsm", "autoattack"):  # AutoAttack's budgets are fixed
            changes["steps"] = args.steps
        if changes:
            spec = type(spec)(**{**spec.model_dump(), **changes})
        specs.append(spec)
    return specs


def _test_batch(args: argparse.Namespace, dataset: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    from .data import load_dataset

    ds = load_dataset(_data_name(args, dataset), "test", n=args.n, data_dir=args.data_dir)
    return ds.to_float(), ds.labels, ds.checksum


def _print_results(results: list[Any]) -> None:
    from ._text import table as _table

    rows = []
    for r in results:
        rows.append((r.source or "-", r.model, r.attack, r.spec.get("backend", "native"), f"{r.eps:.4g}",
                     f"{100 * r.clean_accuracy:.1f}", f"{100 * r.robust_accuracy:.1f}",
                     "-" if r.attack_success_rate != r.attack_success_rate else f"{100 * r.attack_success_rate:.1f}",
                     "-" if r.max_perturbation is None else f"{r.max_perturbation:.4g}", f"{r.seconds:.1f}"))
    print(_table(rows, ("source", "model", "attack", "backend", "eps", "clean %", "robust %", "success %",
                        "max norm", "seconds")))


def breakdown_text(result: Any) -> str:
    """AutoAttack's log for one ensemble result: each component's budget and the robust accuracy after it."""
    from ._text import table as _table

    rows = []
    for c in result.components:
        budget = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in c["budget"].items()) or "-"
        rows.append((c["component"], c["backend"] or "-", budget, str(c["attacked"]),
                     f"{100 * c['robust_accuracy']:.1f}", f"{c['seconds']:.1f}"))
    return f"{result.attack}: robust accuracy after each component\n" + _table(
        rows, ("component", "backend", "budget", "attacked", "robust %", "seconds"))


def _write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2))
        print(f"results: {path}")


def _provenance(args: argparse.Namespace, data_checksum: str, seed: int) -> dict[str, Any]:
    import platform

    from . import __version__

    versions = {"robustbench_dc": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for mod in ("torchattacks", "foolbox"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional backend absent or broken
            pass
    return {"command": "rbdc " + " ".join(sys.argv[1:]) if sys.argv else "", "seed": seed,
            "data_sha256": data_checksum, "versions": versions}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .attacks import evaluate_whitebox

    choice = resolve_model(args, seed=args.seed)
    x, y, checksum = _test_batch(args, choice.dataset)
    specs = _attack_specs(args)
    res = evaluate_whitebox(choice.model, x, y, specs, batch_size=args.batch_size, progress=not args.quiet,
                            dataset=choice.dataset, model_name=choice.name, masking=not args.no_masking,
                            compile={"true": True, "false": False}.get(args.compile, "auto"))
    print(f"{choice.name}: first {res.n} test examples of {_data_name(args, choice.dataset)}, "
          f"clean accuracy {100 * res.clean_accuracy:.1f}%")
    _print_results(res.results)
    for r in res.results:
        if r.components:
            print(breakdown_text(r))
    for key, worst in res.worst.items():
        print(f"worst case over the attack set [{key}]: robust accuracy {100 * worst.robust_accuracy:.1f}%")
    for flag in res.flags:
        if flag.triggered:
            print(f"WARNING possible gradient masking [{flag.name}]: {flag.message}")
    if res.flags and not res.triggered:
        print(f"masking diagnostics: none of {len(res.flags)} flags triggered")
    _write_json(args.json, {"whitebox": res.to_dict(), "provenance": _provenance(args, checksum, args.seed)})
    return 0


# ----------------------------------------------------------------------------- transfer


def _named_models(items: list[str], seed: int) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """``CARD[@CHECKPOINT]`` items -> ({item: model with weights}, {item: dataset}); each built once."""
    models: dict[str, nn.Module] = {}
    datasets: dict[str, str] = {}
    for item in dict.fromkeys(items):
        card, _, ckpt = item.partition("@")
        ns = argparse.Namespace(model=card, arch=None, operator=None, dataset=None, param=None,
                                checkpoint=ckpt or None)
        choice = resolve_model(ns, seed=seed)
        models[item], datasets[item] = choice.model, choice.dataset
    return models, datasets


def cmd_transfer(args: argparse.Namespace) -> int:
    from .attacks import evaluate_transfer

    # A model named as both source and target is the same object: its cell is white-box.
    models, datasets_of = _named_models(args.source + args.target, args.seed)
    names = {item: item.partition("@")[0] for item in models}
    if len(set(names.values())) < len(names):
        names = {item: item for item in models}
    sources = {names[i]: models[i] for i in dict.fromkeys(args.source)}
    targets = {names[i]: models[i] for i in dict.fromkeys(args.target)}
    datasets = set(datasets_of.values())
    if len(datasets) != 1:
        raise ValueError(f"transfer: sources and targets must share one dataset, got {sorted(datasets)}")
    dataset = datasets.pop()
    x, y, checksum = _test_batch(args, dataset)
    specs = _attack_specs(args)
    res = evaluate_transfer(sources, targets, x, y, specs, cache_dir=args.cache, batch_size=args.batch_size,
                            dataset=dataset, progress=not args.quiet)
    print(f"transfer (black-box): {len(sources)} source(s) x {len(targets)} target(s), first {len(y)} test examples "
          f"({res.n_crafted} crafted, {res.n_cached} from cache)")
    _print_results(res.cells)
    for target, flag in res.flags.items():
        if flag.triggered:
            print(f"WARNING possible gradient masking on {target} [{flag.name}]: {flag.message}")
    _write_json(args.json, {"transfer": res.to_dict(), "provenance": _provenance(args, checksum, args.seed)})
    return 0


# ----------------------------------------------------------------------------- parser


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attack", action="append", metavar="NAME",
                   help="attack config from attacks/*.yaml or a YAML path (repeatable; default fgsm, bim, pgd)")
    p.add_argument("--backend", choices=("native", "torchattacks", "foolbox"), help="override every attack's backend")
    p.add_argument("--eps", type=float, help="override the budget (default: the dataset's standard eps)")
    p.add_argument("--steps", type=int, help="override the iterations of iterative attacks")
    p.add_argument("--data", help="dataset to evaluate on (default: the model's); e.g. mnist-sample")
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("-n", "--n", type=int, default=1000, help="first n test examples (default 1000)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results (with provenance) to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(sub: argparse._SubParsersAction) -> None:
    from .training import list_recipes

    p = sub.add_parser("train", help="train a model naturally or adversarially")
    add_model_args(p, checkpoint=False)
    p.add_argument("--recipe", help=f"training recipe (default: the card's): {', '.join(list_recipes())}")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set epochs=2 --set adversarial.eps=0.2")
    p.add_argument("--epochs", type=int)
    p.add_argument("--iterations", type=int)
    p.add_argument("--data", help="dataset to train on (default: the model's); e.g. mnist-sample")
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("--n-train", type=int, default=None, help="first n training examples")
    p.add_argument("--n-test", type=int, default=1000, help="first n test examples for per-epoch accuracy (0: none)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, model.pt, train.json)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and of the recipe")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="white-box attacks on one model, with gradient-masking diagnostics")
    add_model_args(p)
    _add_eval_args(p)
    p.add_argument("--no-masking", action="store_true", help="skip the gradient-masking diagnostics")
    p.add_argument("--compile", choices=("auto", "true", "false"), default="auto",
                   help="craft attacks with compiled decoupled responses (auto: for long attack jobs "
                        "where torch.compile works)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("transfer", help="black-box transfer attacks: craft on sources, score on targets")
    p.add_argument("--source", action="append", required=True, metavar="CARD[@CHECKPOINT]")
    p.add_argument("--target", action="append", required=True, metavar="CARD[@CHECKPOINT]")
    p.add_argument("--cache", help="folder caching crafted examples (each crafted once)")
    _add_eval_args(p)
    p.set_defaults(func=cmd_transfer)
