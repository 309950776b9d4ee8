"""The CLEVER score (Weng et al., "Evaluating the Robustness of Neural Networks: An Extreme Value
Theory Approach", ICLR 2018).

For the class ``c`` of ``x0`` and a target ``j``, ``g(x) = f_c(x) - f_j(x)``. Draw ``Nb`` batches of
``Ns`` points uniformly in the Lp ball ``B_p(x0, R)``, record the maximum of ``||grad g||_q`` (dual
norm) in each batch, fit a reverse Weibull distribution to the ``Nb`` batch maxima
(``scipy.stats.weibull_max``) and take its location parameter as the local Lipschitz estimate
``L_j``. Then ``CLEVER_j = min(g(x0) / L_j, R)`` and the untargeted score is
``min_{j != c} CLEVER_j``.

CLEVER estimates the minimum adversarial distortion; it is neither a certificate nor a lower
bound (the Weibull location extrapolates beyond the sampled maxima). The paper uses
``Nb = 500``, ``Ns = 1024``; the CPU-friendly defaults here are ``Nb = 50``, ``Ns = 128``.

The fit follows the authors' reference code: the maxima are shifted and rescaled to [-1, 0],
fitted from several initial shape values, and the fit with the best Kolmogorov-Smirnov p-value is
kept. Fits with a shape above 1e3 or a location more than 10 sample ranges above the largest
maximum are rejected (our safeguard: such fits drift to the Gumbel limit, shape -> inf, where the
location is not identifiable and comes out absurdly large). When no fit is acceptable (none left, or KS p < 1e-3) or
the maxima are (numerically) constant, the largest sampled norm is used instead (``fit_ok = False``).
"""

from __future__ import annotations

import logging
import math
import statistics
import warnings
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from robustbench_dc.errors import InvalidParameterError
from robustbench_dc.lipschitz._utils import (
    Clip,
    check_norm,
    chunks,
    clip_domain,
    dual_name,
    dual_norm,
    eval_mode,
    example_generator,
    jacobian,
    model_device_dtype,
    sample_ball,
)

__all__ = ["WeibullFit", "TargetScore", "CleverResult", "clever_score", "clever_scores", "fit_reverse_weibull",
           "DEFAULT_RADIUS"]

log = logging.getLogger(__name__)

C_INIT = (0.1, 1.0, 5.0, 10.0, 20.0, 50.0, 100.0)
DEFAULT_RADIUS = {"l2": 5.0, "linf": 0.1}
MIN_PVALUE = 1e-3
MAX_LOC = 10.0  # largest accepted Weibull location above the largest maximum, in units of the maxima's range
MAX_SHAPE = 1e3  # larger shapes are the Gumbel limit of the reverse Weibull: the location is not identifiable


@dataclass
class WeibullFit:
    """Reverse Weibull fit of the batch maxima: ``loc`` estimates their supremum (``L``)."""

    loc: float
    shape: float | None
    scale: float | None
    ks_pvalue: float | None
    fit_ok: bool
    note: str | None = None


def fit_reverse_weibull(maxima: Sequence[float] | np.ndarray, c_init: Sequence[float] = C_INIT) -> WeibullFit:
    """Fit ``scipy.stats.weibull_max`` to ``maxima``; see the module docstring for the procedure."""
    from scipy import stats

    sample = np.asarray(maxima, dtype=np.float64)
    top, low = float(sample.max()), float(sample.min())
    spread = top - low
    if not spread > 1e-9 * max(abs(top), 1e-30):
        return WeibullFit(top, None, None, None, False, "constant batch maxima: L = the sampled maximum")
    rescaled = (sample - top) / spread
    best: tuple[float, float, float, float] | None = None
    rejected = 0
    for c0 in c_init:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                c, loc, scale = stats.weibull_max.fit(rescaled, c0)
                p = float(stats.kstest(rescaled, "weibull_max", args=(c, loc, scale)).pvalue)
            except Exception as exc:  # noqa: BLE001 - a failed start is skipped
                log.debug("weibull_max.fit from c=%g failed: %s", c0, exc)
                continue
        if not (math.isfinite(p) and math.isfinite(loc) and -1e-9 <= loc <= MAX_LOC and c <= MAX_SHAPE):
            rejected += 1  # a location far beyond the data: the Gumbel limit (shape -> inf), not identifiable
            continue
        if best is None or p > best[3]:
            best = (float(c), float(loc), float(scale), p)
    if best is None or best[3] < MIN_PVALUE:
        pval = None if best is None else best[3]
        why = "ill-conditioned fit (KS p-value < 1e-3"
        why += f"; {rejected} fit(s) at the Gumbel limit rejected)" if rejected else ")"
        return WeibullFit(top, None, None, pval, False, f"{why}: L = the sampled maximum")
    c, loc, scale, p = best
    return WeibullFit(top + loc * spread, c, scale * spread, p, True)


