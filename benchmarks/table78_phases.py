#!/usr/bin/env python
"""Where the time of a finished Tables 7-8 run went: per phase, per job, per training epoch.

Reads what the protocol runner recorded while it ran (each job's wall time in ``summary.json``,
each training epoch's seconds and images/s in ``models/<name>/train.json``, each attack's
crafting time in ``whitebox.json``, and for AutoAttack each component's) and writes them, with the run's command, seed, data
checksums, versions and machine, to one JSON file. Nothing is re-timed.

Usage::

    python benchmarks/table78_phases.py runs/table7-8-cpu --out benchmarks/results/table78-cpu-phases.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from robustbench_dc.reproduce import build_tables, phase_seconds  # noqa: E402


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
            "training": training, "whitebox": attacks}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    out = {"command": [Path(sys.executable).name, *sys.argv]} | measure(args.run_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["phase_seconds"], indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
