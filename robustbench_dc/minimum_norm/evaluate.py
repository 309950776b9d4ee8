"""A model's robustness curves: the minimum-norm attacks run, combined with the fixed-budget ones.

:func:`evaluate_curves` runs each minimum-norm attack under each threat model, adds the bounds the
model's fixed-budget attacks already gave (their per-example results, as
:class:`~robustbench_dc.evaluation.metrics.AttackResult` dicts in the same order of examples), and
returns one :class:`~robustbench_dc.minimum_norm.curve.RobustnessCurve` per threat model with the
attacks' diagnostics and cost.

Example::

    >>> out = evaluate_curves(model, x, y, ["fmn", "fab"], {"linf": 0.3, "l2": 2.0},
    ...                       fixed=whitebox.to_dict()["results"])
    >>> out["curves"]["linf"]["median"]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from robustbench_dc.minimum_norm.curve import budget_norms, robustness_curve
from robustbench_dc.minimum_norm.run import MinimumNormSpec, minimal_perturbations

__all__ = ["evaluate_curves", "curves_text"]


def evaluate_curves(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: Sequence[str],
                    eps_max: Mapping[str, float], *, fixed: Sequence[Mapping[str, Any]] = (), steps: int = 100,
                    batch_size: int = 250, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Robustness curves of ``model`` on ``(x, y)``, one per threat model of ``eps_max``.

    Args:
        model (nn.Module): maps (N, ...) inputs in [0, 1] to (N, K) logits.
        x (Tensor), y (Tensor): the examples (the first n of the test split).
        attacks (Sequence[str]): minimum-norm attacks (``fmn``, ``fmn-t``, ``fab``, ``fab-t``).
        eps_max (Mapping[str, float]): threat model -> the curve's range (the standard budget).
        fixed (Sequence[Mapping]): fixed-budget results on the same examples (``AttackResult.to_dict()``);
            those of each threat model add their bounds to its curve. Default none.
        steps (int): iterations of each minimum-norm attack. Default 100.
        batch_size (int): examples per attack batch. Default 250.
        n_boot (int), seed (int): the bootstrap of the intervals. Defaults 1000, 0.

    Returns:
        dict: ``curves`` (threat model -> :meth:`RobustnessCurve.to_dict`) and ``attacks`` (label ->
        ``not_adversarial``, ``lost``, ``seconds``, ``forward_passes``, ``backward_passes``, ``unbroken``).
    """
    curves: dict[str, Any] = {}
    log: dict[str, Any] = {}
    for tm, eps in eps_max.items():
        bounds: dict[str, torch.Tensor] = {}
        budgets: dict[str, float] = {}
        for name in attacks:
            res = minimal_perturbations(model, x, y, MinimumNormSpec(name, tm, steps=steps, seed=seed),
                                        batch_size=batch_size)
            bounds[res.label] = res.norms
            log[res.label] = {"not_adversarial": res.not_adversarial, "lost": res.lost, "seconds": res.seconds,
                              "forward_passes": res.forward_passes, "backward_passes": res.backward_passes,
                              "unbroken": int(torch.isinf(res.norms).sum())}
        for r in fixed:
            k = len(r.get("robust_correct", ()))
            if r.get("threat_model") == tm and r.get("eps") is not None and r.get("source") is None and k:
                b = budget_norms(torch.tensor(r["clean_correct"]), torch.tensor(r["robust_correct"]),
                                 torch.tensor(r["perturbation_norms"], dtype=torch.float64), float(r["eps"]))
                # an attack run on a prefix of the examples bounds none of the others
                bounds[r["attack"]] = torch.cat([b, torch.full((x.shape[0] - k,), math.inf, dtype=torch.float64)])
                budgets[r["attack"]] = float(r["eps"])
        curves[tm] = robustness_curve(bounds, tm, eps, budgets=budgets, n_boot=n_boot, seed=seed).to_dict()
    return {"curves": curves, "attacks": log}


def _bound(v: float | None) -> str:
    return "inf" if v is None else f"{v:.4g}"


def curves_text(out: Mapping[str, Any]) -> str:
    """A few lines per curve of :func:`evaluate_curves`' result: the median minimal perturbation and the
    area under the curve with their intervals, then each minimum-norm attack's diagnostics and cost."""
    lines = []
    for tm, c in out["curves"].items():
        lo, hi = c["median_interval"]
        alo, ahi = c["auc_interval"]
        lines.append(f"robustness curve, {tm} ({', '.join(c['attacks'])}): median minimal perturbation "
                     f"{_bound(c['median'])} [{_bound(lo)}, {_bound(hi)}], area under the curve on "
                     f"[0, {c['eps_max']:.4g}] {c['auc']:.3f} [{alo:.3f}, {ahi:.3f}] (95% bootstrap intervals)")
        if any(c["missed"].values()):
            lines.append(f"  the fixed-eps attacks broke {sum(c['missed'].values())} examples the minimum-norm "
                         "attacks left robust at their eps: the minimum-norm attacks fell short")
    for label, a in out["attacks"].items():
        lines.append(f"  {label}: {a['unbroken']} never broken, {a['not_adversarial']} reported but not adversarial, "
                     f"{a['lost']} lost, {a['seconds']:.1f} s, {a['forward_passes']} forward / "
                     f"{a['backward_passes']} backward passes")
    return "\n".join(lines)
