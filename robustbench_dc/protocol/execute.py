"""Execute a plan locally, job by job, writing every artifact atomically into the run folder.

Run folder::

    RUN/summary.json, RUN/leaderboard.md     the report (also ingested into the results DB)
    RUN/models/<name>/model.pt, train.json   training
    RUN/models/<name>/whitebox.json          white-box results + masking flags
    RUN/models/<name>/sweep-<attack>.json    eps sweeps
    RUN/models/<name>/lipschitz.json         Lipschitz estimates
    RUN/models/<name>/embedding.npz          2-D features of the test set (2-D models)
    RUN/transfer.json                        transfer matrix
    RUN/figures/                             figures
    RUN/.jobs/<job>.json                     done markers: the job's key
    RUN/.work/                               resumable training checkpoints, attack cache

A job is skipped when its marker holds its current key and its outputs exist. Every file
is written to a temporary name and renamed, so a run killed at any point leaves either the
old file or the new one; leftover temporary files are removed when a run starts.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from robustbench_dc._atomic import atomic_write_bytes
from robustbench_dc.errors import InvalidParameterError, UsageError, UserError
from robustbench_dc.evaluation.binarization import binarization_config
from robustbench_dc.evaluation.masking import masking_config
from robustbench_dc.protocol.plan import Job, Plan, results_db
from robustbench_dc.provenance import package_versions
from robustbench_dc.runtime import machine_info
from robustbench_dc.zoo import ZooModel

__all__ = ["EXECUTORS", "JobsFailed", "RunResult", "execute", "job_resources", "job_status", "job_threads", "results_db",
           "run_job"]

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    leaderboard: str = ""
    written: list[Path] = field(default_factory=list)
    #: jobs that raised (Ray executor): job id -> error; ``skipped``: jobs that needed a failed one
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def _write_json(path: Path, obj: Any, sort_keys: bool = True) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=sort_keys, default=_json_default).encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _marker(run_dir: Path, job: Job) -> Path:
    return run_dir / ".jobs" / (job.id.replace(":", "__") + ".json")


def _outputs(run_dir: Path, job: Job, plan: Plan) -> list[Path]:
    m = run_dir / "models" / (job.model or "")
    return {
        "train": [m / "model.pt", m / "train.json"],
        "whitebox": [m / "whitebox.json"],
        "curve": [m / "curve.json"],
        "sweep": [m / f"sweep-{job.config.get('label', '')}.json"],
        "lipschitz": [m / "lipschitz.json"],
        "embedding": [m / "embedding.npz"],
        "transfer": [run_dir / "transfer.json"],
        "figures": [run_dir / "figures" / ".done"],
        "report": [run_dir / "summary.json"],
    }[job.kind]


def job_status(plan: Plan, run_dir: Path | None = None) -> dict[str, bool]:
    """``{job id: cached?}`` for every job of the plan."""
    run_dir = run_dir or plan.output
    status = {}
    for job in plan.jobs:
        marker = _marker(run_dir, job)
        done = False
        if marker.is_file():
            try:
                done = json.loads(marker.read_text()).get("key") == job.key
            except (OSError, ValueError):
                done = False
        status[job.id] = done and all(p.exists() for p in _outputs(run_dir, job, plan))
    return status


def _clean_temporaries(run_dir: Path) -> int:
    removed = 0
    for p in run_dir.rglob(".*.tmp"):
        try:
            p.unlink()
            removed += 1
        except OSError:
            pass
    return removed


class _Context:
    """Data and models shared by the jobs of one execution (loaded lazily, once)."""

    def __init__(self, plan: Plan, run_dir: Path, progress: bool, command: str | None = None) -> None:
        self.plan, self.run_dir, self.progress, self.command = plan, run_dir, progress, command
        self.started: str | None = None  # when the run first started (a resumed run keeps it)
        self._data: dict[str, Any] = {}
        self._models: dict[str, Any] = {}

    def data(self, split: str) -> Any:
        from robustbench_dc.data import load_dataset

        if split not in self._data:
            ds = self.plan.protocol.dataset
            n = ds.n_train if split == "train" else ds.n_test
            self._data[split] = load_dataset(ds.name, split, n=n, data_dir=ds.data_dir)
        return self._data[split]

    def test_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.data("test")
        return d.to_float(), d.labels

    def model(self, name: str) -> Any:
        if name not in self._models:
            m = self.plan.models[name].build(self.plan.base_dir, self.run_dir / "models" / name / "model.pt")
            self._models[name] = m.eval()
        return self._models[name]


# ----------------------------------------------------------------------------- jobs


def _job_model(job: Job) -> str:
    """The model a per-model job works on (every job kind but transfer, figures and report has one)."""
    if job.model is None:
        raise ValueError(f"job {job.id}: a per-model job without a model")
    return job.model


def _run_train(ctx: _Context, job: Job) -> None:
    from robustbench_dc.training import train

    name = _job_model(job)
    rm = ctx.plan.models[name]
    model = rm.build(ctx.plan.base_dir)
    work = ctx.run_dir / ".work" / f"train-{name}-{job.key[:12]}"
    result = train(model, ctx.data("train"), rm.recipe, out_dir=work, eval_data=ctx.data("test"),
                   progress=ctx.progress)
    dest = ctx.run_dir / "models" / name
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dest / "model.pt", (work / "model.pt").read_bytes())
    _write_json(dest / "train.json", {"history": result.history, "recipe": rm.recipe, "model_sha256": result.sha256,
                                      "iterations": result.iterations, "compiled": result.compiled,
                                      "precision": result.precision,
                                      "config": rm.config(),
                                      "training": rm.training})
    shutil.rmtree(work, ignore_errors=True)


def _run_whitebox(ctx: _Context, job: Job) -> None:
    from robustbench_dc.evaluation import evaluate_whitebox
    from robustbench_dc.protocol.plan import attack_prefix

    name = _job_model(job)
    x, y = ctx.test_tensors()
    ev = ctx.plan.protocol.evaluation
    res = evaluate_whitebox(ctx.model(name), x, y, ctx.plan.attacks, batch_size=ev.batch_size,
                            progress=ctx.progress, dataset=ctx.plan.models[name].dataset,
                            model_name=name, masking=masking_config(ev.masking) or False,
                            compile=ev.compile, binarization=binarization_config(ev.binarization_test) or False,
                            n_examples=[attack_prefix(a) for a in ev.attacks])
    _write_json(ctx.run_dir / "models" / name / "whitebox.json", res.to_dict())


def _run_curve(ctx: _Context, job: Job) -> None:
    from robustbench_dc.attacks import AttackSpec, resolve_eps
    from robustbench_dc.minimum_norm.evaluate import evaluate_curves

    name = _job_model(job)
    x, y = ctx.test_tensors()
    ev = ctx.plan.protocol.evaluation
    cfg = ev.curves
    assert cfg is not None  # planned only with a curves section
    dataset = ctx.plan.models[name].dataset
    eps_max: dict[str, float] = {tm: resolve_eps(AttackSpec(name="pgd", threat_model=tm), dataset)
                                 for tm in cfg.threat_models}
    wb = _read(ctx.run_dir / "models" / name / "whitebox.json") or {}
    out = evaluate_curves(ctx.model(name), x, y, cfg.attacks, eps_max, fixed=wb.get("results", []), steps=cfg.steps,
                          batch_size=ev.batch_size, n_boot=cfg.n_boot, seed=ctx.plan.protocol.seed)
    _write_json(ctx.run_dir / "models" / name / "curve.json", out)


def _run_sweep(ctx: _Context, job: Job) -> None:
    from robustbench_dc.evaluation import run_eps_sweep

    name = _job_model(job)
    x, y = ctx.test_tensors()
    spec = job.config["attack"]  # resolved at planning
    res = run_eps_sweep(ctx.model(name), x, y, spec, job.config["eps"],
                        batch_size=ctx.plan.protocol.evaluation.batch_size, progress=ctx.progress)
    d = res.to_dict()
    out = {"attack": job.config["label"], "spec": d["spec"], "eps": d["eps"], "robust_accuracy": d["robust_accuracy"],
           "monotone_robust_accuracy": d["monotone_robust_accuracy"], "clean_accuracy": d["clean_accuracy"]}
    _write_json(ctx.run_dir / "models" / name / f"sweep-{job.config['label']}.json", out)


def _run_lipschitz(ctx: _Context, job: Job) -> None:
    from robustbench_dc.lipschitz import clever_score, gradient_norm_estimate

    cfg = ctx.plan.protocol.lipschitz
    assert cfg is not None
    x, y = ctx.test_tensors()
    x, y = x[:cfg.n], y[:cfg.n]
    name = _job_model(job)
    model = ctx.model(name)
    estimates: dict[str, float] = {}
    details = []
    for norm in cfg.norms:
        est = gradient_norm_estimate(model, x, y, norm, "margin", seed=ctx.plan.protocol.seed)
        estimates[f"grad-norm-{norm}"] = est.max
        details.append(est.to_dict())
        if cfg.ball_eps is not None:
            ball = gradient_norm_estimate(model, x, y, norm, "margin", ball_eps=cfg.ball_eps,
                                          seed=ctx.plan.protocol.seed)
            estimates[f"ball-grad-norm-{norm}"] = ball.max
            details.append(ball.to_dict())
        if cfg.clever:
            scores = [clever_score(model, x[i:i + 1], y[i:i + 1], norm=norm, seed=ctx.plan.protocol.seed)
                      for i in range(min(cfg.clever_n, len(y)))]
            estimates[f"clever-{norm}"] = float(np.mean([s.score for s in scores]))
            details.append({"kind": f"clever-{norm}", "scores": [s.to_dict() for s in scores]})
    _write_json(ctx.run_dir / "models" / name / "lipschitz.json",
                {"estimates": estimates, "details": details,
                 "note": "empirical local estimates: lower bounds of the true local Lipschitz constant"})


def _run_embedding(ctx: _Context, job: Job) -> None:
    name = _job_model(job)
    model = ctx.model(name)
    features = getattr(model, "features", None)
    x, y = ctx.test_tensors()
    dest = ctx.run_dir / "models" / name / "embedding.npz"
    with torch.no_grad():
        feats = torch.cat([features(x[i:i + 500]) for i in range(0, len(y), 500)]) if features else None
        # Zoo models compute logits as classifier(features): no second pass over the network.
        logits = model.classifier(feats) if isinstance(model, ZooModel) and feats is not None else \
            torch.cat([model(x[i:i + 500]) for i in range(0, len(y), 500)])
        acc = float((logits.argmax(1) == y).float().mean())
    if feats is None or feats.dim() != 2 or feats.shape[1] != 2:
        # Not a 2-D embedding model: write an empty marker so the job counts as done.
        feats = torch.zeros(0, 2)
        y = torch.zeros(0, dtype=torch.long)
    buf = io.BytesIO()
    np.savez(buf, features=feats.numpy(), labels=y.numpy(), accuracy=np.array(acc))
    atomic_write_bytes(dest, buf.getvalue())


def _run_transfer(ctx: _Context, job: Job) -> None:
    from robustbench_dc.evaluation import evaluate_transfer

    x, y = ctx.test_tensors()
    plan = ctx.plan
    res = evaluate_transfer({s: ctx.model(s) for s in plan.sources}, {t: ctx.model(t) for t in plan.targets}, x, y,
                            plan.transfer_attacks, cache_dir=ctx.run_dir / ".work" / "transfer-cache",
                            batch_size=plan.protocol.evaluation.batch_size, progress=ctx.progress,
                            dataset=next(iter(plan.models.values())).dataset)
    _write_json(ctx.run_dir / "transfer.json", res.to_dict())


def _run_figures(ctx: _Context, job: Job) -> None:
    from robustbench_dc.plots import redraw_run

    _write_summary(ctx, partial=True)
    paths = redraw_run(ctx.run_dir)
    _write_json(ctx.run_dir / "figures" / ".done", {"figures": [str(p) for p in paths]})


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_summary(ctx: _Context, partial: bool = False) -> dict[str, Any]:
    plan, run = ctx.plan, ctx.run_dir
    p = plan.protocol
    models: dict[str, Any] = {}
    transfer = _read(run / "transfer.json")
    for name, rm in plan.models.items():
        d = run / "models" / name
        entry: dict[str, Any] = {"arch": rm.arch, "operator": rm.operator_label, "operator_params": rm.operator_params,
                                 "arch_params": rm.arch_params, "label": rm.label, "training": rm.training,
                                 "recipe": rm.recipe, "role": rm.role, "seed": rm.seed}
        tr = _read(d / "train.json")
        if tr is not None:
            entry["checkpoint"] = str(d / "model.pt")
            entry["checkpoint_sha256"] = tr.get("model_sha256")
            # what the recipe's "auto" settings resolved to on this machine (absent in runs before they were recorded)
            entry["trained_with"] = {k: tr[k] for k in ("precision", "compiled") if k in tr}
            if tr.get("history"):
                entry["final_eval_accuracy"] = tr["history"][-1].get("eval_accuracy")
        wb = _read(d / "whitebox.json")
        if wb is not None:
            entry["clean_accuracy"] = wb["clean_accuracy"]
            entry["whitebox"] = {r["attack"]: {k: r[k] for k in ("robust_accuracy", "attack_success_rate", "eps",
                                                                  "threat_model", "mean_perturbation",
                                                                  "max_perturbation", "n")}
                                 | {"backend": r["spec"].get("backend", "native")}
                                 | ({"components": r["components"]} if r.get("components") else {})
                                 | ({"binarization": r["binarization"]} if r.get("binarization") else {})
                                 for r in wb["results"]}
            worst = list(wb.get("worst", {}).values())
            if worst:
                lowest = min(worst, key=lambda w: w["robust_accuracy"])
                entry["worst_case"] = {"robust_accuracy": lowest["robust_accuracy"],
                                       "interval": _accuracy_interval(lowest.get("robust_correct"), p.seed),
                                       "groups": {k: v["robust_accuracy"] for k, v in wb["worst"].items()}}
            entry["flags"] = {f["name"]: {"triggered": f["triggered"], "value": f["value"], "message": f["message"],
                                          "evaluated": f.get("evaluated", True)} for f in wb.get("flags", [])}
        cv = _read(d / "curve.json")
        if cv is not None:  # the per-example norms stay in curve.json; the database keeps the curve and its numbers
            entry["curves"] = {tm: {k: v for k, v in c.items() if k not in ("norms", "found_by")}
                               | {"found_by": dict(Counter(c["found_by"]))} for tm, c in cv["curves"].items()}
            entry["curve_attacks"] = cv["attacks"]
        if transfer is not None and name in transfer.get("targets", []):
            entry["transfer"] = {s: {a: transfer["matrices"][a][s][name] for a in transfer["attacks"]}
                                 for s in transfer["sources"] if s != name}
            flag = transfer.get("flags", {}).get(name)
            if flag is not None and "flags" in entry:
                entry["flags"][flag["name"]] = {"triggered": flag["triggered"], "value": flag["value"],
                                                "message": flag["message"], "evaluated": flag.get("evaluated", True)}
        lp = _read(d / "lipschitz.json")
        if lp is not None:
            entry["lipschitz"] = lp["estimates"]
        models[name] = entry
    versions = package_versions("numpy", "torchattacks", "foolbox", "scipy", "matplotlib")
    first_attack = plan.attacks[0] if plan.attacks else None  # resolved at planning
    summary = {
        "run_id": plan.run_id,
        "protocol": {"name": p.name, "path": plan.provenance.get("path"), "sha256": plan.provenance.get("sha256"),
                     "description": p.description},
        "dataset": p.dataset.name, "n_train": p.dataset.n_train, "n_test": p.dataset.n_test, "seed": p.seed,
        "data_sha256": plan.data_checksums["test"], "train_data_sha256": plan.data_checksums["train"],
        "threat_model": first_attack.threat_model if first_attack else None,
        "eps": first_attack.eps if first_attack else None,
        "attacks": [a.label for a in plan.attacks],
        "started": ctx.started, "finished": None if partial else datetime.now(timezone.utc).isoformat(),
        "command": ctx.command,
        "versions": versions, "models": models, "partial": partial,
        "machine": machine_info(), "job_seconds": _job_seconds(plan, run),
    }
    _write_json(run / "summary.json", summary, sort_keys=False)  # models in protocol order
    return summary


def _accuracy_interval(correct: list[bool] | None, seed: int) -> list[float] | None:
    """The 95% bootstrap interval of an accuracy over its per-example vector (None without one)."""
    if not correct:
        return None
    from robustbench_dc.minimum_norm.curve import bootstrap_interval

    return list(bootstrap_interval(torch.tensor(correct, dtype=torch.float64), lambda v: v.mean(-1), seed=seed))


def _first_start(run_dir: Path, recorded: str | None) -> str:
    """When the run first started: the earliest of the summary's record and the start of every job
    already done (a run killed before its first summary and resumed keeps its first start)."""
    starts = [datetime.fromisoformat(recorded)] if recorded else []
    for marker in (run_dir / ".jobs").glob("*.json"):
        m = _read(marker) or {}
        if m.get("finished") and isinstance(m.get("seconds"), (int, float)):
            starts.append(datetime.fromisoformat(m["finished"]) - timedelta(seconds=float(m["seconds"])))
    return min(starts).isoformat() if starts else datetime.now(timezone.utc).isoformat()


def _job_seconds(plan: Plan, run_dir: Path) -> dict[str, float]:
    """Wall time of each finished job as recorded in its marker (jobs of earlier sessions included;
    the report job itself is still running and is not listed)."""
    out = {}
    for job in plan.jobs:
        marker = _read(_marker(run_dir, job))
        if marker is not None and marker.get("key") == job.key and "seconds" in marker:
            out[job.id] = float(marker["seconds"])
    return out


def _run_report(ctx: _Context, job: Job) -> None:
    from robustbench_dc.results import ResultsStore, render_leaderboard

    summary = _write_summary(ctx)
    with ResultsStore(results_db(ctx.plan)) as store:
        store.ingest_summary(summary)
        # One row per entry (the newest run of each configuration); transfer sources are not entries.
        entries = store.entries(protocol=ctx.plan.protocol.name, dataset=ctx.plan.protocol.dataset.name, latest=True)
    metric = ctx.plan.protocol.leaderboard.metric
    atomic_write_bytes(ctx.run_dir / "leaderboard.md", render_leaderboard(entries, "md", metric=metric).encode())
    atomic_write_bytes(ctx.run_dir / "leaderboard.html", render_leaderboard(entries, "html", metric=metric).encode())


_RUNNERS: dict[str, Callable[[_Context, Job], None]] = {
    "train": _run_train, "whitebox": _run_whitebox, "curve": _run_curve, "sweep": _run_sweep, "lipschitz": _run_lipschitz,
    "embedding": _run_embedding, "transfer": _run_transfer, "figures": _run_figures, "report": _run_report,
}


def execute(plan: Plan, *, progress: bool = True, force: bool = False,
            on_job: Callable[[Job, str, float], None] | None = None, command: str | None = None,
            executor: str = "local", address: str | None = None,
            resources: dict[str, dict[str, Any]] | None = None) -> RunResult:
    """Run every job of ``plan`` that is not already done (all of them with ``force``).

    ``on_job(job, status, seconds)`` is called with status ``"started"`` when a job starts (is
    submitted, with Ray) and after each job with status ``"done"`` or ``"cached"`` (and, with Ray,
    ``"failed"`` or ``"skipped"``; the CLI prints one line per job).
    ``command`` is recorded in the summary as the command that made the run (the CLI passes its
    command line; None from Python).

    ``executor``: ``"local"`` (default) runs the jobs one after the other in this process;
    ``"ray"`` runs them as Ray tasks (:mod:`robustbench_dc.protocol.ray_executor`), joining the
    cluster at ``address`` or starting a local Ray instance. ``resources`` (per job kind, or
    ``all``) override the protocol's ``resources`` section. A job's ``cpus`` is also its torch
    thread count under either executor (default: this process's), because the thread count
    changes floating-point results: with the same resources both executors leave the same files.
    """
    if executor not in EXECUTORS:
        raise InvalidParameterError(f"executor: unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if executor == "local" and address is not None:
        raise UsageError("--address applies to the ray executor only (add --executor ray)")
    run_dir = plan.output
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        removed = _clean_temporaries(run_dir)
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted run", removed)
        old = _read(run_dir / "summary.json")
        started = _first_start(run_dir, (old or {}).get("started"))
        status = {} if force else job_status(plan, run_dir)
        result = RunResult(run_dir=run_dir, summary={})
        wanted = job_resources(plan, resources)
        if executor == "ray":
            from robustbench_dc.protocol.ray_executor import execute_ray

            execute_ray(plan, run_dir, status, result, started=started, command=command, on_job=on_job,
                        address=address, resources=wanted, run_one=run_one)
        else:
            _execute_local(plan, run_dir, status, result, progress=progress, started=started, command=command,
                           on_job=on_job, resources=wanted)
        result.summary = _read(run_dir / "summary.json") or {}
        lb = run_dir / "leaderboard.md"
        result.leaderboard = lb.read_text() if lb.is_file() else ""
        result.written = sorted(p for p in run_dir.rglob("*") if p.is_file() and ".work" not in p.parts
                                and ".jobs" not in p.parts and not p.name.startswith("."))
    if result.failed:
        raise JobsFailed(result)
    return result


#: the executors ``execute`` knows; ``ray`` is an optional extra (``pip install "robustbench-dc[ray]"``)
EXECUTORS = ("local", "ray")


class JobsFailed(RuntimeError):
    """Some jobs of a run failed (the Ray executor keeps running the others). ``result`` holds what
    was done; ``result.failed`` maps each failed job to its error, ``result.skipped`` lists the
    jobs that needed a failed one. A re-run does only what is missing."""

    def __init__(self, result: RunResult) -> None:
        self.result = result
        lines = [f"{len(result.failed)} job(s) failed ({len(result.skipped)} skipped because they need one):"]
        lines += [f"  {job}: {error}" for job, error in result.failed.items()]
        super().__init__("\n".join(lines))


def job_resources(plan: Plan, overrides: dict[str, dict[str, Any]] | None = None,
                  threads: int | None = None) -> dict[str, dict[str, float]]:
    """What each job kind asks for: the protocol's ``resources`` section, then ``overrides`` (the
    command line), each per kind with ``all`` applying to every kind first. ``cpus`` (also the
    job's torch thread count) defaults to ``threads`` (this process's torch thread count, which a
    local run would use), ``gpus`` and ``memory`` (bytes) to 0."""
    default = float(threads if threads is not None else torch.get_num_threads())
    out: dict[str, dict[str, float]] = {}
    section: dict[str, Any] = {str(k): v for k, v in (plan.protocol.resources or {}).items()}
    for kind in _RUNNERS:
        merged: dict[str, Any] = {"cpus": default, "gpus": 0.0, "memory": 0.0}
        for source in (section.get("all"), section.get(kind), (overrides or {}).get("all"),
                       (overrides or {}).get(kind)):
            if source is None:
                continue
            items = source.model_dump(exclude_none=True) if hasattr(source, "model_dump") else dict(source)
            merged.update(items)
        out[kind] = {k: float(v) for k, v in merged.items()}
    return out


@contextlib.contextmanager
def job_threads(cpus: float) -> Iterator[None]:
    """torch's intra-op threads set to a job's ``cpus`` (at least 1) while it runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpus)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_job(ctx: _Context, job: Job) -> float:
    """Run one job and record it done (its marker holds its key, when it finished and how long it
    took); returns the seconds it took. Every executor runs jobs through this function."""
    from robustbench_dc.protocol.estimate import record_job_time

    t0 = time.perf_counter()
    _RUNNERS[job.kind](ctx, job)
    seconds = time.perf_counter() - t0
    _write_json(_marker(ctx.run_dir, job), {"key": job.key, "job": job.id,
                                            "finished": datetime.now(timezone.utc).isoformat(), "seconds": seconds})
    record_job_time(ctx.plan, job, seconds, torch.get_num_threads())  # for the estimates of later dry runs
    return seconds


