"""Third-party attack backends behind :class:`~robustbench_dc.attacks.spec.AttackSpec`.

* ``torchattacks`` (Kim, "Torchattacks: A PyTorch Repository for Adversarial
  Attacks", 2020): any attack class by (case-insensitive) name -- ``APGD``,
  ``APGDT``, ``FAB``, ``Square``, ``PGD``, ``FGSM``, ``BIM``, ``PGDL2``, ...;
  its ``AutoAttack`` only as ``autoattack-10it`` and its ``CW`` not at all (see
  :mod:`~robustbench_dc.attacks.guards`). The spec is mapped onto the constructor's
  arguments when it has them: ``eps``; ``threat_model`` -> ``norm`` ("Linf" / "L2");
  ``steps``; ``step_size`` -> ``alpha``; ``random_start``; ``restarts`` ->
  ``n_restarts``; ``seed``; ``loss``; the model's number of classes -> ``n_classes``;
  ``verbose=False``; and ``n_target_classes`` (APGDT, FAB: ``min(9, K - 1)``, or
  ``params.n_target_classes``) is set on the attack after construction. Other
  ``spec.params`` are passed through last (and win).
* ``foolbox`` 3 (Rauber et al., "Foolbox Native", JOSS 2020): any class of
  ``foolbox.attacks`` (``LinfPGD``, ``L2PGD``, ``FGSM``, ``L2CarliniWagnerAttack``,
  ``LinfDeepFoolAttack``, ``LinfBasicIterativeAttack``, ...), run on
  ``foolbox.PyTorchModel(model, bounds=(0, 1))``; ``steps``, ``step_size`` ->
  ``abs_stepsize`` and ``random_start`` are mapped when the constructor has them.

Budget policy: fixed-budget attacks must return in-budget inputs and are
checked as returned. *Minimum-norm* attacks (torchattacks ``CW``, ``DeepFool``,
``EADL1``, ``EADEN``, ``SparseFool``, ``JSMA``, ``OnePixel``, ``Pixle``;
foolbox ``MinimizationAttack`` subclasses) have no budget: their output is
projected onto the threat model's eps-ball (foolbox's documented ``clipped``
output; the same projection for torchattacks), and the number of projected
examples is logged at INFO level.

The packages are imported lazily; if missing, an ``ImportError`` says to
``pip install robustbench-dc[backends]``.

Example::

    >>> spec = AttackSpec(name="APGD", backend="torchattacks", eps=8 / 255, steps=20)
    >>> x_adv = run_torchattacks(model, x, y, spec.resolve())
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import logging
from typing import Any

import torch
from torch import nn

from robustbench_dc._text import did_you_mean
from robustbench_dc.attacks.apgd import default_n_target_classes
from robustbench_dc.attacks.native import project_onto_ball
from robustbench_dc.attacks.registry import native_attacks
from robustbench_dc.attacks.spec import TORCHATTACKS_AUTOATTACK_10IT, AttackConfigError, AttackSpec
from robustbench_dc.attacks.utils import eval_mode, float32_logits, model_device
from robustbench_dc.errors import UserError

__all__ = [
    "available_attacks",
    "torchattacks_names",
    "foolbox_names",
    "run_torchattacks",
    "run_foolbox",
    "BackendMissingError",
    "backend_handles_restarts",
]

log = logging.getLogger(__name__)

_INSTALL_HINT = 'pip install "robustbench-dc[backends]"'
#: the extra of the package that installs each optional attack package
_EXTRAS = {"torchattacks": "backends", "foolbox": "backends", "pyautoattack": "original"}


def check_installed(spec: AttackSpec) -> None:
    """Refuse, before anything runs, an attack whose packages are not installed: a third-party
    backend's (torchattacks, foolbox), or what a native attack declares (AutoAttack's FAB-T and
    Square run through torchattacks).

    Raises:
        BackendMissingError: naming the attack, the package and the command that installs it.
    """
    import importlib.util

    attack = spec.native
    needed = attack.requires if attack is not None else (spec.backend,)
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        extras = sorted({_EXTRAS[name] for name in missing if name in _EXTRAS})
        others = [name for name in missing if name not in _EXTRAS]
        fix = " && ".join([f'pip install "robustbench-dc[{",".join(extras)}]"'] * bool(extras)
                          + [f"pip install {' '.join(others)}"] * bool(others))
        raise BackendMissingError(f"attack {spec.label} needs the {', '.join(missing)} package; install it: {fix}")


class BackendMissingError(UserError, ImportError):
    """A third-party backend package is not installed (the message says how to install it)."""


def _import_backend(name: str) -> Any:
    """Import ``torchattacks`` or ``foolbox`` lazily, with an install hint if it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise BackendMissingError(f"backend {name!r} needs the {name} package ({e}); run: {_INSTALL_HINT}") from e


