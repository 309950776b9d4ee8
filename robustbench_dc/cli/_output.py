"""Printing shared by the commands (only the CLI prints; the library logs)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from robustbench_dc._text import table

__all__ = ["table", "fmt", "print_results", "breakdown_text", "print_masking_warnings", "write_json", "write_results",
           "print_job", "print_plan", "duration"]


def fmt(v: float | None) -> str:
    """A number in 5 significant digits; ``-`` for None; nan/inf as such."""
    if v is None:
        return "-"
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    return f"{v:.5g}"


def print_results(results: list[Any]) -> None:
    """One row per attack result (white-box or transfer cell)."""
    rows = []
    for r in results:
        rows.append((r.source or "-", r.model, r.attack, r.spec.get("backend", "native"), f"{r.eps:.4g}",
                     f"{100 * r.clean_accuracy:.1f}", f"{100 * r.robust_accuracy:.1f}",
                     "-" if r.attack_success_rate != r.attack_success_rate else f"{100 * r.attack_success_rate:.1f}",
                     "-" if r.max_perturbation is None else f"{r.max_perturbation:.4g}", f"{r.seconds:.1f}"))
    print(table(rows, ("source", "model", "attack", "backend", "eps", "clean %", "robust %", "success %",
                       "max norm", "seconds")))


def breakdown_text(result: Any) -> str:
    """AutoAttack's log for one ensemble result: each component's budget and the robust accuracy after it."""
    rows = []
    for c in result.components:
        budget = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in c["budget"].items()) or "-"
        rows.append((c["component"], c["backend"] or "-", budget, str(c["attacked"]),
                     f"{100 * c['robust_accuracy']:.1f}", f"{c['seconds']:.1f}", str(c.get("forward_passes", "-")),
                     str(c.get("backward_passes", "-"))))
    return f"{result.attack}: robust accuracy after each component\n" + table(
        rows, ("component", "backend", "budget", "attacked", "robust %", "seconds", "forward passes",
               "backward passes"))


def binarization_text(binarization: dict[str, Any]) -> str:
    """The one-line verdict of a stored binarization test."""
    from robustbench_dc.evaluation.binarization import BinarizationResult

    return BinarizationResult(**binarization).summary()


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` (if given) and say so."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, default=str))  # str(): paths, dtypes
        print(f"results: {path}")


def print_masking_warnings(flags: list[Any], target: str | None = None) -> None:
    """One ``WARNING`` line per triggered gradient-masking flag (of ``target``, when given)."""
    where = f" on {target}" if target else ""
    for flag in flags:
        if flag.triggered:
            print(f"WARNING possible gradient masking{where} [{flag.name}]: {flag.message}")


def write_results(args: Any, key: str, result: Any, data_sha256: str, model: Any = None,
                  extra: dict[str, Any] | None = None) -> None:
    """``--json``: ``{key: result, **extra, "provenance": ...}`` built from the command's own arguments (and
    the model: where it came from, its checkpoint, the sha256 of a user's model file)."""
    from robustbench_dc.provenance import provenance

    prov = provenance(command=getattr(args, "command_line", None), seed=args.seed, data_sha256=data_sha256)
    if model is not None:
        prov["model"] = {"name": model.name, "arch": model.arch, "operator": model.operator,
                         "checkpoint": None if model.checkpoint is None else str(model.checkpoint),
                         "source_sha256": model.source_sha256}
    write_json(args.json, {key: result.to_dict(), **(extra or {}), "provenance": prov})


def print_job(job: Any, status: str, seconds: float, counter: list[int], total: int) -> None:
    """One line per protocol job: ``[ 3/12] whitebox mnist-tanh   done in 4.2s``. When stdout is
    not a terminal (a log file of a run in the background), also a line when a job starts, and
    the wall-clock time on each line, so that the log shows what is running."""
    import sys
    import time

    logging_to_file = not sys.stdout.isatty()
    what = job.id.replace(":", " ")
    of = f"/{total}" if total else ""
    clock = time.strftime("%H:%M:%S ") if logging_to_file else ""
    if status == "started":
        if logging_to_file:
            print(f"{clock}[{counter[0] + 1:>2}{of}] {what:<40} started", flush=True)
        return
    counter[0] += 1
    tail = f"done in {seconds:.1f}s" if status == "done" else status
    print(f"{clock}[{counter[0]:>2}{of}] {what:<40} {tail}", flush=True)


def duration(seconds: float) -> str:
    """``"42 s"``, ``"12 min"``, ``"2.5 h"``: an estimated time as the dry runs and ``rbdc zoo list`` show it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def print_plan(plan: Any, cached: dict[str, bool]) -> None:
    """A dry run: the job plan, what is cached, each job's estimated time on this machine and where
    the estimate comes from (:func:`~robustbench_dc.protocol.estimate.estimate_jobs`), the total, and
    the user's code files the protocol runs."""
    from robustbench_dc.protocol.estimate import estimate_jobs
    from robustbench_dc.runtime import machine_kind

    estimates = estimate_jobs(plan, cached)

    print(f"plan for {plan.protocol.name} -> {plan.output} ({len(plan.jobs)} jobs)")
    for job in plan.jobs:
        e = estimates[job.id]
        state = "cached" if cached.get(job.id) else "to run"
        when = "" if state == "cached" else (f"  ~{duration(e.seconds)} ({e.source})" if e.seconds is not None
                                             else f"  ({e.source})")
        print(f"  {job.id:<44} {state:<7} key {job.key[:12]}{when}")
    todo = [estimates[j.id] for j in plan.jobs if not cached.get(j.id)]
    known = [e.seconds for e in todo if e.seconds is not None]
    unknown = len(todo) - len(known)
    total = f"~{duration(sum(known))}" if known else "unknown"
    print(f"estimated time on this machine ({machine_kind()}): {total} for {len(todo)} job(s) to run"
          + (f", {unknown} of them without an estimate" if unknown else ""))
    if plan.code_files:
        print("code this protocol runs besides the package's: " + ", ".join(str(p) for p in plan.code_files))
    else:
        print("code this protocol runs besides the package's: none")
