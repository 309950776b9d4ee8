"""Run a protocol's jobs as Ray tasks: the same job graph, the same files, on one machine or a cluster.

``rbdc run PROTOCOL --executor ray [--address ADDRESS]`` (or ``execute(plan, executor="ray")``).
The driver (this process) walks the plan's job graph: a job is submitted as a Ray task as soon
as every job it consumes is done, so independent jobs (the trainings, then each model's attacks)
run in parallel, each with the resources its kind asks for (the protocol's ``resources`` section
or ``--resources``). Each task runs the job exactly as the local executor does
(:func:`robustbench_dc.protocol.execute.run_job`): it reads what it consumes from the run folder,
writes what it owns there atomically and records its done marker, so the run folder, the
results database (ingested once, by the report job) and the figures end up as with the local
executor, and a re-run (with either executor) does only what is missing.

Storage: the run folder must be one shared folder, at the same absolute path on the driver and
on every node (NFS, a cluster filesystem, or a single machine); so must the data
(``$RBDC_DATA``, which the driver passes on to the tasks) and any operator plugin file.

A job that fails is reported with its name and error; the jobs that need it are skipped and
every other job still runs. A task runs with as many torch threads as it asks for CPUs, and a
job asks, unless told otherwise, for as many as the driver's torch uses (what a local run would
use): the thread count changes floating-point results, so with the same resources both
executors give the same numbers. ``--resources all=cpus:1`` runs one job per core.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

from robustbench_dc.errors import InvalidParameterError, UserError
from robustbench_dc.protocol.plan import Job, Plan

__all__ = ["RayMissingError", "execute_ray", "ray_options"]

log = logging.getLogger(__name__)


class RayMissingError(UserError, ImportError):
    """``--executor ray`` without Ray installed."""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayMissingError('the ray executor needs Ray: pip install "robustbench-dc[ray]" '
                              f"(or pip install ray); import failed: {exc}") from None
    return ray


def ray_options(resources: dict[str, float]) -> dict[str, Any]:
    """``@ray.remote`` options for one job kind's resources (``cpus``, ``gpus``, ``memory`` in bytes)."""
    opts: dict[str, Any] = {"num_cpus": resources["cpus"], "num_gpus": resources.get("gpus", 0.0),
                            "max_retries": 0}
    if resources.get("memory"):
        opts["memory"] = int(resources["memory"])
    return opts


def _error_line(exc: BaseException) -> str:
    """The job's own exception as one line (Ray wraps it in a RayTaskError with the remote traceback)."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}".rstrip(": ")


def execute_ray(plan: Plan, run_dir: Path, status: dict[str, bool], result: Any, *, started: str,
                command: str | None, on_job: Callable[[Job, str, float], None] | None, address: str | None,
                resources: dict[str, dict[str, float]], run_one: Callable[..., float]) -> None:
    """Run the jobs of ``plan`` not marked done in ``status`` on Ray (see the module docstring).

    ``run_one(plan, run_dir, job_id, started, command, cpus) -> seconds`` runs one job in a worker: the
    executor's own job function (:func:`robustbench_dc.protocol.execute.run_one`), passed in so that this
    module needs nothing from the module that calls it. ``result`` (a ``RunResult``) is filled in."""
    ray = _import_ray()
    started_here = False
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in ("RBDC_DATA", "RBDC_CACHE", "PYTHONPATH") if k in os.environ}
        init: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False,
                                "runtime_env": {"env_vars": env} if env else None}
        if address is None and os.environ.get("RAY_ADDRESS") is None:
            init["num_cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        try:
            ray.init(**init)
        except ConnectionError as exc:
            raise UserError(f"--address {address}: cannot join the Ray cluster: {exc}") from None
        started_here = True
    try:
        _drive(ray, plan, run_dir.resolve(), status, result, started=started, command=command, on_job=on_job,
               resources=resources, run_one=run_one)
    finally:
        if started_here:
            ray.shutdown()


def _drive(ray: Any, plan: Plan, run_dir: Path, status: dict[str, bool], result: Any, *, started: str,
           command: str | None, on_job: Callable[[Job, str, float], None] | None,
           resources: dict[str, dict[str, float]], run_one: Callable[..., float]) -> None:
    total = ray.cluster_resources()
    for kind in sorted({job.kind for job in plan.jobs if not status.get(job.id)}):
        for name, key in (("cpus", "CPU"), ("gpus", "GPU")):
            want, have = resources[kind].get(name, 0.0), float(total.get(key, 0.0))
            if want > have:  # Ray would wait for it forever
                raise InvalidParameterError(f"resources: {kind} jobs ask for {want:g} {name} but the Ray cluster "
                                            f"has {have:g}; lower it (--resources {kind}={name}:{have:g}) or add nodes")
    remote = ray.remote(run_one)
    plan_ref = ray.put(plan)
    done = {job_id for job_id, ok in status.items() if ok}
    pending = {job.id: job for job in plan.jobs}
    for job in plan.jobs:
        if job.id in done:
            del pending[job.id]
            result.cached.append(job.id)
            if on_job:
                on_job(job, "cached", 0.0)
    running: dict[Any, Job] = {}
    blocked: set[str] = set()  # jobs that need a failed (or skipped) job

    def submit_ready() -> None:
        for job in list(pending.values()):
            if any(d in blocked for d in job.deps):
                del pending[job.id]
                blocked.add(job.id)
                result.skipped.append(job.id)
                if on_job:
                    on_job(job, "skipped", 0.0)
            elif all(d in done for d in job.deps):
                del pending[job.id]
                res = resources[job.kind]
                ref = remote.options(**ray_options(res)).remote(plan_ref, str(run_dir), job.id, started, command,
                                                                res["cpus"])
                running[ref] = job
                if on_job:
                    on_job(job, "started", 0.0)

    submit_ready()
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        job = running.pop(ready[0])
        try:
            seconds = float(ray.get(ready[0]))
        except Exception as exc:  # noqa: BLE001 - a job's own error: report it, keep the others going
            result.failed[job.id] = _error_line(exc)
            blocked.add(job.id)
            log.error("job %s failed: %s", job.id, result.failed[job.id])
            if on_job:
                on_job(job, "failed", 0.0)
        else:
            done.add(job.id)
            result.executed.append(job.id)
            if on_job:
                on_job(job, "done", seconds)
        submit_ready()
