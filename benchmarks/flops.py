"""How far from the machine's limit the suite runs: the peak FLOP/s of this CPU (a large matrix
multiply and a large convolution, in float32 and in bfloat16) and the FLOP/s a CNN-9 training step
(the baseline and each decoupled operator of the paper), an attack's input gradient and a
forward pass achieve, as a fraction of that peak (the attack's passes also as the suite's attacks
run them: batch norms folded, channels-last).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix multiplies and
convolutions, forward and backward: the work the peak measures); the element-wise work of the
decoupled responses is not in the count, so an operator that spends its extra time there shows a
lower fraction of the peak than the baseline. Every time is the median of ``--repeats`` runs after
a warm-up, one after the other in this process. Usage::

    RBDC_DATA=/path/to/data python -m benchmarks.flops --out benchmarks/results/DATE-flops-KIND.json
    python -m benchmarks.flops --quick          # tiny sizes (the smoke test)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.harness.common import OpConfig, Timer, autocast_ctx, build_cnn9, cifar_batch
from benchmarks.harness.report import git_commit, versions, write_result
from robustbench_dc.attacks.steps import attack_mode
from robustbench_dc.operators import compile_available
from robustbench_dc.runtime import machine_info

# As the Tables 7-8 protocol runs them: BallConv and TanhConv (the authors' learnable relative radius)
# with compiled responses, as training runs of 1,000+ steps and long evaluations compile them;
# SphereConv takes the fused cosine path, eager.
_RELATIVE = {"rho": 1.0, "rho_mode": "relative", "learnable_rho": True}
OPERATORS = [OpConfig("baseline", "baseline"), OpConfig("SphereConv", "sphere+cos"),
             OpConfig("BallConv", "ball+cos", _RELATIVE, compiled=compile_available("cpu")),
             OpConfig("TanhConv", "tanh+cos", _RELATIVE, compiled=compile_available("cpu"))]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        with Timer(torch.device("cpu")) as timer:
            fn()
        times.append(timer.seconds)
    return statistics.median(times)


def _flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _measure(fn: Callable[[], Any], repeats: int, peak_flops: float) -> dict[str, float]:
    """FLOPs of one call of ``fn`` (compiled responses run eagerly under the FLOP counter, and
    compiled again after it), its median seconds, the FLOP/s and their fraction of ``peak_flops``."""
    flops, seconds = _flops(fn), _median_seconds(fn, repeats)
    return {"flops": flops, "seconds": seconds, "flops_per_second": flops / seconds,
            "fraction_of_peak": flops / seconds / peak_flops}


def peak(size: int, conv_batch: int, repeats: int) -> dict[str, dict[str, float]]:
    """FLOP/s of a ``size`` x ``size`` matrix multiply and of a 3x3 convolution (256 -> 256 channels
    on 16 x 16 maps, batch ``conv_batch``), in each precision."""
    out: dict[str, dict[str, float]] = {}
    for name, dtype in DTYPES.items():
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        x = torch.randn(conv_batch, 256, 16, 16, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(256, 256, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
        mm, conv = (lambda: a @ b), (lambda: F.conv2d(x, w, padding=1))
        out[name] = {"matmul": _flops(mm) / _median_seconds(mm, repeats),
                     "conv": _flops(conv) / _median_seconds(conv, repeats)}
    return out


def _train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str) -> Callable[[], Any]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast_ctx(mode, x.device):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
    return step


def _input_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], Any]:
    def grad() -> None:  # the parameters are frozen: backward() computes the input's gradient alone
        xr = x.clone().requires_grad_(True)
        F.cross_entropy(model(xr), y).backward()
    return grad


def _forward(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    def forward() -> None:  # a query of a score-based attack (Square), or FAB's checking pass
        with torch.no_grad():
            model(x)
    return forward


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=float, default=1.0, help="CNN-9 width multiplier (default 1.0)")
    parser.add_argument("--batch", type=int, default=128, help="CIFAR-10 images per step (default 128)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--matmul", type=int, default=2048, help="matrix size of the peak (default 2048)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.width, args.batch, args.repeats, args.matmul = 0.125, 8, 1, 256
    device = torch.device("cpu")
    top = peak(args.matmul, max(8, args.batch // 4), args.repeats)
    x, y, data = cifar_batch(args.batch, args.seed, args.data_dir)
    rows: dict[str, dict[str, Any]] = {}
    for cfg in OPERATORS:
        cfg = replace(cfg, compiled=cfg.compiled and not args.quick)  # --quick checks the harness: no compilation
        for mode, dtype in (("fp32", "fp32"), ("cl-bf16", "bf16")):
            model = build_cnn9(cfg, args.width, args.seed, device, mode).train()
            xs = x.contiguous(memory_format=torch.channels_last) if mode == "cl-bf16" else x
            rows[f"train/{cfg.key}/{mode}"] = _measure(_train_step(model, xs, y, mode), args.repeats,
                                                        max(top[dtype].values()))
        model = build_cnn9(cfg, args.width, args.seed, device, "fp32").eval()
        for p in model.parameters():
            p.requires_grad_(False)
        fp32_peak = max(top["fp32"].values())
        rows[f"attack-gradient/{cfg.key}/fp32"] = _measure(_input_gradient(model, x, y), args.repeats, fp32_peak)
        # as the suite's attacks run it (AutoAttack's passes): batch norms folded, channels-last
        with attack_mode(model, x) as channels_last:
            xa = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            rows[f"attack-gradient/{cfg.key}/fp32-attack-mode"] = _measure(_input_gradient(model, xa, y), args.repeats,
                                                                           fp32_peak)
            rows[f"attack-forward/{cfg.key}/fp32-attack-mode"] = _measure(_forward(model, xa), args.repeats, fp32_peak)
    for key, r in rows.items():
        print(f"{key:<34} {r['flops'] / 1e9:8.2f} GFLOP  {r['seconds']:7.3f} s  {r['flops_per_second'] / 1e9:7.1f} "
              f"GFLOP/s  {100 * r['fraction_of_peak']:5.1f}% of peak", flush=True)
    result = {"command": [Path(sys.executable).name, "-m", "benchmarks.flops", *(argv if argv is not None else
                                                                                   sys.argv[1:])],
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "seed": args.seed, "data": data, "versions": versions(), "commit": git_commit(),
              "machine": machine_info(), "torch_threads": torch.get_num_threads(),
              "peak_flops_per_second": top, "runs": rows,
              "meaning": "FLOPs of matrix multiplies and convolutions (FlopCounterMode), forward and backward; "
                         "fraction_of_peak: achieved / the larger of the matmul and conv peaks in that precision"}
    if args.out is not None:
        write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
