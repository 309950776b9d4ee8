#!/usr/bin/env python
"""The performance benchmark of robustbench-dc: one command, ratios measured in one run.

What it measures (see ``benchmarks/README.md`` for how to read the numbers):

1. ``train``: training-step time (forward + backward + Adam step) of CNN-9 with
   ``DecoupledConv2d`` / ``DecoupledLinear`` divided by the same network with
   ``nn.Conv2d`` / ``nn.Linear``, for the paper's TanhConv (``tanh+cos``), the authors'
   learnable relative radius, and the slowest operator of the family (found by
   ``scan``), in two modes: ``fp32`` (NCHW) and ``cl-bf16`` (channels_last + bf16
   autocast around forward and loss).
2. ``memory``: peak memory of a training step, decoupled / baseline, each config in a
   fresh child process (this same file with the hidden ``--_child`` flag).
3. ``attacks``: adversarial images per second of the native PGD-10 / FGSM (through
   ``run_attack`` as the suite calls it, and the raw ``pgd`` / ``fgsm`` functions)
   against ``torchattacks`` and ``foolbox`` with identical settings on the same model
   and batch, plus each one's robust accuracy.
   ``strong``: the native APGD-CE, APGD-T and AutoAttack against torchattacks' APGD, APGDT
   and its components chained at AutoAttack's budgets (100 iterations, 9 target classes,
   5,000 Square queries), same model and batch.
4. ``eval``: clean inference time (eval mode, no grad), decoupled / baseline.
5. ``quickstart`` (optional): wall time of an end-to-end command.

Every ratio is measured interleaved: within each repeat every config of a section is
timed once (the order reversed on odd repeats), so drift of the machine affects all of
them; the min / median / max are over the per-repeat ratios.

Usage::

    python benchmarks/run.py                 # full run (minutes to tens of minutes on a CPU)
    python benchmarks/run.py --quick         # tiny sizes, well under a minute (the smoke test)
    python benchmarks/run.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import random
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from anywhere: use this checkout's package
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from robustbench_dc.params import parse_params  # noqa: E402
from robustbench_dc.runtime import configure_allocator, machine_info  # noqa: E402
from robustbench_dc.runtime import cpu_model as _cpu_model  # noqa: E402
from robustbench_dc.runtime import usable_cores as _usable_cores  # noqa: E402

SCHEMA = "robustbench-dc-benchmark/1"
RESULTS_DIR = REPO / "benchmarks" / "results"
SECTIONS = ("scan", "train", "memory", "eval", "attacks", "strong", "quickstart")
MODES = ("fp32", "cl-bf16")
MAGNITUDES = ("sphere", "ball", "tanh", "linear", "seg", "log", "mix")
ANGULARS = ("linear", "cos", "sigmoid", "sqcos")
WEIGHTED: tuple[str | None, ...] = (None, "linear", "nonlinear", "separable")
CHILD_MARK = "RBDC_BENCH_CHILD_RESULT "
STRONG_ATTACKS = ("apgd-ce", "apgd-t", "autoattack")


# ----------------------------------------------------------------------------- settings
@dataclass
class Settings:
    """Every knob of a run (stored in the JSON)."""

    quick: bool = False
    device: str = "cpu"
    threads: int = 1
    seed: int = 0
    sections: list[str] = field(default_factory=lambda: list(SECTIONS))
    # training step (CNN-9, CIFAR-shaped input)
    width: float = 1.0
    batch: int = 128
    warmup: int = 2
    repeats: int = 5
    steps: int = 2
    lr: float = 1e-3
    modes: list[str] = field(default_factory=lambda: list(MODES))
    compile: bool = True
    # slowest-operator scan
    skip_scan: bool = False
    slowest: str | None = None
    scan_width: float = 0.25
    scan_batch: int = 128
    scan_steps: int = 1
    scan_grid: str = "full"
    scan_confirm: int = 5
    scan_confirm_repeats: int = 3
    # memory
    memory_modes: list[str] = field(default_factory=lambda: list(MODES))
    memory_repeats: int = 1
    memory_steps: int = 2
    memory_jobs: int = 1
    # evaluation throughput
    eval_batch: int = 256
    eval_steps: int = 3
    # attacks
    attack_arch: str = "mnist2d"
    attack_operator: str = "baseline"
    attack_width: float = 0.5
    attack_feature_dim: int = 32
    attack_epochs: int = 1
    attack_iterations: int | None = None
    attack_n: int = 500
    attack_eps: float = 0.1
    attack_steps: int = 10
    attack_repeats: int = 3
    acc_tol: float = 0.02
    # strong attacks (APGD, AutoAttack) on the same model as "attacks"
    strong_n: int = 200
    strong_eps: float = 0.1
    # end-to-end
    quickstart: str | None = None
    quickstart_repeats: int = 1
    data_dir: str | None = None


QUICK: dict[str, Any] = dict(
    width=0.0625, batch=8, warmup=1, repeats=2, steps=1,
    scan_width=0.0625, scan_batch=4, scan_steps=1, scan_grid="quick", scan_confirm=2, scan_confirm_repeats=1,
    compile=False, memory_modes=["fp32"], memory_repeats=1, memory_steps=1, memory_jobs=4,
    eval_batch=16, eval_steps=1,
    attack_width=0.25, attack_feature_dim=16, attack_iterations=60, attack_n=64, attack_repeats=2,
    strong_n=16, strong_eps=0.3,  # every example breaks early: the smoke run skips most of Square's 5,000 queries
)


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    """Parse the command line into the namespace and the effective :class:`Settings`."""
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Benchmark decoupled convolutions and the native attacks (ratios measured in one run).",
    )
    p.add_argument("--quick", action="store_true",
                   help="tiny widths/batches/repeats (well under a minute); explicit options still win")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default benchmarks/results/<UTC-date>-<host-kind>[-quick].json)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all usable cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of models, data and attacks (0)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--host-kind", default=None, help="override the host kind in the default file name")
    p.add_argument("--data-dir", default=None, help="folder with CIFAR-10 (else $RBDC_DATA / the cache)")
    g = p.add_argument_group("training step")
    g.add_argument("--width", type=float, default=None, help=f"CNN-9 width multiplier ({d.width})")
    g.add_argument("--batch", type=int, default=None, help=f"batch size ({d.batch})")
    g.add_argument("--warmup", type=int, default=None, help=f"untimed steps per model ({d.warmup})")
    g.add_argument("--repeats", type=int, default=None, help=f"interleaved repeats ({d.repeats})")
    g.add_argument("--steps", type=int, default=None, help=f"timed steps per repeat ({d.steps})")
    g.add_argument("--modes", default=None, help=f"comma list of {','.join(MODES)} (both)")
    g.add_argument("--no-compile", action="store_true",
                   help="skip the compiled configs (torch.compile; on by default where available, off in --quick)")
    g.add_argument("--compile", action="store_true", help="measure the compiled configs also in --quick")
    g = p.add_argument_group("slowest-operator scan")
    g.add_argument("--skip-scan", action="store_true", help="do not scan; use --slowest (default mix+sigmoid)")
    g.add_argument("--slowest", default=None,
                   help="operator measured as 'slowest', e.g. 'mix+sigmoid,weighted=separable' (skips the scan)")
    g.add_argument("--scan-width", type=float, default=None, help=f"({d.scan_width})")
    g.add_argument("--scan-batch", type=int, default=None, help=f"({d.scan_batch})")
    g.add_argument("--scan-steps", type=int, default=None, help=f"timed steps per operator ({d.scan_steps})")
    g.add_argument("--scan-confirm", type=int, default=None,
                   help=f"slowest candidates re-timed at full width ({d.scan_confirm})")
    g.add_argument("--scan-confirm-repeats", type=int, default=None, help=f"({d.scan_confirm_repeats})")
    g = p.add_argument_group("memory")
    g.add_argument("--memory-repeats", type=int, default=None, help=f"child runs per config ({d.memory_repeats})")
    g.add_argument("--memory-jobs", type=int, default=None, help=f"children at a time ({d.memory_jobs})")
    g = p.add_argument_group("evaluation throughput")
    g.add_argument("--eval-batch", type=int, default=None, help=f"({d.eval_batch})")
    g.add_argument("--eval-steps", type=int, default=None, help=f"timed batches per repeat ({d.eval_steps})")
    g = p.add_argument_group("attacks")
    g.add_argument("--attack-arch", default=None, help=f"zoo architecture of the attacked model ({d.attack_arch})")
    g.add_argument("--attack-width", type=float, default=None, help=f"({d.attack_width})")
    g.add_argument("--attack-n", type=int, default=None, help=f"test images attacked ({d.attack_n})")
    g.add_argument("--attack-eps", type=float, default=None, help=f"L-inf budget ({d.attack_eps})")
    g.add_argument("--attack-repeats", type=int, default=None, help=f"({d.attack_repeats})")
    g.add_argument("--strong-n", type=int, default=None, help=f"test images for APGD / AutoAttack ({d.strong_n})")
    g.add_argument("--strong-eps", type=float, default=None, help=f"their L-inf budget ({d.strong_eps})")
    g.add_argument("--acc-tol", type=float, default=None,
                   help=f"robust-accuracy spread flagged as a mismatch ({d.acc_tol}; at least 3/n)")
    g = p.add_argument_group("end-to-end")
    g.add_argument("--quickstart", default=None, metavar="CMD",
                   help="time this command (e.g. 'rbdc run protocols/quickstart.yaml')")
    g.add_argument("--quickstart-repeats", type=int, default=None, help=f"({d.quickstart_repeats})")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    s = Settings()
    if args.quick:
        for k, v in QUICK.items():
            setattr(s, k, v)
    s.quick = bool(args.quick)
    s.device = args.device
    s.seed = args.seed
    s.threads = args.threads if args.threads is not None else _usable_cores()
    s.sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    bad = [x for x in s.sections if x not in SECTIONS]
    if bad:
        p.error(f"--sections: unknown {bad}; known: {','.join(SECTIONS)}")
    if args.modes is not None:
        s.modes = [x.strip() for x in args.modes.split(",") if x.strip()]
        if any(m not in MODES for m in s.modes):
            p.error(f"--modes: must be a subset of {','.join(MODES)}")
        s.memory_modes = [m for m in s.memory_modes if m in s.modes] or s.modes[:1]
    overrides = {
        "width": args.width, "batch": args.batch, "warmup": args.warmup, "repeats": args.repeats,
        "steps": args.steps, "scan_width": args.scan_width, "scan_batch": args.scan_batch,
        "scan_steps": args.scan_steps, "scan_confirm": args.scan_confirm,
        "scan_confirm_repeats": args.scan_confirm_repeats, "memory_repeats": args.memory_repeats, "memory_jobs": args.memory_jobs,
        "eval_batch": args.eval_batch, "eval_steps": args.eval_steps, "attack_arch": args.attack_arch,
        "attack_width": args.attack_width, "attack_n": args.attack_n, "attack_eps": args.attack_eps,
        "attack_repeats": args.attack_repeats, "acc_tol": args.acc_tol, "strong_n": args.strong_n,
        "strong_eps": args.strong_eps, "quickstart": args.quickstart,
        "quickstart_repeats": args.quickstart_repeats, "data_dir": args.data_dir, "slowest": args.slowest,
    }
    for k, v in overrides.items():
        if v is not None:
            setattr(s, k, v)
    s.skip_scan = bool(args.skip_scan or args.slowest)
    if args.compile:
        s.compile = True
    if args.no_compile:
        s.compile = False
    for k in ("batch", "repeats", "steps", "scan_batch", "scan_steps", "scan_confirm", "scan_confirm_repeats",
              "memory_repeats", "memory_jobs",
              "eval_batch", "eval_steps", "attack_n", "attack_repeats", "strong_n", "threads", "quickstart_repeats"):
        if getattr(s, k) < 1:
            p.error(f"--{k.replace('_', '-')}: must be >= 1")
    if s.warmup < 0:
        p.error("--warmup: must be >= 0")
    if s.batch < 2 or s.scan_batch < 2:
        p.error("--batch/--scan-batch: BatchNorm needs at least 2 examples")
    if "quickstart" in s.sections and s.quickstart is None:
        s.sections.remove("quickstart")
    return args, s


# ----------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def summarize(values: Iterable[float]) -> dict[str, float]:
    """min / median / max of finite values (NaN when there are none)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"min": float("nan"), "median": float("nan"), "max": float("nan"), "n": 0}
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals), "n": len(vals)}


