"""Protocol files: schema, safe loading and validation with errors that name file, field and value.

A protocol is one YAML file::

    name: quickstart
    seed: 0
    output: runs/quickstart
    dataset: {name: mnist-sample, n_train: 6000, n_test: 500}
    models:
      - {name: baseline, arch: mnist2d, operator: baseline, params: {width: 0.25}, recipe: mnist-fast}
      - {name: tanh, arch: mnist2d, operator: tanh+cos, params: {width: 0.25, rho: 1.0}, recipe: mnist-fast}
      - {name: src, card: mnist2d-baseline-mnist, recipe: mnist-fast, seed: 1, role: source}
    evaluation:
      attacks: [fgsm-linf, bim-linf, pgd-linf]          # attacks/*.yaml names or inline specs
      # an inline entry may run on a prefix of the test set: {config: autoattack-linf, n_test: 500}
      transfer: {sources: [src], targets: all, attacks: [fgsm-linf, bim-linf]}
      sweeps: [{attack: pgd-linf, eps: [0.1, 0.2, 0.3]}]
    lipschitz: {n: 100, norms: [l2, linf]}
    figures: [embeddings, eps_curves, transfer, lipschitz, training]

Every error is reported as ``FILE: path.to.field: message, got VALUE``; all errors of a
file are collected before anything runs.
"""

from __future__ import annotations

import hashlib
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from robustbench_dc._pydantic import Eps, Problem
from robustbench_dc._pydantic import problems as validation_problems
from robustbench_dc._text import did_you_mean
from robustbench_dc._yaml import MAX_BYTES, safe_load
from robustbench_dc.errors import UserError

__all__ = ["Protocol", "ProtocolError", "load_protocol", "parse_protocol", "find_protocol", "bundled_protocols",
           "protocol_reference",
           "ModelEntry", "DatasetSection",
           "Evaluation", "CurveSection", "TransferSection", "SweepSection", "LipschitzSection", "LeaderboardSection",
           "SubmissionTemplate", "JobResources", "FIGURES", "parse_memory"]

FigureName = Literal["embeddings", "eps_curves", "transfer", "lipschitz", "training"]
FIGURES: tuple[FigureName, ...] = ("embeddings", "eps_curves", "transfer", "lipschitz", "training")


class ProtocolError(UserError, ValueError):
    """A protocol that cannot run; ``errors`` holds one ``FILE: field: message`` line per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSection(_Strict):
    """The data: the first ``n_train`` training and ``n_test`` test examples of one dataset."""

    name: str = Field(description="dataset: mnist, fashion-mnist, cifar10 or mnist-sample (the bundled MNIST "
                                  "sample)", examples=["cifar10"])
    n_train: int | None = Field(None, ge=1, description="the first n training examples (null: all)",
                                examples=[6000])
    n_test: int = Field(1000, ge=1, description="the first n test examples every model is evaluated on",
                        examples=[1000])
    data_dir: str | None = Field(None, description="folder holding the dataset files (default: --data-dir, "
                                                   "$RBDC_DATA, the cache, else a download)",
                                 examples=["/data"])


class ModelEntry(_Strict):
    """One model: a zoo card (``card``) or an architecture + operator, plus its training recipe."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$",
                      description="the model's name in the run (its folder, its leaderboard row)", examples=["tanh"])
    card: str | None = Field(None, description="a zoo card (rbdc zoo list); give a card or an arch",
                             examples=["mnist2d-tanh-mnist"])
    arch: str | None = Field(None, description="an architecture: cnn9, resnet20/32/56, mnist2d, isonet, risonet; "
                                               "or your own, path/to/file.py:factory in the protocol's folder",
                             examples=["cnn9"])
    operator: str | None = Field(None, description="the operator spec (default: the card's, else baseline): "
                                                   "baseline, tanh+cos, sphereconv, or path/to/file.py:Name in "
                                                   "the protocol's folder", examples=["tanh+cos"])
    params: dict[str, Any] = Field(default_factory=dict, description="architecture and operator parameters, "
                                                                     "told apart by name",
                                   examples=[{"width": 0.25, "rho": 1.0}])
    recipe: str | dict[str, Any] | None = Field(None, description="the training recipe: a name, or a mapping "
                                                                  "with an optional base name and overrides",
                                                examples=[{"base": "mnist-fast", "epochs": 2}])
    label: str | None = Field(None, description="the name shown in tables and figures (default: the operator's "
                                                "paper name)", examples=["TanhConv"])
    seed: int | None = Field(None, description="the model's seed (default: the protocol's)", examples=[1])
    role: Literal["model", "source"] = Field("model", description="model: evaluated and ranked; source: only a "
                                                                  "transfer source", examples=["source"])

    @model_validator(mode="after")
    def _card_or_arch(self) -> "ModelEntry":
        if (self.card is None) == (self.arch is None):
            raise ValueError("give exactly one of card / arch")
        return self


