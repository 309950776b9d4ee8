"""Resolve a validated protocol against the registries and plan it into a job graph.

Resolution checks what the schema cannot: that every operator, architecture, card,
recipe, attack and model reference exists and every parameter is accepted. Errors are
collected as ``FILE: field: message`` lines.

Planning turns the protocol into jobs, ``train -> whitebox / sweep / lipschitz / embedding
-> transfer -> figures -> report``, each keyed by a sha256 over exactly what it depends on:
its own configuration slice, the keys of the jobs it consumes, the data checksum, the
package version and the fingerprint of the package's code (:func:`~robustbench_dc.provenance.code_fingerprint`),
and for a user operator the hash of the file that defines it. A job whose key is recorded as
done in the run folder is skipped, so a re-run does only what changed and a killed run resumes
where it stopped; results computed by other code are never reused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from robustbench_dc._pydantic import problems as validation_problems
from robustbench_dc._text import did_you_mean
from robustbench_dc.errors import FieldError, InvalidParameterError
from robustbench_dc.protocol.schema import ModelEntry, Protocol, ProtocolError
from robustbench_dc.provenance import code_fingerprint
from robustbench_dc.version import VERSION

__all__ = ["ResolvedModel", "Job", "Plan", "resolve", "make_plan", "stable_hash", "code_file", "results_db"]


def stable_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()).hexdigest()


@dataclass
class ResolvedModel:
    """A protocol model with everything needed to build and train it."""

    name: str
    arch: str
    operator: str
    operator_label: str
    arch_params: dict[str, Any]
    operator_params: dict[str, Any]
    dataset: str
    recipe: dict[str, Any]
    seed: int
    role: str
    label: str
    training: str
    #: sha256 of the file that defines a user operator (None for the built-in ones)
    operator_source_sha256: str | None = None
    #: sha256 of the file of a user architecture (``arch: file.py:factory``; None for the zoo's)
    arch_source_sha256: str | None = None

    def config(self) -> dict[str, Any]:
        config = {"arch": self.arch, "operator": self.operator, "arch_params": self.arch_params,
                  "operator_params": self.operator_params, "dataset": self.dataset, "recipe": self.recipe,
                  "seed": self.seed}
        if self.operator_source_sha256 is not None:
            config["operator_source_sha256"] = self.operator_source_sha256
        if self.arch_source_sha256 is not None:
            config["arch_source_sha256"] = self.arch_source_sha256
        return config

    def build(self, base_dir: Path | None = None, checkpoint: Path | None = None) -> Any:
        """The network, initialised from the model's seed (with ``checkpoint``'s weights if given)."""
        from robustbench_dc.zoo import resolve_model

        # Built from the operator's string, in every process alike: resolving it draws from the seeded
        # generator (a probe layer checks the parameters), so the initial weights depend on it.
        return resolve_model(arch=self.arch, operator=self.operator, dataset=self.dataset,
                             params={**self.arch_params, **self.operator_params}, checkpoint=checkpoint,
                             pretrained=checkpoint is not None, seed=self.seed, base_dir=base_dir).model


@dataclass
class Job:
    """One unit of work; ``key`` is the content hash of everything it depends on."""

    id: str
    kind: str
    key: str
    deps: list[str]
    model: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    protocol: Protocol
    provenance: dict[str, Any]
    models: dict[str, ResolvedModel]
    attacks: list[Any]
    transfer_attacks: list[Any]
    sources: list[str]
    targets: list[str]
    sweeps: list[tuple[Any, list[float]]]
    jobs: list[Job]
    output: Path
    base_dir: Path
    data_checksums: dict[str, str]
    run_id: str
    #: the results database chosen by the caller (``rbdc run --db``), else None
    db: Path | None = None
    #: the user's Python files the plan runs (operator plugins named by path), resolved
    code_files: list[Path] = field(default_factory=list)

    def job(self, job_id: str) -> Job:
        for j in self.jobs:
            if j.id == job_id:
                return j
        raise KeyError(job_id)


_PAPER_LABELS = {"baseline": "Baseline", "sphere+cos": "SphereConv", "ball+cos": "BallConv", "tanh+cos": "TanhConv",
                 "linear+cos": "LinearConv", "seg+cos": "SegConv", "log+cos": "LogConv", "mix+cos": "MixConv"}


def attack_prefix(entry: Any) -> int | None:
    """The ``n_test`` of an attack entry: run it on the first that many test images (None: all)."""
    return entry.get("n_test") if isinstance(entry, dict) else None


def _attack(entry: Any, eps: float | None, where: str, errors: list[str], source: str, *, dataset: str,
            n_test: int | None = None) -> Any:
    """Resolve one attack entry into an :class:`AttackSpec` with every default filled in for ``dataset``
    (its eps included), once, at planning; ``n_test``: the dataset's test size where a prefix is
    allowed, else None."""
    from robustbench_dc.attacks import AttackSpec, available_attacks, load_attack_config
    from robustbench_dc.attacks.backends import check_installed

    try:
        if isinstance(entry, str):
            spec = load_attack_config(entry)
        else:
            base = dict(entry)
            k = base.pop("n_test", None)
            if k is not None:
                if n_test is None:
                    raise FieldError("n_test", "a test-set prefix is allowed only in evaluation.attacks (white-box)")
                if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_test:
                    raise FieldError("n_test", f"must be an integer in [1, dataset.n_test={n_test}], got {k!r}")
            ref = base.pop("config", None)
            spec = AttackSpec(**{**(load_attack_config(ref).model_dump() if ref else {}), **base})
        if eps is not None and (isinstance(entry, str) or "eps" not in entry):
            spec = AttackSpec(**{**spec.model_dump(), "eps": eps})
        if spec.backend != "native":
            known = {n.lower() for n in available_attacks(spec.backend)}
            if spec.name not in known:
                raise FieldError("name", f"unknown {spec.backend} attack {spec.name!r}")
        check_installed(spec)  # a missing backend is refused now, not after the training
        return spec.resolve(dataset)
    except ValidationError as exc:
        keys = [*AttackSpec.model_fields, "config", "n_test"]
        for p in validation_problems(exc):
            if p.kind == "extra_forbidden":
                errors.append(f"{source}: {where}.{p.loc}: unknown key{did_you_mean(p.path[-1], keys)}, "
                              f"got {p.input!r}")
            else:
                errors.append(f"{source}: {p.line(where, got=False)}")
    except FieldError as exc:
        errors.append(f"{source}: {where}.{exc.field}: {exc.problem}")
    except Exception as exc:  # noqa: BLE001 - an unknown configuration, a dataset without a standard eps, ...
        errors.append(f"{source}: {where}: {' '.join(str(exc).split())}")
    return None


def code_file(reference: str, base_dir: Path) -> Path | None:
    """The Python file a ``path/to/file.py:Name`` reference runs (resolved, links followed), looked
    up as the loader does: against ``base_dir``, then the working directory; None for anything else
    (a built-in name, a ``package.module:Name`` of an installed package, a file that does not exist)."""
    target, sep, _ = str(reference).rpartition(":")
    if not sep or not target.endswith(".py"):
        return None
    for candidate in (base_dir / target, Path(target)):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _trusted_code(path: Path, base_dir: Path, allow_code: Iterable[str | Path]) -> bool:
    """Whether a protocol may run ``path``: a file in the protocol's own folder (or below it), or one
    the user allowed on the command line (a file, or a folder holding it)."""
    for root in (base_dir, *allow_code):
        r = Path(root).resolve()
        if path == r or path.is_relative_to(r) and r.is_dir():
            return True
    return False


def _resolve_model(m: ModelEntry, i: int, protocol: Protocol, base_dir: Path, errors: list[str],
                   source: str, allow_code: Iterable[str | Path] = (),
                   code_files: list[Path] | None = None) -> ResolvedModel | None:
    from robustbench_dc.operators import get_operator
    from robustbench_dc.training import get_recipe
    from robustbench_dc.zoo import get_card, split_params
    from robustbench_dc.zoo.user import factory_source_sha256, is_factory_reference

    where = f"models[{i}]"
    n_errors = len(errors)
    arch, operator, arch_params, op_params, recipe_spec = m.arch, m.operator, {}, {}, m.recipe
    dataset = protocol.dataset.name
    if m.card is not None:
        try:
            card = get_card(m.card)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{source}: {where}.card: {exc}")
            return None
        arch, arch_params, op_params = card.arch, dict(card.arch_params), dict(card.operator_params)
        operator = operator or card.operator
        recipe_spec = recipe_spec if recipe_spec is not None else card.recipe
    operator = operator or "baseline"
    user_arch = is_factory_reference(arch)
    for field_name, ref in (("operator", operator), ("arch", arch)):
        path = code_file(str(ref), base_dir)
        if path is None:
            continue
        if not _trusted_code(path, base_dir, allow_code):
            errors.append(f"{source}: {where}.{field_name}: {ref!r} runs the Python file {path}, outside the "
                          f"protocol's folder ({base_dir.resolve()}); a protocol runs code from its own folder only "
                          f"(to trust this file, pass --allow-code {path})")
            return None
        if code_files is not None and path not in code_files:
            code_files.append(path)
    if user_arch and operator != "baseline":
        errors.append(f"{source}: {where}.operator: {arch!r} builds its own layers; operator applies to the zoo's "
                      f"architectures, got {operator!r}")
        return None
    try:
        if user_arch:  # every parameter is the factory's
            extra_arch, extra_op = dict(m.params), dict[str, Any]()
        else:
            extra_arch, extra_op = split_params(arch, dict(m.params))  # type: ignore[arg-type]
    except ValueError as exc:
        errors.append(f"{source}: {where}.arch: {exc}")
        return None
    arch_params.update(extra_arch)
    op_params.update(extra_op)
    try:
        spec = get_operator(operator, base_dir=base_dir, **op_params)
    except Exception as exc:  # noqa: BLE001 - unknown operator / parameter / broken user file
        field_name = "params" if isinstance(exc, InvalidParameterError) else "operator"
        errors.append(f"{source}: {where}.{field_name}: {' '.join(str(exc).split())}")
        return None
    if recipe_spec is None:
        errors.append(f"{source}: {where}.recipe: a training recipe is required (a name or a mapping)")
    else:
        try:
            recipe = get_recipe(recipe_spec).model_dump(mode="json")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{source}: {where}.recipe: {' '.join(str(exc).split())}")
    if len(errors) > n_errors:
        return None
    seed = m.seed if m.seed is not None else protocol.seed
    recipe["seed"] = seed if not isinstance(recipe_spec, dict) or "seed" not in recipe_spec else recipe["seed"]
    try:
        arch_sha256 = factory_source_sha256(str(arch), base_dir) if user_arch else None
    except Exception as exc:  # noqa: BLE001 - the user's file: reported by name
        errors.append(f"{source}: {where}.arch: {' '.join(str(exc).split())}")
        return None
    resolved = ResolvedModel(
        name=m.name, arch=arch, operator=operator, operator_label=spec.name,  # type: ignore[arg-type]
        arch_params=arch_params, operator_params=op_params, dataset=_model_dataset(dataset), recipe=recipe,
        seed=seed, role=m.role, label=m.label or (arch.rpartition(":")[2] if user_arch and arch else
                                                  _PAPER_LABELS.get(spec.name, spec.name)),
        training="adversarial" if recipe.get("adversarial") else "natural", operator_source_sha256=spec.source_sha256,
        arch_source_sha256=arch_sha256)
    try:  # building once checks the architecture and every parameter
        resolved.build(base_dir)
    except Exception as exc:  # noqa: BLE001
        errors.append(f"{source}: {where}.params: {' '.join(str(exc).split())}")
        return None
    return resolved


def _model_dataset(name: str) -> str:
    """The dataset a model is built for (a subset's base: the bundled sample is MNIST)."""
    from robustbench_dc.data import dataset_info

    return dataset_info(name).base_name


def _known_names(items: list[str], names: list[str], where: str, errors: list[str], source: str) -> list[str]:
    """``items`` unchanged; an error for each that is not a model name."""
    for j, item in enumerate(items):
        if item not in names:
            errors.append(f"{source}: {where}[{j}]: unknown model {item!r}{did_you_mean(item, names)}; "
                          f"models: {', '.join(names)}")
    return list(items)


def resolve(protocol: Protocol, provenance: dict[str, Any], allow_code: Iterable[str | Path] = (),
            code_files: list[Path] | None = None) -> tuple[dict[str, ResolvedModel], list[Any], list[Any], list[str],
                                                           list[str], list[tuple[Any, list[float]]]]:
    """Check the protocol against the registries; raises :class:`ProtocolError` with every problem.

    A model's operator that names a Python file runs that file; only files in the protocol's
    folder, or allowed by ``allow_code`` (files or folders the user named), may run: any other is
    a problem, found before the file is imported. The files that will run are appended to
    ``code_files``."""
    from robustbench_dc.data import dataset_info

    source = provenance.get("path", "<protocol>")
    base_dir = Path(source).parent if source != "<protocol>" else Path.cwd()
    errors: list[str] = []
    try:
        dataset_info(protocol.dataset.name)
    except Exception as exc:  # noqa: BLE001
        errors.append(f"{source}: dataset.name: {' '.join(str(exc).split())}")
        raise ProtocolError(errors) from None
    models: dict[str, ResolvedModel] = {}
    for i, m in enumerate(protocol.models):
        r = _resolve_model(m, i, protocol, base_dir, errors, source, allow_code, code_files)
        if r is not None:
            models[r.name] = r
    ev = protocol.evaluation
    model_dataset = _model_dataset(protocol.dataset.name)
    attacks = [_attack(a, ev.eps, f"evaluation.attacks[{i}]", errors, source, dataset=model_dataset,
                       n_test=protocol.dataset.n_test) for i, a in enumerate(ev.attacks)]
    labels = [a.label for a in attacks if a is not None]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        errors.append(f"{source}: evaluation.attacks: duplicate attacks {dup}")
    sources: list[str] = []
    targets: list[str] = []
    transfer_attacks: list[Any] = []
    if ev.transfer is not None:
        t = ev.transfer
        names = [m.name for m in protocol.models]
        if t.sources == "baselines":
            sources = [m.name for m in protocol.models if m.name in models and models[m.name].operator == "baseline"]
            if not sources and not errors:
                errors.append(f"{source}: evaluation.transfer.sources: 'baselines' but no model has operator baseline")
        else:
            sources = _known_names(t.sources, names, "evaluation.transfer.sources", errors, source)
        if t.targets == "all":
            targets = [m.name for m in protocol.models if m.role == "model"]
        else:
            targets = _known_names(t.targets, names, "evaluation.transfer.targets", errors, source)
        entries = t.attacks if t.attacks is not None else ev.attacks
        transfer_attacks = [_attack(a, ev.eps, f"evaluation.transfer.attacks[{i}]", errors, source,
                                    dataset=model_dataset)
                            for i, a in enumerate(entries)]
    sweeps = []
    for i, sw in enumerate(ev.sweeps):
        spec = _attack(sw.attack, None, f"evaluation.sweeps[{i}].attack", errors, source, dataset=model_dataset)
        sweeps.append((spec, list(sw.eps)))
    if protocol.submission is not None:
        from robustbench_dc.training import get_recipe
        from robustbench_dc.zoo import list_archs

        if protocol.submission.arch.lower() not in list_archs():
            errors.append(f"{source}: submission.arch: unknown {protocol.submission.arch!r}; "
                          f"known: {', '.join(list_archs())}")
        for field_name in ("recipe", "adversarial_recipe"):
            recipe = getattr(protocol.submission, field_name)
            try:
                if recipe is not None and (field_name == "recipe") == bool(get_recipe(recipe).adversarial):
                    errors.append(f"{source}: submission.{field_name}: must be "
                                  f"{'a natural' if field_name == 'recipe' else 'an adversarial'} training recipe")
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{source}: submission.{field_name}: {' '.join(str(exc).split())}")
    _check_written_paths(protocol, errors, source)
    if errors:
        raise ProtocolError(errors)
    return models, attacks, transfer_attacks, sources, targets, sweeps


def inside_cwd(path: str | Path) -> bool:
    """Whether ``path`` (relative to the working directory) resolves, links followed, to a place below it."""
    cwd = Path.cwd().resolve()
    p = Path(path)
    if p.is_absolute():
        return False
    try:
        (cwd / p).resolve().relative_to(cwd)
    except ValueError:
        return False
    return True


def _check_written_paths(protocol: Protocol, errors: list[str], source: str) -> None:
    """A protocol file may only write below the folder the run is started in: its ``output`` and
    ``leaderboard.db`` must be relative paths that stay there (no absolute paths, no ``..`` or link
    out of it). ``rbdc run --out`` / ``--db`` choose another place explicitly."""
    for field_name, value, option in (("output", protocol.output, "--out"),
                                      ("leaderboard.db", protocol.leaderboard.db, "--db")):
        if value is not None and not inside_cwd(value):
            errors.append(f"{source}: {field_name}: {value!r} is outside the folder the run is started in "
                          f"({Path.cwd()}); a protocol writes only below it (pass {option} to choose another place)")


def make_plan(protocol: Protocol, provenance: dict[str, Any], output: str | Path | None = None,
              db: str | Path | None = None, allow_code: Iterable[str | Path] = ()) -> Plan:
    """Resolve ``protocol`` and build its job graph (loads the data to checksum it). ``output`` and ``db``
    (explicit choices of the caller) replace the protocol's ``output`` and ``leaderboard.db``;
    ``allow_code``: Python files (or folders) outside the protocol's folder the caller trusts it to run."""
    if output is not None or db is not None:
        changes: dict[str, Any] = {}
        if output is not None:
            changes["output"] = None  # the caller's choice: the protocol's own is not checked
        if db is not None:
            changes["leaderboard"] = protocol.leaderboard.model_copy(update={"db": None})
        checked = protocol.model_copy(update=changes)
    else:
        checked = protocol
    from robustbench_dc.data import load_dataset

    code_files: list[Path] = []
    models, attacks, transfer_attacks, sources, targets, sweeps = resolve(checked, provenance, allow_code, code_files)
    source = provenance.get("path", "<protocol>")
    base_dir = Path(source).parent if source != "<protocol>" else Path.cwd()
    out = Path(output or protocol.output or Path("runs") / protocol.name)
    ds = protocol.dataset
    checks = {
        "train": load_dataset(ds.name, "train", n=ds.n_train, data_dir=ds.data_dir).checksum,
        "test": load_dataset(ds.name, "test", n=ds.n_test, data_dir=ds.data_dir).checksum,
    }
    common = {"version": VERSION, "code": code_fingerprint(), "dataset": ds.name}
    ev = protocol.evaluation
    jobs: list[Job] = []
    train_keys: dict[str, str] = {}
    for name, m in models.items():
        key = stable_hash({**common, "job": "train", "model": m.config(), "data": checks["train"],
                           "n_train": ds.n_train})
        train_keys[name] = key
        jobs.append(Job(f"train:{name}", "train", key, [], name))
    test = {"data": checks["test"], "n_test": ds.n_test}
    attack_cfg: list[Any] = [a.model_dump(mode="json") for a in attacks]
    prefixes = [attack_prefix(a) for a in ev.attacks]
    if any(k is not None for k in prefixes):
        attack_cfg = [{**c, "n_test": k} for c, k in zip(attack_cfg, prefixes)]
    for name in models:
        if models[name].role != "model":
            continue
        tk = train_keys[name]
        jobs.append(Job(f"whitebox:{name}", "whitebox", stable_hash(
            {**common, **test, "job": "whitebox", "train": tk, "attacks": attack_cfg, "masking": ev.masking,
             "batch_size": ev.batch_size,
             **({"binarization_test": ev.binarization_test} if ev.binarization_test else {})}),
            [f"train:{name}"], name))
        if ev.curves is not None:
            jobs.append(Job(f"curve:{name}", "curve", stable_hash(
                {**common, **test, "job": "curve", "train": tk, "whitebox": jobs[-1].key,
                 "curves": ev.curves.model_dump(), "batch_size": ev.batch_size}),
                [f"train:{name}", f"whitebox:{name}"], name))
        for spec, eps in sweeps:
            label = spec.name + "-" + spec.threat_model
            jobs.append(Job(f"sweep:{name}:{label}", "sweep", stable_hash(
                {**common, **test, "job": "sweep", "train": tk, "attack": spec.model_dump(mode="json"), "eps": eps,
                 "batch_size": ev.batch_size}), [f"train:{name}"], name, {"attack": spec, "eps": eps, "label": label}))
        if protocol.lipschitz is not None:
            jobs.append(Job(f"lipschitz:{name}", "lipschitz", stable_hash(
                {**common, **test, "job": "lipschitz", "train": tk, "cfg": protocol.lipschitz.model_dump()}),
                [f"train:{name}"], name))
        if "embeddings" in protocol.figures:
            jobs.append(Job(f"embedding:{name}", "embedding", stable_hash(
                {**common, **test, "job": "embedding", "train": tk}), [f"train:{name}"], name))
    if sources and targets:
        jobs.append(Job("transfer", "transfer", stable_hash(
            {**common, **test, "job": "transfer", "sources": {s: train_keys[s] for s in sources},
             "targets": {t: train_keys[t] for t in targets}, "attacks": [a.model_dump(mode="json")
                                                                        for a in transfer_attacks],
             "batch_size": ev.batch_size}), [f"train:{n}" for n in dict.fromkeys(sources + targets)]))
    result_jobs = [j.id for j in jobs if j.kind != "train"]
    result_keys = [j.key for j in jobs if j.kind != "train"]
    # the names and labels the figures and the report show are part of their keys: renaming an entry redraws
    # them (and two otherwise identical submissions under different names get different run ids)
    shown = {name: [m.label, m.role] for name, m in models.items()}
    if protocol.figures:
        jobs.append(Job("figures", "figures", stable_hash({**common, "job": "figures", "figures": protocol.figures,
                                                          "inputs": result_keys + list(train_keys.values()),
                                                          "models": shown}),
                        result_jobs))
    jobs.append(Job("report", "report", stable_hash({**common, "job": "report", "inputs": [j.key for j in jobs],
                                                    "leaderboard": protocol.leaderboard.model_dump(),
                                                    "models": shown}),
                    [j.id for j in jobs]))
    run_id = f"{protocol.name}-{stable_hash([j.key for j in jobs])[:12]}"
    from robustbench_dc.results import ResultsStore

    plan = Plan(protocol, provenance, models, attacks, transfer_attacks, sources, targets, sweeps, jobs, out,
                base_dir, checks, run_id, None if db is None else Path(db), code_files)
    ResultsStore.check(results_db(plan))  # a database that is not the suite's: refused now, not after the training
    return plan


def results_db(plan: Plan) -> Path:
    """The results database of a run: the caller's ``--db``, else the protocol's ``leaderboard.db``
    (relative to the working directory), else ``RUN/results.sqlite``."""
    if plan.db is not None:
        return plan.db
    db = plan.protocol.leaderboard.db
    return Path(db) if db is not None else plan.output / "results.sqlite"