def parse_op(spec: str) -> tuple[str, dict[str, Any]]:
    """``"mix+sigmoid,weighted=separable,rho=0.5"`` -> ``("mix+sigmoid", {"weighted": "separable", "rho": 0.5})``
    (the values read by the library's ``KEY=VALUE`` parser, as ``rbdc --param`` reads them)."""
    name, *rest = [part.strip() for part in spec.split(",")]
    return name, parse_params(rest, what=f"operator spec {spec!r}")


def format_op(name: str, params: dict[str, Any]) -> str:
    """Inverse of :func:`parse_op` (parameters sorted, ``None`` values left out)."""
    items = [f"{k}={v}" for k, v in sorted(params.items()) if v is not None]
    return ",".join([name, *items])


class Timer:
    """``with Timer(device) as t: ...`` -> ``t.seconds`` (perf_counter; CUDA synchronised)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds = float("nan")

    def __enter__(self) -> "Timer":
        if self.cuda:
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self._t0


def autocast_ctx(mode: str, device: torch.device) -> AbstractContextManager[Any]:
    """bf16 autocast for ``cl-bf16``, nothing for ``fp32``."""
    if mode == "cl-bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def interleaved(names: Sequence[str], repeats: int, measure: Callable[[str], float]) -> dict[str, list[float]]:
    """Call ``measure(name)`` for every name in every repeat, reversing the order on odd
    repeats (so a config is not always first / last); returns per-name lists of results."""
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = list(names) if r % 2 == 0 else list(reversed(names))
        for n in order:
            out[n].append(measure(n))
    return out


# ----------------------------------------------------------------------------- data
def cifar_batch(n: int, seed: int, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The first ``n`` CIFAR-10 test images (float [0, 1]) and labels, or seeded random
    data of the same shape when CIFAR-10 is not available locally (never downloads)."""
    from robustbench_dc.data import load_dataset

    info: dict[str, Any] = {"dataset": "cifar10", "split": "test", "n": n}
    try:
        ds = load_dataset("cifar10", "test", n=n, data_dir=data_dir, download=False)
        info.update(real=True, checksum=ds.checksum, source=ds.source)
        return ds.to_float(), ds.labels.clone(), info
    except Exception as exc:  # noqa: BLE001 - any failure means: no local CIFAR-10
        gen = torch.Generator().manual_seed(seed)
        x = torch.rand(n, 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (n,), generator=gen)
        info.update(real=False, checksum=None,
                    note=f"CIFAR-10 not available ({type(exc).__name__}: {str(exc)[:300]}); "
                         f"used torch.rand data seeded with {seed} (set RBDC_DATA or --data-dir)")
        return x, y, info


