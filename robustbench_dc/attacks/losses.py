"""Per-example attack objectives (to be *maximised* by the attacker).

* ``ce``: cross-entropy of the true label (untargeted) or minus the cross-entropy
  of the target label (targeted).
* ``margin``: Carlini & Wagner, "Towards Evaluating the Robustness of Neural
  Networks", S&P 2017, logit margin without the confidence clamp:
  ``max_{j != y} z_j - z_y`` (untargeted), ``z_t - max_{j != t} z_j`` (targeted).
  Positive exactly when the attack succeeds.
* ``dlr``: Croce & Hein, "Reliable Evaluation of Adversarial Robustness with an
  Ensemble of Diverse Parameter-free Attacks", ICML 2020, the Difference of
  Logits Ratio ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)`` (needs >= 3 classes)
  and its targeted version ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``
  (needs >= 4 classes), with ``z_pi`` the logits sorted in decreasing order.

All functions take ``logits`` of shape (N, K) and integer labels of shape (N,)
and return a loss of shape (N,); none reduces over the batch.

Example::

    >>> loss = attack_loss(model(x), y, "dlr")   # shape (N,)
    >>> grad, = torch.autograd.grad(loss.sum(), x)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustbench_dc.attacks.spec import AttackConfigError
from robustbench_dc.attacks.utils import upcast_logits

__all__ = ["ce_loss", "margin_loss", "dlr_loss", "attack_loss", "make_targets", "attack_success"]

_TINY = 1e-12


def _other_max(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """max_{j != label} logits_j, shape (N,)."""
    masked = logits.scatter(1, label[:, None], float("-inf"))
    return masked.amax(dim=1)


def ce_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy objective: ``CE(z, y)`` or, targeted, ``-CE(z, t)``. Shape (N,)."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


def margin_loss(
    logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """CW logit margin (no clamp). Shape (N,); > 0 iff the attack succeeds."""
    if target is None:
        z_y = logits.gather(1, y[:, None]).squeeze(1)
        return _other_max(logits, y) - z_y
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return z_t - _other_max(logits, target)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Croce & Hein DLR (untargeted, K >= 3) or DLR-targeted (K >= 4). Shape (N,)."""
    k = logits.shape[1]
    srt = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    if target is None:
        if k < 3:
            raise AttackConfigError(f"loss: 'dlr' needs at least 3 classes, got {k}; use 'ce' or 'margin'")
        return -(z_y - _other_max(logits, y)) / (srt[:, 0] - srt[:, 2] + _TINY)
    if k < 4:
        raise AttackConfigError(
            f"loss: targeted 'dlr' needs at least 4 classes, got {k}; use 'ce' or 'margin'"
        )
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + _TINY)


def attack_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    loss: str = "ce",
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dispatch to :func:`ce_loss`, :func:`margin_loss` or :func:`dlr_loss`.

    Args:
        logits (Tensor): (N, K).
        y (Tensor): (N,) true labels.
        loss (str): ``"ce"`` (default), ``"margin"`` or ``"dlr"``.
        target (Tensor | None): (N,) target labels for a targeted attack. Default None.

    The loss is computed in at least float32 (bfloat16 / float16 logits, from crafting under
    autocast, are upcast; float64 logits stay float64).
    """
    logits = upcast_logits(logits)
    if loss == "ce":
        return ce_loss(logits, y, target)
    if loss == "margin":
        return margin_loss(logits, y, target)
    if loss == "dlr":
        return dlr_loss(logits, y, target)
    raise ValueError(f"loss: must be one of 'ce', 'margin', 'dlr', got {loss!r}")


def attack_success(
    logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """Bool (N,): prediction != y (untargeted) or prediction == target (targeted)."""
    pred = logits.argmax(dim=1)
    return pred != y if target is None else pred == target


def make_targets(
    logits: torch.Tensor,
    y: torch.Tensor,
    mode: str = "random",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Target labels for a targeted attack, shape (N,), never equal to ``y``.

    Args:
        logits (Tensor): (N, K) clean logits.
        y (Tensor): (N,) true labels.
        mode (str): ``"random"`` (uniform over the K-1 other classes, default) or
            ``"least-likely"`` (argmin of the clean logits over the other classes).
        generator (torch.Generator | None): for ``"random"``; on the logits' device.
    """
    k = logits.shape[1]
    if k < 2:
        raise AttackConfigError(f"targeted: needs at least 2 classes, got {k}")
    if mode == "random":
        offset = torch.randint(1, k, y.shape, generator=generator, device=y.device)
        return (y + offset) % k
    if mode == "least-likely":
        return logits.detach().scatter(1, y[:, None], float("inf")).argmin(dim=1)
    raise ValueError(f"target: must be 'random' or 'least-likely', got {mode!r}")
