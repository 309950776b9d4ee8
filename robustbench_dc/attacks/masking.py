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

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_dc.attacks._utils import eval_mode, model_device
from robustbench_dc.attacks.checks import check_adversarial
from robustbench_dc.attacks.metrics import AttackResult
from robustbench_dc.attacks.native import _input_grad
from robustbench_dc.attacks.spec import LARGE_EPS, AttackSpec, canonical_dataset

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

logger = logging.getLogger(__name__)

#: Where every flag is documented (one anchor per flag name).
DOC_PATH = "docs/masking_flags.md"

FLAG_NAMES: tuple[str, ...] = (
    "one-step-beats-iterative",
    "transfer-beats-whitebox",
    "accuracy-not-zero-at-large-eps",
    "zero-or-nonfinite-gradients",
    "randomized-forward",
    "noise-beats-gradient-attack",
)


@dataclass(frozen=True)
class MaskingConfig:
    """Thresholds and budgets of the masking diagnostics (all fractions in [0, 1]).

    Attributes:
        one_step_tol (float): allowed excess of FGSM over BIM/PGD success. Default 0.01.
        transfer_tol (float): allowed excess of transfer over white-box success. Default 0.01.
        large_eps (float | None): L-inf budget of the large-eps check; None (default)
            -> 0.5 (CIFAR-10), 1.0 (MNIST, Fashion-MNIST), 0.5 if the dataset is unknown.
        large_eps_steps (int): PGD steps at the large eps. Default 20.
        large_eps_random_start (bool): random start for that PGD. Default False: at
            eps 0.5-1.0 a random start is itself a near-random image, which would let
            the check pass without the gradient doing anything.
        large_eps_threshold (float): max robust accuracy at the large eps. Default 0.10.
        zero_grad_threshold (float): max fraction of degenerate gradients. Default 0.10.
        zero_grad_atol (float): an example's gradient counts as zero if max |g| <= this. Default 0.0.
        randomness_tol (float): max relative logit difference between two passes. Default 1e-5.
        noise_draws (int): random-noise draws per budget. Default 10.
        noise_threshold (float): max fraction of clean-correct examples fooled by noise
            but not by the gradient attacks. Default 0.0 (any such example triggers).
        max_examples (int): diagnostics use the first ``max_examples`` examples. Default 512.
        seed (int): seed of the noise draws and the large-eps PGD. Default 0.
    """

    one_step_tol: float = 0.01
    transfer_tol: float = 0.01
    large_eps: float | None = None
    large_eps_steps: int = 20
    large_eps_random_start: bool = False
    large_eps_threshold: float = 0.10
    zero_grad_threshold: float = 0.10
    zero_grad_atol: float = 0.0
    randomness_tol: float = 1e-5
    noise_draws: int = 10
    noise_threshold: float = 0.0
    max_examples: int = 512
    seed: int = 0


