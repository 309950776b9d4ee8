"""``rbdc lipschitz``: empirical Lipschitz estimates, CLEVER scores and per-layer operator norms.

Registered by appending :func:`register` to ``robustbench_dc.cli._EXTENSIONS``. Only this module
prints; :mod:`robustbench_dc.lipschitz` logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

from ._text import table as _table

__all__ = ["register", "cmd_lipschitz"]

log = logging.getLogger(__name__)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    return f"{v:.5g}"


def _user_error(message: str) -> Exception:
    from .cli import UserError

    return UserError(message)


def _parse_params(items: Sequence[str]) -> dict[str, Any]:
    import yaml

    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _user_error(f"--param: expected KEY=VALUE, got {item!r}")
        params[key.strip()] = yaml.safe_load(value)
    return params


def _load_model(args: argparse.Namespace) -> tuple[Any, str | None, str]:
    """(model, the model's dataset or None, a description)."""

    from .zoo import build_model, get_card, load_model, split_params

    if args.model and args.arch:
        raise _user_error("give either --model (a zoo card) or --arch/--operator, not both")
    if args.model:
        card = get_card(args.model)
        if args.param:  # --param overrides the card's parameters (as in rbdc evaluate)
            arch_extra, op_extra = split_params(card.arch, _parse_params(args.param))
            model = build_model(card.arch, card.operator, dataset=card.dataset,
                                **{**card.arch_params, **arch_extra}, **{**card.operator_params, **op_extra})
        else:
            model = load_model(args.model, pretrained=not args.untrained and not args.checkpoint)
        dataset, desc = card.dataset, f"{card.name} ({card.arch}, {card.operator})"
    elif args.arch:
        params = _parse_params(args.param)
        model = build_model(args.arch, args.operator, dataset=args.dataset, **params)
        dataset = args.dataset
        extra = ", ".join(f"{k}={v}" for k, v in params.items())
        desc = f"{args.arch} ({args.operator}{', ' + extra if extra else ''})"
    else:
        raise _user_error("choose a model: --model CARD or --arch ARCH [--operator OP]")
    if args.checkpoint:
        from .cli_engine import load_weights

        load_weights(model, args.checkpoint)
        desc += f", checkpoint {Path(args.checkpoint).name}"
    elif args.model and args.untrained:
        desc += ", untrained"
    return model, dataset, desc


def cmd_lipschitz(args: argparse.Namespace) -> int:
    """Run :func:`robustbench_dc.lipschitz.lipschitz_report` and print it."""
    from .data import dataset_info, load_dataset
    from .lipschitz import lipschitz_report
    from .lipschitz.clever import DEFAULT_RADIUS

    import torch

    # An untrained network is initialised from the seed (the global RNG state is restored after).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model, model_dataset, desc = _load_model(args)
    dataset = args.dataset or model_dataset
    if dataset is None:
        raise _user_error("--dataset: no evaluation dataset given and the model records none")
    if args.n is not None and args.n < 1:
        raise _user_error(f"--n: must be >= 1, got {args.n}")
    info = dataset_info(dataset)
    ds = load_dataset(dataset, args.split, n=args.n, data_dir=args.data_dir, download=not args.no_download)
    x, y = ds.to_float(), ds.labels
    budgets = {"l2": info.eps_l2, "linf": info.eps_linf}
    ball = {"l2": args.ball_eps_l2, "linf": args.ball_eps_linf}
    ball = {k: (budgets[k] if v is None else v) for k, v in ball.items()}
    radius = {"l2": args.clever_radius_l2, "linf": args.clever_radius_linf}
    radius = {k: (v if v is not None else budgets[k] if budgets[k] else DEFAULT_RADIUS[k]) for k, v in radius.items()}
    report = lipschitz_report(
        model, x, y, norms=args.norms, ball_eps=ball, ball_steps=args.ball_steps, ball_samples=args.ball_samples,
        clever=not args.no_clever, clever_n=args.clever_n, clever_radius=radius, n_batches=args.clever_batches,
        batch_size=args.clever_samples, target_class=args.target_class, iters=args.iters,
        norm_method=args.norm_method, seed=args.seed, progress=not args.no_progress)

    print(f"Lipschitz analysis of {desc}")
    print(f"data: {ds.name}/{ds.split}, first {len(y)} examples, accuracy {100 * report.data['accuracy']:.1f}%; "
          f"seed {args.seed}")
    print()
    print("Empirical local estimates -- estimate (lower bound) of the local Lipschitz constant")
    rows = [(e.quantity, e.norm, e.target, e.where, _fmt(e.max), _fmt(e.mean), _fmt(e.median), e.kind)
            for e in report.estimates]
    print(_table(rows, ("quantity", "geometry", "target", "where", "max", "mean", "median", "kind")))
    notes = sorted({e.note for e in report.estimates if e.note})
    for note in notes:
        print(f"note: {note}")
    if report.clever:
        print()
        print("CLEVER scores (Weng et al. 2018) -- estimate of the minimum adversarial distortion, not a certificate")
        rows = []
        for c in report.clever:
            s = c.summary
            rows.append((c.norm, _fmt(c.radius), s.get("n", 0), _fmt(s.get("mean_score")),
                         _fmt(s.get("median_score")), _fmt(s.get("min_score")), _fmt(s.get("mean_lipschitz")),
                         f"{s.get('fits_ok', 0)}/{s.get('n', 0)}", f"{c.n_batches}x{c.batch_size}"))
        print(_table(rows, ("norm", "radius", "n", "mean score", "median", "min", "mean L (Weibull)", "fits ok",
                            "samples")))
    print()
    print("Per-layer norms -- exact operator norms of affine layers (iterative, converging from below), "
          "Lipschitz constants of the others")
    rows = []
    for layer in report.layers:
        shape = "x".join(map(str, layer.input_shape or []))
        if layer.computed:
            note = layer.method or ""
            if layer.converged is False:
                note += f" (not converged after {layer.iterations} steps: slightly low)"
            rows.append((layer.name, layer.type, shape, _fmt(layer.l2), _fmt(layer.linf), note))
        else:
            rows.append((layer.name, layer.type, shape, "-", "-", f"not computed: {layer.reason}"))
    print(_table(rows, ("layer", "type", "input", "L2 norm", "Linf norm", "method / note")))
    print()
    b = report.bound
    if b.computed:
        print(f"Product bound -- upper bound of the global Lipschitz constant: logits L2->L2 {_fmt(b.l2)}, "
              f"Linf->Linf {_fmt(b.linf)}; margin ||grad m||_2 <= {_fmt(b.margin_l2)}, "
              f"||grad m||_1 <= {_fmt(b.margin_linf)}")
    else:
        print(f"Product bound: not computed: {b.reason}")
    for check in report.checks:
        print(f"warning: {check}")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"model": desc, "dataset": ds.name, "split": ds.split, **report.to_dict()}
        out.write_text(json.dumps(payload, indent=2, default=str))
        print(f"\nwrote {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``lipschitz`` sub-command to ``sub`` (the ``rbdc`` sub-parsers)."""
    p = sub.add_parser(
        "lipschitz", help="Lipschitz estimates (lower bounds), CLEVER scores, per-layer operator norms",
        description="Empirical local Lipschitz estimates (lower bounds) of the logit margin and logit map, "
                    "CLEVER scores, exact per-layer operator norms and, for plain chains of affine layers and "
                    "Lipschitz activations, their product as an upper bound. Decoupled layers and skip "
                    "connections get 'not computed' with the reason.")
    g = p.add_argument_group("model")
    g.add_argument("--model", help="zoo card name (see 'rbdc zoo list') or path to a card file")
    g.add_argument("--untrained", action="store_true", help="with --model: do not load the card's checkpoint")
    g.add_argument("--arch", help="architecture (cnn9, mnist2d, resnet20, ...) built with --operator")
    g.add_argument("--operator", default="baseline", help="operator spec for --arch (default: baseline)")
    g.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="architecture/operator parameter for --arch (YAML value), repeatable: --param width=0.25")
    g.add_argument("--checkpoint", help="state dict to load (torch.load(..., weights_only=True))")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", help="evaluation dataset (default: the card's); with --arch it also sets the "
                                     "input shape and normalisation")
    d.add_argument("--split", default="test", choices=("train", "test"))
    d.add_argument("--n", "-n", type=int, default=16, help="first n examples (default 16)")
    d.add_argument("--data-dir", help="folder holding the dataset files")
    d.add_argument("--no-download", action="store_true", help="never download")
    e = p.add_argument_group("estimates")
    e.add_argument("--norms", nargs="+", default=["l2", "linf"], choices=("l2", "linf"))
    e.add_argument("--ball-eps-l2", type=float, help="L2 ball of the local search (default: the dataset's L2 "
                                                     "budget; 0 disables)")
    e.add_argument("--ball-eps-linf", type=float, help="Linf ball of the local search (default: the dataset's "
                                                       "Linf budget; 0 disables)")
    e.add_argument("--ball-steps", type=int, default=10, help="ball-search rounds (default 10)")
    e.add_argument("--ball-samples", type=int, default=8, help="random points per round (default 8)")
    c = p.add_argument_group("CLEVER")
    c.add_argument("--no-clever", action="store_true", help="skip the CLEVER scores")
    c.add_argument("--clever-n", type=int, default=4, help="score the first k examples (default 4)")
    c.add_argument("--clever-batches", type=int, default=50, help="Nb (default 50; the paper uses 500)")
    c.add_argument("--clever-samples", type=int, default=128, help="Ns (default 128; the paper uses 1024)")
    c.add_argument("--clever-radius-l2", type=float, help="L2 radius (default: the dataset's L2 budget)")
    c.add_argument("--clever-radius-linf", type=float, help="Linf radius (default: the dataset's Linf budget)")
    c.add_argument("--target-class", type=int, help="targeted CLEVER for this class (default: untargeted)")
    n = p.add_argument_group("operator norms")
    n.add_argument("--iters", type=int, default=200, help="power-iteration steps per layer (default 200)")
    n.add_argument("--norm-method", choices=("auto", "power", "lanczos"), default="auto",
                   help="power iteration refined by ARPACK Lanczos when it has not converged (auto, default), "
                        "power iteration only, or Lanczos only")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the local generators and of an untrained network's initialisation (default 0)")
    p.add_argument("--json", metavar="OUT.json", help="also write the full report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_lipschitz)
