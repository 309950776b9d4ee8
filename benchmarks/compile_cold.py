#!/usr/bin/env python
"""What a cold ``torch.compile`` cache adds to a Tables 7-8 run.

BallConv and TanhConv train and are attacked with compiled response kernels. Inductor keeps what it
compiled in an on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, by default ``/tmp/torchinductor_$USER``),
so a run on a machine that already ran the protocol compiles less than a run on a fresh one. This
runs, in a new process, the compiling steps of the protocol's jobs for those two operators (a few
training iterations of natural and of FGSM adversarial training with the protocol's recipes, then a
few attack gradients and forward passes in attack mode), twice against one new, empty cache folder:
first cold, then warm. Both processes pay the same computation and the same in-process tracing;
the difference is what the on-disk cache saves, i.e. what a fresh machine pays on top of a run
whose cache was warm.

Usage::

    RBDC_DATA=../shared/data python -m benchmarks.compile_cold --out benchmarks/results/compile-cold.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


PROTOCOL = REPO / "robustbench_dc" / "resources" / "protocols" / "table7-8-cpu.yaml"
OPERATORS = ("ballconv", "tanhconv")


def _child(iterations: int, n_attack: int) -> dict[str, float]:
    """Seconds of each compiling step, in this process (whose cache folder the parent chose)."""
    import torch

    from robustbench_dc.attacks import AttackSpec
    from robustbench_dc.attacks.steps import attack_mode
    from robustbench_dc.data import load_dataset
    from robustbench_dc.evaluation import evaluate_whitebox
    from robustbench_dc.operators import compiled_responses
    from robustbench_dc.protocol import plan_protocol
    from robustbench_dc.runtime import configure_allocator
    from robustbench_dc.training import train

    configure_allocator()
    plan = plan_protocol(str(PROTOCOL), str(Path(tempfile.gettempdir()) / "rbdc-compile-cold"), None)
    tr = load_dataset("cifar10", "train", n=max(128 * iterations, n_attack))
    x, y = tr.to_float()[:n_attack], tr.labels[:n_attack]
    out: dict[str, float] = {}
    for name in OPERATORS:
        for job in (name, f"{name}-at"):
            rm = plan.models[job]  # the protocol's model and recipe, as its jobs resolve them
            model = rm.build(plan.base_dir)
            recipe = {**rm.recipe, "epochs": None, "iterations": iterations, "compile": True}
            t0 = time.perf_counter()
            train(model, tr, recipe)
            out[f"train:{job}"] = time.perf_counter() - t0
        model.eval()
        t0 = time.perf_counter()
        evaluate_whitebox(model, x, y, [AttackSpec(name="fgsm"), AttackSpec(name="pgd", steps=2)],
                          dataset="cifar10", masking=False, compile=True)
        with compiled_responses(model), attack_mode(model, x) as channels_last, torch.no_grad():
            model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)  # Square's queries
        out[f"attacks:{name}-at"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=6, help="training iterations per job")
    p.add_argument("--n-attack", type=int, default=100, help="examples attacked")
    p.add_argument("--out", type=Path)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.iterations, args.n_attack)))
        return 0
    from benchmarks.harness.report import versions, write_result
    from robustbench_dc.runtime import machine_info

    if args.out is None:
        p.error("--out is required")
    runs = {}
    with tempfile.TemporaryDirectory(prefix="rbdc-inductor-") as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        for which in ("cold", "warm"):
            cmd = [sys.executable, "-m", "benchmarks.compile_cold", "--child", "--iterations", str(args.iterations),
                   "--n-attack", str(args.n_attack)]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=REPO)
            runs[which] = json.loads(res.stdout.strip().splitlines()[-1])
            print(which, {k: round(v, 1) for k, v in runs[which].items()}, flush=True)
    extra = {k: runs["cold"][k] - runs["warm"][k] for k in runs["cold"]}
    total = sum(extra.values())
    print(f"a cold cache adds {total:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in extra.items())})")
    write_result(args.out, {"command": [Path(sys.executable).name, *sys.argv], "settings": {
        "iterations": args.iterations, "n_attack": args.n_attack, "protocol": str(PROTOCOL.relative_to(REPO))},
        "seconds": runs, "cold_minus_warm_seconds": extra, "cold_minus_warm_total_seconds": total,
        "versions": versions(), "machine": machine_info()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