@dataclass
class MaskingFlag:
    """Result of one masking diagnostic.

    Attributes:
        name (str): one of :data:`FLAG_NAMES` (also the doc anchor).
        triggered (bool): the diagnostic suspects gradient masking.
        value (float | None): the measured quantity (None if not evaluated).
        threshold (float): the value above which the flag triggers.
        message (str): explanation, ending with the doc link.
        doc (str): ``docs/masking_flags.md#<name>``.
        evaluated (bool): False when the diagnostic could not run (e.g. no FGSM in the set).
    """

    name: str
    triggered: bool
    value: float | None
    threshold: float
    message: str
    doc: str
    evaluated: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict."""
        return asdict(self)


def _make_flag(
    name: str, value: float | None, threshold: float, detail: str, *, evaluated: bool = True
) -> MaskingFlag:
    doc = f"{DOC_PATH}#{name}"
    triggered = bool(evaluated and value is not None and value > threshold)
    if not evaluated:
        message = f"{name}: not evaluated ({detail}); see {doc}"
    elif triggered:
        message = f"{name}: POSSIBLE GRADIENT MASKING -- {detail} (value {value:.4g} > threshold {threshold:.4g}); see {doc}"
        logger.warning(message)
    else:
        message = f"{name}: ok -- {detail} (value {value:.4g} <= threshold {threshold:.4g}); see {doc}"
    return MaskingFlag(name, triggered, value, threshold, message, doc, evaluated)


def _spec(r: AttackResult) -> AttackSpec | None:
    try:
        return AttackSpec.model_validate(r.spec)
    except Exception:  # worst-case results etc.
        return None


def _family(r: AttackResult) -> str | None:
    spec = _spec(r)
    return None if spec is None else spec.family


def _iterative(r: AttackResult) -> bool:
    spec = _spec(r)
    return spec is not None and spec.iterative


def _group(results: list[AttackResult]) -> dict[tuple[str, float | None], list[AttackResult]]:
    groups: dict[tuple[str, float | None], list[AttackResult]] = defaultdict(list)
    for r in results:
        groups[(r.threat_model, None if r.eps is None else round(r.eps, 10))].append(r)
    return groups


# ---------------------------------------------------------------------- (a)
def flag_one_step_beats_iterative(results: list[AttackResult], tol: float = 0.01) -> MaskingFlag:
    """(a) FGSM robust accuracy lower than an iterative attack's (BIM, PGD, APGD, AutoAttack; same threat
    model and eps) by > ``tol``.

    Arguments:
        results (list[AttackResult]): white-box results of one model.
        tol (float): tolerance (fraction). Default 0.01.
    """
    name = "one-step-beats-iterative"
    worst: tuple[float, str] | None = None
    for (tm, eps), rs in _group(results).items():
        one = [r for r in rs if _family(r) == "fgsm"]
        it = [r for r in rs if _iterative(r)]
        for a in one:
            for b in it:
                gap = b.robust_accuracy - a.robust_accuracy
                if worst is None or gap > worst[0]:
                    worst = (gap, f"{a.attack} robust acc {a.robust_accuracy:.3f} vs {b.attack} {b.robust_accuracy:.3f}")
    if worst is None:
        return _make_flag(name, None, tol, "needs an FGSM and a BIM/PGD attack with the same threat model and eps",
                          evaluated=False)
    return _make_flag(name, worst[0], tol, f"iterative minus one-step robust accuracy: {worst[1]}")


# ---------------------------------------------------------------------- (b)
def flag_transfer_beats_whitebox(
    whitebox: list[AttackResult], transfer: list[AttackResult], tol: float = 0.01
) -> MaskingFlag:
    """(b) A transfer attack (crafted on another model) gets lower robust accuracy than
    the per-example worst case of the white-box attacks with the same threat model and eps.

    Arguments:
        whitebox (list[AttackResult]): white-box results on the target model.
        transfer (list[AttackResult]): transfer results on the same target (``source`` set,
            not the target itself).
        tol (float): tolerance. Default 0.01.
    """
    from robustbench_dc.attacks.metrics import worst_case

    name = "transfer-beats-whitebox"
    wb = _group(whitebox)
    tr = _group([r for r in transfer if r.source is not None and r.source != r.model])
    worst: tuple[float, str] | None = None
    for key, trs in tr.items():
        if key not in wb:
            continue
        w = worst_case(wb[key])
        best_tr = min(trs, key=lambda r: r.robust_accuracy)
        gap = w.robust_accuracy - best_tr.robust_accuracy
        if worst is None or gap > worst[0]:
            worst = (
                gap,
                f"white-box robust acc {w.robust_accuracy:.3f} vs transfer {best_tr.attack} from "
                f"{best_tr.source} {best_tr.robust_accuracy:.3f}",
            )
    if worst is None:
        return _make_flag(name, None, tol, "needs transfer results with the same threat model and eps", evaluated=False)
    return _make_flag(name, worst[0], tol, worst[1])


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
    """(c) PGD-linf at a large eps (:data:`~robustbench_dc.attacks.spec.LARGE_EPS`)
    should drive accuracy to ~0; robust accuracy above ``large_eps_threshold`` triggers.

    Arguments:
        model (nn.Module): the model. x (Tensor): (N, ...) in [0, 1]. y (Tensor): (N,).
        dataset (str | None): picks the large eps if ``config.large_eps`` is None.
        config (MaskingConfig | None): thresholds. batch_size (int): default 256.
    """
    from robustbench_dc.attacks.attack import run_attack

    cfg = config or MaskingConfig()
    eps = cfg.large_eps
    if eps is None:
        try:
            eps = LARGE_EPS[canonical_dataset(dataset)] if dataset else 0.5
        except ValueError:
            eps = 0.5
    spec = AttackSpec(
        name="pgd", threat_model="linf", eps=eps, steps=cfg.large_eps_steps,
        random_start=cfg.large_eps_random_start, seed=cfg.seed,
    )
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        x_adv = run_attack(model, xb, yb, spec)
        with torch.no_grad(), eval_mode(model):
            correct += int((model(x_adv).argmax(1) == yb).sum())
    acc = correct / max(1, x.shape[0])
    return _make_flag(
        "accuracy-not-zero-at-large-eps", acc, cfg.large_eps_threshold,
        f"PGD-linf ({cfg.large_eps_steps} steps, step 2.5*eps/steps, random start "
        f"{cfg.large_eps_random_start}) robust accuracy at eps={eps:g}",
    )


# ---------------------------------------------------------------------- (d)
def flag_zero_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, config: MaskingConfig | None = None,
    batch_size: int = 256,
) -> MaskingFlag:
    """(d) Fraction of examples whose cross-entropy gradient w.r.t. the input (eval
    mode) is all zero (max |g| <= ``zero_grad_atol``) or contains NaN/inf.

    Arguments: as :func:`flag_large_eps`.
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
                g = _input_grad(loss, xb)
            g = g.flatten(1)
            nonfinite = ~torch.isfinite(g).all(dim=1)
            zero = ~nonfinite & (g.abs().amax(dim=1) <= cfg.zero_grad_atol)
            n_zero += int(zero.sum())
            n_nonfinite += int(nonfinite.sum())
            bad += int((zero | nonfinite).sum())
    frac = bad / max(1, x.shape[0])
    return _make_flag(
        "zero-or-nonfinite-gradients", frac, cfg.zero_grad_threshold,
        f"{n_zero} all-zero and {n_nonfinite} non-finite input gradients out of {x.shape[0]} examples",
    )


# ---------------------------------------------------------------------- (e)
def flag_randomness(
    model: nn.Module, x: torch.Tensor, *, config: MaskingConfig | None = None, batch_size: int = 256
) -> MaskingFlag:
    """(e) Two identical forward passes in eval mode give different logits:
    ``max |z1 - z2| / max(1, max |z1|)`` above ``randomness_tol``.

    Arguments: as :func:`flag_large_eps` (no labels needed).
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
    return _make_flag(
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

    Arguments:
        model, x, y: as :func:`flag_large_eps`; x, y are the first examples of the evaluation.
        results (list[AttackResult]): white-box results on the same examples.
        config (MaskingConfig | None): ``noise_draws``, ``noise_threshold``, ``seed``.
    """
    cfg = config or MaskingConfig()
    name = "noise-beats-gradient-attack"
    groups = {k: v for k, v in _group(results).items() if k[1] is not None}
    if not groups:
        return _make_flag(name, None, cfg.noise_threshold, "no white-box results to compare with", evaluated=False)
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
    return _make_flag(name, worst[0], cfg.noise_threshold, worst[1])


# ---------------------------------------------------------------------- all
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
