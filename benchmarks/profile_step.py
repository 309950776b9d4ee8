"""Where does a CNN-9 training step spend its time? torch.profiler, grouped by kind of work.

Profiles training steps (forward + cross-entropy + backward + Adam, as ``run.py``'s
``train`` section) of the nn.Conv2d baseline and of the decoupled networks named on the
command line, and splits each step's self CPU time into: the big convolutions (forward and
backward), the decoupled layers' element-wise work (compiled kernels, or the individual
element-wise operations of the eager path), batch-norm / ReLU / max-pooling, the gradient
accumulation and layout/dtype copies, and the rest. The difference to the baseline, per
group, is what the decoupled operator costs and where.

    python -m benchmarks.profile_step --mode fp32 "tanh+cos" "tanh+cos,rho_mode=relative,learnable_rho=true" \\
        "tanh+sigmoid,weighted=nonlinear" --compiled

With ``--run RUN --entries A B ...`` it profiles instead the two units of work of an attack on
trained models of a finished protocol run, as the protocol's evaluation runs them (attack mode:
batch norms folded, channels-last, parameters frozen; compiled decoupled responses; float32): an
input gradient of the cross-entropy (APGD, FAB-T's linearisation) and a forward pass without
gradients (FAB-T's check, Square's queries), on the first ``--batch`` test images::

    python -m benchmarks.profile_step --run runs/table7-8-cpu --entries baseline-at tanhconv-at --batch 110

Writes ``benchmarks/results/profile-<UTC date>-<mode>.json`` (or ``--out``) with the command,
the seed, the data checksum (when CIFAR-10 is found) and the versions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.harness.common import MODES, OpConfig, TrainCase, build_cnn9, cifar_batch, parse_op
from benchmarks.harness.report import versions
from robustbench_dc.runtime import configure_allocator, machine_info, usable_cores

REPO = Path(__file__).resolve().parents[1]

GROUPS = (
    ("convolution", ("convolution", "conv2d", "mkldnn_convolution", "_convolution")),
    ("decoupled element-wise (compiled)", ("CompiledFxGraph", "CompiledFunction", "Torch-Compiled Region")),
    ("batch-norm / relu / pool", ("batch_norm", "threshold", "relu", "max_pool")),
    ("patch norms (sum pooling)", ("avg_pool",)),
    ("copies / gradient accumulation", ("copy_", "add_", "clone", "contiguous", "to_copy")),
    ("element-wise (eager)", ("mul", "div", "tanh", "acos", "sqrt", "rsqrt", "clamp", "sub", "add", "neg", "where",
                              "minimum", "pow", "exp", "log1p", "abs", "sigmoid", "reciprocal", "sum", "vecdot",
                              "linalg", "mean", "fill_", "ones_like", "maximum", "sign")),
)


def group_of(name: str) -> str:
    low = name.lower()
    for group, keys in GROUPS:
        if any(k.lower() in low for k in keys):
            return group
    return "other"


def profile_case(cfg: OpConfig, mode: str, x: torch.Tensor, y: torch.Tensor, steps: int,
                 seed: int, width: float = 1.0) -> dict[str, Any]:
    device = torch.device("cpu")
    case = TrainCase(build_cnn9(cfg, width, seed, device, mode), x, y, mode, 1e-3, device)
    return {"config": cfg.spec, "unit": "training step", "mode": mode, **profile_unit(case.step, steps)}


def profile_attack_units(run: Path, entry: str, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[dict[str, Any]]:
    """The input gradient and the forward pass of the run's trained ``entry`` as its attacks run them."""
    from benchmarks.thread_scaling import attack_unit
    from robustbench_dc.attacks.steps import attack_mode
    from robustbench_dc.operators import compiled_responses
    from robustbench_dc.protocol import model_from_run

    choice = model_from_run(run, entry)
    if choice.data != "cifar10":
        raise SystemExit(f"--run: {entry} is a {choice.data} model; the attack units are profiled on CIFAR-10")
    model = choice.model.eval()
    rows = []
    with compiled_responses(model), attack_mode(model, x) as channels_last:
        xa = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        for kind in ("gradient", "forward"):
            rows.append({"config": f"{entry} {kind}", "unit": kind, "mode": "attack-fp32",
                         **profile_unit(attack_unit(model, xa, y, kind), steps)})
    return rows


