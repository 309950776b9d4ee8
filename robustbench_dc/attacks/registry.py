"""The registry of native attacks: one decorated function per attack, in the style of
:func:`~robustbench_dc.zoo.register_arch` and :func:`~robustbench_dc.operators.register_operator`.

An attack is a function ``run(model, x, y, spec, *, targets, eps, step_size, trace)`` that returns
the adversarial batch (an ensemble returns ``(x_adv, components)``: its per-component log). What
the rest of the suite needs to know about it -- the ``params`` it accepts, the family whose
step-size defaults it follows, its default number of steps and loss, whether it chooses its own
target classes, whether it is an ensemble -- is declared with the decorator, so that no code
outside the attack's own module branches on its name::

    from robustbench_dc.attacks import register_attack

    @register_attack("noise", iterative=False, default_steps=1)
    def noise(model, x, y, spec, *, targets=None, eps=None, step_size=None, trace=None):
        g = torch.Generator(device=x.device).manual_seed(spec.seed)
        e = spec.eps if eps is None else eps
        return (x + e * (2 * torch.rand(x.shape, generator=g, device=x.device) - 1)).clamp(0, 1)

After that, ``AttackSpec(name="noise")``, ``rbdc evaluate --attack noise`` and a protocol's
``attacks: [noise]`` run it (a package publishes its attacks to the command line through the
entry-point group ``robustbench_dc.attacks``; a Python session registers them by importing
the module that defines them). The suite's own attacks (FGSM, BIM, PGD, APGD, AutoAttack)
register the same way, in :mod:`~robustbench_dc.attacks.native`, :mod:`~robustbench_dc.attacks.apgd`
and :mod:`~robustbench_dc.autoattack.ensemble`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from robustbench_dc.errors import InvalidParameterError

#: An :class:`~robustbench_dc.attacks.spec.AttackSpec` (this module sits below it: the spec asks it).
AttackSpec = Any

__all__ = ["NativeAttack", "register_attack", "native_attack", "native_attacks", "unregister_attack"]

#: The modules that register the suite's own attacks (imported on first use of the registry).
BUILTIN_MODULES = ("robustbench_dc.attacks.native", "robustbench_dc.attacks.apgd", "robustbench_dc.autoattack.ensemble",
                   "robustbench_dc.autoattack.malt")
#: The suite's own attacks, in the order they are listed.
BUILTIN_ATTACKS = ("fgsm", "bim", "pgd", "apgd", "autoattack", "square", "malt")


@dataclass(frozen=True)
class NativeAttack:
    """A registered native attack and what the suite needs to know about it.

    Attributes:
        name: the attack's name (``AttackSpec.name``), lower case.
        run: ``run(model, x, y, spec, *, targets, eps, step_size, trace)`` -> adversarial batch
            (an ensemble: ``(x_adv, components)``).
        params: the keys of ``AttackSpec.params`` it accepts.
        family: ``"fgsm"``, ``"bim"`` or ``"pgd"`` when the native table's steps, step size and
            random start apply (:func:`~robustbench_dc.attacks.spec.default_step_size`), else None.
        iterative: a multi-step gradient attack (the masking checks compare it with one-step ones).
        default_steps: its iterations when the spec gives none (attacks outside a family).
        default_loss: its loss when the spec gives none, or a function of the spec.
        own_step_size: sets its own step size and always starts at a random point (APGD): a spec
            that sets ``step_size`` or ``random_start: false`` is refused.
        chooses_targets: picks its own target classes for a targeted spec (APGD-T).
        ensemble: runs fixed components and returns their log; ``steps``, ``loss``,
            ``targeted`` and ``restarts`` are fixed by its ``version`` param.
        validate: extra checks of a spec (raise ``ValueError("field: problem")``).
        requires: Python packages it needs besides the suite's own (checked before anything runs).
        work: gradient iterations per example at most, as a function of the spec, where
            ``steps x restarts`` does not say it (an ensemble; one that declares none is counted as
            AutoAttack); the evaluation decides from it whether compiling the decoupled responses pays.
    """

    name: str
    run: Callable[..., Any]
    params: tuple[str, ...] = ()
    family: str | None = None
    iterative: bool = True
    default_steps: int | None = None
    default_loss: str | Callable[[AttackSpec], str] | None = "ce"
    own_step_size: bool = False
    chooses_targets: bool = False
    ensemble: bool = False
    validate: Callable[[AttackSpec], None] | None = None
    requires: tuple[str, ...] = ()
    work: Callable[[AttackSpec], int] | None = None

    def loss_for(self, spec: AttackSpec) -> str | None:
        """The loss a spec without one uses."""
        return self.default_loss(spec) if callable(self.default_loss) else self.default_loss


_REGISTRY: dict[str, NativeAttack] = {}
_LOADED = False


#: The entry-point group through which an installed package publishes its attacks (each entry
#: point names a module, or an object in one, whose import registers them).
ENTRY_POINT_GROUP = "robustbench_dc.attacks"


def _load_builtins() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken plugin is the user's, reported by name
                raise InvalidParameterError(f"attack plugin {ep.name!r} ({ep.value}): loading it failed: "
                                            f"{type(exc).__name__}: {exc}") from exc


def register_attack(name: str, **meta: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as the native attack ``name`` (see :class:`NativeAttack`
    for the keyword arguments). Registering a name twice replaces the earlier attack.

    Raises:
        InvalidParameterError: an empty name, or one that is not lower-case letters, digits and
            ``-``/``_``.
    """
    key = name.strip().lower()
    if not key or not all(c.isalnum() or c in "-_" for c in key):
        raise InvalidParameterError(f"attack name: lower-case letters, digits, '-' and '_' only, got {name!r}")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[key] = NativeAttack(key, fn, **meta)
        return fn

    return decorate


def unregister_attack(name: str) -> None:
    """Remove a registered attack (a test's throwaway attack, say); unknown names are ignored."""
    _REGISTRY.pop(name.strip().lower(), None)


def native_attacks() -> tuple[str, ...]:
    """The names of every registered native attack: the suite's own (:data:`BUILTIN_ATTACKS`, in
    that order), then the others in the order they were registered."""
    _load_builtins()
    own = [n for n in BUILTIN_ATTACKS if n in _REGISTRY]
    return tuple(own + [n for n in _REGISTRY if n not in BUILTIN_ATTACKS])


def native_attack(name: str) -> NativeAttack | None:
    """The registered attack ``name`` (case ignored), or None."""
    _load_builtins()
    return _REGISTRY.get(name.strip().lower())
