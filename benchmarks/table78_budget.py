#!/usr/bin/env python
"""Where the time of a Tables 7-8 reproduction goes, measured, to size its cpu scale.

For CNN-9 at each ``--widths`` multiplier, each operator of Tables 7-8 (Baseline, SphereConv,
BallConv and TanhConv with the authors' learnable relative radius) and each training kind
(natural; FGSM adversarial training mixed 50/50 with clean examples), it times one epoch of
``--n-train`` real CIFAR-10 training images with the suite's ``train()`` and its defaults
(bf16 autocast where native, channels-last), and the white-box attacks of the tables on
``--n-test`` test images. It then projects the wall time of the whole protocol for a number of
training iterations: 9 trained models, every attack, the transfer attacks.

Usage::

    RBDC_DATA=../shared/data python -m benchmarks.table78_budget --widths 0.25,0.5 --out benchmarks/results/table78-budget.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.harness.report import versions, write_result
from robustbench_dc.runtime import configure_allocator, machine_info

REPO = Path(__file__).resolve().parents[1]

OPERATORS = {
    "Baseline": ("baseline", {}),
    "SphereConv": ("sphere+cos", {}),
    "BallConv": ("ball+cos", {"rho_mode": "relative", "learnable_rho": True}),
    "TanhConv": ("tanh+cos", {"rho_mode": "relative", "learnable_rho": True}),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", default="0.25,0.5")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--n-train", type=int, default=2560, help="images per timed epoch")
    p.add_argument("--n-test", type=int, default=256, help="images per timed attack")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    configure_allocator()

    from robustbench_dc.attacks import AttackSpec, run_attack
    from robustbench_dc.data import load_dataset
    from robustbench_dc.training import train
    from robustbench_dc.zoo import build_model

    tr = load_dataset("cifar10", "train", n=args.n_train)
    te = load_dataset("cifar10", "test", n=args.n_test)
    x, y = te.to_float(), te.labels
    eps = 8 / 255
    attacks = {"fgsm": AttackSpec(name="fgsm", eps=eps), "bim": AttackSpec(name="bim", eps=eps, steps=10,
                                                                           step_size=1 / 255),
               "pgd-20": AttackSpec(name="pgd", eps=eps, steps=20)}
    rows = []
    for width in [float(w) for w in args.widths.split(",")]:
        for label, (op, params) in OPERATORS.items():
            for kind in ("natural", "fgsm-at"):
                torch.manual_seed(args.seed)
                model = build_model("cnn9", op, dataset="cifar10", width=width, **params)
                recipe = {"base": "cifar10-natural" if kind == "natural" else "cifar10-fgsm-at",
                          "epochs": 1, "iterations": None, "batch_size": args.batch, "compile": False}
                t0 = time.perf_counter()
                res = train(model, tr, recipe)
                seconds = time.perf_counter() - t0
                steps = -(-args.n_train // args.batch)
                row = {"width": width, "operator": label, "training": kind, "seconds_per_step": seconds / steps,
                       "images_per_second": res.history[-1].get("images_per_second")}
                if kind == "natural":
                    model.eval()
                    for name, spec in attacks.items():
                        t0 = time.perf_counter()
                        run_attack(model, x, y, spec)
                        row[f"{name}_seconds_per_1000"] = (time.perf_counter() - t0) * 1000 / x.shape[0]
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = {"command": [sys.executable, *sys.argv], "seed": args.seed, "settings": vars(args) | {"out": str(args.out)},
           "train_sha256": tr.checksum, "test_sha256": te.checksum,
           "versions": versions(), "machine": machine_info(),
           "threads": torch.get_num_threads(), "rows": rows}
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
