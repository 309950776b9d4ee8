#!/usr/bin/env python
"""Two jobs with one thread each, or one job after the other with every thread?

The protocol runner's local executor runs one job at a time with all of this process's torch
threads; the Ray executor can run independent jobs side by side, each with ``--resources
KIND=cpus:N`` threads. Which is faster depends on how well a job's work scales over threads.
For each operator of Tables 7-8 (CNN-9, the cpu scale's width) and each kind of work of a
protocol run, this measures, in one run, the time per unit of work

* ``alone``: one process with ``--threads`` torch threads (default: every usable core);
* ``side by side``: ``--threads`` processes at once, one thread each;

and reports ``throughput_ratio`` = (side-by-side units per second, all processes together) /
(alone units per second). Above 1, running jobs side by side with one thread each finishes a
protocol's independent jobs sooner.

Units of work (batch ``--batch``; what the Tables 7-8 cpu protocol's jobs are made of):

* ``train``: one natural training step of the suite's ``train()`` on real CIFAR-10 images
  (channels-last; the decoupled responses compiled where the protocol's ``compile: auto``
  compiles them: the per-channel radius of BallConv/TanhConv), timed over the second epoch of
  ``--n-train`` images so that compilation is not counted;
* ``gradient``: one input gradient of the cross-entropy in attack mode (eval mode, frozen
  parameters, channels-last, compiled where the protocol's attacks compile), the unit of
  FGSM/BIM/PGD/APGD/FAB;
* ``forward``: one forward pass in attack mode without gradients, the unit of Square.

Every process is seeded; the numbers are seconds per unit, medians over ``--repeats``.

Usage::

    RBDC_DATA=../shared/data python -m benchmarks.thread_scaling --out benchmarks/results/thread-scaling.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]


OPERATORS = {
    "Baseline": ("baseline", {}),
    "SphereConv": ("sphere+cos", {}),
    "BallConv": ("ball+cos", {"rho": 1.0, "rho_mode": "relative", "learnable_rho": True}),
    "TanhConv": ("tanh+cos", {"rho": 1.0, "rho_mode": "relative", "learnable_rho": True}),
}
KINDS = ("train", "gradient", "forward")


def _worker(label: str, kind: str, threads: int, args: argparse.Namespace) -> float:
    """Seconds per unit of ``kind`` for operator ``label`` with ``threads`` torch threads."""
    import torch

    from robustbench_dc.runtime import configure_allocator

    torch.set_num_threads(threads)
    configure_allocator()
    from robustbench_dc.attacks.steps import attack_mode
    from robustbench_dc.data import load_dataset
    from robustbench_dc.operators import compiled_responses, resolve_compile
    from robustbench_dc.training import train
    from robustbench_dc.zoo import build_model

    torch.manual_seed(args.seed)
    op, params = OPERATORS[label]
    model = build_model("cnn9", op, dataset="cifar10", width=args.width, **params)
    tr = load_dataset("cifar10", "train", n=args.n_train)
    if kind == "train":
        recipe = {"base": "cifar10-natural", "epochs": 2, "iterations": None, "batch_size": args.batch,
                  "compile": True, "optimizer": {"name": "adam", "lr": 0.003}}
        res = train(model, tr, recipe)
        return args.batch / res.history[-1]["images_per_second"]
    # a trained-looking state of the relative radius (its running mean of ||x||) and of batch-norm
    train(model, tr, {"base": "cifar10-natural", "epochs": None, "iterations": 2, "batch_size": args.batch,
                      "compile": False})
    x = tr.to_float()[:args.batch]
    y = tr.labels[:args.batch]
    compiled = resolve_compile(True, model, "cpu", 0, 0)
    with attack_mode(model, x) as channels_last, compiled_responses(model, compiled):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return attack_unit_seconds(model, x, y, kind, args.units, warmup=3)


def attack_unit(model: Any, x: Any, y: Any, kind: str) -> Callable[[], None]:
    """One attack unit of ``kind`` on ``model`` as the caller has set it up (attack mode, compilation,
    ``x``'s layout): ``"forward"``, a forward pass without gradients (Square's unit, FAB-T's check),
    else the input gradient of the cross-entropy (FGSM/BIM/PGD/APGD/FAB's)."""
    import torch

    def unit() -> None:
        if kind == "forward":
            with torch.no_grad():
                model(x)
        else:
            xa = x.clone().requires_grad_(True)
            torch.autograd.grad(torch.nn.functional.cross_entropy(model(xa), y), xa)

    return unit


def attack_unit_seconds(model: Any, x: Any, y: Any, kind: str, units: int, warmup: int) -> float:
    """Seconds per :func:`attack_unit` of ``kind``: ``warmup`` untimed units first (compilation
    included), then the mean over ``units``."""
    unit = attack_unit(model, x, y, kind)
    for _ in range(warmup):
        unit()
    t0 = time.perf_counter()
    for _ in range(units):
        unit()
    return (time.perf_counter() - t0) / units


def add_unit_options(p: argparse.ArgumentParser, *, n_train: int, units: int, repeats: int) -> None:
    """The options that say which units are timed and how (shared with ``operator_units.py``)."""
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--n-train", type=int, default=n_train, help="training images per epoch of a 'train' measurement")
    p.add_argument("--units", type=int, default=units, help="timed gradients / forward passes per measurement")
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--operators", default=",".join(OPERATORS))
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--seed", type=int, default=0)


def worker_command(script: Path | str, label: str, kind: str, threads: int, args: argparse.Namespace) -> list[str]:
    """The command line of one worker process of ``script`` (this file, or its copy in another checkout)."""
    return [sys.executable, str(script), "--worker", label, kind, str(threads), "--width", str(args.width),
            "--batch", str(args.batch), "--n-train", str(args.n_train), "--units", str(args.units),
            "--seed", str(args.seed), "--out", os.devnull]


def _spawn(label: str, kind: str, threads: int, n: int, args: argparse.Namespace) -> list[float]:
    """``n`` worker processes at once with ``threads`` threads each; their seconds per unit."""
    cmd = worker_command(__file__, label, kind, threads, args)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(n)]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode:
            raise RuntimeError(f"worker {label} {kind} failed ({p.returncode})")
        out.append(float(stdout.strip().splitlines()[-1]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count())
    add_unit_options(p, n_train=2560, units=10, repeats=2)
    p.add_argument("--worker", nargs=3, metavar=("OPERATOR", "KIND", "THREADS"), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.worker:
        label, kind, threads = args.worker
        print(_worker(label, kind, int(threads), args))
        return 0
    if args.threads < 2:
        p.error("--threads: needs at least 2 cores to compare")

    from benchmarks.harness.report import versions, write_result
    from robustbench_dc.data import load_dataset
    from robustbench_dc.runtime import machine_info

    rows = []
    for label in args.operators.split(","):
        for kind in args.kinds.split(","):
            alone, side = [], []
            for r in range(args.repeats):  # alternate the order, so that drift hits both alike
                first, second = ("alone", "side") if r % 2 == 0 else ("side", "alone")
                for which in (first, second):
                    if which == "alone":
                        alone.append(_spawn(label, kind, args.threads, 1, args)[0])
                    else:
                        side.append(statistics.mean(_spawn(label, kind, 1, args.threads, args)))
            a, s = statistics.median(alone), statistics.median(side)
            row = {"operator": label, "kind": kind, "alone_seconds_per_unit": a, "alone_threads": args.threads,
                   "side_by_side_seconds_per_unit": s, "side_by_side_processes": args.threads,
                   "throughput_ratio": args.threads * a / s, "alone_all": alone, "side_by_side_all": side}
            rows.append(row)
            print(f"{label:10s} {kind:8s} alone {a * 1000:7.1f} ms  side by side {s * 1000:7.1f} ms  "
                  f"throughput x{row['throughput_ratio']:.2f}", flush=True)
    tr = load_dataset("cifar10", "train", n=args.n_train)
    out = {"command": [Path(sys.executable).name, *sys.argv], "seed": args.seed,
           "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "out")},
           "train_sha256": tr.checksum, "versions": versions(), "machine": machine_info(), "rows": rows}
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