class TransferSection(_Strict):
    """Transfer (black-box) attacks: craft on ``sources``, score on ``targets``.

    ``sources``: model names, or ``"baselines"`` (every model whose operator is baseline);
    ``targets``: model names or ``"all"`` (every model with role ``model``).
    """

    sources: list[str] | Literal["baselines"] = Field("baselines", description="models the attacks are "
                                                      "crafted on: names, or baselines (every baseline model)",
                                                      examples=[["baseline-src"]])
    targets: list[str] | Literal["all"] = Field("all", description="models they are scored on: names, or all "
                                                "(every model of role model)", examples=["all"])
    attacks: list[str | dict[str, Any]] | None = Field(None, description="the transfer attacks (default: "
                                                       "evaluation.attacks)", examples=[["fgsm-linf", "bim-linf"]])


class SweepSection(_Strict):
    """Robust accuracy against eps: one attack at several budgets (the eps-curve figure)."""

    attack: str | dict[str, Any] = Field(description="the attack: a configuration name or an inline spec",
                                         examples=["pgd-linf"])
    eps: list[Eps] = Field(min_length=1, description="the budgets (numbers or fractions like 8/255)",
                           examples=[[0.1, 0.2, 0.3]])

    @field_validator("eps")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        bad = [e for e in v if not e > 0]
        if bad:
            raise ValueError(f"every eps must be > 0, got {bad[0]}")
        return sorted(v)


MinimumNormName = Literal["fmn", "fmn-t", "fab", "fab-t"]
_MINIMUM_NORM_DEFAULT: tuple[MinimumNormName, ...] = ("fmn", "fab")


class CurveSection(_Strict):
    """Robustness curves: per example the smallest perturbation any attack found (minimum-norm attacks and
    the white-box attacks of the same norm), hence robust accuracy at every eps, the median minimal
    perturbation and the area under the curve, with bootstrap intervals."""

    attacks: list[MinimumNormName] = Field(
        default_factory=lambda: list(_MINIMUM_NORM_DEFAULT), min_length=1,
        description="minimum-norm attacks: fmn, fab (untargeted), fmn-t, fab-t (targeted at the 9 most likely "
                    "wrong classes)", examples=[["fmn", "fab-t"]])
    threat_models: list[Literal["linf", "l2"]] = Field(default_factory=lambda: ["linf", "l2"],  # type: ignore[arg-type]
                                                       min_length=1,
                                                       description="the norms, one curve each; the curve spans "
                                                                   "[0, the dataset's standard eps]",
                                                       examples=[["linf"]])
    steps: int = Field(100, ge=1, description="iterations of each minimum-norm attack (per target class)",
                       examples=[50])
    n_boot: int = Field(1000, ge=100, description="bootstrap resamples of the 95% intervals", examples=[2000])


class Evaluation(_Strict):
    """White-box attacks, transfer attacks, eps sweeps and the diagnostics of every evaluated model."""

    attacks: list[str | dict[str, Any]] = Field(
        min_length=1, description="white-box attacks: configuration names (attacks/*.yaml), native attack names, "
                                  "or inline specs; an inline entry may run on a prefix of the test set (n_test)",
        examples=[["fgsm-linf", "bim-linf", {"config": "autoattack-linf", "n_test": 500}]])
    eps: Eps | None = Field(None, gt=0, description="the budget of every attack that sets none: a number or a "
                                                    "fraction like 8/255 (default: the dataset's standard eps)",
                            examples=["8/255"])
    transfer: TransferSection | None = Field(None, description="transfer (black-box) attacks")
    sweeps: list[SweepSection] = Field(default_factory=list, description="eps sweeps")
    curves: CurveSection | None = Field(None, description="robustness curves from minimum-norm attacks (none: "
                                                          "skipped)", examples=[{"attacks": ["fmn", "fab"]}])
    masking: bool | dict[str, Any] = Field(True, description="the gradient-masking flags and attack-failure "
                                                             "indicators: true, false, or their thresholds",
                                           examples=[{"one_step_tol": 0.02}])
    binarization_test: bool | dict[str, Any] = Field(False, description="the binarization test of every attack "
                                                                        "that supports it: true, false, or its "
                                                                        "settings", examples=[{"n_points": 50}])
    batch_size: int = Field(250, ge=1, description="attack batch size", examples=[500])
    compile: bool | Literal["auto"] = Field("auto", description="craft with compiled decoupled responses: true, "
                                                                "false, or auto (long attack jobs)",
                                            examples=[False])

    @field_validator("masking")
    @classmethod
    def _masking(cls, v: bool | dict[str, Any]) -> bool | dict[str, Any]:
        if isinstance(v, dict):
            from robustbench_dc.evaluation.masking import masking_config

            masking_config(v)  # validates the names and values of the thresholds
        return v

    @field_validator("binarization_test")
    @classmethod
    def _binarization(cls, v: bool | dict[str, Any]) -> bool | dict[str, Any]:
        if isinstance(v, dict):
            from robustbench_dc.evaluation.binarization import binarization_config

            binarization_config(v)
        return v


