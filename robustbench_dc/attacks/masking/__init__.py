"""Gradient-masking diagnostics (Athalye, Carlini & Wagner, "Obfuscated Gradients
Give a False Sense of Security", ICML 2018; Carlini et al., "On Evaluating
Adversarial Robustness", 2019; Croce & Hein's AutoAttack ``checks.py``).

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
=================================  ==========================================================

Warnings go through :mod:`logging` (logger ``robustbench_dc.attacks.masking``).

Example::

    >>> flags = diagnose_masking(model, x, y, results, dataset="cifar10")
    >>> [f.name for f in flags if f.triggered]
"""

from __future__ import annotations

import torch
from torch import nn

from robustbench_dc.attacks._utils import model_device
from robustbench_dc.attacks.masking.flags import DOC_PATH, FLAG_NAMES, MaskingConfig, MaskingFlag
from robustbench_dc.attacks.masking.from_results import flag_one_step_beats_iterative, flag_transfer_beats_whitebox
from robustbench_dc.attacks.masking.probes import flag_large_eps, flag_noise_beats_gradient, flag_randomness, flag_zero_gradients
from robustbench_dc.attacks.metrics import AttackResult

__all__ = [
    "MaskingFlag",
    "MaskingConfig",
    "FLAG_NAMES",
    "DOC_PATH",
    "diagnose_masking",
    "flag_one_step_beats_iterative",
    "flag_transfer_beats_whitebox",
    "flag_large_eps",
    "flag_zero_gradients",
    "flag_randomness",
    "flag_noise_beats_gradient",
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
) -> list[MaskingFlag]:
    """Run all six diagnostics on the first ``config.max_examples`` examples.

    Arguments:
        model (nn.Module): the evaluated model.
        x (Tensor): (N, ...) clean inputs in [0, 1]; y (Tensor): (N,) labels.
        results (list[AttackResult]): white-box results of ``model`` on (x, y).
        dataset (str | None): for the large-eps budget. Default None.
        config (MaskingConfig | None): thresholds; default :class:`MaskingConfig()`.
        transfer (list[AttackResult] | None): transfer results on ``model`` (for flag b).
        batch_size (int): default 256.

    Returns:
        list[MaskingFlag]: in the order of :data:`FLAG_NAMES`.

    Example::

        >>> flags = diagnose_masking(model, x, y, results, dataset="mnist")
    """
    cfg = config or MaskingConfig()
    m = min(cfg.max_examples, x.shape[0])
    dev = model_device(model, x.device)
    xs, ys = x[:m].to(dev), y[:m].to(dev)
    flags = [
        flag_one_step_beats_iterative(results, cfg.one_step_tol),
        flag_transfer_beats_whitebox(results, transfer or [], cfg.transfer_tol),
        flag_large_eps(model, xs, ys, dataset=dataset, config=cfg, batch_size=batch_size),
        flag_zero_gradients(model, xs, ys, config=cfg, batch_size=batch_size),
        flag_randomness(model, xs, config=cfg, batch_size=batch_size),
        flag_noise_beats_gradient(model, xs, ys, results, config=cfg, batch_size=batch_size),
    ]
    return flags
