"""Croce & Hein's own AutoAttack (``pyautoattack`` on PyPI, the code RobustBench evaluates with),
runnable beside the suite's re-implementation and used to check it: the native attack
``autoattack-original`` (``--attack autoattack-original``, ``attacks=["autoattack-original"]``).

It runs the original's standard version (APGD-CE, APGD-T, FAB-T, Square at the published budgets)
on the batch it is given, and its adversarial examples then go through the suite's budget checks,
scoring, diagnostics and provenance like every other attack's. Published to the attack registry
through the package's entry point ``robustbench_dc.attacks`` (the attack library does not import
the evaluation); ``pip install "robustbench-dc[original]"`` installs the original code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustbench_dc.attacks.registry import register_attack
from robustbench_dc.attacks.trace import TraceView
from robustbench_dc.attacks.utils import eval_mode

__all__ = ["run_original_autoattack", "INSTALL_HINT"]

INSTALL_HINT = 'pip install "robustbench-dc[original]"'
_VERSIONS = ("standard", "rand", "plus")


def _check_spec(spec: Any) -> None:
    version = spec.params.get("version", "standard")
    if version not in _VERSIONS:
        raise ValueError(f"params.version: one of {', '.join(map(repr, _VERSIONS))}, got {version!r}")
    fixed = spec.version_fixed_field()
    if fixed is not None:
        raise ValueError(f"{fixed[0]}: the original AutoAttack's budgets are fixed by its version, got {fixed[1]!r}")


@register_attack("autoattack-original", params=("version",), own_step_size=True, default_loss=None,
                 validate=_check_spec, requires=("pyautoattack",))
def run_original_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: Any, *,
                            targets: torch.Tensor | None = None, eps: float | torch.Tensor | None = None,
                            step_size: float | torch.Tensor | None = None,
                            trace: TraceView | None = None) -> torch.Tensor:
    """Croce & Hein's AutoAttack, their code (``pyautoattack``), on one batch."""
    try:
        from pyautoattack import AutoAttack
    except ImportError as exc:  # pragma: no cover - check_installed refuses this before anything runs
        from robustbench_dc.attacks import BackendMissingError

        raise BackendMissingError(f"autoattack-original needs the pyautoattack package; install it: {INSTALL_HINT}") \
            from exc
    if eps is not None or step_size is not None or spec.eps is None:
        raise ValueError(f"{spec.label}: the original AutoAttack runs at one resolved budget")
    norm = {"linf": "Linf", "l2": "L2"}[spec.threat_model]
    with eval_mode(model):
        adversary = AutoAttack(model, norm=norm, eps=float(spec.eps), version=spec.params.get("version", "standard"),
                               seed=spec.seed, device=x.device)
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=x.shape[0])
    return x_adv.detach()