# ----------------------------------------------------------------------------- training step
@dataclass
class OpConfig:
    """One network variant: a key in the results, an operator spec and its parameters."""

    key: str
    operator: str
    params: dict[str, Any] = field(default_factory=dict)
    compiled: bool = False  # decoupled responses through torch.compile (set_compiled)

    @property
    def spec(self) -> str:
        return format_op(self.operator, self.params) + (" [compiled]" if self.compiled else "")


def build_cnn9(cfg: OpConfig, width: float, seed: int, device: torch.device, mode: str) -> nn.Module:
    """CNN-9 (CIFAR-10 shapes) with ``cfg``'s operator, seeded, on ``device``, in ``mode``'s layout."""
    from robustbench_dc.zoo import build_model

    seed_everything(seed)
    model = build_model("cnn9", cfg.operator, dataset="cifar10", width=width, **cfg.params).to(device)
    if cfg.compiled:
        from robustbench_dc.operators import set_compiled

        set_compiled(model)
    if mode == "cl-bf16":
        model = model.to(memory_format=torch.channels_last)
    return model


class TrainCase:
    """A model, its Adam optimiser and one batch, ready for timed training steps."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str, lr: float,
                 device: torch.device) -> None:
        self.model = model.train()
        self.mode = mode
        self.device = device
        self.x = x.to(device)
        if mode == "cl-bf16":
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = y.to(device)
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)

    def step(self) -> None:
        """One training step: forward + loss (autocast in cl-bf16), backward, Adam step."""
        self.opt.zero_grad(set_to_none=True)
        with autocast_ctx(self.mode, self.device):
            loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()

    def time_steps(self, n: int) -> float:
        """Seconds per step over ``n`` consecutive steps."""
        with Timer(self.device) as t:
            for _ in range(n):
                self.step()
        return t.seconds / n


def scan_grid(kind: str) -> list[OpConfig]:
    """Operators scanned for the slowest one: magnitudes x angulars x weightings
    (``quick``: every magnitude with cos / sqcos and no / separable weighting)."""
    angs: Sequence[str] = ANGULARS if kind == "full" else ("cos", "sqcos")
    wts: Sequence[str | None] = WEIGHTED if kind == "full" else (None, "separable")
    out = []
    for m in MAGNITUDES:
        for a in angs:
            for w in wts:
                params = {} if w is None else {"weighted": w}
                cfg = OpConfig("", f"{m}+{a}", params)
                cfg.key = cfg.spec
                out.append(cfg)
    return out


def run_scan(s: Settings, device: torch.device, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Time one training step (fp32, ``scan_width``) of every operator of the grid; the
    slowest is measured at full width by :func:`run_train`."""
    grid = scan_grid(s.scan_grid)
    xb, yb = x[: s.scan_batch], y[: s.scan_batch]
    base = OpConfig("baseline", "baseline")

    def one(cfg: OpConfig) -> float:
        case = TrainCase(build_cnn9(cfg, s.scan_width, s.seed, device, "fp32"), xb, yb, "fp32", s.lr, device)
        case.step()  # warm-up
        return case.time_steps(s.scan_steps)

    t_base_before = one(base)
    rows: list[dict[str, Any]] = []
    for cfg in grid:
        try:
            rows.append({"operator": cfg.spec, "seconds_per_step": one(cfg)})
        except Exception as exc:  # noqa: BLE001 - record and go on
            rows.append({"operator": cfg.spec, "seconds_per_step": None, "error": f"{type(exc).__name__}: {exc}"})
    t_base_after = one(base)
    t_base = statistics.fmean([t_base_before, t_base_after])
    for r in rows:
        r["ratio_vs_baseline"] = r["seconds_per_step"] / t_base if r["seconds_per_step"] else None
    ok = [r for r in rows if r["seconds_per_step"] is not None]
    ranked = sorted(ok, key=lambda r: -r["seconds_per_step"])
    confirm = confirm_slowest(s, device, x, y, [r["operator"] for r in ranked[: s.scan_confirm]])
    return {"width": s.scan_width, "batch": xb.shape[0], "steps": s.scan_steps, "mode": "fp32", "grid": s.scan_grid,
            "baseline_seconds_per_step": [t_base_before, t_base_after], "results": rows,
            "slowest": confirm["slowest"], "confirm": confirm,
            "top5": [(r["operator"], r["ratio_vs_baseline"]) for r in ranked[:5]]}


