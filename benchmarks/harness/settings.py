"""The harness settings and their command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from benchmarks.harness.common import MODES, SECTIONS
from robustbench_dc.runtime import usable_cores as _usable_cores


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
        prog="python -m benchmarks.run",
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
