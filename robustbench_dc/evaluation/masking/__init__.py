"""Gradient-masking diagnostics and attack-failure indicators (Athalye, Carlini & Wagner,
"Obfuscated Gradients Give a False Sense of Security", ICML 2018; Carlini et al., "On
Evaluating Adversarial Robustness", 2019; Croce & Hein's AutoAttack ``checks.py``; Pintor et
al., "Indicators of Attack Failure", NeurIPS 2022).

Each diagnostic returns a :class:`MaskingFlag`; every flag is documented in one
place, ``docs/masking_flags.md``, under an anchor equal to the flag's name, and
the flag's ``doc`` field / message points there:

=================================  ==========================================================
flag                               triggered when
=================================  ==========================================================
``one-step-beats-iterative``       FGSM robust acc < BIM/PGD robust acc - ``one_step_tol``
``transfer-beats-whitebox``        best transfer robust acc < white-box robust acc - ``transfer_tol``
``accuracy-not-zero-at-large-eps`` PGD-linf robust acc at ``large_eps`` > ``large_eps_threshold``
``zero-or-nonfinite-gradients``    fraction of examples whose CE input gradient is all zero
                                   or non-finite > ``zero_grad_threshold``
``randomized-forward``             two identical eval-mode forward passes differ by more
                                   than ``randomness_tol`` (relative to the logit scale)
``noise-beats-gradient-attack``    random noise of the same budget fools examples the
                                   gradient attacks did not (fraction > ``noise_threshold``)
``silent-success``                 an iterate was adversarial, the returned point is not
``incomplete-optimization``        the objective still improved over the last iterations
``budget-sensitivity``             2x iterations or 2x restarts change robust acc > ``budget_tol``
``non-monotone-eps-curve``         robust acc rises with eps on the PGD eps curve
``unconstrained-attack-failure``   PGD at eps 1 (the whole input box) leaves examples unbroken
``unstable-predictions``           the loss changes sharply under small random perturbations
``softmax-output``                 the model outputs probabilities instead of logits
``square-beats-whitebox``          Square breaks examples the white-box attacks did not
``dynamic-forward``                the forward pass calls autograd or an optimiser
=================================  ==========================================================

``silent-success`` and ``incomplete-optimization`` read the attacks' recorded paths
(:mod:`~robustbench_dc.attacks.trace`), which :func:`~robustbench_dc.evaluation.whitebox_whitebox`
passes in.

Warnings go through :mod:`logging` (logger ``robustbench_dc.evaluation.masking``).

Example::

    >>> flags = diagnose_masking(model, x, y, results, dataset="cifar10")
    >>> [f.name for f in flags if f.triggered]
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from robustbench_dc.attacks.steps import attack_mode
from robustbench_dc.attacks.trace import AttackTrace
from robustbench_dc.attacks.utils import model_device
from robustbench_dc.evaluation.masking.flags import DOC_PATH, FLAG_NAMES, MaskingConfig, MaskingFlag, masking_config
from robustbench_dc.evaluation.masking.from_results import flag_one_step_beats_iterative, flag_transfer_beats_whitebox
from robustbench_dc.evaluation.masking.indicators import (
    budget_reference,
    eps_curve,
    flag_budget_sensitivity,
    flag_dynamic_forward,
    flag_incomplete_optimization,
    flag_non_monotone_eps,
    flag_silent_success,
    flag_softmax_output,
    flag_square_beats_whitebox,
    flag_unconstrained_failure,
    flag_unstable_predictions,
    large_eps_for,
)
from robustbench_dc.evaluation.masking.probes import (
    flag_large_eps,
    flag_noise_beats_gradient,
    flag_randomness,
    flag_zero_gradients,
    large_eps_flag,
)
from robustbench_dc.evaluation.metrics import AttackResult

__all__ = [
    "MaskingFlag",
    "MaskingConfig",
    "FLAG_NAMES",
    "DOC_PATH",
    "masking_config",
    "diagnose_masking",
    "flag_one_step_beats_iterative",
    "flag_transfer_beats_whitebox",
    "flag_large_eps",
    "flag_zero_gradients",
    "flag_randomness",
    "flag_noise_beats_gradient",
    "flag_silent_success",
    "flag_incomplete_optimization",
    "flag_budget_sensitivity",
    "flag_non_monotone_eps",
    "flag_unconstrained_failure",
    "flag_unstable_predictions",
    "flag_softmax_output",
    "flag_square_beats_whitebox",
    "flag_dynamic_forward",
    "eps_curve",
]

def diagnose_masking(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    results: list[AttackResult],
    *,
    dataset: str | None = None,
    config: MaskingConfig | None = None,
    transfer: list[AttackResult] | None = None,
    batch_size: int = 256,
    traces: Mapping[str, AttackTrace] | None = None,
    adversarial: Mapping[str, torch.Tensor] | None = None,
    attack_context: Callable[[], AbstractContextManager[Any]] | None = None,
) -> list[MaskingFlag]:
    """Run every diagnostic on the first ``config.max_examples`` examples.

    Args:
        model (nn.Module): the evaluated model.
        x (Tensor): (N, ...) clean inputs in [0, 1]; y (Tensor): (N,) labels.
        results (list[AttackResult]): white-box results of ``model`` on (x, y).
        dataset (str | None): for the large-eps budget. Default None.
        config (MaskingConfig | None): thresholds; default :class:`MaskingConfig()`.
        transfer (list[AttackResult] | None): transfer results on ``model`` (for flag b).
        batch_size (int): default 256.
        traces (Mapping[str, AttackTrace] | None): per attack label, the recorded path of the attack
            (silent success, incomplete optimisation). Default None (those two not evaluated).
        adversarial (Mapping[str, Tensor] | None): per attack label, the points it returned for the
            first examples (unstable predictions; the clean points when missing).
        attack_context (callable | None): a context the probes that attack or query the model many
            times (eps curve, budget sensitivity, noise, unstable predictions) run in, e.g. compiled
            decoupled responses (same values); the gradient and randomness checks run outside it.

    Returns:
        list[MaskingFlag]: in the order of :data:`FLAG_NAMES`.

    Example::

        >>> flags = diagnose_masking(model, x, y, results, dataset="mnist")
    """
    cfg = config or MaskingConfig()
    m = min(cfg.max_examples, x.shape[0])
    dev = model_device(model, x.device)
    xs, ys = x[:m].to(dev), y[:m].to(dev)
    ctx = attack_context or contextlib.nullcontext
    # the probes run the model as the attacks do (batch norms folded, frozen, channels-last on the
    # CPU): the attacks among them would fold it anyway, and the forward-only ones (noise, unstable
    # predictions) then skip the batch norms' own passes; the same function up to float32 rounding
    with ctx(), attack_mode(model, xs):
        probes = _attack_probes(model, xs, ys, results, dataset, cfg, batch_size, adversarial)
    by_name = {"one-step-beats-iterative": flag_one_step_beats_iterative(results, cfg.one_step_tol),
               "transfer-beats-whitebox": flag_transfer_beats_whitebox(results, transfer or [], cfg.transfer_tol),
               "zero-or-nonfinite-gradients": flag_zero_gradients(model, xs, ys, config=cfg, batch_size=batch_size),
               "randomized-forward": flag_randomness(model, xs, config=cfg, batch_size=batch_size),
               "silent-success": flag_silent_success(results, traces, cfg.silent_success_threshold),
               "incomplete-optimization": flag_incomplete_optimization(results, traces, cfg),
               "softmax-output": flag_softmax_output(model, xs),
               "square-beats-whitebox": flag_square_beats_whitebox(results, cfg.square_tol),
               "dynamic-forward": flag_dynamic_forward(model, xs)} | probes
    return [f for name in FLAG_NAMES if (f := by_name.get(name)) is not None]


def _attack_probes(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, results: list[AttackResult],
                   dataset: str | None, cfg: MaskingConfig, batch_size: int,
                   adversarial: Mapping[str, torch.Tensor] | None) -> dict[str, MaskingFlag]:
    """The diagnostics that attack or query the model many times."""
    primary = next(((r.threat_model, r.eps) for r in results if r.eps is not None and r.threat_model in ("linf", "l2")),
                   None)
    large = large_eps_for(dataset, cfg)
    on_curve = [f * primary[1] for f in cfg.eps_curve_factors] if primary else []
    linf_points = [e for e in on_curve if primary[0] == "linf" and e < cfg.unconstrained_eps] if primary else []
    linf_curve, clean = eps_curve(model, xs, ys, "linf", linf_points + [large, cfg.unconstrained_eps], config=cfg,
                                  batch_size=batch_size)
    if primary and primary[0] == "l2":
        curve, _ = eps_curve(model, xs, ys, "l2", on_curve, config=cfg, batch_size=batch_size)
        curve_tm = "l2"
    else:
        curve, curve_tm = linf_curve, "linf"
    out = {"accuracy-not-zero-at-large-eps": large_eps_flag(linf_curve[large], large, cfg),
           "noise-beats-gradient-attack": flag_noise_beats_gradient(model, xs, ys, results, config=cfg,
                                                                    batch_size=batch_size),
           "non-monotone-eps-curve": flag_non_monotone_eps(curve, cfg.eps_curve_tol, curve_tm),
           "unconstrained-attack-failure": flag_unconstrained_failure(
               linf_curve[cfg.unconstrained_eps], clean, cfg.unconstrained_eps, cfg.unconstrained_threshold,
               cfg.large_eps_steps),
           "unstable-predictions": _unstable(model, xs, ys, results, adversarial, primary, cfg, batch_size)}
    if cfg.budget_check:
        k = min(cfg.budget_examples, xs.shape[0])
        out["budget-sensitivity"] = flag_budget_sensitivity(model, xs[:k], ys[:k], results, config=cfg,
                                                            batch_size=batch_size)
    return out


def _unstable(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, results: list[AttackResult],
              adversarial: Mapping[str, torch.Tensor] | None, primary: tuple[str, float | None] | None,
              cfg: MaskingConfig, batch_size: int) -> MaskingFlag:
    """Unstable predictions at the points returned by the strongest native iterative attack (else the
    first attack with returned points, else the clean points), radius the evaluation's eps."""
    points = xs
    if adversarial:
        ref = budget_reference(results)
        label = ref[0].attack if ref is not None and ref[0].attack in adversarial else next(iter(adversarial))
        adv = adversarial[label]
        points = torch.cat([adv[: xs.shape[0]].to(xs.device), xs[adv.shape[0]:]])  # clean points past the kept ones
    radius = cfg.unstable_radius
    if radius is None:
        eps = primary[1] if primary and primary[1] is not None else 8 / 255
        radius = eps if primary is None or primary[0] == "linf" else eps / math.sqrt(xs[0].numel())
    return flag_unstable_predictions(model, points, ys, radius, config=cfg, batch_size=batch_size)
