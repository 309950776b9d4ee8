#!/usr/bin/env python
"""The Ray executor against the local executor, and a projection of a protocol onto N machines.

``compare``: runs each protocol twice from an empty run folder, once with the local executor and
once with ``--executor ray`` (a local Ray instance on this machine's cores), and records both
wall times, their ratio and whether the two runs left the same numbers (results, database rows,
figures). Run it on an otherwise idle machine: the ratio is one run against the other.

``project``: how the job graph of a protocol (by default the CIFAR-10 leaderboard) would spread
over N machines with one GPU each. The time of every job is measured, not guessed: the protocol is
run with the local executor at two reduced scales (training for ``--iters`` iterations, attacks and
Lipschitz estimates on the first ``--n-test`` test images), each job's time is fitted as a fixed
cost plus a part proportional to its scale (iterations for training, test images for the
evaluations), and extrapolated to the protocol's own scale. The jobs are then list-scheduled on N
machines (longest remaining path first, a job starts when the jobs it consumes are done), which
gives the makespan, the speed-up over one machine and the critical path. The times are this CPU's;
the projection assumes a GPU speeds every job up alike, so its speed-ups (ratios), not its
seconds, carry over.

Usage::

    python -m benchmarks.ray_executor compare quickstart leaderboard-mnist --resources all=cpus:1 \\
        --out benchmarks/results/ray-compare.json
    python -m benchmarks.ray_executor project leaderboard-cifar10 --machines 1 4 16 64 \\
        --out benchmarks/results/ray-projection.json
"""

from __future__ import annotations

import argparse
import heapq
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from robustbench_dc.protocol import execute, parse_protocol
from robustbench_dc.protocol.plan import make_plan
from robustbench_dc.protocol.schema import load_protocol
from robustbench_dc.provenance import package_versions
from robustbench_dc.runtime import machine_info

REPO = Path(__file__).resolve().parents[1]

#: summary fields that are numbers of the run (not times, paths or machine facts)
_RESULT_KEYS = ("clean_accuracy", "whitebox", "worst_case", "transfer", "lipschitz", "checkpoint_sha256", "flags")


def _numbers(run_dir: Path) -> dict[str, Any]:
    summary = json.loads((run_dir / "summary.json").read_text())
    models = {n: {k: m.get(k) for k in _RESULT_KEYS} for n, m in summary["models"].items()}
    figures = {p.name: p.read_bytes().hex() for p in sorted((run_dir / "figures").glob("*.png"))}
    rows: dict[str, list] = {}
    with sqlite3.connect(run_dir / "results.sqlite") as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name != 'runs'"):
            cur = db.execute(f"SELECT * FROM {table}")  # noqa: S608 - names from the database itself
            cols = [d[0] for d in cur.description]
            rows[table] = sorted(str([v for c, v in zip(cols, r) if c != "checkpoint"]) for r in cur.fetchall())
    return {"models": models, "figures": figures, "db": rows}


def compare(protocols: list[str], workdir: Path, resources: list[str]) -> list[dict[str, Any]]:
    """Each protocol run by the ``rbdc run`` command with each executor, from an empty run folder, with the
    same ``--resources`` (the same threads per job: what makes their numbers the same)."""
    out = []
    for name in protocols:
        entry: dict[str, Any] = {"protocol": name}
        folders = {}
        for executor in ("local", "ray"):
            run_dir = workdir / f"{Path(name).stem}-{executor}"
            shutil.rmtree(run_dir, ignore_errors=True)
            cmd = [sys.executable, "-m", "robustbench_dc", "run", name, "--out", str(run_dir),
                   "--db", str(run_dir / "results.sqlite"), "--quiet",
                   *[a for r in resources for a in ("--resources", r)],
                   *(["--executor", "ray"] if executor == "ray" else [])]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            entry[f"{executor}_seconds"] = time.perf_counter() - t0
            entry[f"{executor}_command"] = " ".join(["rbdc", *cmd[3:]])
            folders[executor] = run_dir
            print(f"{name}: {executor} {entry[f'{executor}_seconds']:.1f} s", flush=True)
        entry["ray_over_local"] = entry["ray_seconds"] / entry["local_seconds"]
        a, b = _numbers(folders["local"]), _numbers(folders["ray"])
        entry["same_results"] = a["models"] == b["models"]
        entry["same_database_rows"] = a["db"] == b["db"]
        entry["same_figures"] = a["figures"] == b["figures"] and bool(a["figures"])
        entry["job_seconds"] = {e: json.loads((folders[e] / "summary.json").read_text())["job_seconds"]
                                for e in folders}
        out.append(entry)
    return out


