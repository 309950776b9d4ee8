#!/usr/bin/env python
"""Does crafting in bfloat16 weaken an attack? The same attacks on the same trained models, crafted
in float32 and in bfloat16 (scored in float32 both times), compared example by example.

For each model of a finished protocol run and each attack, records the robust accuracy under both
crafting precisions, the examples broken by one precision only, the per-component breakdown of an
ensemble, and the crafting time ratio (fp32 / bf16, measured in the same process). This is the
measurement behind ``precision: bf16`` on the strong attacks of ``protocols/table7-8-cpu.yaml``.

Usage::

    python -m benchmarks.attack_precision runs/table7-8-cpu --models baseline-at tanhconv-at \\
        --attack autoattack-linf --attack pgd-linf,steps=20,restarts=5 --n 100 \\
        --out benchmarks/results/attack-precision.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from robustbench_dc.attacks import AttackSpec, load_attack_config
from robustbench_dc.data import load_dataset
from robustbench_dc.evaluation import evaluate_whitebox
from robustbench_dc.params import parse_params
from robustbench_dc.provenance import provenance
from robustbench_dc.runtime import machine_info
from robustbench_dc.zoo import resolve_model

REPO = Path(__file__).resolve().parents[1]


def attack_from_text(text: str) -> AttackSpec:
    """``NAME[,KEY=VALUE...]``: an attack configuration with overrides, e.g. ``pgd-linf,steps=20``."""
    name, *pairs = text.split(",")
    spec = load_attack_config(name)
    return AttackSpec(**{**spec.model_dump(), **parse_params(pairs)}) if pairs else spec


def compare_model(run_dir: Path, name: str, specs: list[AttackSpec], n: int, compile: bool | str) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    m = summary["models"][name]
    params = {**(m.get("arch_params") or {}), **(m.get("operator_params") or {})}
    choice = resolve_model(arch=m["arch"], operator=m["operator"], dataset=summary["dataset"], params=params,
                           checkpoint=run_dir / "models" / name / "model.pt")
    ds = load_dataset(summary["dataset"], "test", n=n)
    x, y = ds.to_float(), ds.labels
    out: dict = {"checkpoint_sha256": m.get("checkpoint_sha256"), "data_sha256": ds.checksum, "attacks": {}}
    runs = {}
    for prec in ("fp32", "bf16"):
        t0 = time.perf_counter()
        runs[prec] = evaluate_whitebox(choice.model, x, y, specs, batch_size=n, dataset=summary["dataset"],
                                       model_name=name, masking=False, compile=compile, precision=prec)
        out[f"seconds_{prec}"] = time.perf_counter() - t0
    for a, b in zip(runs["fp32"].results, runs["bf16"].results):
        only_fp32 = [i for i, (ra, rb) in enumerate(zip(a.robust_correct, b.robust_correct)) if not ra and rb]
        only_bf16 = [i for i, (ra, rb) in enumerate(zip(a.robust_correct, b.robust_correct)) if ra and not rb]
        out["attacks"][a.attack] = {
            "n": a.n, "clean_accuracy": a.clean_accuracy,
            "robust_accuracy": {"fp32": a.robust_accuracy, "bf16": b.robust_accuracy},
            "broken_only_in_fp32": only_fp32, "broken_only_in_bf16": only_bf16,
            "seconds": {"fp32": a.seconds, "bf16": b.seconds},
            "speedup_fp32_over_bf16": a.seconds / b.seconds if b.seconds else None,
            "components": {"fp32": a.components, "bf16": b.components},
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--attack", action="append", required=True, help="NAME[,KEY=VALUE...] (repeatable)")
    ap.add_argument("--n", type=int, default=100, help="first N test examples (default 100)")
    ap.add_argument("--compile", choices=("auto", "true", "false"), default="auto")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    specs = [attack_from_text(a) for a in args.attack]
    compile = {"true": True, "false": False}.get(args.compile, "auto")
    summary = json.loads((args.run_dir / "summary.json").read_text())
    result = {
        **provenance(command=shlex.join(["python", "benchmarks/attack_precision.py", *(argv or sys.argv[1:])]),
                     seed=summary.get("seed"), data_sha256=None),
        "run_id": summary.get("run_id"), "machine": machine_info(), "n": args.n,
        "models": {name: compare_model(args.run_dir, name, specs, args.n, compile) for name in args.models},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, r in result["models"].items():
        for label, a in r["attacks"].items():
            print(f"{name} {label}: robust fp32 {100 * a['robust_accuracy']['fp32']:.1f}% "
                  f"bf16 {100 * a['robust_accuracy']['bf16']:.1f}%, broken only in fp32 "
                  f"{len(a['broken_only_in_fp32'])}, only in bf16 {len(a['broken_only_in_bf16'])}, "
                  f"crafting {a['seconds']['fp32']:.0f} s vs {a['seconds']['bf16']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
