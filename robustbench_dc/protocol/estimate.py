"""How long a protocol's jobs will take, from the suite's own measurements (for ``--dry-run``).

Every job a run finishes is appended to this machine's timing log, ``$RBDC_HOME/timings.jsonl``
(default ``~/.cache/robustbench_dc/``): the protocol's name and sha256, the job, its seconds,
its torch threads and the machine (CPU model, vector capability, cores). The package also ships
the job times of its bundled protocols measured on the project's machines
(``protocols/timings.json``, written by ``scripts/bundled_timings.py`` from run folders, each
with its run's command, machine and versions).

An estimate for a job is, in this order: 0 when it is cached; the newest time of the same job of
the same protocol file (sha256) measured on this kind of machine; the same measured on another
machine (named); the same job of another version of the protocol; the median of the plan's
other jobs of the same kind that have an estimate (a submission's new entry, say). Otherwise
there is no estimate, and the dry run says so.
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from robustbench_dc.protocol.plan import Job, Plan
from robustbench_dc.runtime import machine_kind, read_timings, record_timing

__all__ = ["JobEstimate", "estimate_jobs", "record_job_time", "bundled_timings"]

log = logging.getLogger(__name__)


def record_job_time(plan: Plan, job: Job, seconds: float, threads: int) -> None:
    """Append one finished job of a protocol to this machine's timing log (best effort)."""
    record_timing({"protocol": plan.protocol.name, "protocol_sha256": plan.provenance.get("sha256"), "job": job.id,
                   "kind": job.kind, "seconds": round(float(seconds), 3), "threads": int(threads),
                   "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def bundled_timings() -> list[dict[str, Any]]:
    """The job times shipped with the package (``protocols/timings.json``), one record per job."""
    from robustbench_dc.resources import resource_dir

    path = resource_dir("protocols") / "timings.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    out = []
    for run in data.get("runs", []):
        for job, seconds in (run.get("job_seconds") or {}).items():
            out.append({"protocol": run.get("protocol"), "protocol_sha256": run.get("protocol_sha256"), "job": job,
                        "seconds": seconds, "machine": run.get("machine"), "finished": run.get("finished")})
    return out


@dataclass
class JobEstimate:
    """A job's estimated seconds (None: no estimate) and where the estimate comes from."""

    seconds: float | None
    source: str


def _newest(records: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    records = list(records)
    return max(records, key=lambda r: str(r.get("finished") or "")) if records else None


def estimate_jobs(plan: Plan, cached: dict[str, bool] | None = None) -> dict[str, JobEstimate]:
    """Each job's estimated time on this machine (see the module's docstring for the sources)."""
    cached = cached or {}
    here = machine_kind()
    measured = read_timings() + bundled_timings()
    name, sha = plan.protocol.name, plan.provenance.get("sha256")
    out: dict[str, JobEstimate] = {}
    for job in plan.jobs:
        same = [r for r in measured if r["job"] == job.id and r.get("protocol") == name]
        exact = [r for r in same if sha is not None and r.get("protocol_sha256") == sha]
        for pool, what in ((exact, "this protocol"), (same, "another version of this protocol")):
            local = _newest(r for r in pool if r.get("machine") == here)
            other = _newest(pool)
            if local is not None:
                out[job.id] = JobEstimate(float(local["seconds"]), f"measured on this machine ({what})")
                break
            if other is not None:
                out[job.id] = JobEstimate(float(other["seconds"]), f"measured on {other.get('machine')} ({what})")
                break
    seconds = {job_id: e.seconds for job_id, e in out.items() if e.seconds is not None}  # measured only
    for job in plan.jobs:
        if job.id in out:
            continue
        like = [seconds[j.id] for j in plan.jobs if j.kind == job.kind and j.id in seconds]
        if like:
            out[job.id] = JobEstimate(float(statistics.median(like)),
                                      f"median of this plan's other {len(like)} {job.kind} job(s)")
    # a median stands for a job never measured; a cached job costs nothing
    return {job.id: JobEstimate(0.0, "cached") if cached.get(job.id) else
            out.get(job.id, JobEstimate(None, "no estimate: never measured")) for job in plan.jobs}
