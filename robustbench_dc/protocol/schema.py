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

from robustbench_dc._text import did_you_mean
from robustbench_dc._yaml import MAX_BYTES, safe_load
from robustbench_dc.errors import UserError

__all__ = ["Protocol", "ProtocolError", "load_protocol", "parse_protocol", "find_protocol", "bundled_protocols",
           "ModelEntry", "DatasetSection",
           "Evaluation", "TransferSection", "SweepSection", "LipschitzSection", "LeaderboardSection",
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
    name: str
    n_train: int | None = Field(None, ge=1)
    n_test: int = Field(1000, ge=1)
    data_dir: str | None = None


class ModelEntry(_Strict):
    """One model: a zoo card (``card``) or an architecture + operator, plus its training recipe."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    card: str | None = None
    arch: str | None = None
    operator: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    recipe: str | dict[str, Any] | None = None
    label: str | None = None
    seed: int | None = None
    role: Literal["model", "source"] = "model"

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

    sources: list[str] | Literal["baselines"] = "baselines"
    targets: list[str] | Literal["all"] = "all"
    attacks: list[str | dict[str, Any]] | None = None


class SweepSection(_Strict):
    attack: str | dict[str, Any]
    eps: list[float] = Field(min_length=1)

    @field_validator("eps")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        bad = [e for e in v if not e > 0]
        if bad:
            raise ValueError(f"every eps must be > 0, got {bad[0]}")
        return sorted(v)


class Evaluation(_Strict):
    attacks: list[str | dict[str, Any]] = Field(min_length=1)
    eps: float | None = Field(None, gt=0)
    transfer: TransferSection | None = None
    sweeps: list[SweepSection] = Field(default_factory=list)
    masking: bool | dict[str, Any] = True
    binarization_test: bool | dict[str, Any] = False
    batch_size: int = Field(250, ge=1)
    compile: bool | Literal["auto"] = "auto"

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
    n: int = Field(100, ge=1)
    norms: list[Literal["l2", "linf"]] = Field(default_factory=lambda: list(_NORMS))
    ball_eps: float | None = Field(None, gt=0)
    clever: bool = False
    clever_n: int = Field(4, ge=1)


class LeaderboardSection(_Strict):
    db: str | None = None
    metric: str = "worst_case"


class SubmissionTemplate(_Strict):
    """How a submitted operator is trained and evaluated (``rbdc leaderboard submit``)."""

    arch: str
    params: dict[str, Any] = Field(default_factory=dict)
    recipe: str | dict[str, Any]
    seed: int | None = None


JobKind = Literal["all", "train", "whitebox", "sweep", "lipschitz", "embedding", "transfer", "figures", "report"]

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

    cpus: float | None = Field(default=None, ge=0, le=1024)
    gpus: float | None = Field(default=None, ge=0, le=64)
    memory: int | None = None  # bytes; "4GiB" etc. accepted

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> Any:
        return None if v is None else parse_memory(v)


class Protocol(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    seed: int = 0
    output: str | None = None
    dataset: DatasetSection
    models: list[ModelEntry] = Field(min_length=1)
    evaluation: Evaluation
    lipschitz: LipschitzSection | None = None
    figures: list[FigureName] = Field(
        default_factory=lambda: list(FIGURES))
    leaderboard: LeaderboardSection = LeaderboardSection()
    submission: SubmissionTemplate | None = None
    #: per job kind (or ``all``): threads (``cpus``, both executors) and what the Ray executor requests
    resources: dict[JobKind, JobResources] | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> "Protocol":
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"models: duplicate model names {dup}")
        return self


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[union[str,dict[str,any]]]", "function-after[_card_or_arch()]"):
            continue  # pydantic's union / validator branch names carry no information
        else:
            out += ("." if out else "") + str(part)
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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


def _hint(e: Any, loc: tuple[Any, ...]) -> str:
    """The "did you mean" of an unknown key or a misspelt choice (a figure name, a role, ...)."""
    if e["type"] == "extra_forbidden" and loc:
        return did_you_mean(loc[-1], _known_keys(loc[:-1]))
    expected = (e.get("ctx") or {}).get("expected")
    if e["type"] == "literal_error" and isinstance(expected, str) and isinstance(e.get("input"), str):
        return did_you_mean(e["input"], re.findall(r"'([^']*)'", expected))
    return ""


def _pydantic_errors(exc: ValidationError, source: str) -> list[str]:
    lines = []
    seen = set()
    for e in exc.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function"))))
        where = _format_loc(loc) or "protocol"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        msg += _hint(e, loc)
        got = "" if e["type"] == "missing" or isinstance(e.get("input"), dict) else f", got {_short(e['input'])}"
        line = f"{source}: {where}: {msg}{got}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return lines


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
