#!/usr/bin/env python
"""What one unit of a Tables 7-8 job costs per operator, as a ratio to the Baseline's, in one run.

The units are those of ``thread_scaling.py`` (CNN-9 at the cpu scale's width, real CIFAR-10
images, channels-last, the decoupled responses compiled where the protocol compiles them):

* ``train``: a natural training step of the suite's ``train()``;
* ``gradient``: an input gradient of the cross-entropy in attack mode (the unit of
  FGSM/BIM/PGD/APGD/FAB);
* ``forward``: a forward pass in attack mode without gradients (the unit of Square).

Each (operator, kind) is timed ``--repeats`` times, the operators interleaved so that drift on a
shared machine hits them alike; the result is the fastest repeat, and its ratio to the Baseline's.
With ``--against DIR`` (another checkout of the repository, e.g. ``git worktree add /tmp/old
<commit>``) every unit is also timed with that checkout's code, each measurement in a fresh
process of its own checkout's ``thread_scaling.py`` worker, the two checkouts alternating: the
speed of this code against that one, in one run on the same machine.

Usage::

    RBDC_DATA=../shared/data python -m benchmarks.operator_units --out benchmarks/results/operator-units.json
    git worktree add /tmp/old <commit>
    RBDC_DATA=../shared/data python -m benchmarks.operator_units --against /tmp/old --out ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.harness.report import git_commit
from benchmarks.thread_scaling import add_unit_options, worker_command

REPO = Path(__file__).resolve().parents[1]


def _spawn(checkout: Path, label: str, kind: str, threads: int, args: argparse.Namespace) -> float:
    """Seconds per unit, measured by a fresh worker process of ``checkout``'s ``thread_scaling.py``."""
    import os
    import subprocess

    cmd = worker_command(checkout / "benchmarks" / "thread_scaling.py", label, kind, threads, args)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(checkout)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=checkout)
    if done.returncode:
        raise RuntimeError(f"worker {label} {kind} in {checkout} failed ({done.returncode}): {done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: every usable core)")
    add_unit_options(p, n_train=1280, units=6, repeats=3)
    p.add_argument("--against", type=Path, default=None, help="another checkout whose code to time alongside")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    from benchmarks.harness.report import versions, write_result
    from robustbench_dc.data import load_dataset
    from robustbench_dc.runtime import machine_info, usable_cores

    threads = args.threads or usable_cores()
    labels, kinds = args.operators.split(","), args.kinds.split(",")
    if "Baseline" not in labels:
        p.error("--operators: the ratios need the Baseline")
    trees = {"this": REPO} | ({"against": args.against.resolve()} if args.against else {})
    times: dict[tuple[str, str, str], list[float]] = {(c, o, k): [] for c in trees for o in labels for k in kinds}
    for r in range(args.repeats):
        for kind in kinds:
            for label in (labels if r % 2 == 0 else labels[::-1]):
                for code in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
                    times[code, label, kind].append(_spawn(trees[code], label, kind, threads, args))
                    print(f"repeat {r + 1}: {code:7s} {label:10s} {kind:8s} {times[code, label, kind][-1] * 1000:7.1f} ms",
                          flush=True)
    rows = []
    for kind in kinds:
        for code in trees:
            base = min(times[code, "Baseline", kind])
            for label in labels:
                best = min(times[code, label, kind])
                row = {"code": code, "operator": label, "kind": kind, "seconds_per_unit": best,
                       "ratio_to_baseline": best / base, "all": times[code, label, kind]}
                if code == "this" and "against" in trees:
                    row["ratio_to_against"] = best / min(times["against", label, kind])
                rows.append(row)
                print(f"{code:7s} {label:10s} {kind:8s} {best * 1000:7.1f} ms  x{best / base:.2f} of the Baseline"
                      + (f", x{row['ratio_to_against']:.2f} of the other checkout's" if "ratio_to_against" in row else ""))
    tr = load_dataset("cifar10", "train", n=args.n_train)
    write_result(args.out, {"command": [Path(sys.executable).name, *sys.argv], "seed": args.seed,
                            "settings": {k: v for k, v in vars(args).items() if k not in ("out", "against")}
                            | {"threads": threads},
                            "against": None if args.against is None else {"path": str(args.against),
                                                                          "git_commit": git_commit(args.against)},
                            "train_sha256": tr.checksum, "versions": versions(), "machine": machine_info(),
                            "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
