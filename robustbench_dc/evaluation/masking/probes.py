"""Masking flags that query the model: a large-eps attack, input gradients, repeated forward
passes and random noise."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_dc.attacks.checks import check_adversarial
from robustbench_dc.attacks.native import input_gradient
from robustbench_dc.attacks.utils import eval_mode, model_device
from robustbench_dc.evaluation.masking.flags import MaskingConfig, MaskingFlag, group_by_budget, make_flag
from robustbench_dc.evaluation.masking.indicators import eps_curve, large_eps_for
from robustbench_dc.evaluation.metrics import AttackResult

__all__ = ["flag_large_eps", "large_eps_flag", "flag_zero_gradients", "flag_randomness", "flag_noise_beats_gradient"]

# ---------------------------------------------------------------------- (c)
def flag_large_eps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    dataset: str | None = None,
    config: MaskingConfig | None = None,
    batch_size: int = 256,
) -> MaskingFlag:
    """(c) PGD-linf at a large eps (:data:`~robustbench_dc.evaluation.attack_set.LARGE_EPS`)
    should drive accuracy to ~0; robust accuracy above ``large_eps_threshold`` triggers.

    Args:
        model (nn.Module): the model. x (Tensor): (N, ...) in [0, 1]. y (Tensor): (N,).
        dataset (str | None): picks the large eps if ``config.large_eps`` is None.
        config (MaskingConfig | None): thresholds. batch_size (int): default 256.
    """
    cfg = config or MaskingConfig()
    eps = large_eps_for(dataset, cfg)
    curve, _ = eps_curve(model, x, y, "linf", [eps], config=cfg, batch_size=batch_size)
    return large_eps_flag(curve[eps], eps, cfg)


def large_eps_flag(accuracy: float, eps: float, config: MaskingConfig) -> MaskingFlag:
    """The flag of :func:`flag_large_eps` from the robust accuracy measured at ``eps``."""
    return make_flag(
        "accuracy-not-zero-at-large-eps", accuracy, config.large_eps_threshold,
        f"PGD-linf ({config.large_eps_steps} steps, step 2.5*eps/steps, random start "
        f"{config.large_eps_random_start}) robust accuracy at eps={eps:g}",
    )


# ---------------------------------------------------------------------- (d)
def flag_zero_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, config: MaskingConfig | None = None,
    batch_size: int = 256,
) -> MaskingFlag:
    """(d) Fraction of examples whose cross-entropy gradient w.r.t. the input (eval
    mode) is all zero (max |g| <= ``zero_grad_atol``) or contains NaN/inf.

    Args: as :func:`flag_large_eps`.
    """
    cfg = config or MaskingConfig()
    bad = 0
    n_zero = 0
    n_nonfinite = 0
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].detach().clone().requires_grad_(True)
            yb = y[i : i + batch_size]
            with torch.enable_grad():
                loss = F.cross_entropy(model(xb), yb, reduction="none")
                g = input_gradient(loss, xb)
            g = g.flatten(1)
            nonfinite = ~torch.isfinite(g).all(dim=1)
            zero = ~nonfinite & (g.abs().amax(dim=1) <= cfg.zero_grad_atol)
            n_zero += int(zero.sum())
            n_nonfinite += int(nonfinite.sum())
            bad += int((zero | nonfinite).sum())
    frac = bad / max(1, x.shape[0])
    return make_flag(
        "zero-or-nonfinite-gradients", frac, cfg.zero_grad_threshold,
        f"{n_zero} all-zero and {n_nonfinite} non-finite input gradients out of {x.shape[0]} examples",
    )


# ---------------------------------------------------------------------- (e)
def flag_randomness(
    model: nn.Module, x: torch.Tensor, *, config: MaskingConfig | None = None, batch_size: int = 256
) -> MaskingFlag:
    """(e) Two identical forward passes in eval mode give different logits:
    ``max |z1 - z2| / max(1, max |z1|)`` above ``randomness_tol``.

    Args: as :func:`flag_large_eps` (no labels needed).
    """
    cfg = config or MaskingConfig()
    worst = 0.0
    with torch.no_grad(), eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size]
            z1, z2 = model(xb), model(xb)
            same = (z1 == z2) | (torch.isnan(z1) & torch.isnan(z2))
            diff = torch.where(same, torch.zeros_like(z1), (z1 - z2).abs().nan_to_num(nan=float("inf")))
            scale = max(1.0, float(z1[torch.isfinite(z1)].abs().max()) if torch.isfinite(z1).any() else 1.0)
            worst = max(worst, float(diff.max()) / scale if diff.numel() else 0.0)
    return make_flag(
        "randomized-forward", worst, cfg.randomness_tol,
        "relative max logit difference between two identical eval-mode forward passes",
    )


# ---------------------------------------------------------------------- (f)
def _noise(x: torch.Tensor, eps: float, threat_model: str, gen: torch.Generator) -> torch.Tensor:
    if threat_model == "linf":
        u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * eps
    d = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    norm = d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
    return d / norm * eps


def flag_noise_beats_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    results: list[AttackResult],
    *,
    config: MaskingConfig | None = None,
    batch_size: int = 256,
) -> MaskingFlag:
    """(f) Random noise of the same budget (uniform in the L-inf box, or uniform
    direction on the L2 sphere; ``noise_draws`` draws, clipped to [0, 1]) fools
    examples that the white-box attacks with that threat model and eps did not.
    Value: fraction of clean-correct examples fooled by noise only.

    Args:
        model, x, y: as :func:`flag_large_eps`; x, y are the first examples of the evaluation.
        results (list[AttackResult]): white-box results on the same examples.
        config (MaskingConfig | None): ``noise_draws``, ``noise_threshold``, ``seed``.
    """
    cfg = config or MaskingConfig()
    name = "noise-beats-gradient-attack"
    groups = {k: v for k, v in group_by_budget(results).items() if k[1] is not None}
    if not groups:
        return make_flag(name, None, cfg.noise_threshold, "no white-box results to compare with", evaluated=False)
    m = x.shape[0]
    dev = model_device(model, x.device)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    worst: tuple[float, str] | None = None
    with torch.no_grad(), eval_mode(model):
        for (tm, eps), rs in groups.items():
            assert eps is not None
            robust = torch.stack([torch.tensor(r.robust_correct[:m], dtype=torch.bool) for r in rs]).all(0)
            clean = torch.tensor(rs[0].clean_correct[:m], dtype=torch.bool)
            fooled = torch.zeros(m, dtype=torch.bool)
            for i in range(0, m, batch_size):
                xb = x[i : i + batch_size].to(dev)
                yb = y[i : i + batch_size].to(dev)
                for _ in range(cfg.noise_draws):
                    xn = (xb + _noise(xb, eps, tm, gen)).clamp(0.0, 1.0)
                    check_adversarial(xn, xb, eps, tm)
                    fooled[i : i + batch_size] |= (model(xn).argmax(1) != yb).cpu()
            only_noise = int((fooled & robust).sum())
            frac = only_noise / max(1, int(clean.sum()))
            if worst is None or frac > worst[0]:
                worst = (frac, f"{only_noise}/{int(clean.sum())} clean-correct examples fooled by {cfg.noise_draws} "
                               f"random {tm} draws at eps={eps:g} but not by the gradient attacks")
    assert worst is not None
    return make_flag(name, worst[0], cfg.noise_threshold, worst[1])
