"""``rbdc lipschitz``: empirical Lipschitz estimates, CLEVER scores and per-layer operator norms.

Only this module prints; :mod:`robustbench_dc.lipschitz` logs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robustbench_dc.cli._args import add_command, add_model_args, data_name, download_progress, eps_arg, model_from_args
from robustbench_dc.cli._output import fmt, table, write_json

__all__ = ["register", "cmd_lipschitz"]


def _describe(c: Any, args: argparse.Namespace) -> str:
    """``card (arch, operator)`` or ``arch (operator, params)``, with the weights loaded."""
    if c.card is not None:
        desc = f"{c.card.name} ({c.card.arch}, {c.operator})"
    else:
        extra = ", ".join(f"{k}={v}" for k, v in c.params.items())
        desc = f"{args.arch} ({c.operator}{', ' + extra if extra else ''})"
    if c.checkpoint is not None:
        desc += f", checkpoint {Path(c.checkpoint).name}"
    elif args.model and args.untrained:
        desc += ", untrained"
    return desc


def cmd_lipschitz(args: argparse.Namespace) -> int:
    """Run :func:`robustbench_dc.lipschitz.lipschitz_report` and print it."""
    from robustbench_dc.data import load_dataset
    from robustbench_dc.errors import UsageError
    from robustbench_dc.lipschitz import dataset_radii, lipschitz_report

    if args.n is not None and args.n < 1:
        raise UsageError(f"--n: must be >= 1, got {args.n}")
    # An untrained network is initialised from the seed.
    choice = model_from_args(args, seed=args.seed)
    desc = _describe(choice, args)
    ds = load_dataset(data_name(args, choice.dataset), args.split, n=args.n, data_dir=args.data_dir,
                      download=not args.no_download, progress=download_progress(args))
    x, y = ds.to_float(), ds.labels
    ball, radius = dataset_radii(ds.name, ball_eps={"l2": args.ball_eps_l2, "linf": args.ball_eps_linf},
                                 clever_radius={"l2": args.clever_radius_l2, "linf": args.clever_radius_linf})
    report = lipschitz_report(
        choice.model, x, y, norms=args.norms, ball_eps=ball, ball_steps=args.ball_steps,
        ball_samples=args.ball_samples, clever=not args.no_clever, clever_n=args.clever_n, clever_radius=radius,
        n_batches=args.clever_batches, batch_size=args.clever_samples, target_class=args.target_class,
        iters=args.iters, norm_method=args.norm_method, seed=args.seed, progress=not args.quiet)

    print(f"Lipschitz analysis of {desc}")
    print(f"data: {ds.name}/{ds.split}, first {len(y)} examples, accuracy {100 * report.data['accuracy']:.1f}%; "
          f"seed {args.seed}")
    print()
    print("Empirical local estimates -- estimate (lower bound) of the local Lipschitz constant")
    rows = [(e.quantity, e.norm, e.target, e.where, fmt(e.max), fmt(e.mean), fmt(e.median), e.kind)
            for e in report.estimates]
    print(table(rows, ("quantity", "geometry", "target", "where", "max", "mean", "median", "kind")))
    notes = sorted({e.note for e in report.estimates if e.note})
    for note in notes:
        print(f"note: {note}")
    if report.clever:
        print()
        print("CLEVER scores (Weng et al. 2018) -- estimate of the minimum adversarial distortion, not a certificate")
        clever_rows = []
        for c in report.clever:
            s = c.summary
            clever_rows.append((c.norm, fmt(c.radius), s.get("n", 0), fmt(s.get("mean_score")),
                         fmt(s.get("median_score")), fmt(s.get("min_score")), fmt(s.get("mean_lipschitz")),
                         f"{s.get('fits_ok', 0)}/{s.get('n', 0)}", f"{c.n_batches}x{c.batch_size}"))
        print(table(clever_rows, ("norm", "radius", "n", "mean score", "median", "min", "mean L (Weibull)", "fits ok",
                           "samples")))
    print()
    print("Per-layer norms -- exact operator norms of affine layers (iterative, converging from below), "
          "Lipschitz constants of the others")
    layer_rows = []
    for layer in report.layers:
        shape = "x".join(map(str, layer.input_shape or []))
        if layer.computed:
            note = layer.method or ""
            if layer.converged is False:
                note += f" (not converged after {layer.iterations} steps: slightly low)"
            layer_rows.append((layer.name, layer.type, shape, fmt(layer.l2), fmt(layer.linf), note))
        else:
            layer_rows.append((layer.name, layer.type, shape, "-", "-", f"not computed: {layer.reason}"))
    print(table(layer_rows, ("layer", "type", "input", "L2 norm", "Linf norm", "method / note")))
    print()
    b = report.bound
    if b.computed:
        print(f"Product bound -- upper bound of the global Lipschitz constant: logits L2->L2 {fmt(b.l2)}, "
              f"Linf->Linf {fmt(b.linf)}; margin ||grad m||_2 <= {fmt(b.margin_l2)}, "
              f"||grad m||_1 <= {fmt(b.margin_linf)}")
    else:
        print(f"Product bound: not computed: {b.reason}")
    for check in report.checks:
        print(f"warning: {check}")
    if args.json:
        from robustbench_dc.provenance import provenance

        print()
        write_json(args.json, {"model": desc, "dataset": ds.name, "split": ds.split, **report.to_dict(),
                               "provenance": provenance(command=getattr(args, "command_line", None), seed=args.seed,
                                                        data_sha256=ds.checksum)})
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``lipschitz`` sub-command to ``sub`` (the ``rbdc`` sub-parsers)."""
    p = add_command(
        sub, "lipschitz", help="Lipschitz estimates (lower bounds), CLEVER scores, per-layer operator norms",
        description="Empirical local Lipschitz estimates (lower bounds) of the logit margin and logit map, "
                    "CLEVER scores, exact per-layer operator norms and, for plain chains of affine layers and "
                    "Lipschitz activations, their product as an upper bound. Decoupled layers and skip "
                    "connections get 'not computed' with the reason.")
    add_model_args(p)
    d = p.add_argument_group("data")
    d.add_argument("--data", help="dataset to evaluate on (default: the model's); e.g. mnist-sample")
    d.add_argument("--split", default="test", choices=("train", "test"))
    d.add_argument("--n", "-n", type=int, default=16, help="first n examples (default 16)")
    d.add_argument("--data-dir", help="folder holding the dataset files")
    d.add_argument("--no-download", action="store_true", help="never download")
    e = p.add_argument_group("estimates")
    e.add_argument("--norms", nargs="+", default=["l2", "linf"], choices=("l2", "linf"))
    e.add_argument("--ball-eps-l2", type=eps_arg, help="L2 ball of the local search (default: the data's L2 "
                                                     "budget; 0 disables)")
    e.add_argument("--ball-eps-linf", type=eps_arg, help="Linf ball of the local search (default: the data's "
                                                       "Linf budget; 0 disables)")
    e.add_argument("--ball-steps", type=int, default=10, help="ball-search rounds (default 10)")
    e.add_argument("--ball-samples", type=int, default=8, help="random points per round (default 8)")
    c = p.add_argument_group("CLEVER")
    c.add_argument("--no-clever", action="store_true", help="skip the CLEVER scores")
    c.add_argument("--clever-n", type=int, default=4, help="score the first k examples (default 4)")
    c.add_argument("--clever-batches", type=int, default=50, help="Nb (default 50; the paper uses 500)")
    c.add_argument("--clever-samples", type=int, default=128, help="Ns (default 128; the paper uses 1024)")
    c.add_argument("--clever-radius-l2", type=float, help="L2 radius (default: the data's L2 budget)")
    c.add_argument("--clever-radius-linf", type=float, help="Linf radius (default: the data's Linf budget)")
    c.add_argument("--target-class", type=int, help="targeted CLEVER for this class (default: untargeted)")
    n = p.add_argument_group("operator norms")
    n.add_argument("--iters", type=int, default=200, help="power-iteration steps per layer (default 200)")
    n.add_argument("--norm-method", choices=("auto", "power", "lanczos"), default="auto",
                   help="power iteration refined by ARPACK Lanczos when it has not converged (auto, default), "
                        "power iteration only, or Lanczos only")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the local generators and of an untrained network's initialisation (default 0)")
    p.add_argument("--json", metavar="OUT.json", help="also write the full report as JSON")
    p.set_defaults(func=cmd_lipschitz)
