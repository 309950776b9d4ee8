"""Attack specifications: one validated, hashable description per attack.

An :class:`AttackSpec` names an attack (native ``fgsm`` / ``bim`` / ``pgd``, or
any ``torchattacks`` / ``foolbox`` class), its threat model and budget. It is a
frozen pydantic v2 model: it can be written in YAML (see the repository's
``attacks/*.yaml``), validated, hashed (:meth:`AttackSpec.key`) for caching and
labelled (:attr:`AttackSpec.label`) for tables.

Defaults that depend on other fields are filled by :meth:`AttackSpec.resolve`:

==========  =====  ======================  ============
attack      steps  step_size               random_start
==========  =====  ======================  ============
fgsm        1      eps                     False
bim         10     eps / steps             False
pgd         10     2.5 * eps / steps       True
apgd        100    adaptive (2 eps, ...)   True
autoattack  fixed by ``params.version`` (``standard`` / ``rand``)
==========  =====  ======================  ============

* APGD / APGD-T and AutoAttack: Croce & Hein, "Reliable Evaluation of Adversarial
  Robustness with an Ensemble of Diverse Parameter-free Attacks", ICML 2020
  (:mod:`~robustbench_dc.attacks.apgd`, :mod:`~robustbench_dc.autoattack.ensemble`).

* FGSM: Goodfellow et al., "Explaining and Harnessing Adversarial Examples",
  ICLR 2015 (one step of size eps).
* BIM / I-FGSM: Kurakin et al., "Adversarial Examples in the Physical World",
  ICLR-W 2017. The paper uses a step of 1/255 and min(eps*255 + 4, 1.25*eps*255)
  iterations; we use the equivalent-in-spirit "eps / steps" step so that the
  total step length equals eps, whatever ``steps`` is. Pass ``step_size`` to
  override.
* PGD: Madry et al., "Towards Deep Learning Models Resistant to Adversarial
  Attacks", ICLR 2018 (step 2.5 * eps / steps, uniform random start).

``eps=None`` means "the dataset's standard budget" (:data:`STANDARD_EPS`):
L-inf 8/255 on CIFAR-10 and 0.3 on MNIST, L2 0.5 on CIFAR-10.

Example::

    >>> spec = AttackSpec(name="pgd", threat_model="linf", eps=8 / 255, steps=10)
    >>> spec.label
    'pgd-linf-eps0.0314-s10'
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from robustbench_dc._pydantic import one_line
from robustbench_dc._text import did_you_mean
from robustbench_dc.attacks.registry import NativeAttack, native_attack, native_attacks
from robustbench_dc.data.errors import DataError
from robustbench_dc.data.registry import DATASETS, dataset_info
from robustbench_dc.errors import UserError
from robustbench_dc.params import parse_eps

__all__ = [
    "AttackSpec",
    "AttackConfigError",
    "native_attacks",
    "TORCHATTACKS_AUTOATTACK_10IT",
    "STANDARD_EPS",
    "canonical_dataset",
    "resolve_eps",
    "load_attack_config",
    "attack_config_dir",
]



class AttackConfigError(UserError, ValueError):
    """An attack configuration that cannot run: an unknown name, an invalid field or override,
    or settings that do not fit the model (a loss needing more classes, a backend class that
    does not take a parameter); the message names the field."""


ThreatModel = Literal["linf", "l2"]
LossName = Literal["ce", "margin", "dlr"]
Backend = Literal["native", "torchattacks", "foolbox"]
TargetMode = Literal["random", "least-likely"]


#: torchattacks 3.5.1's ``AutoAttack`` runs APGD, APGD-T and FAB with 10 iterations (their
#: constructors' default) instead of the published 100. The wrapper is reachable only under this
#: name, which says so; ``tests/test_autoattack.py`` checks the premise against the installed code.
TORCHATTACKS_AUTOATTACK_10IT = "autoattack-10it"

_TA_CW_REFUSAL = (
    "torchattacks' CW is refused: torchattacks 3.5.1 computes the true-class logit as max(one_hot * logits) "
    "and the best other logit as max((1 - one_hot) * logits), both wrong when logits are negative (the "
    "masked entries count as 0), so its margin and its success test are wrong for many models. Use "
    "foolbox's L2CarliniWagnerAttack (backend 'foolbox'), or native pgd/apgd with loss 'margin'/'dlr'"
)

#: Upper bounds of an attack's budget: beyond them a configuration is a mistake (or a file meant to
#: stall a shared machine), not an evaluation.
MAX_STEPS = 100_000
MAX_RESTARTS = 1_000
MAX_L2_EPS = 1_000.0  # > sqrt(3 x 512 x 512), the L2 diameter of a 512x512 RGB image in [0, 1]

_TA_AUTOATTACK_REFUSAL = (
    "torchattacks' AutoAttack is not the published attack: torchattacks 3.5.1 builds its APGD, APGD-T "
    "and FAB with their default 10 iterations instead of AutoAttack's 100 (and n_classes - 1 target "
    "classes), so its robust accuracy overestimates AutoAttack's. Use name 'autoattack' with backend "
    "'native' (attacks/autoattack-linf.yaml: APGD-CE, APGD-T, FAB-T, Square at their published budgets), "
    f"or name {TORCHATTACKS_AUTOATTACK_10IT!r} with backend 'torchattacks' to run the wrapper as it is"
)

_THREAT_MODELS = ("linf", "l2")
_LOSSES = ("ce", "margin", "dlr")
_BACKENDS = ("native", "torchattacks", "foolbox")
_TARGETS = ("random", "least-likely")

#: Standard evaluation budgets of the field, keyed by canonical dataset name and threat model:
#: a view of the dataset registry (:data:`robustbench_dc.data.DATASETS`, where they are defined).
#: Fashion-MNIST has no standard L2 budget. Subsets (the bundled MNIST sample) use their base's.
STANDARD_EPS: dict[str, dict[str, float]] = {
    name: {"linf": info.eps_linf, **({"l2": info.eps_l2} if info.eps_l2 is not None else {})}
    for name, info in DATASETS.items() if info.base is None
}



def canonical_dataset(dataset: str) -> str:
    """The key of a dataset in :data:`STANDARD_EPS`: its canonical name (``"CIFAR-10"`` ->
    ``"cifar10"``), as the dataset registry resolves names and aliases, or for a subset the
    dataset it is drawn from (``"mnist-sample"`` -> ``"mnist"``). A ``-sample`` / ``_sample``
    suffix is accepted on any dataset name (``"cifar10-sample"`` -> ``"cifar10"``).

    Raises:
        AttackConfigError: an unknown dataset (the message lists the known names).
    """
    try:
        return dataset_info(dataset).base_name
    except DataError as exc:
        key = dataset.strip().lower()
        for suffix in ("-sample", "_sample"):
            if key.endswith(suffix):
                try:
                    return dataset_info(key[: -len(suffix)]).base_name
                except DataError:
                    break
        raise AttackConfigError(f"dataset: {exc}") from None


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


class AttackSpec(BaseModel):
    """Validated description of one adversarial attack.

    Args:
        name (str): ``fgsm`` | ``bim`` | ``pgd`` (native backend), or any
            ``torchattacks`` class name (``AutoAttack``, ``APGD``, ``Square``, ...)
            or ``foolbox.attacks`` class name (``LinfPGD``, ``L2CarliniWagnerAttack``, ...)
            with the matching ``backend``. Case-insensitive; stored lower-case.
        threat_model (str): ``"linf"`` or ``"l2"``. Default ``"linf"``.
        eps (float | None): budget, > 0; ``None`` (default) means the dataset's
            standard budget, see :func:`resolve_eps`.
        steps (int | None): iterations, >= 1; ``None`` -> 1 (fgsm), 10 (bim, pgd),
            library default for third-party attacks.
        step_size (float | None): > 0; ``None`` -> eps (fgsm), eps/steps (bim),
            2.5*eps/steps (pgd).
        restarts (int): >= 1, default 1. Per example the first successful restart
            is kept (else the highest-loss one).
        random_start (bool | None): ``None`` -> False (fgsm, bim), True (pgd).
        targeted (bool): default False.
        target (str): ``"random"`` (default) or ``"least-likely"``; used when targeted.
        loss (str | None): ``"ce"``, ``"margin"`` (CW logit margin) or ``"dlr"``
            (Croce & Hein 2020); ``None`` -> ``"ce"`` natively, library default otherwise.
        backend (str): ``"native"`` (default), ``"torchattacks"`` or ``"foolbox"``.
        seed (int): seed of the attack's randomness (random start, targets). Default 0.
        params (dict): extra keyword arguments passed verbatim to the third-party
            constructor (e.g. ``{"version": "standard"}`` for AutoAttack).

    Example::

        >>> spec = AttackSpec(name="pgd", eps=8 / 255, steps=10)
        >>> spec.resolve().step_size  # 2.5 * eps / steps
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    threat_model: ThreatModel = "linf"
    eps: float | None = None
    steps: int | None = None
    step_size: float | None = None
    restarts: int = 1
    random_start: bool | None = None
    targeted: bool = False
    target: TargetMode = "random"
    loss: LossName | None = None
    backend: Backend = "native"
    seed: int = 0
    params: dict[str, Any] = Field(default_factory=dict)

    # ------------------------------------------------------------------ validation
    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, v: Any) -> str:
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"name: must be a non-empty string, got {_fmt(v)}")
        return v.strip().lower()

    @field_validator("threat_model", "loss", "backend", "target", mode="before")
    @classmethod
    def _check_choice(cls, v: Any, info: Any) -> Any:
        choices = {
            "threat_model": _THREAT_MODELS,
            "loss": _LOSSES,
            "backend": _BACKENDS,
            "target": _TARGETS,
        }[info.field_name]
        if v is None and info.field_name == "loss":
            return None
        if isinstance(v, str):
            low = v.strip().lower()
            if info.field_name == "threat_model":
                low = {"inf": "linf", "l_inf": "linf", "linfinity": "linf", "2": "l2"}.get(low, low)
            if info.field_name == "target":
                low = low.replace("_", "-")
            if low in choices:
                return low
        raise ValueError(
            f"{info.field_name}: must be one of {', '.join(map(repr, choices))}, got {_fmt(v)}"
        )

    @field_validator("eps", "step_size", mode="before")
    @classmethod
    def _check_positive_float(cls, v: Any, info: Any) -> Any:
        v = parse_eps(v, what=info.field_name)  # a number, or a fraction such as "8/255"
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{info.field_name}: must be a number > 0 or null, got {_fmt(v)}")
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{info.field_name}: must be > 0, got {_fmt(v)}")
        return float(v)

    @field_validator("steps", "restarts", mode="before")
    @classmethod
    def _check_count(cls, v: Any, info: Any) -> Any:
        if v is None and info.field_name == "steps":
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise ValueError(f"{info.field_name}: must be an integer >= 1, got {_fmt(v)}")
        if v < 1:
            raise ValueError(f"{info.field_name}: must be >= 1, got {_fmt(v)}")
        cap = MAX_STEPS if info.field_name == "steps" else MAX_RESTARTS
        if v > cap:
            raise ValueError(f"{info.field_name}: at most {cap:,} (a larger budget is a mistake or a denial of "
                             f"service, not an evaluation), got {_fmt(v)}")
        return v

    @field_validator("seed", mode="before")
    @classmethod
    def _check_seed(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"seed: must be an integer >= 0, got {_fmt(v)}")
        return v

    @model_validator(mode="after")
    def _check_consistency(self) -> AttackSpec:
        if self.threat_model == "linf" and self.eps is not None and self.eps > 1.0:
            raise ValueError(f"eps: an L-inf budget on inputs in [0, 1] is at most 1 (every input is reachable "
                             f"at 1), got {_fmt(self.eps)}")
        if self.threat_model == "l2" and self.eps is not None and self.eps > MAX_L2_EPS:
            raise ValueError(f"eps: an L2 budget on inputs in [0, 1] above {MAX_L2_EPS:g} exceeds the diameter of "
                             f"any image this suite handles, got {_fmt(self.eps)}")
        if self.backend == "torchattacks" and self.name == "autoattack":
            raise ValueError(f"name: {_TA_AUTOATTACK_REFUSAL}")
        if self.backend == "torchattacks" and self.name == "cw":
            raise ValueError(f"name: {_TA_CW_REFUSAL}")
        if self.backend == "native":
            self._check_native()
        return self

    def _check_native(self) -> None:
        """What the registered attack declares (:mod:`~robustbench_dc.attacks.registry`): its
        params, a one-step family's single step, its own step size, and its own checks."""
        attack = native_attack(self.name)
        if attack is None:
            names = native_attacks()
            raise ValueError(
                f"name: unknown native attack {self.name!r}{did_you_mean(self.name, names)}; available: "
                f"{', '.join(names)} (set backend='torchattacks' or backend='foolbox' for third-party attacks)")
        unknown = sorted(set(self.params) - set(attack.params))
        if unknown:
            raise ValueError(f"params: native {self.name} accepts "
                             f"{', '.join(attack.params) if attack.params else 'no params'}, got {unknown}")
        if attack.family == "fgsm" and self.steps not in (None, 1):
            raise ValueError(f"steps: {self.name} is a one-step attack, got {self.steps}")
        if attack.own_step_size:
            if self.step_size is not None:
                raise ValueError(f"step_size: {self.name} sets its own step size (2 eps, halved at its "
                                 f"checkpoints), got {self.step_size}")
            if self.random_start is False:
                raise ValueError(f"random_start: {self.name} always starts at a random point of the eps-ball")
        if attack.validate is not None:
            attack.validate(self)

    @property
    def native(self) -> NativeAttack | None:
        """The registered native attack this spec runs (None for a third-party backend)."""
        return native_attack(self.name) if self.backend == "native" else None

    def version_fixed_field(self) -> tuple[str, Any] | None:
        """The first of ``steps``, ``loss``, ``targeted`` and ``restarts`` this spec sets (``restarts``
        other than 1), as ``(field, value)``: what an attack whose version fixes them (AutoAttack)
        refuses; None when the spec sets none."""
        fixed = {"steps": self.steps, "loss": self.loss, "targeted": self.targeted or None,
                 "restarts": self.restarts if self.restarts != 1 else None}
        return next(((k, v) for k, v in fixed.items() if v is not None), None)

    # ------------------------------------------------------------------ defaults
    @property
    def family(self) -> str | None:
        """``"fgsm"``, ``"bim"`` or ``"pgd"`` for attacks whose defaults follow the
        native table (including the equivalent third-party classes), else ``None``."""
        attack = self.native
        return attack.family if attack is not None else _FAMILY.get((self.backend, self.name))

    def resolve(self, dataset: str | None = None) -> AttackSpec:
        """Return a copy with every derivable default filled in.

        Args:
            dataset (str | None): dataset name used when ``eps`` is None. Default None.

        Raises:
            ValueError: ``eps`` is None and no dataset is given.
        """
        eps = resolve_eps(self, dataset)
        update: dict[str, Any] = {"eps": eps}
        fam = self.family
        if fam is not None:
            steps = self.steps if self.steps is not None else (1 if fam == "fgsm" else 10)
            update["steps"] = steps
            if self.step_size is None:
                update["step_size"] = default_step_size(fam, eps, steps)
            if self.random_start is None:
                update["random_start"] = fam == "pgd"
        attack = self.native
        if attack is not None and attack.ensemble:  # budgets and losses fixed by its version
            update["params"] = {**self.params, "version": self.version}
            return self.model_copy(update=update)
        if attack is not None and fam is None:
            if self.steps is None and attack.default_steps is not None:
                update["steps"] = attack.default_steps
            if attack.own_step_size:
                update["random_start"] = True
        if attack is not None and self.loss is None:
            update["loss"] = attack.loss_for(self)
        return self.model_copy(update=update)

    @property
    def iterative(self) -> bool:
        """Whether this is a multi-step gradient attack (BIM, PGD, APGD, AutoAttack), for the masking checks."""
        attack = self.native
        return attack.iterative if attack is not None else self.family in ("bim", "pgd")

    @property
    def version(self) -> str | None:
        """The version of a native ensemble (AutoAttack's ``"standard"`` or ``"rand"``), else None."""
        attack = self.native
        if attack is not None and attack.ensemble:
            return str(self.params.get("version", "standard"))
        return None

    # ------------------------------------------------------------------ identity
    def canonical_json(self) -> str:
        """Canonical JSON (sorted keys, no whitespace) of all fields."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def key(self) -> str:
        """Stable sha256 hex digest of :meth:`canonical_json` (cache key).

        Resolve the spec first (:meth:`resolve`) to make specs that differ only by
        spelled-out defaults share a key."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    @property
    def label(self) -> str:
        """Short human-readable label, e.g. ``"pgd-linf-eps0.0314-s10"``.

        Non-default options are appended (``-r5`` restarts, ``-margin`` loss,
        ``-tgt`` targeted, ``-malt`` MALT's target order, ``-t3`` a given number of target
        classes) and third-party backends suffixed (``@torchattacks``)."""
        eps = "std" if self.eps is None else f"{self.eps:.4f}"
        parts = [self.name, self.threat_model, f"eps{eps}"]
        steps = self.steps
        attack = self.native
        if steps is None and self.family is not None:
            steps = 1 if self.family == "fgsm" else 10
        if steps is None and attack is not None and not attack.ensemble:
            steps = attack.default_steps
        if steps is not None:
            parts.append(f"s{steps}")
        if self.restarts > 1:
            parts.append(f"r{self.restarts}")
        default_loss = attack.loss_for(self) if attack is not None and not attack.ensemble else "ce"
        if self.loss is not None and self.loss != default_loss:  # e.g. APGD-T's default is the targeted DLR
            parts.append(self.loss)
        if self.targeted:
            parts.append("tgt" if self.target == "random" else "tgt-ll")
        if self.params.get("target_order") == "malt":  # APGD-T with MALT's choice of target classes
            parts.append("malt")
        if "n_target_classes" in self.params:
            parts.append(f"t{self.params['n_target_classes']}")
        if self.version not in (None, "standard"):
            parts.append(str(self.version))
        label = "-".join(parts)
        if self.backend != "native":
            label += f"@{self.backend}"
        return label

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.label

    # ------------------------------------------------------------------ YAML
    @classmethod
    def from_yaml(cls, path: str | Path) -> AttackSpec:
        """Load a spec from a YAML mapping of its fields."""
        import yaml

        from robustbench_dc._yaml import MAX_BYTES, safe_load

        if Path(path).stat().st_size > MAX_BYTES:
            raise AttackConfigError(f"{path}: larger than the {MAX_BYTES:,} bytes a configuration file may have")
        try:
            data = safe_load(Path(path).read_bytes())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise AttackConfigError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(data, dict):
            raise AttackConfigError(f"{path}: expected a YAML mapping of AttackSpec fields")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise AttackConfigError(f"{path}: {one_line(exc)}") from None

    def to_yaml(self) -> str:
        """YAML text of the fields that differ from their defaults."""
        import yaml

        return yaml.safe_dump(
            self.model_dump(mode="json", exclude_defaults=True), sort_keys=False
        )


