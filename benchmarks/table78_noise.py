#!/usr/bin/env python
"""How close two runs of the same Tables 7-8 protocol are: the run-to-run noise of the report.

Compares every number of Tables 7-8 (white-box, black-box, the strong attacks) between two run
folders of the same protocol and seed (for example one in this checkout and one in a fresh clone),
and whether their trained checkpoints are bit-identical. Writes the differences, both runs'
provenance (commands, versions, machines) and the largest difference to one JSON file.

Usage::

    python benchmarks/table78_noise.py runs/table7-8-cpu ../clone/runs/table7-8-cpu \\
        --out benchmarks/results/table78-cpu-noise.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from robustbench_dc.reproduce import build_tables  # noqa: E402


def _cells(tables) -> dict[str, float | None]:
    out = {}
    for table, grid in (("table7", tables.white), ("table8", tables.black)):
        for training, rows in grid.items():
            for attack, cols in rows.items():
                for op, value in cols.items():
                    out[f"{table}/{training}/{attack}/{op}"] = value
    return out


def compare(run_a: Path, run_b: Path) -> dict:
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (run_a, run_b))
    ca, cb = _cells(build_tables(sa)), _cells(build_tables(sb))
    diffs = {k: (ca.get(k), cb.get(k)) for k in sorted(set(ca) | set(cb))}
    numeric = [abs(a - b) for a, b in diffs.values() if a is not None and b is not None]
    ckpt = {name: (m.get("checkpoint_sha256"), sb["models"].get(name, {}).get("checkpoint_sha256"))
            for name, m in sa["models"].items()}
    return {
        "runs": [str(run_a), str(run_b)],
        "same_protocol": (sa.get("protocol") or {}).get("sha256") == (sb.get("protocol") or {}).get("sha256"),
        "same_seed": sa.get("seed") == sb.get("seed"),
        "same_data": sa.get("data_sha256") == sb.get("data_sha256"),
        "n_numbers": len(numeric),
        "max_abs_difference": max(numeric) if numeric else None,
        "n_different": sum(1 for d in numeric if d > 0),
        "checkpoints_identical": {k: a == b and a is not None for k, (a, b) in ckpt.items()},
        "differences": {k: {"a": a, "b": b} for k, (a, b) in diffs.items() if a != b},
        "provenance": [{k: s.get(k) for k in ("run_id", "command", "versions", "machine", "started", "finished")}
                       for s in (sa, sb)],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    out = {"command": [Path(sys.executable).name, *sys.argv]} | compare(args.run_a, args.run_b)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{out['n_numbers']} numbers, {out['n_different']} differ, largest difference "
          f"{out['max_abs_difference']}; checkpoints identical: "
          f"{sum(out['checkpoints_identical'].values())}/{len(out['checkpoints_identical'])}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