# torchattacks classes whose threat model is fixed (no ``norm`` argument).
_TA_LINF = {
    "fgsm", "bim", "rfgsm", "pgd", "eotpgd", "ffgsm", "tpgd", "mifgsm", "upgd", "difgsm",
    "tifgsm", "jitter", "nifgsm", "pgdrs", "sinifgsm", "vmifgsm", "vnifgsm", "spsa",
    "pifgsm", "pifgsmpp",
}
_TA_L2 = {"pgdl2", "pgdrsl2", "cw", "deepfool", "eaden"}
_TA_MIN_NORM = {"cw", "deepfool", "eadl1", "eaden", "sparsefool", "jsma", "onepixel", "pixle"}
_TA_NOT_ATTACKS = {"multiattack", "lgv", "attack"}


def torchattacks_names() -> list[str]:
    """Attack class names available in the installed torchattacks."""
    ta = _import_backend("torchattacks")
    base = ta.attack.Attack
    names = []
    for n in getattr(ta, "__all__", dir(ta)):
        obj = getattr(ta, n, None)
        if inspect.isclass(obj) and issubclass(obj, base) and n.lower() not in _TA_NOT_ATTACKS:
            names.append(n)
    return sorted(names)


def foolbox_names() -> list[str]:
    """Attack class names available in the installed ``foolbox.attacks``."""
    fb = _import_backend("foolbox")
    base = fb.attacks.base.Attack
    names = []
    for n in dir(fb.attacks):
        obj = getattr(fb.attacks, n)
        if inspect.isclass(obj) and issubclass(obj, base) and not inspect.isabstract(obj):
            names.append(n)
    return sorted(names)


def available_attacks(backend: str) -> list[str]:
    """Attack names of ``backend`` (``"native"``, ``"torchattacks"`` or ``"foolbox"``). torchattacks'
    ``AutoAttack`` and ``CW`` are listed under the names the suite accepts (see :mod:`.guards`)."""
    if backend == "native":
        return sorted(native_attacks())
    if backend == "torchattacks":
        names = [n for n in torchattacks_names() if n.lower() not in ("autoattack", "cw")]
        return sorted(names + [TORCHATTACKS_AUTOATTACK_10IT])
    if backend == "foolbox":
        return foolbox_names()
    raise AttackConfigError(f"backend: must be 'native', 'torchattacks' or 'foolbox', got {backend!r}")


def _lookup(module: Any, names: list[str], name: str, backend: str) -> Any:
    by_lower = {n.lower(): n for n in names}
    if name.lower() not in by_lower:
        raise AttackConfigError(
            f"name: unknown {backend} attack {name!r}{did_you_mean(name, names)}; available: {', '.join(names)}"
        )
    return getattr(module, by_lower[name.lower()])


def _display(cls: type, spec: AttackSpec) -> str:
    """Class name as the user wrote it, with the real class if it is an alias."""
    typed = next((n for n in dir(_import_backend("foolbox").attacks) if n.lower() == spec.name), cls.__name__)
    return typed if typed == cls.__name__ else f"{typed} ({cls.__name__})"


def _call_kwargs(cls: type, mapped: dict[str, Any], params: dict[str, Any], label: str) -> dict[str, Any]:
    sig = inspect.signature(cls.__init__)  # type: ignore[misc]  # the class's own constructor
    accepted = [p for p in sig.parameters if p not in ("self", "model")]
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    kwargs = {k: v for k, v in mapped.items() if k in accepted}
    unknown = [k for k in params if k not in accepted and not has_var_kw]
    if unknown:
        raise AttackConfigError(
            f"params: {cls.__name__} does not accept {unknown} (attack {label!r}); "
            f"accepted arguments: {', '.join(accepted)}"
        )
    kwargs.update(params)
    return kwargs


def _warn_unmapped(spec: AttackSpec, accepted: set[str], mapping: dict[str, str], cls_name: str) -> None:
    if spec.family == "fgsm":
        return  # steps=1, step_size=eps are implied by FGSM
    for field, arg in mapping.items():
        value = getattr(spec, field)
        if field == "random_start" and value is False:
            continue  # an attack without the argument does not start at random anyway
        if value is not None and arg not in accepted and arg not in spec.params:
            log.warning(
                "%s: %s=%r is ignored (%s has no %r argument)",
                spec.label, field, value, cls_name, arg,
            )