# Third-party (backend, lower-case name) -> family whose defaults apply (native attacks declare theirs).
_FAMILY: dict[tuple[str, str], str] = {
    ("torchattacks", "fgsm"): "fgsm",
    ("torchattacks", "bim"): "bim",
    ("torchattacks", "pgd"): "pgd",
    ("torchattacks", "pgdl2"): "pgd",
    ("foolbox", "fgsm"): "fgsm",
    ("foolbox", "fgm"): "fgsm",
    ("foolbox", "linffastgradientattack"): "fgsm",
    ("foolbox", "l2fastgradientattack"): "fgsm",
    ("foolbox", "linfbasiciterativeattack"): "bim",
    ("foolbox", "l2basiciterativeattack"): "bim",
    ("foolbox", "linfpgd"): "pgd",
    ("foolbox", "l2pgd"): "pgd",
    ("foolbox", "pgd"): "pgd",
    ("foolbox", "linfprojectedgradientdescentattack"): "pgd",
    ("foolbox", "l2projectedgradientdescentattack"): "pgd",
}


def default_step_size(family: str, eps: float, steps: int) -> float:
    """Default step size of a family: fgsm -> eps, bim -> eps/steps, pgd -> 2.5*eps/steps."""
    if family == "fgsm":
        return eps
    if family == "bim":
        return eps / steps
    if family == "pgd":
        return 2.5 * eps / steps
    raise ValueError(f"no default step size for attack family {family!r}")