def confirm_slowest(s: Settings, device: torch.device, x: torch.Tensor, y: torch.Tensor,
                    candidates: list[str]) -> dict[str, Any]:
    """Re-time the scan's slowest candidates at the full width and batch (fp32), interleaved
    with the baseline over ``scan_confirm_repeats`` repeats: a single step at a small width
    is noisy and does not weigh element-wise work against convolutions as the full network
    does. The slowest is the candidate with the largest median ratio."""
    xb, yb = x[: s.batch], y[: s.batch]
    configs = [OpConfig("baseline", "baseline")] + [OpConfig(c, *parse_op(c)) for c in candidates]
    cases = {c.key: TrainCase(build_cnn9(c, s.width, s.seed, device, "fp32"), xb, yb, "fp32", s.lr, device)
             for c in configs}
    for case in cases.values():
        case.step()  # warm-up
    raw = interleaved(list(cases), s.scan_confirm_repeats, lambda k: cases[k].time_steps(1))
    ratios = {c: summarize([t / b for t, b in zip(raw[c], raw["baseline"])]) for c in candidates}
    slowest = max(candidates, key=lambda c: ratios[c]["median"])
    return {"width": s.width, "batch": xb.shape[0], "repeats": s.scan_confirm_repeats, "candidates": candidates,
            "seconds_per_step": raw, "ratios": ratios, "slowest": slowest}


def _compile_available(device: torch.device) -> bool:
    from robustbench_dc.operators import compile_available

    return compile_available(device.type)


def op_configs(slowest: str, compiled: bool = False) -> list[OpConfig]:
    """baseline, TanhConv, TanhConv with the learnable relative radius, the slowest operator and,
    with ``compiled``, the last two again with compiled responses (TanhConv with a shared
    radius takes the fused path, which compilation does not change)."""
    name, params = parse_op(slowest)
    relative = {"rho_mode": "relative", "learnable_rho": True}
    configs = [
        OpConfig("baseline", "baseline"),
        OpConfig("tanh+cos", "tanh+cos"),
        OpConfig("tanh+cos-relative-learnable-rho", "tanh+cos", relative),
        OpConfig("slowest", name, params),
    ]
    if compiled:
        configs += [OpConfig("tanh+cos-relative-learnable-rho+compiled", "tanh+cos", relative, compiled=True),
                    OpConfig("slowest+compiled", name, params, compiled=True)]
    return configs


def run_train(s: Settings, device: torch.device, configs: list[OpConfig], x: torch.Tensor,
              y: torch.Tensor) -> dict[str, Any]:
    """Interleaved training-step times of every (config, mode); ratios decoupled / baseline."""
    cases: dict[str, TrainCase] = {}
    for mode in s.modes:
        for i, cfg in enumerate(configs):
            model = build_cnn9(cfg, s.width, s.seed + i, device, mode)
            cases[f"{mode}/{cfg.key}"] = TrainCase(model, x[: s.batch], y[: s.batch], mode, s.lr, device)
    for case in cases.values():  # warm-up (lazy init, allocator, Adam state)
        for _ in range(s.warmup):
            case.step()
    raw = interleaved(list(cases), s.repeats, lambda k: cases[k].time_steps(s.steps))
    ratios: dict[str, dict[str, Any]] = {}
    for mode in s.modes:
        base = raw[f"{mode}/baseline"]
        ratios[mode] = {}
        for cfg in configs[1:]:
            per = [t / b for t, b in zip(raw[f"{mode}/{cfg.key}"], base)]
            ratios[mode][cfg.key] = {"per_repeat": per, **summarize(per)}
    speedup: dict[str, dict[str, Any]] = {}
    if "fp32" in s.modes and "cl-bf16" in s.modes:
        for cfg in configs:
            per = [a / b for a, b in zip(raw[f"fp32/{cfg.key}"], raw[f"cl-bf16/{cfg.key}"])]
            speedup[cfg.key] = {"per_repeat": per, **summarize(per)}
    return {"width": s.width, "batch": s.batch, "warmup": s.warmup, "repeats": s.repeats, "steps": s.steps,
            "optimizer": f"Adam(lr={s.lr})", "modes": s.modes,
            "configs": {c.key: c.spec for c in configs},
            "seconds_per_step": raw, "ratios": ratios, "fp32_over_cl_bf16": speedup}


# ----------------------------------------------------------------------------- evaluation
def run_eval(s: Settings, device: torch.device, configs: list[OpConfig], x: torch.Tensor) -> dict[str, Any]:
    """Interleaved clean-inference times (eval mode, no grad); ratios decoupled / baseline."""
    models: dict[str, tuple[nn.Module, torch.Tensor, str]] = {}
    xb = x[: s.eval_batch].to(device)
    for mode in s.modes:
        xin = xb.contiguous(memory_format=torch.channels_last) if mode == "cl-bf16" else xb
        for i, cfg in enumerate(configs):
            models[f"{mode}/{cfg.key}"] = (build_cnn9(cfg, s.width, s.seed + i, device, mode).eval(), xin, mode)

    def forward(key: str) -> None:
        model, xin, mode = models[key]
        with torch.no_grad(), autocast_ctx(mode, device):
            model(xin)

    def measure(key: str) -> float:
        with Timer(device) as t:
            for _ in range(s.eval_steps):
                forward(key)
        return t.seconds / s.eval_steps

    for key in models:
        forward(key)  # warm-up
    raw = interleaved(list(models), s.repeats, measure)
    ratios: dict[str, dict[str, Any]] = {}
    ips: dict[str, dict[str, float]] = {}
    for mode in s.modes:
        base = raw[f"{mode}/baseline"]
        ratios[mode] = {}
        for cfg in configs:
            ips[f"{mode}/{cfg.key}"] = summarize(xb.shape[0] / t for t in raw[f"{mode}/{cfg.key}"])
            if cfg.key == "baseline":
                continue
            per = [t / b for t, b in zip(raw[f"{mode}/{cfg.key}"], base)]
            ratios[mode][cfg.key] = {"per_repeat": per, **summarize(per)}
    return {"width": s.width, "batch": xb.shape[0], "steps": s.eval_steps, "repeats": s.repeats,
            "seconds_per_batch": raw, "images_per_second": ips, "ratios": ratios}