def run_one(plan: Plan, run_dir: str, job_id: str, started: str, command: str | None, cpus: float) -> float:
    """One job of ``plan`` in a fresh context with ``cpus`` torch threads (how a Ray worker runs a job:
    the same code path and thread count as the local executor); returns its seconds."""
    ctx = _Context(plan, Path(run_dir), progress=False, command=command)
    ctx.started = started
    with job_threads(cpus):
        return run_job(ctx, plan.job(job_id))


def _execute_local(plan: Plan, run_dir: Path, status: dict[str, bool], result: RunResult, *, progress: bool,
                   started: str, command: str | None, on_job: Callable[[Job, str, float], None] | None,
                   resources: dict[str, dict[str, float]]) -> None:
    ctx = _Context(plan, run_dir, progress, command)
    ctx.started = started
    for job in plan.jobs:
        if status.get(job.id):
            result.cached.append(job.id)
            if on_job:
                on_job(job, "cached", 0.0)
            continue
        if on_job:
            on_job(job, "started", 0.0)
        with job_threads(resources[job.kind]["cpus"]):
            seconds = run_job(ctx, job)
        result.executed.append(job.id)
        if on_job:
            on_job(job, "done", seconds)


class RunFolderInUse(UserError):
    """Another ``rbdc run`` is working in the same run folder."""


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``RUN/.lock`` (an exclusive ``flock``) for the duration of a run: a second process on the
    same folder is refused at once with the holder's pid, never interleaved with the first. The
    kernel releases the lock when the holder exits, however it exits (a killed run leaves no
    stale lock behind)."""
    import fcntl

    path = run_dir / ".lock"
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise RunFolderInUse(f"run folder {run_dir} is in use by another rbdc run (pid {holder}); wait for it "
                                 "to finish, or run with another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