def _project_min_norm(
    x_adv: torch.Tensor, x: torch.Tensor, eps: float, threat_model: str, label: str
) -> torch.Tensor:
    eps_t = torch.full((x.shape[0],), eps, dtype=x.dtype, device=x.device).view(
        -1, *([1] * (x.dim() - 1))
    )
    x_adv = torch.where(torch.isfinite(x_adv), x_adv, x)
    proj = project_onto_ball(x, x_adv, eps_t, threat_model)
    n_proj = int(((proj - x_adv).flatten(1).abs().amax(dim=1) > 0).sum())
    if n_proj:
        log.info(
            "%s: minimum-norm attack output projected onto the %s eps=%.6g ball for %d/%d examples",
            label, threat_model, eps, n_proj, x.shape[0],
        )
    return proj


def backend_handles_restarts(spec: AttackSpec) -> bool:
    """Whether the backend attack implements ``spec.restarts`` itself (native PGD,
    torchattacks classes with an ``n_restarts`` argument). Otherwise
    :func:`~robustbench_dc.attacks.attack.run_attack` loops over restarts."""
    if spec.backend == "native":
        return True
    if spec.backend == "torchattacks":
        return "n_restarts" in inspect.signature(_torchattacks_class(spec).__init__).parameters  # type: ignore[misc]
    return False


def _torchattacks_class(spec: AttackSpec) -> type:
    ta = _import_backend("torchattacks")
    name = "AutoAttack" if spec.name == TORCHATTACKS_AUTOATTACK_10IT else spec.name
    return _lookup(ta, torchattacks_names(), name, "torchattacks")