# ----------------------------------------------------------------------------- memory
def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def saved_activation_bytes(case: "TrainCase") -> int:
    """Bytes of the tensors autograd keeps for the backward during one forward pass (each
    storage counted once, parameters and the input included): the activation memory of a
    step, exact and independent of the allocator, unlike the peak RSS."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t

    case.opt.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast_ctx(case.mode, case.device):
        F.cross_entropy(case.model(case.x), case.y)
    return sum(storages.values())


def _trim_heap() -> bool:
    """Return the C heap's free memory to the OS (glibc ``malloc_trim``), so VmRSS = live memory."""
    gc.collect()
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child_main(payload: str) -> int:
    """Hidden ``--_child`` mode: one config's peak training-step memory in this fresh process."""
    job = json.loads(payload)
    allocator = configure_allocator()
    torch.set_num_threads(int(job["threads"]))
    device = torch.device(job["device"])
    seed_everything(int(job["seed"]))
    cfg = OpConfig(job["key"], job["operator"], job["params"], bool(job.get("compiled")))
    gen = torch.Generator().manual_seed(int(job["seed"]))
    x = torch.rand(int(job["batch"]), 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (int(job["batch"]),), generator=gen)
    case = TrainCase(build_cnn9(cfg, float(job["width"]), int(job["seed"]), device, job["mode"]), x, y,
                     job["mode"], float(job["lr"]), device)
    out: dict[str, Any] = {"key": cfg.key, "mode": job["mode"], "allocator_configured": allocator}
    # One untimed step first, in every config: it allocates the gradients and Adam's state
    # (steady-state memory, the same for all networks of a shape) and, for compiled configs,
    # compiles. Then the heap's free memory goes back to the OS, so the peak that follows is
    # the memory of training steps alone.
    case.step()
    _trim_heap()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        for _ in range(int(job["steps"])):
            case.step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device)
        out.update(method="torch.cuda.max_memory_allocated", before_bytes=before, peak_bytes=peak,
                   increase_bytes=peak - before)
    else:
        rss_before = (_status_kib("VmRSS") or 0) * 1024
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        reset = _reset_hwm()
        for _ in range(int(job["steps"])):
            case.step()
        maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        hwm = _status_kib("VmHWM") if reset else None
        out.update(rss_before_bytes=rss_before, ru_maxrss_before_bytes=maxrss_before,
                   ru_maxrss_after_bytes=maxrss_after, ru_maxrss_increase_bytes=maxrss_after - rss_before)
        if hwm is not None:
            out.update(method="VmHWM (reset via /proc/self/clear_refs) - VmRSS after one warm-up step and malloc_trim",
                       vmhwm_after_bytes=hwm * 1024, increase_bytes=hwm * 1024 - rss_before)
        else:
            out.update(method="ru_maxrss - VmRSS after one warm-up step and malloc_trim",
                       increase_bytes=maxrss_after - rss_before)
    out["saved_bytes"] = saved_activation_bytes(case)
    print(CHILD_MARK + json.dumps(out), flush=True)
    return 0


def _run_child(job: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_child", json.dumps(job)],
                          capture_output=True, text=True, env=env, timeout=3600)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith(CHILD_MARK):
            return json.loads(line[len(CHILD_MARK):])
    raise RuntimeError(f"memory child {job['mode']}/{job['key']} failed (rc {proc.returncode}): "
                       f"{(proc.stderr or proc.stdout)[-2000:]}")


