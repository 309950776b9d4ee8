"""The binarization test: can the attack find an adversarial example where one provably exists?

Zimmermann, Brendel, Tramèr & Carlini, "Increasing Confidence in Adversarial Robustness
Evaluations", NeurIPS 2022 (reference code: google-research/active-adversarial-tests). For each test
point ``x``:

1. sample ``n_inner`` *inner* points within ``(1 - gap) * eps`` of ``x`` (uniform in the L-inf box;
   on the L2 sphere of that radius), with ``x`` itself, and one *boundary* point at distance exactly
   ``eps`` (uniform in the L-inf eps-box with one coordinate moved to the box's face; a random L2
   direction of length eps), all clipped to [0, 1];
2. take the model's penultimate features of these points (the input of its last ``nn.Linear``) and
   fit a linear readout that puts every inner point in class 0 and the boundary point in class 1
   (logistic regression without penalty, the boundary point weighted as much as all inner points
   together, L-BFGS); the construction *succeeds* when the fit separates them perfectly;
3. replace the model's last layer by that readout (logits ``[0, s * (w.f + b)]``, ``s`` chosen so
   that the clean point's margin equals the original model's margin: the loss is as steep as the
   model's own) and run the attack on ``x`` with label 0. An adversarial example provably exists
   within eps (the boundary point), so a reliable attack succeeds on (almost) every point.

Reported: the attack success rate over the points whose construction succeeded (near 100% for a
trustworthy attack), the share of points where the construction failed, and a random-noise
baseline (the share of points where one of ``noise_draws`` random points of the eps-ball, drawn
like the boundary point, is already classified 1: the test is informative where this stays well
below the attack's rate; with fewer inner points than feature dimensions the readout generalises
poorly and noise succeeds often).

Every point gets its own readout, so the attacks run with whole batches (row ``i`` of every query
is example ``i``; :func:`~robustbench_dc.attacks.steps.whole_batches`); the test supports the
suite's native gradient attacks with a loss that works on two classes (FGSM, BIM, PGD, APGD with
the cross-entropy or margin loss).

Example::

    >>> res = binarization_test(model, x[:50], AttackSpec(name="pgd", eps=8 / 255, steps=20))
    >>> res.attack_success_rate, res.construction_failure_rate, res.noise_success_rate
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_dc.attacks.checks import valid_rows
from robustbench_dc.attacks.spec import AttackConfigError, AttackSpec
from robustbench_dc.attacks.steps import whole_batches
from robustbench_dc.attacks.utils import eval_mode, model_device
from robustbench_dc.errors import UserError

__all__ = ["BinarizationConfig", "BinarizationResult", "Readouts", "binarization_test", "build_readouts",
           "binarization_config",
           "supports_binarization", "readout_layer"]


@dataclass(frozen=True)
class BinarizationConfig:
    """Settings of the binarization test.

    Attributes:
        n_points (int): test points (the first ones of the evaluation). Default 50.
        n_inner (int): inner points per test point, besides the point itself. Default 999 (the reference's).
        gap (float): inner points lie within ``(1 - gap) * eps``. Default 0.05 (the reference's).
        noise_draws (int): random points per test point for the noise baseline. Default 100.
        max_iter (int): L-BFGS iterations of the readout fit. Default 200.
        seed (int): seed of the sampling. Default 0.
    """

    n_points: int = 50
    n_inner: int = 999
    gap: float = 0.05
    noise_draws: int = 100
    max_iter: int = 200
    seed: int = 0


def binarization_config(value: bool | dict[str, Any] | BinarizationConfig | None) -> BinarizationConfig | None:
    """The test's settings from a protocol's ``evaluation.binarization_test``: None for ``false``, the
    defaults for ``true``, else a mapping of :class:`BinarizationConfig` fields.

    Raises:
        ValueError: an unknown field, or a value of the wrong type or out of range.
    """
    if value is False or value is None:
        return None
    if value is True:
        return BinarizationConfig()
    if isinstance(value, BinarizationConfig):
        return value
    known = {f.name for f in fields(BinarizationConfig)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"binarization_test: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for key, v in value.items():
        if key == "gap":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise ValueError(f"binarization_test.gap: a number in [0, 1), got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "seed" else 1):
            raise ValueError(f"binarization_test.{key}: an integer >= {0 if key == 'seed' else 1}, got {v!r}")
    return BinarizationConfig(**value)


@dataclass
class BinarizationResult:
    """The outcome of :func:`binarization_test` for one attack.

    Attributes:
        attack (str): the attack's label. threat_model (str), eps (float): its budget.
        n_points (int): test points. n_valid (int): points whose construction succeeded.
        attack_success_rate (float | None): share of the valid points the attack broke (None if none valid).
        construction_failure_rate (float): share of the points whose readout did not separate.
        noise_success_rate (float | None): share of the valid points where random noise already reached class 1.
        settings (dict): the :class:`BinarizationConfig` used. seconds (float): wall time.
    """

    attack: str
    threat_model: str
    eps: float
    n_points: int
    n_valid: int
    attack_success_rate: float | None
    construction_failure_rate: float
    noise_success_rate: float | None
    settings: dict[str, Any]
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict."""
        return asdict(self)

    def summary(self) -> str:
        """One line for the command line."""
        if self.attack_success_rate is None:
            return (f"binarization test ({self.attack}): the construction failed on all {self.n_points} points; "
                    "no verdict")
        return (f"binarization test ({self.attack}): attack success {100 * self.attack_success_rate:.1f}% of "
                f"{self.n_valid} points where an adversarial example provably exists (construction failed on "
                f"{100 * self.construction_failure_rate:.1f}% of {self.n_points}); random noise "
                f"{100 * (self.noise_success_rate or 0.0):.1f}%")


def supports_binarization(spec: AttackSpec) -> bool:
    """Whether the test can run ``spec``: a single native attack (not an ensemble) whose loss works with
    two classes, untargeted."""
    attack = spec.native
    return attack is not None and not attack.ensemble and (spec.loss or "ce") in ("ce", "margin") \
        and not spec.targeted


def readout_layer(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` (the classifier whose input is the penultimate representation)."""
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Linear):
        return classifier
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError("binarization test: the model has no nn.Linear layer whose input could serve as features")
    return linears[-1]


class _Readouts:
    """Forward hooks that capture the readout layer's input, or replace its output by per-row readouts."""

    def __init__(self, layer: nn.Linear) -> None:
        self.layer = layer
        self.features: torch.Tensor | None = None
        self.w: torch.Tensor | None = None  # (N, d), per row
        self.b: torch.Tensor | None = None  # (N,)
        self._handles = [layer.register_forward_pre_hook(self._pre), layer.register_forward_hook(self._post)]

    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.features = args[0]

    def _post(self, module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor | None:
        if self.w is None:
            return None
        f = args[0].flatten(1).to(self.w.dtype)
        if f.shape[0] != self.w.shape[0]:
            raise RuntimeError(f"binarization test: the attack queried {f.shape[0]} rows of a batch of "
                               f"{self.w.shape[0]}; every query must hold the whole batch")
        margin = (f * self.w).sum(1) + self.b
        return torch.stack([torch.zeros_like(margin), margin], dim=1).to(out.dtype)

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def _inner_points(x: torch.Tensor, k: int, radius: float, threat_model: str, gen: torch.Generator) -> torch.Tensor:
    shape = (k, *x.shape)
    if threat_model == "linf":
        d = (2 * torch.rand(shape, generator=gen, device=x.device, dtype=x.dtype) - 1) * radius
    else:
        d = torch.randn(shape, generator=gen, device=x.device, dtype=x.dtype)
        d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * x.dim())) * radius
    return (x[None] + d).clamp(0.0, 1.0)


def _boundary_point(x: torch.Tensor, eps: float, threat_model: str, gen: torch.Generator) -> torch.Tensor:
    """A point at distance exactly ``eps`` from ``x`` inside [0, 1]: L-inf, uniform in the eps-box with
    one coordinate (one that has room) moved to the box's face; L2, a random direction of length eps
    (rescaled after clipping)."""
    p = _inner_points(x, 1, eps, threat_model, gen)[0]
    if threat_model == "linf":
        p, xf = p.flatten().clone(), x.flatten()
        room_up, room_down = (1.0 - xf) >= eps, xf >= eps
        cand = (room_up | room_down).nonzero().squeeze(1)
        if cand.numel() == 0:
            raise ValueError("no coordinate can move by eps inside [0, 1]")
        j = int(cand[torch.randint(cand.numel(), (1,), generator=gen, device=x.device)].item())
        p[j] = xf[j] + eps if bool(room_up[j]) else xf[j] - eps
        return p.view_as(x)
    d = p - x
    for _ in range(10):  # clipping shortens the step: lengthen it again
        p = (x + d / d.norm().clamp_min(1e-12) * eps).clamp(0.0, 1.0)
        d = p - x
        if abs(float(d.norm()) - eps) <= 1e-4 * eps:
            break
    return p


def _features(model: nn.Module, hooks: _Readouts, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            model(x[i:i + batch_size])
            assert hooks.features is not None
            out.append(hooks.features.flatten(1).double())
    return torch.cat(out)


def _fit(inner: torch.Tensor, boundary: torch.Tensor, max_iter: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Weighted logistic regression (no penalty) of boundary (1) vs inner (0) on standardised features,
    returned in the original feature space: (w, b, separates)."""
    feats = torch.cat([inner, boundary[None]])
    mu, sd = feats.mean(0), feats.std(0).clamp_min(1e-8)
    z = (feats - mu) / sd
    target = torch.zeros(z.shape[0], dtype=z.dtype)
    target[-1] = 1.0
    weight = torch.ones_like(target)
    weight[-1] = float(inner.shape[0])
    w = torch.zeros(z.shape[1], dtype=z.dtype, requires_grad=True)
    b = torch.zeros((), dtype=z.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                            tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (F.binary_cross_entropy_with_logits(z @ w + b, target, reduction="none") * weight).sum() / weight.sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w_, b_ = w.detach(), b.detach()
    margins = z @ w_ + b_
    separates = bool((margins[:-1] < 0).all() and margins[-1] > 0)
    return w_ / sd, b_ - (mu / sd * w_).sum(), separates


@dataclass
class Readouts:
    """The construction of the binarization test for one budget, which every attack at that budget
    shares: the points whose readout separates (``x``, (k, ...)), their readouts (``w`` (k, d) and
    ``b`` (k,), scaled to the model's margins) and the random-noise baseline on them."""

    eps: float
    threat_model: str
    n_points: int
    x: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor
    noise_success_rate: float | None

    @property
    def n_valid(self) -> int:
        return int(self.x.shape[0])


def build_readouts(model: nn.Module, x: torch.Tensor, eps: float, threat_model: str, *,
                   config: BinarizationConfig | None = None, batch_size: int = 256) -> Readouts:
    """Steps 1, 2 and 4 of the test (see the module) for the first ``config.n_points`` examples of ``x``:
    the points, the readouts and the noise baseline; no attack runs."""
    cfg = config or BinarizationConfig()
    eps, tm = float(eps), threat_model
    dev = model_device(model, x.device)
    n = min(cfg.n_points, x.shape[0])
    xs = x[:n].to(dev)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    layer = readout_layer(model)
    hooks = _Readouts(layer)
    try:
        with eval_mode(model), torch.no_grad():
            logits = model(xs).double()
            if hooks.features is None or layer.out_features != logits.shape[1]:
                raise UserError("binarization test: the model's logits are not the output of its last nn.Linear")
            top2 = logits.topk(2, dim=1).values
            scale_target = (top2[:, 0] - top2[:, 1]).clamp_min(1e-3)
            ws, bs, ok = [], [], []
            for i in range(n):
                pts = torch.cat([xs[i:i + 1], _inner_points(xs[i], cfg.n_inner, (1 - cfg.gap) * eps, tm, gen),
                                 _boundary_point(xs[i], eps, tm, gen)[None]])
                feats = _features(model, hooks, pts, batch_size)
                w, b, sep = _fit(feats[:-1], feats[-1], cfg.max_iter)
                clean_margin = float((feats[0] @ w + b).abs().clamp_min(1e-12))
                s = float(scale_target[i]) / clean_margin
                ws.append(w * s)
                bs.append(b * s)
                ok.append(sep)
            idx = torch.tensor(ok, dtype=torch.bool).nonzero().squeeze(1)
            readouts = Readouts(eps, tm, n, xs.index_select(0, idx.to(dev)),
                                torch.stack(ws)[idx].to(dev) if ws else torch.zeros(0, 0, device=dev),
                                torch.stack(bs)[idx].to(dev) if bs else torch.zeros(0, device=dev), None)
            k = readouts.n_valid
            if k:
                hooks.w, hooks.b = readouts.w, readouts.b
                noise_hit = torch.zeros(k, dtype=torch.bool, device=dev)
                for _ in range(cfg.noise_draws):
                    noise_hit |= model(_inner_points_batch(readouts.x, eps, tm, gen)).argmax(1) == 1
                readouts.noise_success_rate = float(noise_hit.float().mean())
    finally:
        hooks.close()
    return readouts


def binarization_test(model: nn.Module, x: torch.Tensor, spec: AttackSpec, *,
                      config: BinarizationConfig | None = None, dataset: str | None = None,
                      batch_size: int = 256, readouts: Readouts | None = None) -> BinarizationResult:
    """Run the binarization test of ``spec`` on the first ``config.n_points`` examples of (x, y).

    Args:
        model (nn.Module): (N, C, H, W) inputs in [0, 1] -> (N, K) logits, computed by its last
            ``nn.Linear`` (:func:`readout_layer`).
        x (Tensor): clean inputs in [0, 1] (labels are not needed: the readout defines the classes).
        spec (AttackSpec): a native FGSM/BIM/PGD/APGD with the CE or margin loss (resolved with ``dataset``).
        config (BinarizationConfig | None): settings; default :class:`BinarizationConfig()`.
        readouts (Readouts | None): the construction at ``spec``'s budget from :func:`build_readouts`
            (with the same ``x`` and ``config``), shared by the attacks of one budget; built when None.

    Returns:
        BinarizationResult.

    Raises:
        AttackConfigError: ``spec`` is not supported (see :func:`supports_binarization`).
    """
    from robustbench_dc.attacks.attack import run_attack

    cfg = config or BinarizationConfig()
    spec = spec.resolve(dataset)
    if not supports_binarization(spec):
        raise AttackConfigError(f"binarization test: {spec.label} is not supported; it needs a native untargeted "
                                f"attack that is not an ensemble (fgsm, bim, pgd, apgd), with the 'ce' or 'margin' loss "
                                "(the readout has two classes)")
    assert spec.eps is not None
    eps, tm = float(spec.eps), spec.threat_model
    t0 = time.perf_counter()
    if readouts is None:
        readouts = build_readouts(model, x, eps, tm, config=cfg, batch_size=batch_size)
    elif (readouts.eps, readouts.threat_model) != (eps, tm):
        raise ValueError(f"readouts: built for {readouts.threat_model} eps {readouts.eps}, the attack is {tm} eps {eps}")
    n, k = readouts.n_points, readouts.n_valid
    success_rate = None
    if k:
        hooks = _Readouts(readout_layer(model))
        hooks.w, hooks.b = readouts.w, readouts.b
        try:
            with eval_mode(model):
                zeros = torch.zeros(k, dtype=torch.long, device=readouts.x.device)
                with whole_batches():
                    x_adv = run_attack(model, readouts.x, zeros, spec)
                with torch.no_grad():
                    broken = (model(x_adv).argmax(1) == 1) & valid_rows(x_adv, readouts.x, eps, tm)
            success_rate = float(broken.float().mean())
        finally:
            hooks.close()
    return BinarizationResult(attack=spec.label, threat_model=tm, eps=eps, n_points=n, n_valid=k,
                              attack_success_rate=success_rate, construction_failure_rate=(n - k) / n if n else 0.0,
                              noise_success_rate=readouts.noise_success_rate, settings=asdict(cfg),
                              seconds=time.perf_counter() - t0)


def _inner_points_batch(x: torch.Tensor, eps: float, threat_model: str, gen: torch.Generator) -> torch.Tensor:
    """One random point of each example's eps-ball (uniform in the L-inf box; on the L2 sphere)."""
    if threat_model == "linf":
        d = (2 * torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) - 1) * eps
    else:
        d = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1))) * eps
    return (x + d).clamp(0.0, 1.0)
