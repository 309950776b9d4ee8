#!/usr/bin/env python
"""How close two runs of the same Tables 7-8 protocol are: the run-to-run noise of the report.

Compares every number of Tables 7-8 (white-box, black-box, the strong attacks) between two run
folders of the same protocol and seed (for example one in this checkout and one in a fresh clone),
and whether their trained checkpoints are bit-identical. A partial re-run (some of the models) is
compared on the numbers both runs have; the others are listed as present in one run only. Either run may instead be a committed
report (``figures/tables78.json``: the numbers and provenance of the run that made it). Writes the differences, both runs'
provenance (commands, versions, machines) and the largest difference to one JSON file.

Usage::

    python -m benchmarks.table78_noise runs/table7-8-cpu ../clone/runs/table7-8-cpu \\
        --out benchmarks/results/table78-cpu-noise.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.harness.report import write_result
from robustbench_dc.reproduce import build_tables, judge_claims

REPO = Path(__file__).resolve().parents[1]


def _cells(tables) -> dict[str, float | None]:
    out = {}
    for table, grid in (("table7", tables.white), ("table8", tables.black)):
        for training, rows in grid.items():
            for attack, cols in rows.items():
                for op, value in cols.items():
                    out[f"{table}/{training}/{attack}/{op}"] = value
    return out


def _load(path: Path) -> tuple[dict[str, float | None], dict, dict, dict[str, str]]:
    """(cells, provenance, checkpoint sha256 per model, verdict per claim of the paper) of a run folder or of a committed report
    (``figures/tables78.json``, which keeps the numbers and provenance but not the checkpoints)."""
    if path.is_file():
        report = json.loads(path.read_text())
        cells = {}
        for table, grid in (("table7", report["ours"]["white_box"]), ("table8", report["ours"]["black_box"])):
            for training, rows in grid.items():
                for attack, cols in rows.items():
                    for op, value in cols.items():
                        cells[f"{table}/{training}/{attack}/{op}"] = value
        prov = report["provenance"]
        prov = {**prov, "protocol_sha256": (prov.get("protocol") or {}).get("sha256"),
                "trained_with": {name: s.get("trained_with") for name, s in report.get("settings", {}).items()}
                or "not recorded in the report"}
        return cells, prov, {}, {c["key"]: c["status"] for c in report["claims"]}
    summary = json.loads((path / "summary.json").read_text())
    prov = {k: summary.get(k) for k in ("run_id", "command", "versions", "machine", "started", "finished", "seed",
                                        "data_sha256")}
    prov["protocol_sha256"] = (summary.get("protocol") or {}).get("sha256")
    # what precision="auto" and compile="auto" resolved to per model: they differ between CPUs
    prov["trained_with"] = {name: m.get("trained_with") for name, m in summary["models"].items()}
    ckpt = {name: m.get("checkpoint_sha256") for name, m in summary["models"].items()}
    tables = build_tables(summary)
    return _cells(tables), prov, ckpt, {c.key: c.status for c in judge_claims(tables)}


def compare(run_a: Path, run_b: Path) -> dict:
    """Compare two runs; either may be a committed report file instead of a run folder."""
    (ca, pa, ka, va), (cb, pb, kb, vb) = _load(run_a), _load(run_b)
    evaluated = [k for k in va if k in vb and "not evaluated" not in (va[k], vb[k])]
    diffs = {k: (ca.get(k), cb.get(k)) for k in sorted(set(ca) | set(cb))}
    numeric = [abs(a - b) for a, b in diffs.values() if a is not None and b is not None]
    return {
        "runs": [str(run_a), str(run_b)],
        # a partial re-run (a subset of the models) compares the cells both runs have
        "only_in_a": sorted(k for k, (a, b) in diffs.items() if a is not None and b is None),
        "only_in_b": sorted(k for k, (a, b) in diffs.items() if a is None and b is not None),
        "same_protocol": pa["protocol_sha256"] == pb["protocol_sha256"],
        "same_seed": pa.get("seed") == pb.get("seed"),
        "same_data": pa.get("data_sha256") == pb.get("data_sha256"),
        "n_numbers": len(numeric),
        "max_abs_difference": max(numeric) if numeric else None,
        "n_different": sum(1 for d in numeric if d > 0),
        "checkpoints_identical": ({k: ka[k] == kb[k] and ka[k] is not None for k in ka if k in kb} if ka and kb else
                                  "not compared: a committed report keeps no checkpoints"),
        # the paper's claims judged on each run: does the noise change a conclusion?
        "claims": {k: {"a": va.get(k), "b": vb.get(k)} for k in sorted(set(va) | set(vb))},
        "claims_same_verdict": {"evaluated_in_both": len(evaluated),
                                "same": sum(1 for k in evaluated if va[k] == vb[k])},
        "differences": {k: {"a": a, "b": b} for k, (a, b) in diffs.items()
                        if a is not None and b is not None and a != b},
        "provenance": [pa, pb],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--note", default=None, help="what the two runs are, stored with the result (e.g. how a partial "
                                                "re-run's protocol was derived)")
    args = p.parse_args(argv)
    out = {"command": [Path(sys.executable).name, *sys.argv]} | ({"note": args.note} if args.note else {}) \
        | compare(args.run_a, args.run_b)
    ck = out["checkpoints_identical"]
    ck_text = f"{sum(ck.values())}/{len(ck)}" if isinstance(ck, dict) else ck
    partial = f" ({len(out['only_in_a'])} only in A, {len(out['only_in_b'])} only in B)" \
        if out["only_in_a"] or out["only_in_b"] else ""
    print(f"{out['n_numbers']} numbers in both runs{partial}, {out['n_different']} differ, largest difference "
          f"{out['max_abs_difference']}; checkpoints identical: {ck_text}")
    cv = out["claims_same_verdict"]
    print(f"claims judged in both runs: {cv['evaluated_in_both']}, same verdict: {cv['same']}")
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
