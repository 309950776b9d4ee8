"""Does the fast training mode keep accuracy? fp32 vs bf16 autocast + channels-last on a short MNIST run.

Trains the quickstart's mnist2d networks (baseline, TanhConv with the authors' learnable
relative radius, SphereConv; width 0.25, recipe mnist-fast) on the bundled MNIST sample
with two seeds in each mode and reports test accuracy on its 1,000 test images and the
training time. Writes ``benchmarks/results/precision-<UTC date>.json`` (or ``--out``).

    python -m benchmarks.precision
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from robustbench_dc import __version__
from robustbench_dc.data import load_dataset
from robustbench_dc.runtime import configure_allocator
from robustbench_dc.training import evaluate_accuracy, train
from robustbench_dc.zoo import build_model

MODELS = {"baseline": ("baseline", {}), "tanh-relative": ("tanh+cos", {"rho_mode": "relative", "learnable_rho": True}),
          "sphere": ("sphere+cos", {})}
MODES = {"fp32": {"precision": "fp32", "channels_last": False}, "bf16-cl": {"precision": "bf16", "channels_last": True}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    configure_allocator()
    train_set, test_set = load_dataset("mnist-sample", "train"), load_dataset("mnist-sample", "test")
    rows = []
    for name, (operator, params) in MODELS.items():
        for mode, settings in MODES.items():
            for seed in args.seeds:
                torch.manual_seed(seed)
                model = build_model("mnist2d", operator, dataset="mnist", width=0.25, **params)
                t0 = time.perf_counter()
                train(model, train_set, {"base": "mnist-fast", "seed": seed, **settings})
                seconds = time.perf_counter() - t0
                acc = evaluate_accuracy(model, test_set)
                rows.append({"model": name, "mode": mode, "seed": seed, "test_accuracy": acc, "seconds": seconds})
                print(f"{name:<14} {mode:<8} seed {seed}: test accuracy {100 * acc:.1f}%  ({seconds:.1f} s)", flush=True)
    print()
    for name in MODELS:
        acc = {m: [r["test_accuracy"] for r in rows if r["model"] == name and r["mode"] == m] for m in MODES}
        sec = {m: sum(r["seconds"] for r in rows if r["model"] == name and r["mode"] == m) for m in MODES}
        diffs = [b - a for a, b in zip(acc["fp32"], acc["bf16-cl"])]
        print(f"{name:<14} accuracy bf16-cl minus fp32 per seed: "
              f"{', '.join(f'{100 * d:+.1f} pp' for d in diffs)}; time fp32/bf16-cl {sec['fp32'] / sec['bf16-cl']:.2f}")
    out = Path(args.out or Path(__file__).parent / "results" / f"precision-{datetime.now(timezone.utc):%Y-%m-%d}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "seeds": args.seeds, "rows": rows,
        "data_sha256": {"train": train_set.checksum, "test": test_set.checksum},
        "versions": {"robustbench_dc": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "bf16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), "threads": torch.get_num_threads(),
        "created_utc": datetime.now(timezone.utc).isoformat(),
    }, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