def profile_unit(step: Callable[[], None], steps: int) -> dict[str, Any]:
    """``step`` timed (after two warm-up calls, which compile) and profiled, ``steps`` calls each."""
    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    wall = (time.perf_counter() - t0) / steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    groups: dict[str, float] = {}
    top: list[tuple[str, float, int]] = []
    for ev in prof.key_averages():
        seconds = ev.self_cpu_time_total / 1e6 / steps
        if seconds <= 0:
            continue
        g = group_of(ev.key)
        groups[g] = groups.get(g, 0.0) + seconds
        top.append((ev.key[:70], seconds, ev.count // steps))
    top.sort(key=lambda t: -t[1])
    return {"wall_seconds_per_step": wall, "profiled_seconds_per_step": sum(groups.values()),
            "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
            "top": [{"op": n, "seconds_per_step": s, "calls_per_step": c} for n, s, c in top[:15]]}


def unit_costs(batch: int, width: float, repeats: int = 8) -> dict[str, float]:
    """Seconds of single operations on one response of CNN-9's first block (batch x 128w x 32 x 32,
    float32): the convolution that produces it and the element-wise functions a decoupled
    response may need per element, with ``add`` as the memory-bound reference."""
    c = max(1, round(128 * width))
    x = torch.rand(batch, c, 32, 32)
    w = torch.randn(c, c, 3, 3) / (3 * c ** 0.5)
    a = torch.rand_like(x) * 2 - 1
    b = torch.rand_like(x)
    out = torch.empty_like(x)
    ops = {
        "conv3x3 forward": lambda: torch.nn.functional.conv2d(x, w, padding=1),
        "add (12 bytes/element)": lambda: torch.add(a, b, out=out),
        "mul": lambda: torch.mul(a, b, out=out),
        "tanh": lambda: torch.tanh(a, out=out),
        "acos": lambda: torch.acos(a, out=out),
        "exp": lambda: torch.exp(a, out=out),
        "sigmoid": lambda: torch.sigmoid(a, out=out),
        "sqrt": lambda: torch.sqrt(b, out=out),
    }
    res = {"elements": float(x.numel())}
    for name, fn in ops.items():
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        res[name] = min(times)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("operators", nargs="*", help="operator specs as in run.py --slowest, e.g. tanh+cos,rho=0.5")
    p.add_argument("--run", type=Path, default=None, help="a finished protocol run: profile its --entries' attack units")
    p.add_argument("--entries", nargs="+", default=[], help="models of --run")
    p.add_argument("--mode", default="fp32", choices=MODES)
    p.add_argument("--compiled", action="store_true", help="also profile each operator with compiled responses")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--width", type=float, default=1.0, help="CNN-9 width multiplier")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if bool(args.run) != bool(args.entries) or bool(args.run) == bool(args.operators):
        p.error("give operators (training steps) or --run with --entries (attack units), not both")
    configure_allocator()
    torch.set_num_threads(args.threads or usable_cores())
    x, y, data = cifar_batch(args.batch, args.seed, args.data_dir)
    if args.run:
        if not data["real"]:
            p.error("--run: the attack units are profiled on the run's test images (set RBDC_DATA or --data-dir)")
        rows = [r for entry in args.entries for r in profile_attack_units(args.run, entry, x, y, args.steps)]
        what = "seconds per attack unit on trained models (self CPU time by group); ratio: to the first entry's same unit"
    else:
        configs = [OpConfig("baseline", "baseline")]
        for spec in args.operators:
            name, params = parse_op(spec)
            configs.append(OpConfig(spec, name, params))
            if args.compiled:
                configs.append(OpConfig(spec + "+compiled", name, params, compiled=True))
        rows = [profile_case(c, args.mode, x, y, args.steps, args.seed, args.width) for c in configs]
        what = f"mode {args.mode}, CNN-9 width {args.width}, seconds per training step (self CPU time by group)"
    names = sorted({g for r in rows for g in r["groups"]}, key=lambda g: -max(r["groups"].get(g, 0) for r in rows))
    width = max(len(r["config"]) for r in rows)
    print(f"{what}, batch {args.batch}")
    print("(wall: timed without the profiler; profiled: the groups' sum under the profiler, whose overhead")
    print(" inflates the eager decoupled path's many small operations)")
    print(f"{'config':<{width}} {'wall':>7} {'ratio':>6} {'profiled':>8}  " + "  ".join(f"{g[:22]:>22}" for g in names))
    for r in rows:
        base = next(q for q in rows if q["unit"] == r["unit"])  # the baseline / the first entry
        r["ratio_vs_baseline"] = r["wall_seconds_per_step"] / base["wall_seconds_per_step"]
        r["extra_vs_baseline"] = {g: r["groups"].get(g, 0.0) - base["groups"].get(g, 0.0) for g in names}
        print(f"{r['config']:<{width}} {r['wall_seconds_per_step']:>7.3f} {r['ratio_vs_baseline']:>6.3f} "
              f"{r['profiled_seconds_per_step']:>8.3f}  "
              + "  ".join(f"{r['groups'].get(g, 0.0):>22.3f}" for g in names))
    units = None
    if not args.run:
        units = unit_costs(args.batch, args.width)
        print(f"\nsingle operations on one {args.batch}x{max(1, round(128 * args.width))}x32x32 float32 tensor "
              f"({units['elements'] / 1e6:.1f}M elements), milliseconds:")
        print("  " + ", ".join(f"{k} {1e3 * v:.1f}" for k, v in units.items() if k != "elements"))
    out = args.out or Path(__file__).parent / "results" / f"profile-{datetime.now(timezone.utc):%Y-%m-%d}-{args.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command_line": [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv],
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seed": args.seed,
        "data": data, "versions": versions(), "machine": machine_info(torch.device("cpu")),
        "torch_threads": torch.get_num_threads(), "mode": "attack-fp32" if args.run else args.mode,
        "batch": args.batch, "width": None if args.run else args.width, "steps": args.steps,
        "run": str(args.run) if args.run else None,
        "rows": rows, "unit_costs_seconds": units}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