_NORMS: tuple[Literal["l2", "linf"], ...] = ("l2", "linf")


class LipschitzSection(_Strict):
    """Empirical local Lipschitz estimates of every evaluated model."""

    n: int = Field(100, ge=1, description="test examples the estimates use", examples=[100])
    norms: list[Literal["l2", "linf"]] = Field(default_factory=lambda: list(_NORMS), description="input norms",
                                               examples=[["l2"]])
    ball_eps: Eps | None = Field(None, gt=0, description="also the largest gradient norm in a ball of this "
                                                           "radius around each example", examples=[0.1])
    clever: bool = Field(False, description="also CLEVER scores", examples=[True])
    clever_n: int = Field(4, ge=1, description="examples CLEVER runs on", examples=[4])


class LeaderboardSection(_Strict):
    """Where the results are stored and how the run's leaderboard is ranked."""

    db: str | None = Field(None, description="results database, below the folder the run starts in (default: "
                                             "RUN/results.sqlite)", examples=["runs/results.sqlite"])
    metric: str = Field("tracks", description="ranking metric: tracks (natural training by the median minimal "
                                              "L-inf perturbation where curves ran, adversarial training by the "
                                              "worst case), worst_case, clean_accuracy, median:linf, median:l2, "
                                              "auc:linf, auc:l2, an attack label or transfer:SOURCE:ATTACK",
                        examples=["clean_accuracy"])


class SubmissionTemplate(_Strict):
    """How a submitted operator is trained and evaluated (``rbdc leaderboard submit``)."""

    arch: str = Field(description="the architecture every submission is built on", examples=["mnist2d"])
    params: dict[str, Any] = Field(default_factory=dict, description="its architecture parameters",
                                   examples=[{"width": 0.25}])
    recipe: str | dict[str, Any] = Field(description="the training recipe (the natural-training track)",
                                         examples=["mnist-fast"])
    adversarial_recipe: str | dict[str, Any] | None = Field(
        None, description="the adversarial-training track's recipe, the same for every entry (none: natural "
                          "track only)", examples=[{"base": "mnist-fast", "adversarial": {"method": "pgd", "eps": 0.3}}])
    seed: int | None = Field(None, description="the submission's seed (default: the protocol's)", examples=[0])


JobKind = Literal["all", "train", "whitebox", "curve", "sweep", "lipschitz", "embedding", "transfer", "figures", "report"]

_MEMORY_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
                 "g": 2**30, "gb": 10**9, "gib": 2**30}


