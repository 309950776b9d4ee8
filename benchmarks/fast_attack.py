#!/usr/bin/env python
"""``malt`` (the suite's fast evaluation: APGD-CE, then APGD-T on the targets MALT's targeting ranks
first) against the full AutoAttack: same models, same first n test images, same machine, one process.

Both run through ``evaluate_whitebox`` as ``rbdc evaluate`` runs them (masking diagnostics off,
compiled decoupled responses where the suite compiles them), ``malt`` first, so that the compilation
is in its time, not AutoAttack's. Per model: robust accuracy, seconds and forward / backward passes
of each (per component too), the examples robust under one of the two only, the time and pass
ratios, and the verdict of the suite's rule for a fast evaluation: robust accuracy within
``--tolerance`` points (default 0.2) of AutoAttack's on the same examples.

Usage (a finished Tables 7-8 run)::

    RBDC_DATA=../shared/data python -m benchmarks.fast_attack --run runs/table7-8-cpu \\
        --models baseline-at tanhconv-at --n 1000 --targets 1 3 --out benchmarks/results/fast-attack.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.autoattack_side_by_side import component_log, load_models, robust_only
from robustbench_dc.attacks import AttackSpec
from robustbench_dc.data import dataset_info, load_dataset
from robustbench_dc.evaluation import evaluate_whitebox
from robustbench_dc.evaluation.metrics import AttackResult
from robustbench_dc.provenance import package_versions, provenance
from robustbench_dc.runtime import machine_info


def _summary(r: AttackResult) -> dict[str, Any]:
    return {"attack": r.attack, "robust_accuracy": r.robust_accuracy, "seconds": r.seconds,
            "forward_passes": r.forward_passes, "backward_passes": r.backward_passes, "components": component_log(r),
            "robust": [bool(v) for v in r.robust_correct]}


def compare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, dataset: str, targets: list[int],
            batch_size: int, tolerance: float) -> dict[str, Any]:
    """``malt`` with each target count of ``targets``, then AutoAttack, on (x, y); their agreement."""
    specs = [AttackSpec(name="malt", eps=eps, seed=0, params={"n_target_classes": k}) for k in targets]
    specs.append(AttackSpec(name="autoattack", eps=eps, seed=0))
    res = evaluate_whitebox(model.eval(), x, y, specs, batch_size=batch_size, dataset=dataset, masking=False)
    *fast, full = [_summary(r) for r in res.results]
    out: dict[str, Any] = {"n": int(x.shape[0]), "clean_accuracy": res.clean_accuracy, "autoattack": full, "malt": {}}
    aa_passes = (full["forward_passes"] or 0) + (full["backward_passes"] or 0)
    for k, f in zip(targets, fast):
        diff = f["robust_accuracy"] - full["robust_accuracy"]
        passes = (f["forward_passes"] or 0) + (f["backward_passes"] or 0)
        only_malt, only_aa = robust_only(f["robust"], full["robust"])
        out["malt"][str(k)] = {
            **f,
            "robust_accuracy_minus_autoattack": diff,
            "within_tolerance": abs(diff) <= tolerance / 100 + 1e-12,
            "autoattack_seconds_ratio": full["seconds"] / f["seconds"],
            "autoattack_passes_ratio": aa_passes / passes if passes else None,
            "robust_only_in_malt": only_malt,
            "robust_only_in_autoattack": only_aa,
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    """The report's table (``python -m benchmarks.fast_attack --table FILE``)."""
    lines = ["| model | attack | robust accuracy | - AutoAttack | seconds | AutoAttack / it, time | "
             "AutoAttack / it, passes | robust only under it / only under AutoAttack |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in result["models"].items():
        aa = r["autoattack"]
        lines.append(f"| {name} | AutoAttack (standard) | {100 * aa['robust_accuracy']:.1f}% | | {aa['seconds']:.0f} | | | |")
        for k, f in r["malt"].items():
            lines.append(f"| {name} | `malt`, {k} target{'s' if k != '1' else ''} | {100 * f['robust_accuracy']:.1f}% | "
                         f"{100 * f['robust_accuracy_minus_autoattack']:+.1f} | {f['seconds']:.0f} | "
                         f"{f['autoattack_seconds_ratio']:.1f}x | {f['autoattack_passes_ratio']:.1f}x | "
                         f"{len(f['robust_only_in_malt'])} / {len(f['robust_only_in_autoattack'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished protocol run folder")
    ap.add_argument("--models", nargs="+", required=True, help="models of --run")
    ap.add_argument("--n", type=int, default=1000, help="first N test images (default 1000)")
    ap.add_argument("--batch", type=int, default=500, help="examples per batch (default 500, the protocol's)")
    ap.add_argument("--targets", type=int, nargs="+", default=[3], help="malt's target counts to measure (default 3)")
    ap.add_argument("--tolerance", type=float, default=0.2, help="points of robust accuracy (default 0.2)")
    ap.add_argument("--eps", type=float, default=None, help="L-inf budget (default: the dataset's standard eps)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    dataset, models = load_models(args.run, args.models)
    ds = load_dataset(dataset, "test", n=args.n)
    x, y = ds.to_float(), ds.labels
    eps = args.eps if args.eps is not None else dataset_info(dataset).eps_linf
    command = shlex.join(["python", "-m", "benchmarks.fast_attack", *(argv if argv is not None else sys.argv[1:])])
    result: dict[str, Any] = {
        **provenance(command=command, seed=0, data_sha256=ds.checksum),
        "versions": package_versions(), "machine": machine_info(), "torch_threads": torch.get_num_threads(),
        "dataset": dataset, "n": int(x.shape[0]), "eps": eps, "threat_model": "linf", "batch": args.batch,
        "tolerance_points": args.tolerance, "models": {},
    }
    for name, (model, info) in models.items():
        result["models"][name] = {**info, **compare(model, x, y, eps, dataset, args.targets, args.batch,
                                                    args.tolerance)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")   # after each model: a partial report survives
        print(markdown({"models": {name: result["models"][name]}}), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--table"]:
        print(markdown(json.loads(Path(sys.argv[2]).read_text())))
        raise SystemExit(0)
    raise SystemExit(main())
