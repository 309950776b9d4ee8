"""Protocol runner: one YAML file -> validated protocol -> job graph -> results, figures, leaderboard.

``run_protocol("protocols/quickstart.yaml")`` validates the file (every error names the file,
the field and the value), plans it into content-hashed jobs and executes those that are not
already done, so re-running is free and an interrupted run resumes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterable

from robustbench_dc.protocol.execute import (
    EXECUTORS,
    JobsFailed,
    RunResult,
    execute,
    job_resources,
    job_status,
    job_threads,
    results_db,
)
from robustbench_dc.protocol.plan import Job, Plan, ResolvedModel, code_file, make_plan, resolve, stable_hash
from robustbench_dc.protocol.schema import (
    FIGURES,
    JobResources,
    ModelEntry,
    Protocol,
    ProtocolError,
    load_protocol,
    parse_protocol,
)

__all__ = ["EXECUTORS", "FIGURES", "execute", "Job", "job_resources", "job_status", "job_threads", "JobResources", "JobsFailed",
           "load_protocol", "make_plan", "plan_submission", "code_file", "model_from_run", "ModelEntry", "parse_protocol",
           "parse_resources", "Plan", "plan_protocol",
           "Protocol", "ProtocolError", "resolve", "ResolvedModel", "results_db", "run_protocol", "RunResult",
           "stable_hash", "submit_operator"]


def plan_protocol(path: str | Path, output: str | Path | None = None, db: str | Path | None = None,
                  allow_code: Iterable[str | Path] = ()) -> Plan:
    """Load, validate and plan a protocol file (nothing is written). ``output`` / ``db``: the run folder
    and results database chosen by the caller, anywhere; the protocol's own must stay below the
    working directory. ``allow_code``: Python files (or folders) outside the protocol's folder that
    the caller trusts the protocol to run (any other is refused before it is imported)."""
    protocol, provenance = load_protocol(path)
    return make_plan(protocol, provenance, output, db, allow_code)


def run_protocol(path: str | Path, output: str | Path | None = None, *, progress: bool = True, force: bool = False,
                 on_job: Callable[[Job, str, float], None] | None = None, command: str | None = None,
                 db: str | Path | None = None, executor: str = "local", address: str | None = None,
                 resources: dict[str, dict[str, Any]] | None = None,
                 allow_code: Iterable[str | Path] = ()) -> RunResult:
    """Run a protocol file end to end (see :func:`execute`; ``executor="ray"`` runs it on Ray)."""
    return execute(plan_protocol(path, output, db, allow_code), progress=progress, force=force, on_job=on_job, command=command,
                   executor=executor, address=address, resources=resources)


def model_from_run(run_dir: str | Path, entry: str) -> Any:
    """The model ``entry`` of a protocol run, rebuilt from what the run recorded (its architecture,
    operator and parameters in ``summary.json``) with the weights it trained (``models/ENTRY/model.pt``),
    as a :class:`~robustbench_dc.zoo.ModelChoice`, for evaluating it again with any attack.

    Raises:
        MissingFileError: no such run folder, summary or checkpoint (the run is not finished).
        UsageError: no such entry in the run (the message lists the run's models).
    """
    import json

    from robustbench_dc._text import did_you_mean
    from robustbench_dc.data import dataset_info
    from robustbench_dc.errors import MissingFileError, UsageError
    from robustbench_dc.zoo import resolve_model

    run = Path(run_dir)
    summary_path = run / "summary.json"
    if not summary_path.is_file():
        raise MissingFileError(f"{summary_path}: no summary (a run folder of rbdc run, finished)")
    summary = json.loads(summary_path.read_text())
    models = summary.get("models") or {}
    if entry not in models:
        raise UsageError(f"--entry: {run} has no model {entry!r}{did_you_mean(entry, models)}; it has "
                         f"{', '.join(models) or 'none'}")
    m = models[entry]
    checkpoint = run / "models" / entry / "model.pt"
    if not checkpoint.is_file():
        raise MissingFileError(f"{checkpoint}: the run has not trained {entry!r} (run the protocol again to finish it)")
    proto = Path(str((summary.get("protocol") or {}).get("path") or "."))
    base_dir = proto.parent if proto.parent.is_dir() else Path.cwd()
    choice = resolve_model(arch=m["arch"], operator=m.get("operator"), dataset=dataset_info(summary["dataset"]).base_name,
                           params={**(m.get("arch_params") or {}), **(m.get("operator_params") or {})},
                           checkpoint=checkpoint, seed=m.get("seed", 0), base_dir=base_dir)
    choice.name, choice.data = entry, summary["dataset"]
    return choice


def parse_resources(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["train=cpus:2,gpus:1", "whitebox=memory:4GiB"]`` -> ``{"train": {"cpus": 2.0, "gpus": 1.0}, ...}``,
    validated like the protocol's ``resources`` section."""
    from pydantic import ValidationError

    from robustbench_dc._pydantic import one_line
    from robustbench_dc.errors import UsageError
    from robustbench_dc.protocol.schema import JobKind

    kinds = JobKind.__args__  # type: ignore[attr-defined]
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        kind, sep, rest = item.partition("=")
        if not sep or kind not in kinds:
            raise UsageError(f"--resources {item!r}: expected KIND=cpus:N,gpus:N,memory:SIZE with KIND one of "
                             f"{', '.join(kinds)}")
        fields: dict[str, str] = {}
        for part in filter(None, rest.split(",")):
            key, colon, value = part.partition(":")
            if not colon:
                raise UsageError(f"--resources {item!r}: expected NAME:VALUE, got {part!r}")
            fields[key.strip()] = value.strip()
        try:
            spec = JobResources.model_validate(fields)
        except ValidationError as exc:
            raise UsageError(f"--resources {item!r}: {one_line(exc)}") from None
        out.setdefault(kind, {}).update(spec.model_dump(exclude_none=True))
    return out


def _submission_name(operator: str) -> str:
    base = operator.rpartition(":")[2] if ":" in operator else operator
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "-", base).strip("-.") or "submission"
    return name if name[0].isalnum() else f"op-{name}"


