#!/usr/bin/env python
"""Robust global pooling in a CNN-9 training step: its cost against global average pooling, and
implicit differentiation against unrolling the same solver through autograd.

The network is the zoo's CNN-9 body (nine 3x3 convolutions with BatchNorm and ReLU, three 2x2
max-pools; ``--width`` of 128/192/256 channels) followed by global pooling of the last feature
map and a linear classifier. Variants, each timed as forward + backward + Adam step on the same
CIFAR-10 batch, interleaved, in one process:

* ``avg``: global average pooling (the reference: ratio 1);
* ``PENALTY-implicit``: :class:`~robustbench_dc.declarative.RobustGlobalPool2d` (IRLS forward,
  implicit backward);
* ``PENALTY-unrolled``: the same IRLS iterations (as many as the implicit solver needed on this
  batch) recorded by autograd and differentiated by backpropagation through every iteration.

Usage::

    python -m benchmarks.declarative --width 0.25 --batch 128 --repeats 7 \\
        --penalty huber --penalty welsch --out benchmarks/results/declarative.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness.common import Timer, cifar_batch, interleaved, seed_everything
from robustbench_dc.declarative import RobustGlobalPool2d, get_penalty
from robustbench_dc.declarative.pooling import irls_step, solve_robust_pool
from robustbench_dc.operators import get_operator
from robustbench_dc.provenance import provenance
from robustbench_dc.runtime import machine_info
from robustbench_dc.zoo.base import Normalize, conv_blocks

REPO = Path(__file__).resolve().parents[1]


class UnrolledPool(nn.Module):
    """The robust pool's IRLS, ``iterations`` steps from the mean, differentiated by autograd."""

    def __init__(self, penalty: str, iterations: int, c: float = 1.0) -> None:
        super().__init__()
        self.penalty, self.iterations = get_penalty(penalty), iterations
        self.register_buffer("c", torch.tensor(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        u = flat.mean(-1, keepdim=True)
        a = torch.ones((), dtype=flat.dtype)
        for _ in range(self.iterations):
            u = irls_step(self.penalty, flat, u, self.c.to(flat.dtype), a)
        return u.squeeze(-1)


def network(width: float, pool: nn.Module) -> nn.Module:
    body, c, _ = conv_blocks(get_operator("baseline"), 3, 32, (128, 192, 256), width, 3, 3)
    return nn.Sequential(Normalize((0.5,), (0.5,)), body, pool, nn.Linear(c, 10))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--penalty", action="append", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    penalties = args.penalty or ["huber", "welsch"]
    seed_everything(args.seed)
    x, y, data = cifar_batch(args.batch, args.seed, args.data_dir)
    dev = torch.device("cpu")
    models: dict[str, nn.Module] = {"avg": network(args.width, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))}
    iterations: dict[str, int] = {}
    for p in penalties:
        seed_everything(args.seed)
        m = network(args.width, RobustGlobalPool2d(p, c=1.0))
        with torch.no_grad():
            feats = m[1](m[0](x))
            stats: dict[str, int] = {}
            solve_robust_pool(feats.flatten(2), p, 1.0, stats=stats)
        iterations[p] = stats["iterations"]
        models[f"{p}-implicit"] = m
        seed_everything(args.seed)
        models[f"{p}-unrolled"] = network(args.width, UnrolledPool(p, stats["iterations"]))
    opts = {k: torch.optim.Adam(m.parameters(), 1e-3) for k, m in models.items()}

    def step(name: str) -> float:
        m, opt = models[name], opts[name]
        m.train()
        with Timer(dev) as t:
            loss = F.cross_entropy(m(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return t.seconds

    interleaved(list(models), 2, step)  # warm-up
    times = interleaved(list(models), args.repeats, step)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        **provenance(command=shlex.join(["python", "benchmarks/declarative.py", *(argv or sys.argv[1:])]),
                     seed=args.seed, data_sha256=data.get("checksum")),
        "machine": machine_info(), "data": data, "width": args.width, "batch": args.batch, "repeats": args.repeats,
        "solver_iterations": iterations, "seconds": times, "median_seconds": med,
        "ratio_to_avg": {k: v / med["avg"] for k, v in med.items()},
        "unrolled_over_implicit": {p: med[f"{p}-unrolled"] / med[f"{p}-implicit"] for p in penalties},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in med.items():
        print(f"{k:18s} {1000 * v:8.1f} ms  {result['ratio_to_avg'][k]:.2f}x avg pooling")
    for p in penalties:
        print(f"{p}: {iterations[p]} solver iterations; unrolled / implicit {result['unrolled_over_implicit'][p]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