# ----------------------------------------------------------------------------- projection

def _scaled(protocol: Any, iters: int, n_test: int) -> Any:
    """The protocol with every training cut to ``iters`` iterations and the test set to ``n_test``."""
    data = protocol.model_dump(mode="json", exclude_none=True)
    for m in data["models"]:
        recipe = m.get("recipe") or {}
        recipe = {"base": recipe} if isinstance(recipe, str) else dict(recipe)
        recipe.pop("epochs", None)
        recipe["iterations"] = iters
        m["recipe"] = recipe
    data["dataset"]["n_test"] = n_test
    data.pop("output", None)
    data["leaderboard"].pop("db", None)
    return parse_protocol(data, protocol.name)


def _train_iterations(plan: Any) -> dict[str, int]:
    """Iterations each model's training runs at the protocol's own scale."""
    from robustbench_dc.training import get_recipe

    out = {}
    n_train = None
    for name, m in plan.models.items():
        recipe = get_recipe(m.recipe)
        if recipe.iterations is not None:
            out[name] = recipe.iterations
        else:
            if n_train is None:
                from robustbench_dc.data import load_dataset

                ds = plan.protocol.dataset
                n_train = len(load_dataset(ds.name, "train", n=ds.n_train, data_dir=ds.data_dir))
            out[name] = recipe.epochs * (n_train // min(recipe.batch_size, n_train))
    return out


def measure_jobs(name: str, workdir: Path, iters: tuple[int, int], n_test: tuple[int, int]) -> dict[str, Any]:
    """Each job's time at the protocol's scale, fitted from two reduced-scale local runs."""
    protocol, provenance = load_protocol(name)
    full = make_plan(protocol, provenance, workdir / "full-plan")
    full_iters = _train_iterations(full)
    full_test = protocol.dataset.n_test or 10_000
    runs = []
    for k, n in zip(iters, n_test):
        small = _scaled(protocol, k, n)
        run_dir = workdir / f"{protocol.name}-{k}it-{n}img"
        shutil.rmtree(run_dir, ignore_errors=True)
        t0 = time.perf_counter()
        result = execute(make_plan(small, provenance, run_dir), progress=False)
        print(f"{protocol.name} at {k} iterations, {n} test images: {time.perf_counter() - t0:.1f} s", flush=True)
        runs.append(result.summary["job_seconds"] | {"report": _report_seconds(run_dir)})
    jobs = {}
    for job in full.jobs:
        (t1, t2) = (r.get(job.id, 0.0) for r in runs)
        if job.kind == "train":
            s1, s2, s_full = iters[0], iters[1], full_iters[job.model]
        elif job.kind in ("whitebox", "sweep", "lipschitz", "embedding", "transfer"):
            s1, s2, s_full = n_test[0], n_test[1], full_test
            if job.kind == "lipschitz":  # the estimate runs on its own first n images
                n = protocol.lipschitz.n if protocol.lipschitz else 0
                s1, s2, s_full = min(n, n_test[0]), min(n, n_test[1]), min(n, full_test)
        else:  # figures, report: no scale
            s1 = s2 = s_full = 1
        slope = (t2 - t1) / (s2 - s1) if s2 != s1 else 0.0
        slope = max(slope, 0.0)
        fixed = max(t2 - slope * s2, 0.0)
        jobs[job.id] = {"kind": job.kind, "deps": job.deps, "measured": [t1, t2], "scale": [s1, s2, s_full],
                        "seconds": fixed + slope * s_full}
    return {"protocol": protocol.name, "iters": list(iters), "n_test": list(n_test), "seed": protocol.seed,
            "data_sha256": full.data_checksums, "jobs": jobs}


def _report_seconds(run_dir: Path) -> float:
    marker = run_dir / ".jobs" / "report.json"
    return float(json.loads(marker.read_text())["seconds"]) if marker.is_file() else 0.0


def schedule(jobs: dict[str, dict[str, Any]], machines: int) -> dict[str, Any]:
    """List scheduling on ``machines`` identical machines, longest remaining path first."""
    order = list(jobs)
    tail: dict[str, float] = {}
    for job_id in reversed(order):  # plan order is topological: consumers come after their inputs
        consumers = [j for j in order if job_id in jobs[j]["deps"]]
        tail[job_id] = jobs[job_id]["seconds"] + max((tail[c] for c in consumers), default=0.0)
    finish: dict[str, float] = {}
    waiting = set(order)
    now_ready: list[tuple[float, str]] = []
    clock = 0.0
    running: list[tuple[float, str]] = []
    while waiting or running or now_ready:
        for job_id in sorted(waiting, key=order.index):
            if all(d in finish for d in jobs[job_id]["deps"]):
                heapq.heappush(now_ready, (-tail[job_id], job_id))
                waiting.discard(job_id)
        while now_ready and len(running) < machines:
            _, job_id = heapq.heappop(now_ready)  # its inputs finished at or before the clock
            heapq.heappush(running, (clock + jobs[job_id]["seconds"], job_id))
        end, job_id = heapq.heappop(running)
        clock = end
        finish[job_id] = end
    total = sum(j["seconds"] for j in jobs.values())
    path, job_id = [], max(order, key=lambda j: tail[j] if not jobs[j]["deps"] else -1)
    while True:
        path.append(job_id)
        consumers = [j for j in order if job_id in jobs[j]["deps"]]
        if not consumers:
            break
        job_id = max(consumers, key=lambda j: tail[j])
    return {"machines": machines, "makespan_seconds": clock, "speedup": total / clock if clock else None,
            "work_seconds": total, "critical_path_seconds": max(tail.values()), "critical_path": path}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("compare", help="local vs ray executor on the same protocols")
    c.add_argument("protocols", nargs="+")
    c.add_argument("--resources", action="append", default=[], metavar="KIND=cpus:N,...",
                   help="passed to both runs, e.g. all=cpus:1 (one thread per job, so Ray runs one job per core)")
    pr = sub.add_parser("project", help="a protocol's job graph on N machines, from measured job times")
    pr.add_argument("protocol", nargs="?", default="leaderboard-cifar10")
    pr.add_argument("--machines", type=int, nargs="+", default=[1, 4, 16, 64])
    pr.add_argument("--iters", type=int, nargs=2, default=[10, 30])
    pr.add_argument("--n-test", type=int, nargs=2, default=[50, 100])
    for q in (c, pr):
        q.add_argument("--out", type=Path, required=True)
        q.add_argument("--workdir", type=Path, help="where the runs go (default: a temporary folder, removed)")
    args = p.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rbdc-ray-bench-"))
    try:
        record: dict[str, Any] = {"command": [Path(sys.executable).name, *sys.argv],
                                  "versions": package_versions("numpy", "ray"), "machine": machine_info()}
        if args.what == "compare":
            record["runs"] = compare(args.protocols, workdir, args.resources)
            for r in record["runs"]:
                print(f"{r['protocol']}: local {r['local_seconds']:.1f} s, ray {r['ray_seconds']:.1f} s "
                      f"(ray/local {r['ray_over_local']:.2f}); same results {r['same_results']}, "
                      f"database {r['same_database_rows']}, figures {r['same_figures']}")
        else:
            measured = measure_jobs(args.protocol, workdir, tuple(args.iters), tuple(args.n_test))
            record |= measured
            record["schedules"] = [schedule(measured["jobs"], m) for m in args.machines]
            for s in record["schedules"]:
                print(f"{s['machines']:>3} machines: {s['makespan_seconds'] / 3600:.2f} h "
                      f"(speed-up {s['speedup']:.1f}, critical path {s['critical_path_seconds'] / 3600:.2f} h: "
                      f"{' -> '.join(s['critical_path'])})")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