@dataclass
class TargetScore:
    """CLEVER for one target class ``j``: ``score = min(margin / lipschitz, R)`` (0 if margin <= 0)."""

    target: int
    margin: float
    lipschitz: float
    max_sample: float
    score: float
    fit: WeibullFit


@dataclass
class CleverResult:
    """CLEVER score of one example.

    Attributes:
        label: the class ``c`` whose margin is measured.
        target_class: the target ``j`` (``None``: untargeted, the minimum over ``j != c``).
        score: the CLEVER score (in input units of ``norm``).
        lipschitz: ``L`` of the limiting target (Weibull location; an extrapolated estimate).
        limiting_target: the target achieving the minimum.
        margin: ``f_c(x0) - f_j(x0)`` for the limiting target.
        targets: per-target details.
    """

    norm: str
    dual: str
    radius: float
    n_batches: int
    batch_size: int
    label: int
    target_class: int | None
    score: float
    lipschitz: float
    limiting_target: int
    margin: float
    seed: int
    targets: list[TargetScore] = field(default_factory=list)
    kind: str = "CLEVER score (estimate of the minimum distortion, not a certificate)"

    @property
    def fits_ok(self) -> bool:
        return all(t.fit.fit_ok for t in self.targets)

    def to_dict(self) -> dict:
        return asdict(self)