def resolve_eps(spec: AttackSpec, dataset: str | None = None) -> float:
    """The budget of ``spec``: ``spec.eps`` if set, else the dataset's standard eps.

    Args:
        spec (AttackSpec): the attack.
        dataset (str | None): e.g. ``"cifar10"``, ``"mnist"``, ``"mnist-sample"``.

    Example::

        >>> resolve_eps(AttackSpec(name="pgd"), "cifar10")
        0.03137254901960784
    """
    if spec.eps is not None:
        return spec.eps
    if dataset is None:
        raise AttackConfigError(
            f"eps: None means the dataset's standard eps, but no dataset was given for "
            f"attack {spec.label!r}; pass dataset=... or set eps"
        )
    value = STANDARD_EPS[canonical_dataset(dataset)].get(spec.threat_model)
    if value is None:
        raise AttackConfigError(
            f"eps: dataset {dataset!r} has no standard {spec.threat_model} budget; set eps explicitly"
        )
    return float(value)


def attack_config_dir() -> Path:
    """The bundled named attack configurations (``attacks/`` of a checkout, the same files in a wheel)."""
    from robustbench_dc.resources import resource_dir

    return resource_dir("attacks")


def load_attack_config(name_or_path: str | Path, config_dir: str | Path | None = None) -> AttackSpec:
    """Load a named attack configuration (``"pgd-linf"`` -> ``attacks/pgd-linf.yaml``),
    a YAML file path, or a native attack name with its defaults (``"autoattack"``, ``"apgd"``,
    ``"pgd"``, ...) when no configuration has that name.

    Example::

        >>> spec = load_attack_config("pgd-linf")
        >>> spec.resolve("cifar10").eps
    """
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return AttackSpec.from_yaml(p)
    d = Path(config_dir) if config_dir is not None else attack_config_dir()
    cand = d / f"{name_or_path}.yaml"
    if cand.exists():
        return AttackSpec.from_yaml(cand)
    names = native_attacks()
    if str(name_or_path).lower() in names:
        return AttackSpec(name=str(name_or_path))
    known = sorted(q.stem for q in d.glob("*.yaml")) if d.is_dir() else []
    raise AttackConfigError(
        f"attack config: unknown name {str(name_or_path)!r}{did_you_mean(name_or_path, [*known, *names])}; "
        f"available in {d}: {', '.join(known) if known else '(none)'}; or a native attack: {', '.join(names)}"
    )
