"""The attack set of an evaluation from the command line: named configurations with overrides."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from robustbench_dc._pydantic import one_line
from robustbench_dc.attacks.spec import AttackConfigError, AttackSpec, load_attack_config
from robustbench_dc.data.registry import DATASETS

__all__ = ["DEFAULT_ATTACKS", "configure_attacks", "LARGE_EPS"]

#: "Large" L-inf budgets used by the masking check ``accuracy-not-zero-at-large-eps``:
#: at these budgets any correct attack drives accuracy to (almost) zero (from the registry).
LARGE_EPS: dict[str, float] = {name: info.eps_linf_large for name, info in DATASETS.items() if info.base is None}

#: The attack set of ``rbdc evaluate`` and ``rbdc transfer`` when none is named.
DEFAULT_ATTACKS: tuple[str, ...] = ("fgsm-linf", "bim-linf", "pgd-linf")


def configure_attacks(names: list[str] | tuple[str, ...] | None = None, *, eps: float | None = None,
                      backend: str | None = None, steps: int | None = None) -> list[AttackSpec]:
    """Load named attack configurations (default :data:`DEFAULT_ATTACKS`) and apply overrides
    to every one: ``eps``, ``backend`` and ``steps`` (not to FGSM, a one-step attack, nor to
    AutoAttack, whose budgets are fixed by its version).

    Raises:
        AttackConfigError: an unknown name, or an override the attack does not accept.
    """
    specs = []
    for name in names or DEFAULT_ATTACKS:
        spec = load_attack_config(name)
        changes: dict[str, Any] = {}
        if eps is not None:
            changes["eps"] = eps
        if backend is not None:
            changes["backend"] = backend
        one_step, ensemble = spec.family == "fgsm", spec.native is not None and spec.native.ensemble
        if steps is not None and not one_step and not ensemble:
            changes["steps"] = steps
        if changes:
            try:
                spec = type(spec)(**{**spec.model_dump(), **changes})
            except ValidationError as exc:
                raise AttackConfigError(f"attack {name!r}: {one_line(exc)}") from None
        specs.append(spec)
    return specs