def clever_score(model: nn.Module, x0: Tensor, y0: int | Tensor | None = None, target_class: int | None = None,
                 norm: str = "l2", radius: float | None = None, n_batches: int = 50, batch_size: int = 128,
                 chunk_size: int = 256, clip: Clip = (0.0, 1.0), c_init: Sequence[float] = C_INIT, seed: int = 0,
                 progress: bool = False) -> CleverResult:
    """CLEVER score of one example (Weng et al., ICLR 2018).

    Args:
        model: classifier returning logits (evaluated in evaluation mode).
        x0: one input: an image (C, H, W) or vector (D,), or a batch of one (1, C, H, W) / (1, D).
        y0: the class ``c``; ``None`` uses the model's prediction (as the paper). If ``x0`` is
            misclassified, the margin is negative and the score is 0.
        target_class: targeted CLEVER for this ``j``; ``None``: untargeted (min over ``j != c``).
        norm: ``"l2"`` or ``"linf"`` ball; gradients are measured in the dual norm (L2, L1).
        radius: ball radius ``R`` (default 5.0 for L2, 0.1 for Linf); the score is capped at ``R``.
        n_batches, batch_size: ``Nb`` batches of ``Ns`` samples (paper: 500 x 1024).
        chunk_size: points per forward/backward pass.
        clip: input domain the samples are clamped to (``None``: unbounded).
        c_init: initial Weibull shapes tried by the fit.
        seed: seed of the local generator.
        progress: progress bar over the batches.
    """
    norm = check_norm(norm)
    radius = DEFAULT_RADIUS[norm] if radius is None else float(radius)
    if radius <= 0 or n_batches < 1 or batch_size < 1:
        raise InvalidParameterError(f"radius, n_batches, batch_size must be positive, got {radius}, {n_batches}, {batch_size}")
    device, dtype = model_device_dtype(model)
    x0 = x0.to(device=device, dtype=dtype)
    if x0.dim() in (1, 3):
        x0 = x0.unsqueeze(0)  # one vector / one image without its batch dimension
    elif x0.shape[0] != 1:
        raise ValueError(f"x0: expected one example, got a batch of {x0.shape[0]} (use clever_scores)")
    gen = example_generator(seed)
    with eval_mode(model):
        with torch.no_grad():
            logits0 = model(x0)[0].double()
        n_classes = int(logits0.shape[0])
        c = int(logits0.argmax()) if y0 is None else int(y0)
        if target_class is not None:
            if not 0 <= int(target_class) < n_classes or int(target_class) == c:
                raise InvalidParameterError(f"target_class: must be a class other than {c} in [0, {n_classes}), "
                                 f"got {target_class}")
            targets = [int(target_class)]
        else:
            targets = [j for j in range(n_classes) if j != c]
        rows = [c, *targets]
        maxima = np.zeros((n_batches, len(targets)))
        for b in tqdm(range(n_batches), desc="CLEVER", disable=not progress, leave=False):
            pts = clip_domain(sample_ball(x0, batch_size, radius, norm, gen)[0], clip)
            best = torch.full((len(targets),), -math.inf, dtype=torch.float64)
            for s in chunks(batch_size, chunk_size):
                _, jac = jacobian(model, pts[s], rows)  # (n, 1 + T, D)
                grads = jac[:, :1] - jac[:, 1:]  # grad (f_c - f_j)
                gn = dual_norm(grads.transpose(0, 1).flatten(0, 1), norm).view(len(targets), -1)
                best = torch.maximum(best, gn.max(1).values.double().cpu())
            maxima[b] = best.numpy()
    per_target = []
    for i, j in enumerate(targets):
        fit = fit_reverse_weibull(maxima[:, i], c_init)
        margin = float(logits0[c] - logits0[j])
        lip = fit.loc
        if margin <= 0:
            score = 0.0
        elif lip <= 0:
            score = radius
        else:
            score = min(margin / lip, radius)
        per_target.append(TargetScore(j, margin, lip, float(maxima[:, i].max()), score, fit))
    lim = min(per_target, key=lambda t: t.score)
    if not all(t.fit.fit_ok for t in per_target):
        log.debug("clever_score: %d of %d Weibull fits fell back to the sampled maximum",
                  sum(not t.fit.fit_ok for t in per_target), len(per_target))
    return CleverResult(norm, dual_name(norm), radius, int(n_batches), int(batch_size), c, target_class, lim.score,
                        lim.lipschitz, lim.target, lim.margin, int(seed), per_target)


def clever_scores(model: nn.Module, x: Tensor, y: Tensor | None = None, target_class: int | None = None,
                  norm: str = "l2", radius: float | None = None, n_batches: int = 50, batch_size: int = 128,
                  chunk_size: int = 256, clip: Clip = (0.0, 1.0), c_init: Sequence[float] = C_INIT, seed: int = 0,
                  progress: bool = True) -> list[CleverResult]:
    """:func:`clever_score` of every example of ``x`` (N, ...); example ``i`` uses the generator of
    ``(seed, i)``, so each score does not depend on the others."""
    out = []
    for i in tqdm(range(x.shape[0]), desc=f"CLEVER {check_norm(norm)}", disable=not progress):
        yi = None if y is None else int(y[i])
        res = clever_score(model, x[i:i + 1], yi, target_class, norm, radius, n_batches, batch_size, chunk_size,
                           clip, c_init, seed * 1_000_003 + i, False)
        out.append(res)
    return out


def summarize(results: Sequence[CleverResult]) -> dict:
    """Mean / median / min of the scores and Lipschitz estimates of several examples."""
    if not results:
        return {"n": 0}
    scores = [r.score for r in results]
    lips = [r.lipschitz for r in results]
    return {"n": len(results), "norm": results[0].norm, "radius": results[0].radius,
            "n_batches": results[0].n_batches, "batch_size": results[0].batch_size,
            "mean_score": statistics.fmean(scores), "median_score": statistics.median(scores),
            "min_score": min(scores), "mean_lipschitz": statistics.fmean(lips), "max_lipschitz": max(lips),
            "fits_ok": sum(r.fits_ok for r in results)}