def _absolute_reference(operator: str) -> str:
    """``my_ops.py:MyOp`` relative to the working directory -> absolute, so it survives the
    protocol's own folder being the base for relative references."""
    target, sep, attr = operator.rpartition(":")
    if sep and target.endswith(".py") and Path(target).is_file():
        return f"{Path(target).resolve()}:{attr}"
    return operator


#: The tracks a submission can enter (``both``: every track the protocol's ``submission`` has).
TRACKS = ("natural", "adversarial", "both")


def plan_submission(operator: str, protocol_path: str | Path, name: str | None = None, db: str | None = None,
                    out: str | None = None, allow_code: Iterable[str | Path] = (), track: str = "both") -> Plan:
    """The plan of :func:`submit_operator` (nothing is run or written). The operator's own file is
    trusted: the user named it on the command line. ``track``: ``natural`` (the submission's ``recipe``),
    ``adversarial`` (its ``adversarial_recipe``, entry ``NAME-at``) or ``both`` (default: each the
    protocol has)."""
    protocol, provenance = load_protocol(protocol_path)
    if protocol.submission is None:
        raise ProtocolError([f"{protocol_path}: submission: this protocol has no submission section "
                             "(use protocols/leaderboard-mnist.yaml or protocols/leaderboard-cifar10.yaml)"])
    if track not in TRACKS:
        raise ProtocolError([f"track: must be one of {', '.join(TRACKS)}, got {track!r}"])
    sub = protocol.submission
    if track == "adversarial" and sub.adversarial_recipe is None:
        raise ProtocolError([f"{protocol_path}: submission: this protocol has no adversarial_recipe (no "
                             "adversarial-training track); use --track natural"])
    base_name = name or _submission_name(operator)
    recipes = {"natural": sub.recipe, "adversarial": sub.adversarial_recipe}
    wanted = [t for t in ("natural", "adversarial") if track in (t, "both") and recipes[t] is not None]
    names = {t: base_name if t == "natural" or track == "adversarial" else f"{base_name}-at" for t in wanted}
    for t in wanted:
        if any(m.name == names[t] for m in protocol.models):
            raise ProtocolError([f"{protocol_path}: models: an entry named {names[t]!r} exists; pass --name"])
    data: dict[str, Any] = protocol.model_dump(mode="json", exclude_none=True)
    reference = _absolute_reference(operator)
    for t in wanted:
        data["models"].append({"name": names[t], "label": base_name, "arch": sub.arch, "operator": reference,
                               "params": dict(sub.params), "recipe": recipes[t],
                               **({"seed": sub.seed} if sub.seed is not None else {})})
    protocol = parse_protocol(data, str(protocol_path))
    own = code_file(reference, Path.cwd())
    # --db: the caller's explicit choice, anywhere
    return make_plan(protocol, provenance, out, db, [*allow_code, *([own] if own is not None else [])])


def submit_operator(operator: str, protocol_path: str | Path, name: str | None = None, db: str | None = None,
                    out: str | None = None, *, progress: bool = True,
                    on_job: Callable[[Job, str, float], None] | None = None,
                    command: str | None = None, allow_code: Iterable[str | Path] = (),
                    track: str = "both") -> tuple[RunResult, str]:
    """Train and evaluate a user operator under a leaderboard protocol; returns the run and
    the rendered leaderboard (Markdown).

    The protocol's ``submission`` section says how: architecture, parameters, recipe. The
    other models of the protocol are the reference entries; their jobs are cached in the
    protocol's output folder, so a submission only trains and evaluates the new entry (and
    redoes the transfer matrix, figures and report). ``command`` is recorded in the summary.
    """
    plan = plan_submission(operator, protocol_path, name, db, out, allow_code, track)
    result = execute(plan, progress=progress, on_job=on_job, command=command)
    return result, result.leaderboard