def parse_memory(value: Any) -> int:
    """Bytes from ``4000000000``, ``"4GiB"``, ``"512MB"`` or ``"2g"``."""
    import re

    if isinstance(value, bool):
        raise ValueError(f"memory: expected bytes or a size like '4GiB', got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
        if m is None or m.group(2).lower() not in _MEMORY_UNITS:
            raise ValueError(f"memory: expected bytes or a size like '4GiB', got {value!r}")
        number, unit = float(m.group(1)), m.group(2).lower()
    if not number >= 0 or number * _MEMORY_UNITS[unit] > 2**50:
        raise ValueError(f"memory: expected a size between 0 and 1 PiB, got {value!r}")
    return int(number * _MEMORY_UNITS[unit])


class JobResources(_Strict):
    """What one job of a kind asks for: ``cpus`` is its torch thread count under either executor (default:
    the running process's); ``gpus`` and ``memory`` are requests to the Ray executor."""

    cpus: float | None = Field(default=None, ge=0, le=1024, description="torch threads of the job (default: the "
                                                                        "running process's)", examples=[1])
    gpus: float | None = Field(default=None, ge=0, le=64, description="GPUs requested from Ray", examples=[1])
    memory: int | None = Field(None, description="memory requested from Ray: bytes, or a size like 4GiB",
                               examples=["4GiB"])

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> Any:
        return None if v is None else parse_memory(v)


class Protocol(_Strict):
    """One experiment: the data, the models, the attacks, the estimates and the figures."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="the protocol's name (its run ids, "
                                                                         "its default output)",
                      examples=["quickstart"])
    description: str = Field("", description="one line on what the protocol answers",
                             examples=["Decoupled Networks Tables 7-8, cpu scale."])
    seed: int = Field(0, description="the seed of every model that sets none", examples=[0])
    output: str | None = Field(None, description="the run folder, below the folder the run starts in (default: "
                                                 "runs/NAME; rbdc run --out chooses another)",
                               examples=["runs/quickstart"])
    dataset: DatasetSection = Field(description="the data")
    models: list[ModelEntry] = Field(min_length=1, description="the models, each trained by its recipe")
    evaluation: Evaluation = Field(description="the attacks and diagnostics")
    lipschitz: LipschitzSection | None = Field(None, description="Lipschitz estimates (none: skipped)")
    figures: list[FigureName] = Field(default_factory=lambda: list(FIGURES), description="the figures drawn from "
                                      "the stored results", examples=[["embeddings", "transfer"]])
    leaderboard: LeaderboardSection = Field(LeaderboardSection(), description="the results database and ranking")
    submission: SubmissionTemplate | None = Field(None, description="how rbdc leaderboard submit trains and "
                                                                   "evaluates a user's operator")
    resources: dict[JobKind, JobResources] | None = Field(
        None, description="per job kind (train, whitebox, sweep, lipschitz, embedding, transfer, figures, report, "
                          "or all): threads (cpus, both executors) and what the Ray executor requests",
        examples=[{"train": {"cpus": 8, "gpus": 1}}])

    @model_validator(mode="after")
    def _unique_names(self) -> "Protocol":
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"models: duplicate model names {dup}")
        return self


def _model_class(tp: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X``, ``X | None``, ``list[X]``, ``dict[str, X]``)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in typing.get_args(tp):
        found = _model_class(arg)
        if found is not None:
            return found
    return None


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys a protocol accepts at ``loc`` (the mapping an unknown key was found in)."""
    cls: type[BaseModel] | None = Protocol
    for part in loc:
        if cls is None:
            return []
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(str(part))
        cls = None if field is None else _model_class(field.annotation)
    return list(cls.model_fields) if cls is not None else []


def _hint(p: Problem) -> str:
    """The "did you mean" of an unknown key or a misspelt choice (a figure name, a role, ...)."""
    if p.kind == "extra_forbidden" and p.path:
        return did_you_mean(p.path[-1], _known_keys(p.path[:-1]))
    expected = p.ctx.get("expected")
    if p.kind == "literal_error" and isinstance(expected, str) and isinstance(p.input, str):
        return did_you_mean(p.input, re.findall(r"'([^']*)'", expected))
    return ""


def _pydantic_errors(exc: ValidationError, source: str) -> list[str]:
    """``FILE: field.path: message (did you mean ...), got VALUE``, one line per problem."""
    return [f"{source}: {p.loc or 'protocol'}: {'unknown key' if p.kind == 'extra_forbidden' else p.message}"
            f"{_hint(p)}{p.got}" for p in validation_problems(exc)]


def parse_protocol(data: Any, source: str = "<protocol>") -> Protocol:
    """Validate a mapping; raises :class:`ProtocolError` listing every problem."""
    if not isinstance(data, dict):
        raise ProtocolError([f"{source}: protocol: expected a mapping at the top level, got {type(data).__name__}"])
    try:
        return Protocol(**data)
    except ValidationError as exc:
        raise ProtocolError(_pydantic_errors(exc, source)) from None


def bundled_protocols() -> list[str]:
    """Names of the protocols shipped with the package (``rbdc run NAME``)."""
    from robustbench_dc.resources import resource_dir

    return sorted(p.stem for p in resource_dir("protocols").glob("*.yaml"))


def find_protocol(name_or_path: str | Path) -> Path:
    """A protocol file: ``name_or_path`` itself when it is a file, else the bundled protocol of
    that name (``"quickstart"`` -> the package's ``protocols/quickstart.yaml``)."""
    from robustbench_dc.resources import resource_dir

    p = Path(name_or_path)
    if p.is_file():
        return p
    bundled = resource_dir("protocols") / f"{p.name.removesuffix('.yaml')}.yaml"
    if p.parent == Path(".") and bundled.is_file():
        return bundled
    raise ProtocolError([f"{p}: protocol file not found (bundled protocols: {', '.join(bundled_protocols())})"])


def load_protocol(path: str | Path) -> tuple[Protocol, dict[str, Any]]:
    """Read a protocol file (a path, or the name of a bundled protocol) as data only, within bounds
    (:func:`robustbench_dc._yaml.safe_load`: no object construction, at most 1 MiB, 64 levels deep and
    100,000 values with aliases expanded) and validate its schema. Returns the protocol and provenance
    (path, sha256)."""
    p = find_protocol(path)
    if p.stat().st_size > MAX_BYTES:
        raise ProtocolError([f"{p}: {p.stat().st_size:,} bytes, larger than the {MAX_BYTES:,} a protocol file may have"])
    raw = p.read_bytes()
    try:
        data = safe_load(raw.decode("utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProtocolError([f"{p}: invalid YAML: {where}{problem}"]) from None
    except UnicodeDecodeError as exc:
        raise ProtocolError([f"{p}: not UTF-8 text ({exc})"]) from None
    return parse_protocol(data, str(p)), {"path": str(p), "sha256": hashlib.sha256(raw).hexdigest()}


# ----------------------------------------------------------------------------- the reference page
def _type_text(tp: Any) -> str:
    """A field's type as a reader writes it in YAML: ``int``, ``list of str``, ``str or mapping``, ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:  # a budget: a number, or a fraction such as 8/255
        return "number or fraction" if tp == Eps else _type_text(args[0])
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "mapping"
    if origin is Literal:
        return " | ".join(repr(a) if isinstance(a, str) else str(a) for a in args)
    if origin in (list, tuple):
        return f"list of {_type_text(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type_text(args[0])} to {_type_text(args[1])}" if args else "mapping"
    if args:  # a union
        return " or ".join(dict.fromkeys(_type_text(a) for a in args))
    return {str: "str", int: "int", float: "number", bool: "bool"}.get(tp, getattr(tp, "__name__", str(tp)))


def _yaml_text(value: Any) -> str:
    import json

    return '""' if value == "" else json.dumps(value, separators=(", ", ": ")).replace('"', "")


def _rows(cls: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str, str]]:
    from pydantic_core import PydanticUndefined

    rows = []
    for name, f in cls.model_fields.items():
        path = f"{prefix}{name}"
        if f.is_required():
            default = "required"
        elif f.default_factory is not None:
            default = _yaml_text(f.default_factory())  # type: ignore[call-arg]
        elif f.default is PydanticUndefined or isinstance(f.default, BaseModel):
            default = "(the section's defaults)"
        else:
            default = _yaml_text(f.default)
        example = f"`{path.rsplit('.', 1)[-1].split('[')[0]}: {_yaml_text(f.examples[0])}`" if f.examples else ""
        rows.append((path, _type_text(f.annotation), default, f.description or "", example))
        sub = _model_class(f.annotation)
        if sub is not None:
            many = typing.get_origin(f.annotation) in (list,) or any(
                typing.get_origin(a) is list for a in typing.get_args(f.annotation))
            mapping = typing.get_origin(f.annotation) is dict or any(
                typing.get_origin(a) is dict for a in typing.get_args(f.annotation))
            rows += _rows(sub, f"{path}[].") if many else _rows(sub, f"{path}.KIND.") if mapping else \
                _rows(sub, f"{path}.")
    return rows


def protocol_reference() -> str:
    """``docs/protocols.md``: every key of a protocol file with its type, default, meaning and an
    example, generated from this schema (``python scripts/protocol_reference.py`` writes it; a test fails
    when the page is stale)."""
    lines = ["# Protocol files: every key", "",
             "Generated from `robustbench_dc/protocol/schema.py` by `python scripts/protocol_reference.py`; "
             "do not edit by hand. A key not listed here is refused with the closest known "
             "one (`evaluation.sweep: unknown key (did you mean 'sweeps'?)`). Bundled examples: "
             "[`protocols/`](../protocols/).", "",
             "| key | type | default | what | example |", "|---|---|---|---|---|"]
    for path, type_text, default, what, example in _rows(Protocol, ""):
        cells = [f"`{path}`", type_text, f"`{default}`" if default not in ("required",) and not
                 default.startswith("(") else default, what, example]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "`[]` marks the entries of a list, `KIND` a job kind (`train`, `whitebox`, `sweep`, `lipschitz`, "
                  "`embedding`, `transfer`, `figures`, `report` or `all`). An inline attack (an entry of "
                  "`evaluation.attacks` that is a mapping) takes the fields of an attack configuration "
                  "([docs/attacks.md](attacks.md)), plus `config` (a configuration to start from) and `n_test`."]
    return "\n".join(lines) + "\n"

