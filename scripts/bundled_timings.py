#!/usr/bin/env python
"""Write the job times that ship with the package (``protocols/timings.json``), which
``rbdc run --dry-run`` and ``rbdc leaderboard submit --dry-run`` use to estimate a run's time
on a machine that has not run it yet.

Each source is a finished run of a bundled protocol: a run folder (its ``summary.json``) or a
phases file of ``benchmarks/table78_phases.py``. Per run the file keeps the protocol's name and
sha256, each job's seconds as the runner recorded them, the machine (CPU model, vector
capability, cores), the command that made the run, the library versions and when it finished.
Nothing is typed by hand. Usage::

    rbdc run quickstart --out runs/quickstart
    python scripts/bundled_timings.py runs/quickstart runs/leaderboard-mnist \\
        benchmarks/results/2026-12-03-table78-cpu-phases-amx-b500.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from robustbench_dc.runtime import machine_kind

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "robustbench_dc" / "resources" / "protocols" / "timings.json"


def run_record(source: Path) -> dict:
    data = json.loads((source / "summary.json" if source.is_dir() else source).read_text())
    protocol = data.get("protocol") or {}
    return {"protocol": protocol.get("name"), "protocol_sha256": protocol.get("sha256"),
            "run_id": data.get("run_id"), "command": data.get("run_command") or data.get("command"),
            "machine": machine_kind(data.get("machine") or {}), "versions": data.get("versions"),
            "finished": data.get("finished"),
            "job_seconds": {k: round(float(v), 2) for k, v in (data.get("job_seconds") or {}).items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", type=Path, help="run folders or phases files")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    runs = [run_record(s) for s in args.sources]
    payload = {"command": "python scripts/bundled_timings.py " + " ".join(map(str, args.sources)), "runs": runs}
    args.out.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}: {sum(len(r['job_seconds']) for r in runs)} job times from {len(runs)} runs",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