def run_memory(s: Settings, configs: list[OpConfig]) -> dict[str, Any]:
    """Peak memory of training steps per config, each in a fresh child process; ratios decoupled / baseline."""
    jobs = []
    for r in range(s.memory_repeats):
        for mode in s.memory_modes:
            for cfg in configs:
                jobs.append({"key": cfg.key, "operator": cfg.operator, "params": cfg.params,
                             "compiled": cfg.compiled, "mode": mode,
                             "width": s.width, "batch": s.batch, "steps": s.memory_steps, "lr": s.lr,
                             "seed": s.seed, "threads": s.threads, "device": s.device, "repeat": r})
    with ThreadPoolExecutor(max_workers=s.memory_jobs) as pool:
        results = list(pool.map(_run_child, jobs))
    raw: dict[str, list[int]] = {}
    saved: dict[str, list[int]] = {}
    children: list[dict[str, Any]] = []
    for job, res in zip(jobs, results):
        raw.setdefault(f"{job['mode']}/{job['key']}", []).append(int(res["increase_bytes"]))
        saved.setdefault(f"{job['mode']}/{job['key']}", []).append(int(res["saved_bytes"]))
        children.append({**res, "repeat": job["repeat"]})

    def ratios_of(values: dict[str, list[int]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for mode in s.memory_modes:
            out[mode] = {}
            base = values[f"{mode}/baseline"]
            for cfg in configs[1:]:
                per = [a / b if b > 0 else float("nan") for a, b in zip(values[f"{mode}/{cfg.key}"], base)]
                out[mode][cfg.key] = {"per_repeat": per, **summarize(per)}
        return out

    return {"width": s.width, "batch": s.batch, "steps": s.memory_steps, "repeats": s.memory_repeats,
            "modes": s.memory_modes, "method": results[0].get("method") if results else None,
            "increase_bytes": raw, "saved_bytes": saved, "children": children, "ratios": ratios_of(raw),
            "saved_ratios": ratios_of(saved)}


# ----------------------------------------------------------------------------- attacks
def attack_model(s: Settings, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """A small model trained for a few seconds on the bundled MNIST sample."""
    from robustbench_dc.data import load_dataset
    from robustbench_dc.training import train
    from robustbench_dc.zoo import build_model

    train_ds = load_dataset("mnist-sample", "train")
    seed_everything(s.seed)
    kw: dict[str, Any] = {"width": s.attack_width}
    if s.attack_arch == "mnist2d":
        kw["feature_dim"] = s.attack_feature_dim
    model = build_model(s.attack_arch, s.attack_operator, dataset="mnist", **kw).to(device)
    recipe: dict[str, Any] = {"base": "mnist-fast", "seed": s.seed}
    if s.attack_iterations is not None:
        recipe["iterations"] = s.attack_iterations
        recipe["epochs"] = None
    else:
        recipe["epochs"] = s.attack_epochs
    t0 = time.perf_counter()
    train(model, train_ds, recipe, device=device)
    info = {"arch": s.attack_arch, "operator": s.attack_operator, "params": kw, "recipe": recipe,
            "train_seconds": time.perf_counter() - t0, "train_checksum": train_ds.checksum}
    return model.eval(), info


def run_attacks(s: Settings, device: torch.device) -> dict[str, Any]:
    """Native PGD-10 / FGSM (``run_attack`` and the raw functions) vs torchattacks and foolbox."""
    import foolbox as fb
    import torchattacks

    from robustbench_dc.attacks import AttackSpec, fgsm, pgd, run_attack
    from robustbench_dc.data import load_dataset

    model, model_info = attack_model(s, device)
    for p in model.parameters():
        p.requires_grad_(True)
    test = load_dataset("mnist-sample", "test", n=s.attack_n)
    x, y = test.to_float().to(device), test.labels.to(device)
    eps, steps = s.attack_eps, s.attack_steps
    step_size = 2.5 * eps / steps  # the suite's PGD default, given to every backend explicitly
    pgd_spec = AttackSpec(name="pgd", eps=eps, steps=steps, step_size=step_size, random_start=True, seed=s.seed)
    fgsm_spec = AttackSpec(name="fgsm", eps=eps, seed=s.seed)
    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=device)
    ta_pgd = torchattacks.PGD(model, eps=eps, alpha=step_size, steps=steps, random_start=True)
    ta_fgsm = torchattacks.FGSM(model, eps=eps)
    fb_pgd = fb.attacks.LinfPGD(abs_stepsize=step_size, steps=steps, random_start=True)
    fb_fgsm = fb.attacks.FGSM()  # LinfFastGradientAttack, random_start=False

    runners: dict[str, dict[str, Callable[[], torch.Tensor]]] = {
        "pgd": {
            "native-run_attack": lambda: run_attack(model, x, y, pgd_spec),
            "native-raw": lambda: pgd(model, x, y, eps, steps=steps, step_size=step_size, random_start=True,
                                      seed=s.seed),
            "torchattacks": lambda: ta_pgd(x, y),
            "foolbox": lambda: fb_pgd(fmodel, x, y, epsilons=eps)[0],
        },
        "fgsm": {
            "native-run_attack": lambda: run_attack(model, x, y, fgsm_spec),
            "native-raw": lambda: fgsm(model, x, y, eps),
            "torchattacks": lambda: ta_fgsm(x, y),
            "foolbox": lambda: fb_fgsm(fmodel, x, y, epsilons=eps)[0],
        },
    }
    with torch.no_grad():
        clean_acc = float((model(x).argmax(1) == y).float().mean())
    out: dict[str, Any] = {"model": model_info, "n": x.shape[0], "eps": eps, "threat_model": "linf",
                           "clean_accuracy": clean_acc, "data_checksum": test.checksum,
                           "settings": {"pgd": {"steps": steps, "step_size": step_size, "random_start": True},
                                        "fgsm": {"steps": 1, "step_size": eps, "random_start": False}}}
    pairs = [(n, lib) for n in ("native-run_attack", "native-raw") for lib in ("torchattacks", "foolbox")]
    for attack, fns in runners.items():
        out[attack] = compare_runners(s, device, model, x, y, fns, pairs, reference="native-raw")
    return out


def compare_runners(s: Settings, device: torch.device, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    fns: dict[str, Callable[[], torch.Tensor]], pairs: list[tuple[str, str]],
                    reference: str) -> dict[str, Any]:
    """Time attack implementations interleaved on one model and batch: images/s, ratios for ``pairs``
    (a / b, > 1 = a faster), robust accuracies (must agree within the tolerance) and the distance of
    each adversarial batch from ``reference``'s."""
    acc: dict[str, list[float]] = {k: [] for k in fns}
    linf: dict[str, float] = {}
    first_adv: dict[str, torch.Tensor] = {}

    def measure(k: str) -> float:
        seed_everything(s.seed)  # torchattacks / foolbox draw their random start from torch's RNG
        with Timer(device) as t:
            x_adv = fns[k]()
        x_adv = x_adv.detach()
        with torch.no_grad():
            acc[k].append(float((model(x_adv).argmax(1) == y).float().mean()))
        linf[k] = max(linf.get(k, 0.0), float((x_adv - x).abs().amax()))
        first_adv.setdefault(k, x_adv.detach())
        for p in model.parameters():
            p.grad = None
        return t.seconds

    for k in fns:  # warm-up (and first-call costs) outside the timings
        fns[k]()
    raw = interleaved(list(fns), s.attack_repeats, measure)
    ips = {k: [x.shape[0] / t for t in v] for k, v in raw.items()}
    ratios: dict[str, dict[str, Any]] = {}
    for a, b in pairs:
        per = [u / v for u, v in zip(ips[a], ips[b])]
        ratios[f"{a}/{b}"] = {"per_repeat": per, **summarize(per)}
    first = {k: v[0] for k, v in acc.items()}
    tol = max(s.acc_tol, 3.0 / x.shape[0])
    spread = max(first.values()) - min(first.values())
    return {
        "seconds": raw, "images_per_second": {k: summarize(v) for k, v in ips.items()},
        "images_per_second_raw": ips, "ratios": ratios,
        "robust_accuracy": first, "robust_accuracy_per_repeat": acc, "max_linf": linf,
        # how far each backend's adversarial batch is from the reference one (same seed: the
        # random starts may coincide, so near-identical batches are expected, not a bug)
        f"max_abs_diff_vs_{reference}": {k: float((v - first_adv[reference]).abs().amax())
                                         for k, v in first_adv.items()},
        f"fraction_examples_differing_vs_{reference}": {
            k: float(((v - first_adv[reference]).flatten(1).abs().amax(1) > 1e-6).float().mean())
            for k, v in first_adv.items()},
        "robust_accuracy_spread": spread, "tolerance": tol, "mismatch": bool(spread > tol),
        "note": (f"robust accuracies differ by {100 * spread:.1f} pp > {100 * tol:.1f} pp"
                 if spread > tol else f"robust accuracies agree within {100 * tol:.1f} pp"),
        "mean_robust_accuracy": statistics.fmean(first.values()),
    }


def run_strong(s: Settings, device: torch.device) -> dict[str, Any]:
    """Native APGD-CE, APGD-T and AutoAttack vs torchattacks' components at equal strength (AutoAttack's
    budgets: 100 iterations, 9 target classes, 5,000 Square queries, set explicitly on every backend)."""
    import torchattacks

    from robustbench_dc.attacks import AttackSpec, run_attack
    from robustbench_dc.attacks.apgd import default_n_target_classes
    from robustbench_dc.data import load_dataset

    model, model_info = attack_model(s, device)
    test = load_dataset("mnist-sample", "test", n=s.strong_n)
    x, y = test.to_float().to(device), test.labels.to(device)
    eps = s.strong_eps
    with torch.no_grad():
        k = int(model(x[:1]).shape[1])
    n_t = default_n_target_classes(k)

    def ta(cls: type, **kw: Any) -> Any:
        atk = cls(model, eps=eps, seed=s.seed, **kw)
        if hasattr(atk, "n_target_classes"):
            atk.n_target_classes = n_t  # torchattacks' default is n_classes - 1
        return atk

    ta_apgd = ta(torchattacks.APGD, steps=100, n_restarts=1, loss="ce")
    ta_apgdt = ta(torchattacks.APGDT, steps=100, n_restarts=1, n_classes=k)
    ta_aa = torchattacks.MultiAttack([
        ta_apgd, ta_apgdt, ta(torchattacks.FAB, steps=100, n_restarts=1, multi_targeted=True, n_classes=k),
        ta(torchattacks.Square, n_queries=5000, n_restarts=1, p_init=0.8)])
    specs = {"apgd-ce": AttackSpec(name="apgd", eps=eps, seed=s.seed),
             "apgd-t": AttackSpec(name="apgd", eps=eps, targeted=True, seed=s.seed),
             "autoattack": AttackSpec(name="autoattack", eps=eps, seed=s.seed)}
    libs = {"apgd-ce": ta_apgd, "apgd-t": ta_apgdt, "autoattack": ta_aa}
    with torch.no_grad():
        clean_acc = float((model(x).argmax(1) == y).float().mean())
    out: dict[str, Any] = {"model": model_info, "n": x.shape[0], "eps": eps, "threat_model": "linf",
                           "clean_accuracy": clean_acc, "data_checksum": test.checksum, "n_target_classes": n_t,
                           "settings": {"apgd": {"steps": 100, "restarts": 1}, "square": {"queries": 5000},
                                        "fab": {"steps": 100, "targets": n_t}}}
    for name, spec in specs.items():
        fns = {"native": (lambda sp=spec: run_attack(model, x, y, sp)),
               "torchattacks": (lambda atk=libs[name]: atk(x, y))}
        out[name] = compare_runners(s, device, model, x, y, fns, [("native", "torchattacks")], reference="native")
    return out


# ----------------------------------------------------------------------------- end-to-end
def run_quickstart(s: Settings) -> dict[str, Any]:
    """Wall time of ``s.quickstart`` run as a subprocess (no shell)."""
    assert s.quickstart is not None
    cmd = shlex.split(s.quickstart)
    runs = []
    for _ in range(s.quickstart_repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        runs.append({"seconds": time.perf_counter() - t0, "returncode": proc.returncode,
                     "stderr_tail": proc.stderr[-1000:] if proc.returncode else ""})
    return {"command": s.quickstart, "argv": cmd, "runs": runs,
            "seconds": summarize(r["seconds"] for r in runs if r["returncode"] == 0),
            "ok": all(r["returncode"] == 0 for r in runs)}


# ----------------------------------------------------------------------------- provenance
def _slug(text: str) -> str:
    text = re.sub(r"\(r\)|\(tm\)|@.*$|\bcpu\b|\bprocessor\b|\d+-core", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:40].strip("-")


def host_kind(device: torch.device) -> str:
    """e.g. ``cpu-amd-epyc-2c`` or ``cuda-nvidia-h100-80gb-hbm3``."""
    if device.type == "cuda":
        return "cuda-" + _slug(torch.cuda.get_device_name(device))
    return f"cpu-{_slug(_cpu_model()) or platform.machine()}-{_usable_cores()}c"


def versions() -> dict[str, str | None]:
    """Versions of python, torch, numpy, torchattacks, foolbox and robustbench_dc (+ git commit)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__,
                                  "numpy": np.__version__}
    for pkg in ("torchattacks", "foolbox", "robustbench-dc"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        out["git_commit"] = (commit + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


# ----------------------------------------------------------------------------- report
RATIO_MEANING = {
    "train": "training-step time, decoupled / nn.Conv2d (same mode); > 1 = slower",
    "train-mode": "training-step time fp32 / cl-bf16 (same network); > 1 = cl-bf16 faster",
    "memory": "peak training-step memory increase, decoupled / nn.Conv2d; > 1 = more memory",
    "saved": "bytes autograd keeps for the backward (activations), decoupled / nn.Conv2d; > 1 = more",
    "eval": "inference time per batch, decoupled / nn.Conv2d (same mode); > 1 = slower",
    "attacks": "adversarial images/s, native / library (same model, batch, settings); > 1 = native faster",
    "strong": "APGD / AutoAttack images/s, native / torchattacks at AutoAttack's budgets; > 1 = native faster",
}


def flat_ratios(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ratio of the run as rows ``{section, name, mode, min, median, max, n, meaning}``."""
    rows: list[dict[str, Any]] = []

    def add(section: str, name: str, mode: str, summ: dict[str, Any], meaning: str) -> None:
        rows.append({"section": section, "name": name, "mode": mode, "min": summ["min"],
                     "median": summ["median"], "max": summ["max"], "n": summ["n"], "meaning": meaning})

    configs = res.get("configs", {})
    label = {k: (f"{k} ({v})" if k.startswith("slowest") else k) for k, v in configs.items()}
    if "train" in res:
        for mode, d in res["train"]["ratios"].items():
            for k, summ in d.items():
                add("train", label.get(k, k), mode, summ, RATIO_MEANING["train"])
        for k, summ in res["train"]["fp32_over_cl_bf16"].items():
            add("train-mode", label.get(k, k), "fp32/cl-bf16", summ, RATIO_MEANING["train-mode"])
    if "memory" in res:
        for mode, d in res["memory"]["ratios"].items():
            for k, summ in d.items():
                add("memory", label.get(k, k), mode, summ, RATIO_MEANING["memory"])
        for mode, d in res["memory"].get("saved_ratios", {}).items():
            for k, summ in d.items():
                add("saved", label.get(k, k), mode, summ, RATIO_MEANING["saved"])
    if "eval" in res:
        for mode, d in res["eval"]["ratios"].items():
            for k, summ in d.items():
                add("eval", label.get(k, k), mode, summ, RATIO_MEANING["eval"])
    if "attacks" in res:
        for attack in ("pgd", "fgsm"):
            for k, summ in res["attacks"][attack]["ratios"].items():
                add("attacks", f"{attack}: {k}", "fp32", summ, RATIO_MEANING["attacks"])
    if "strong" in res:
        for attack in STRONG_ATTACKS:
            for k, summ in res["strong"][attack]["ratios"].items():
                add("strong", f"{attack}: {k}", "fp32", summ, RATIO_MEANING["strong"])
    return rows


def render_table(res: dict[str, Any]) -> str:
    """Human-readable table of the ratios and the side facts (robust accuracy, slowest operator)."""
    lines = []
    w = max([len(r["name"]) for r in res["ratios"]] + [20])
    head = f"{'section':<11} {'name':<{w}} {'mode':<13} {'min':>7} {'median':>7} {'max':>7}  n"
    lines += [head, "-" * len(head)]
    last = None
    for r in res["ratios"]:
        if last is not None and r["section"] != last:
            lines.append("")
        last = r["section"]
        lines.append(f"{r['section']:<11} {r['name']:<{w}} {r['mode']:<13} {r['min']:>7.3f} {r['median']:>7.3f} "
                     f"{r['max']:>7.3f}  {r['n']}")
    lines.append("")
    for key, meaning in RATIO_MEANING.items():
        lines.append(f"  {key:<11} {meaning}")
    if "scan" in res:
        top = ", ".join(f"{op} {ratio:.2f}x" for op, ratio in res["scan"]["top5"])
        lines.append(f"scan (width {res['scan']['width']}, batch {res['scan']['batch']}, fp32): slowest {top}")
        c = res["scan"]["confirm"]
        conf = ", ".join(f"{op} {c['ratios'][op]['median']:.2f}x" for op in c["candidates"])
        lines.append(f"  re-timed at width {c['width']}, batch {c['batch']} ({c['repeats']} repeats, median): {conf}"
                     f" -> slowest {c['slowest']}")
    if "attacks" in res:
        a = res["attacks"]
        lines.append(f"attacks on {a['model']['arch']} (clean acc {a['clean_accuracy']:.3f}, n={a['n']}, "
                     f"L-inf eps={a['eps']}):")
        for attack in ("pgd", "fgsm"):
            d = a[attack]
            accs = ", ".join(f"{k} {v:.3f}" for k, v in d["robust_accuracy"].items())
            ips = ", ".join(f"{k} {v['median']:.0f}/s" for k, v in d["images_per_second"].items())
            lines.append(f"  {attack}: robust acc {accs} -> {'MISMATCH: ' if d['mismatch'] else ''}{d['note']}")
            lines.append(f"  {attack}: median images/s {ips}")
    if "strong" in res:
        a = res["strong"]
        lines.append(f"strong attacks on {a['model']['arch']} (clean acc {a['clean_accuracy']:.3f}, n={a['n']}, "
                     f"L-inf eps={a['eps']}, {a['n_target_classes']} target classes):")
        for attack in STRONG_ATTACKS:
            d = a[attack]
            accs = ", ".join(f"{k} {v:.3f}" for k, v in d["robust_accuracy"].items())
            secs = ", ".join(f"{k} {statistics.median(v):.2f} s" for k, v in d["seconds"].items())
            lines.append(f"  {attack}: robust acc {accs} -> {'MISMATCH: ' if d['mismatch'] else ''}{d['note']}")
            lines.append(f"  {attack}: median seconds {secs}")
    if "eval" in res:
        ips = ", ".join(f"{k} {v['median']:.0f}/s" for k, v in res["eval"]["images_per_second"].items())
        lines.append(f"eval images/s (median): {ips}")
    if res.get("quickstart"):
        q = res["quickstart"]
        lines.append(f"quickstart: {q['command']!r}: median {q['seconds']['median']:.2f} s, ok={q['ok']}")
    for note in res.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table; write the JSON. Returns the exit status."""
    args, s = parse_args(argv)
    if args._child is not None:
        return child_main(args._child)
    allocator = configure_allocator()  # before any large allocation
    t_start = time.perf_counter()
    torch.set_num_threads(s.threads)
    device = torch.device(s.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    seed_everything(s.seed)
    res: dict[str, Any] = {
        "schema": SCHEMA,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command_line": [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv],
        "seed": s.seed, "quick": s.quick, "settings": asdict(s),
        "allocator_configured": allocator,
        "env": {k: os.environ.get(k) for k in ("RBDC_NO_ALLOCATOR_TUNING", "RBDC_DATA", "OMP_NUM_THREADS",
                                                "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")},
        "torch_threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
        "versions": versions(), "machine": machine_info(device), "host_kind": args.host_kind or host_kind(device),
        "notes": [],
    }
    if s.quick:
        res["notes"].append("--quick: tiny sizes, numbers are for checking the harness, not for reporting")

    need_cifar = any(sec in s.sections for sec in ("scan", "train", "eval"))
    if need_cifar:
        n_data = max(s.batch, s.scan_batch, s.eval_batch)
        x, y, data_info = cifar_batch(n_data, s.seed, s.data_dir)
        if x.shape[0] < n_data:
            reps = -(-n_data // x.shape[0])
            x, y = x.repeat(reps, 1, 1, 1)[:n_data], y.repeat(reps)[:n_data]
        res["data"] = {"cnn9": data_info}
        if not data_info["real"]:
            res["notes"].append(data_info["note"])

    slowest = s.slowest
    if "scan" in s.sections and not s.skip_scan:
        _log(f"scan: {len(scan_grid(s.scan_grid))} operators at width {s.scan_width}, batch {s.scan_batch}")
        res["scan"] = run_scan(s, device, x, y)
        slowest = res["scan"]["slowest"]
    if slowest is None:
        slowest = "mix+sigmoid,weighted=separable"
        res["notes"].append(f"no scan: 'slowest' is the default {slowest} (pass --slowest SPEC)")
    compiled = s.compile and _compile_available(device)
    if s.compile and not compiled:
        res["notes"].append("torch.compile is not available here: the compiled configs were skipped")
    configs = op_configs(slowest, compiled)
    res["slowest"] = slowest
    res["configs"] = {c.key: c.spec for c in configs}

    if "train" in s.sections:
        _log(f"train: CNN-9 width {s.width}, batch {s.batch}, {len(configs)} nets x {s.modes}, {s.repeats} repeats")
        res["train"] = run_train(s, device, configs, x, y)
    if "eval" in s.sections:
        _log(f"eval: batch {s.eval_batch}")
        # Compilation is a training-loop setting: inference is measured on the eager configs.
        res["eval"] = run_eval(s, device, [c for c in configs if not c.compiled], x)
    if "memory" in s.sections:
        _log(f"memory: {len(configs) * len(s.memory_modes) * s.memory_repeats} child processes")
        res["memory"] = run_memory(s, configs)
    if "attacks" in s.sections:
        _log(f"attacks: {s.attack_arch} width {s.attack_width}, n={s.attack_n}, eps={s.attack_eps}")
        res["attacks"] = run_attacks(s, device)
        for attack in ("pgd", "fgsm"):
            if res["attacks"][attack]["mismatch"]:
                res["notes"].append(f"{attack}: {res['attacks'][attack]['note']}")
    if "strong" in s.sections:
        _log(f"strong: APGD-CE, APGD-T, AutoAttack, n={s.strong_n}, eps={s.strong_eps}")
        res["strong"] = run_strong(s, device)
        for attack in STRONG_ATTACKS:
            if res["strong"][attack]["mismatch"]:
                res["notes"].append(f"{attack}: {res['strong'][attack]['note']}")
    if "quickstart" in s.sections and s.quickstart:
        _log(f"quickstart: {s.quickstart}")
        res["quickstart"] = run_quickstart(s)

    res["ratios"] = flat_ratios(res)
    res["torchvision_imported"] = "torchvision" in sys.modules
    res["wall_seconds"] = time.perf_counter() - t_start
    out = args.out
    if out is None:
        date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
        out = RESULTS_DIR / f"{date}-{res['host_kind']}{'-quick' if s.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(res), indent=1, sort_keys=False, allow_nan=False) + "\n")
    os.replace(tmp, out)
    print(render_table(res))
    print(f"wrote {out} ({res['wall_seconds']:.1f} s)")
    return 0


_T0 = time.perf_counter()


def _log(msg: str) -> None:
    print(f"[bench {time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
