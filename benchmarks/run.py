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
   fresh child process (``benchmarks/run.py --_child``, which runs ``harness/memory.child_main``).
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

    python -m benchmarks.run                 # full run (minutes to tens of minutes on a CPU)
    python -m benchmarks.run --quick         # tiny sizes, well under a minute (the smoke test)
    python -m benchmarks.run --device cuda   # on a GPU
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from benchmarks.harness.attacks import run_attacks, run_quickstart, run_strong
from benchmarks.harness.common import (
    RESULTS_DIR,
    SCHEMA,
    STRONG_ATTACKS,
    _compile_available,
    _log,
    cifar_batch,
    op_configs,
    seed_everything,
)
from benchmarks.harness.memory import child_main, run_memory
from benchmarks.harness.report import _jsonable, flat_ratios, host_kind, render_table, versions
from benchmarks.harness.settings import parse_args
from benchmarks.harness.speed import run_eval, run_scan, run_train, scan_grid
from robustbench_dc.runtime import configure_allocator, machine_info

REPO = Path(__file__).resolve().parents[1]


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


if __name__ == "__main__":
    sys.exit(main())
