#!/usr/bin/env python
"""What folding batch norms and pooling the patch norms save in an attack's unit of work.

Inside :func:`~robustbench_dc.attacks.steps.attack_mode` (how every attack of the suite runs the
model) two things make a CNN-9's passes cheaper without changing the function it computes beyond
float32 rounding:

* ``fold``: every ``nn.Conv2d`` + ``nn.BatchNorm2d`` pair is one convolution with the batch norm
  folded into its weights and bias (:func:`~robustbench_dc.attacks.steps.folded_batch_norm`), and
  every BallConv / TanhConv layer with a per-channel radius + ``nn.BatchNorm2d`` + ``nn.ReLU`` one
  module whose compiled response kernel applies the batch norm: no batch-norm forward and backward
  (SphereConv, on the fused eager path, keeps its batch norms);
* ``pool``: a decoupled layer's patch norms sum their windows by a sum pooling instead of a
  single-channel convolution (:func:`~robustbench_dc.operators.patch_norm2d`, float32 only).

For each operator of Tables 7-8 (CNN-9 at the cpu scale's width, a model after two training steps
so that batch norms and the relative radius hold statistics) this times, in one process and
interleaved (the order reversed on odd repeats), the two units of an attack,

* ``gradient``: one input gradient of the cross-entropy (FGSM/BIM/PGD/APGD/FAB),
* ``forward``: one forward pass without gradients (Square),

with both changes (``new``) and without either (``old``: no folding, the convolution window sum),
compiled responses where the protocol's attacks compile them, and reports ``ratio`` = new / old
(below 1: the new path is faster), the median over ``--repeats``.

Usage::

    RBDC_DATA=../shared/data python -m benchmarks.attack_fold --out benchmarks/results/attack-fold.json
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path
from typing import Any, Iterator

from benchmarks.thread_scaling import OPERATORS, attack_unit_seconds

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _old_paths() -> Iterator[None]:
    """The attack path before the change: no batch-norm folding, the convolution window sum."""
    import torch.nn.functional as F

    from robustbench_dc.attacks import steps as attack_steps
    from robustbench_dc.operators import functional

    fold, window = attack_steps.folded_batch_norm, functional._window_sum

    @contextlib.contextmanager
    def no_fold(model: Any) -> Iterator[int]:
        yield 0

    attack_steps.folded_batch_norm = no_fold
    functional._window_sum = lambda sq, k, s, p, d: F.conv2d(sq, sq.new_ones((1, 1, *k)), None, s, p, d)
    try:
        yield
    finally:
        attack_steps.folded_batch_norm, functional._window_sum = fold, window


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=110, help="examples per unit (AutoAttack's later components "
                   "see ~55-125 of a 250-example batch at the cpu scale)")
    p.add_argument("--units", type=int, default=10, help="timed units per measurement")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--operators", default=",".join(OPERATORS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    import torch

    from benchmarks.harness.report import versions, write_result
    from robustbench_dc.attacks.steps import attack_mode
    from robustbench_dc.data import load_dataset
    from robustbench_dc.operators import compiled_responses, resolve_compile
    from robustbench_dc.runtime import configure_allocator, machine_info
    from robustbench_dc.training import train
    from robustbench_dc.zoo import build_model

    configure_allocator()
    tr = load_dataset("cifar10", "train", n=max(256, args.batch))
    x0, y = tr.to_float()[:args.batch], tr.labels[:args.batch]
    rows = []
    for label in args.operators.split(","):
        torch.manual_seed(args.seed)
        op, params = OPERATORS[label]
        model = build_model("cnn9", op, dataset="cifar10", width=args.width, **params)
        train(model, tr, {"base": "cifar10-natural", "epochs": None, "iterations": 2, "batch_size": 128,
                          "compile": False})
        compiled = resolve_compile(True, model, "cpu", 0, 0)

        def measure(kind: str, old: bool) -> float:
            with (_old_paths() if old else contextlib.nullcontext()), compiled_responses(model, compiled), \
                    attack_mode(model, x0) as channels_last:  # in evaluate_whitebox's order
                x = x0.contiguous(memory_format=torch.channels_last) if channels_last else x0
                return attack_unit_seconds(model, x, y, kind, args.units, warmup=2)

        for kind in ("gradient", "forward"):
            times: dict[str, list[float]] = {"old": [], "new": []}
            for r in range(args.repeats):
                for which in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    times[which].append(measure(kind, which == "old"))
            ratios = [n / o for n, o in zip(times["new"], times["old"])]
            row = {"operator": label, "kind": kind, "old_seconds_per_unit": statistics.median(times["old"]),
                   "new_seconds_per_unit": statistics.median(times["new"]), "ratio": statistics.median(ratios),
                   "ratio_min": min(ratios), "ratio_max": max(ratios), "old_all": times["old"], "new_all": times["new"]}
            rows.append(row)
            print(f"{label:10s} {kind:8s} old {row['old_seconds_per_unit'] * 1e3:7.1f} ms  new "
                  f"{row['new_seconds_per_unit'] * 1e3:7.1f} ms  new/old {row['ratio']:.2f} "
                  f"({row['ratio_min']:.2f}-{row['ratio_max']:.2f})", flush=True)
    out = {"command": [Path(sys.executable).name, *sys.argv], "seed": args.seed,
           "settings": {k: v for k, v in vars(args).items() if k != "out"}, "train_sha256": tr.checksum,
           "versions": versions(), "machine": machine_info(), "rows": rows}
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
