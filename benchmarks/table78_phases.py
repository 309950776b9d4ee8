#!/usr/bin/env python
"""Where the time of a finished Tables 7-8 run went: per phase, per job, per training epoch.

Reads what the protocol runner recorded while it ran (each job's wall time in ``summary.json``,
each training epoch's seconds and images/s in ``models/<name>/train.json``, each attack's
crafting time in ``whitebox.json``, and for AutoAttack each component's) and writes them, with the run's command, seed, data
checksums, versions and machine, to one JSON file. Nothing is re-timed.

Usage::

    python -m benchmarks.table78_phases runs/table7-8-cpu --out benchmarks/results/table78-cpu-phases.json

It also says what the jobs would have taken with every decoupled model at the cost of the Baseline
with the same training (``baseline_cost_floor``): the time no speed-up of the decoupled operators
can remove on that machine. For a run whose folder is gone, from its stored phase times and report::

    python -m benchmarks.table78_phases --floor-of benchmarks/results/<phases>.json figures/tables78.json --out ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.harness.report import write_result
from robustbench_dc.reproduce import build_tables, phase_seconds

REPO = Path(__file__).resolve().parents[1]


def baseline_cost_floor(summary: dict) -> dict | None:
    """What the run's jobs would have taken if every decoupled model had cost exactly what the
    Baseline with the same training costs (its training and white-box job seconds in place of
    theirs; the source model, transfer and figures as recorded): the part of the wall time no
    speed-up of the decoupled operators can remove on this machine. None if a Baseline is missing."""
    jobs = summary.get("job_seconds") or {}
    models = summary["models"]
    baseline = {m.get("training"): name for name, m in models.items()
                if m.get("label") == "Baseline" and m.get("role", "model") == "model"}
    total, per_phase = 0.0, {"training": 0.0, "white-box attacks": 0.0, "other": 0.0}
    for key, seconds in jobs.items():
        kind, _, name = key.partition(":")
        m = models.get(name)
        if kind in ("train", "whitebox") and m is not None and m.get("role", "model") == "model":
            base = baseline.get(m.get("training"))
            if base is None or f"{kind}:{base}" not in jobs:
                return None
            seconds = jobs[f"{kind}:{base}"]
        per_phase["training" if kind == "train" else "white-box attacks" if kind == "whitebox" else "other"] += seconds
        total += seconds
    return {"total_seconds": total, "phase_seconds": per_phase,
            "recorded_total_seconds": sum(jobs.values()),
            "meaning": "every decoupled model's training and white-box jobs at the cost of the Baseline with the same "
                       "training; source, transfer and figures as recorded"}


def measure(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    tables = build_tables(summary)
    training, attacks = {}, {}
    for name in summary["models"]:
        tr = run_dir / "models" / name / "train.json"
        if tr.is_file():
            t = json.loads(tr.read_text())
            training[name] = {"job_seconds": summary["job_seconds"].get(f"train:{name}"), "compiled": t.get("compiled"),
                              "iterations": t.get("iterations"),
                              "epoch_seconds": [h.get("seconds") for h in t["history"]],
                              "images_per_second": [h.get("images_per_second") for h in t["history"]]}
        wb = run_dir / "models" / name / "whitebox.json"
        if wb.is_file():
            w = json.loads(wb.read_text())
            job = summary["job_seconds"].get(f"whitebox:{name}")
            crafting = {r["attack"]: r["seconds"] for r in w["results"]}
            attacks[name] = {"job_seconds": job, "crafting_seconds": crafting,
                             "n": {r["attack"]: r["n"] for r in w["results"]},
                             # the rest of the job: clean scoring, the masking flags and the indicators
                             "other_seconds": None if job is None else job - sum(crafting.values()),
                             # an ensemble's time per component (AutoAttack's APGD-CE, APGD-T, FAB-T, Square)
                             "components": {r["attack"]: {c["component"]: {"seconds": c.get("seconds"),
                                                                           "attacked": c.get("attacked")}
                                                          for c in r["components"]}
                                            for r in w["results"] if r.get("components")}}
    return {"run_dir": str(run_dir), "run_id": summary.get("run_id"), "protocol": summary.get("protocol"),
            "run_command": summary.get("command"), "seed": summary.get("seed"),
            "data_sha256": {"test": summary.get("data_sha256"), "train": summary.get("train_data_sha256")},
            "versions": summary.get("versions"), "machine": summary.get("machine"),
            "started": summary.get("started"), "finished": summary.get("finished"),
            "phase_seconds": phase_seconds(tables), "job_seconds": summary.get("job_seconds"),
            "training": training, "whitebox": attacks, "baseline_cost_floor": baseline_cost_floor(summary)}


def floor_of_report(phases: Path, report: Path) -> dict:
    """:func:`baseline_cost_floor` of a run whose folder is gone, from its stored phase times (this
    script's output) and its report (``figures/tables78.json``: which model is which)."""
    ph, rep = json.loads(phases.read_text()), json.loads(report.read_text())
    if ph.get("run_id") != rep["provenance"].get("run_id"):
        raise SystemExit(f"{phases} and {report} come from different runs "
                         f"({ph.get('run_id')} vs {rep['provenance'].get('run_id')})")
    models = {name: {"label": label, "training": training, "role": "model"}
              for training, ops in rep["models"].items() for label, name in ops.items()}
    if rep.get("source"):
        models[rep["source"]] = {"label": "Baseline", "training": "natural", "role": "source"}
    return {"phases_file": str(phases), "report_file": str(report), "run_id": ph.get("run_id"),
            "machine": ph.get("machine"),
            "baseline_cost_floor": baseline_cost_floor({"job_seconds": ph["job_seconds"], "models": models})}


def _print_floor(floor: dict | None) -> None:
    if floor is not None:
        print(f"jobs: {floor['recorded_total_seconds'] / 60:.1f} min; with every decoupled model at the Baseline's "
              f"cost: {floor['total_seconds'] / 60:.1f} min")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, nargs="?")
    p.add_argument("--floor-of", nargs=2, type=Path, metavar=("PHASES_JSON", "REPORT_JSON"),
                   help="instead of a run folder: the Baseline-cost floor of a stored run from its phase times and "
                        "its tables78.json")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    command = {"command": [Path(sys.executable).name, *sys.argv]}
    if args.floor_of is not None:
        out = command | floor_of_report(*args.floor_of)
    elif args.run_dir is not None:
        out = command | measure(args.run_dir)
        print(json.dumps(out["phase_seconds"], indent=1))
    else:
        p.error("give a run folder or --floor-of PHASES_JSON REPORT_JSON")
    _print_floor(out["baseline_cost_floor"])
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
