"""``rbdc evaluate``: white-box attacks on one model, with gradient-masking diagnostics."""

from __future__ import annotations

import argparse
from typing import Any

from robustbench_dc.cli._args import (
    add_attack_args,
    add_command,
    add_model_args,
    attacks_from_args,
    check_data_name,
    data_name,
    load_test_data,
    model_from_args,
)
from robustbench_dc.cli._output import (
    binarization_text,
    breakdown_text,
    print_masking_warnings,
    print_results,
    write_results,
)

__all__ = ["register", "cmd_evaluate"]


def cmd_evaluate(args: argparse.Namespace) -> int:
    from robustbench_dc.errors import UsageError, gather
    from robustbench_dc.evaluation import NonFiniteModelError, evaluate_whitebox
    from robustbench_dc.evaluation.binarization import BinarizationConfig

    def the_model() -> Any:
        if args.run is None:
            return model_from_args(args, seed=args.seed)
        from robustbench_dc.protocol import model_from_run

        if args.entry is None or args.model or args.arch or args.checkpoint:
            raise UsageError("--run: give the run's model with --entry NAME (and no --model, --arch or --checkpoint: "
                             "the run recorded them)")
        return model_from_run(args.run, args.entry)

    # every problem of the command line at once: the model's, the data's and the attacks'
    choice, specs, _ = gather(the_model, lambda: attacks_from_args(args), lambda: check_data_name(args))
    ds = load_test_data(args, choice.data or choice.dataset)
    try:
        res = evaluate_whitebox(choice.model, ds.to_float(), ds.labels, specs, batch_size=args.batch_size,
                                progress=not args.quiet, dataset=choice.dataset, model_name=choice.name,
                                masking=not args.no_masking,
                                compile={"true": True, "false": False}.get(args.compile, "auto"),
                                binarization=BinarizationConfig(n_points=args.binarization_points)
                                if args.binarization_test else False)
    except NonFiniteModelError as exc:
        if choice.checkpoint is None:
            raise
        raise NonFiniteModelError(f"checkpoint {choice.checkpoint}: {exc}") from None
    weights = "" if choice.checkpoint is not None else f" (untrained: weights initialised from seed {args.seed})"
    print(f"{choice.name}{weights}: first {res.n} test examples of {data_name(args, choice.data or choice.dataset)}, "
          f"clean accuracy {100 * res.clean_accuracy:.1f}%")
    print_results(res.results)
    for r in res.results:
        if r.components:
            print(breakdown_text(r))
        if r.binarization:
            print(binarization_text(r.binarization))
    for key, worst in res.worst.items():
        print(f"worst case over the attack set [{key}]: robust accuracy {100 * worst.robust_accuracy:.1f}%")
    print_masking_warnings(res.flags)
    if res.flags and not res.triggered:
        print(f"masking diagnostics: none of {len(res.flags)} flags triggered")
    curves = None
    if args.curve:
        from robustbench_dc.minimum_norm.evaluate import curves_text, evaluate_curves

        eps_max = {r.threat_model: float(r.eps) for r in reversed(res.results) if r.eps is not None}
        curves = evaluate_curves(choice.model, ds.to_float(), ds.labels, args.curve, eps_max,
                                 fixed=[r.to_dict() for r in res.results], batch_size=args.batch_size,
                                 seed=args.seed)
        print(curves_text(curves))
    write_results(args, "whitebox", res, ds.checksum, choice, extra=None if curves is None else {"curves": curves})
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "evaluate", help="white-box attacks on one model, with gradient-masking diagnostics")
    add_model_args(p)
    add_attack_args(p)
    p.add_argument("--run", metavar="RUN_DIR", help="evaluate a model a protocol trained, from what its run recorded "
                                                    "(with --entry)")
    p.add_argument("--entry", metavar="MODEL", help="with --run: the model's name in the run")
    p.add_argument("--no-masking", action="store_true", help="skip the gradient-masking diagnostics")
    p.add_argument("--curve", action="append", default=[], choices=("fmn", "fmn-t", "fab", "fab-t"),
                   metavar="ATTACK", help="also the robustness curve of each threat model of the attacks, on [0, "
                                          "their eps]: per example the smallest perturbation this minimum-norm attack "
                                          "(fmn, fab, fmn-t, fab-t; repeatable) or a fixed-eps attack found; prints "
                                          "the median minimal perturbation and the area under the curve with 95%% "
                                          "bootstrap intervals")
    p.add_argument("--binarization-test", action="store_true",
                   help="also run the binarization test (Zimmermann et al. 2022) of every attack that supports it: "
                        "can the attack find an adversarial example where one provably exists?")
    p.add_argument("--binarization-points", type=int, default=50, metavar="N",
                   help="test points of the binarization test (default 50)")
    p.add_argument("--compile", choices=("auto", "true", "false"), default="auto",
                   help="craft attacks with compiled decoupled responses (auto: for long attack jobs "
                        "where torch.compile works)")
    p.set_defaults(func=cmd_evaluate)