def _n_classes(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


def run_torchattacks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run a resolved spec with ``backend="torchattacks"``.

    Args:
        model (nn.Module): (N, ...) in [0, 1] -> (N, K) logits; set to eval mode
            during the attack, previous mode restored.
        x (Tensor): (N, ...) clean inputs. y (Tensor): (N,) labels.
        spec (AttackSpec): resolved spec (``spec.eps`` set).
        targets (Tensor | None): (N,) target labels for a targeted attack.

    Returns:
        Tensor: (N, ...) adversarial inputs (not yet constraint-checked).

    Example::

        >>> spec = AttackSpec(name="apgdt", backend="torchattacks", eps=8 / 255, steps=100).resolve()
        >>> x_adv = run_torchattacks(model, x, y, spec)
    """
    cls = _torchattacks_class(spec)
    lname = cls.__name__.lower()
    assert spec.eps is not None
    model = float32_logits(model, x)  # crafting under autocast: float32 logits, like torchattacks' buffers
    params = dict(spec.params)
    n_targets = params.pop("n_target_classes", None)
    accepted = set(inspect.signature(cls.__init__).parameters)  # type: ignore[misc]
    if "norm" not in accepted:
        fixed = "linf" if lname in _TA_LINF else "l2" if lname in _TA_L2 else None
        if fixed is not None and fixed != spec.threat_model:
            hint = {"pgd": " (use PGDL2 for l2)", "pgdl2": " (use PGD for linf)"}.get(lname, "")
            raise AttackConfigError(
                f"threat_model: torchattacks {cls.__name__} is a {fixed} attack, got "
                f"{spec.threat_model!r}{hint}"
            )
    mapped: dict[str, Any] = {
        "eps": spec.eps,
        "norm": {"linf": "Linf", "l2": "L2"}[spec.threat_model],
        "seed": spec.seed,
        "verbose": False,
    }
    if spec.steps is not None:
        mapped["steps"] = spec.steps
    if spec.step_size is not None and lname != "fab":  # FAB's alpha_max is not a step size
        mapped["alpha"] = spec.step_size
    if spec.random_start is not None:
        mapped["random_start"] = spec.random_start
    if "n_restarts" in accepted:
        mapped["n_restarts"] = spec.restarts
    if spec.loss is not None:
        mapped["loss"] = spec.loss
    n_classes = _n_classes(model, x) if "n_classes" in accepted else None  # one forward, only when needed
    if n_classes is not None:
        if spec.params.get("n_classes", n_classes) != n_classes:
            raise AttackConfigError(f"params.n_classes: the model has {n_classes} classes, got {spec.params['n_classes']}")
        mapped["n_classes"] = n_classes  # torchattacks' default is 10, whatever the model
    _warn_unmapped(
        spec, accepted,
        {"steps": "steps", "step_size": "alpha", "random_start": "random_start", "loss": "loss"},
        cls.__name__,
    )
    kwargs = _call_kwargs(cls, mapped, params, spec.label)
    buf = io.StringIO()
    with eval_mode(model), contextlib.redirect_stdout(buf):  # torchattacks prints; we log
        atk = cls(model, **kwargs)
        if hasattr(atk, "n_target_classes") and lname != "autoattack":
            # torchattacks' APGDT / FAB target n_classes - 1 classes; AutoAttack's are min(9, K - 1)
            n_classes = n_classes if n_classes is not None else _n_classes(model, x)
            n_t = default_n_target_classes(n_classes) if n_targets is None else int(n_targets)
            if not 1 <= n_t <= n_classes - 1:
                raise AttackConfigError(f"params.n_target_classes: must be in [1, {n_classes - 1}], got {n_t}")
            atk.n_target_classes = n_t
        elif n_targets is not None:
            raise AttackConfigError(f"params.n_target_classes: torchattacks {cls.__name__} has no target classes")
        if spec.targeted:
            if "targeted" not in getattr(atk, "supported_mode", []):
                raise AttackConfigError(
                    f"targeted: torchattacks {cls.__name__} does not support targeted mode "
                    f"(supported: {getattr(atk, 'supported_mode', [])})"
                )
            if targets is None:
                raise ValueError("targeted: target labels are required")
            atk.set_mode_targeted_by_label(quiet=True)
            x_adv = atk(x, targets)
        else:
            x_adv = atk(x, y)
    if buf.getvalue().strip():
        log.debug("torchattacks %s output: %s", cls.__name__, buf.getvalue().strip())
    x_adv = x_adv.detach().to(x.device)
    if lname in _TA_MIN_NORM:
        x_adv = _project_min_norm(x_adv, x, spec.eps, spec.threat_model, spec.label)
    return x_adv


def run_foolbox(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run a resolved spec with ``backend="foolbox"`` on ``foolbox.PyTorchModel(model, bounds=(0, 1))``.

    Args: as :func:`run_torchattacks`. Fixed-epsilon attacks return foolbox's
    ``raw`` output; minimum-norm attacks its ``clipped`` (eps-projected) output.

    Example::

        >>> spec = AttackSpec(name="LinfPGD", backend="foolbox", eps=0.3, steps=40).resolve()
        >>> x_adv = run_foolbox(model, x, y, spec)
    """
    fb = _import_backend("foolbox")
    cls = _lookup(fb.attacks, foolbox_names(), spec.name, "foolbox")
    assert spec.eps is not None
    model = float32_logits(model, x)
    accepted = set(inspect.signature(cls.__init__).parameters)
    mapped: dict[str, Any] = {}
    if spec.steps is not None:
        mapped["steps"] = spec.steps
    if spec.step_size is not None:
        mapped["abs_stepsize"] = spec.step_size
    if spec.random_start is not None:
        mapped["random_start"] = spec.random_start
    _warn_unmapped(
        spec, accepted,
        {"steps": "steps", "step_size": "abs_stepsize", "random_start": "random_start", "loss": "loss"},
        cls.__name__,
    )
    kwargs = _call_kwargs(cls, mapped, spec.params, spec.label)
    attack = cls(**kwargs)
    distance = getattr(attack, "distance", None)
    p = getattr(distance, "p", None)
    if p is not None:
        tm = "linf" if p == float("inf") else "l2" if p == 2 else f"l{p:g}"
        if tm != spec.threat_model:
            raise AttackConfigError(
                f"threat_model: foolbox {_display(cls, spec)} is a {tm} attack, got {spec.threat_model!r}"
            )
    if spec.targeted:
        if targets is None:
            raise ValueError("targeted: target labels are required")
        criterion = fb.criteria.TargetedMisclassification(targets)
    else:
        criterion = fb.criteria.Misclassification(y)
    minimization = isinstance(attack, fb.attacks.base.MinimizationAttack)
    with eval_mode(model):
        fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=model_device(model, x.device))
        try:
            raw, clipped, _ = attack(fmodel, x, criterion, epsilons=spec.eps)
        except NotImplementedError as e:
            raise AttackConfigError(f"foolbox {cls.__name__} cannot run {spec.label!r}: {e}") from e
    x_adv = (clipped if minimization else raw).detach().to(x.device)
    if minimization:
        n_proj = int(((clipped - raw).flatten(1).abs().amax(dim=1) > 0).sum())
        if n_proj:
            log.info(
                "%s: minimum-norm attack output projected onto the %s eps=%.6g ball for %d/%d examples",
                spec.label, spec.threat_model, spec.eps, n_proj, x.shape[0],
            )
    return x_adv
