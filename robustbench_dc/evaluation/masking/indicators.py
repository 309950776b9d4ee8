"""Attack-failure indicators: the attack's own path, its budget, the eps curve and AutoAttack's
remaining checks.

Pintor et al., "Indicators of Attack Failure: Debugging and Improving Optimization of Adversarial
Examples", NeurIPS 2022 (silent success, incomplete optimisation, unconstrained-attack failure,
unstable predictions); Carlini et al., "On Evaluating Adversarial Robustness", 2019 (more
iterations and restarts must not change the result; robust accuracy must not rise with eps);
Croce & Hein's AutoAttack ``checks.py`` (probabilities instead of logits, Square beating the
white-box attacks, a forward pass that calls autograd). Every flag is documented in
``docs/masking_flags.md`` under its name.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_dc.attacks.spec import AttackSpec, canonical_dataset, default_step_size
from robustbench_dc.attacks.trace import AttackTrace
from robustbench_dc.attacks.utils import eval_mode, model_device
from robustbench_dc.evaluation.attack_set import LARGE_EPS
from robustbench_dc.evaluation.masking.flags import MaskingConfig, MaskingFlag, group_by_budget, make_flag, spec_of
from robustbench_dc.evaluation.metrics import AttackResult, prefix

__all__ = [
    "incomplete_optimization",
    "flag_silent_success",
    "flag_incomplete_optimization",
    "flag_budget_sensitivity",
    "eps_curve",
    "flag_non_monotone_eps",
    "flag_unconstrained_failure",
    "flag_unstable_predictions",
    "flag_softmax_output",
    "flag_square_beats_whitebox",
    "flag_dynamic_forward",
    "large_eps_for",
]


def _traced(results: list[AttackResult], traces: Mapping[str, AttackTrace] | None
            ) -> list[tuple[AttackResult, AttackTrace]]:
    return [(r, traces[r.attack]) for r in results if traces and r.attack in traces]


# ---------------------------------------------------------------------- silent success
def flag_silent_success(results: list[AttackResult], traces: Mapping[str, AttackTrace] | None,
                        threshold: float = 0.0) -> MaskingFlag:
    """An iterate of the attack was adversarial, but the point it returned is not (scored in float32
    on the evaluated model). Value: the largest fraction, over the traced attacks, of clean-correct
    examples counted robust although the attack had found an adversarial iterate.

    Examples a third-party backend lost and the suite rescued (its returned point replaced by the
    adversarial iterate) are counted as broken in the results; the message names how many.
    """
    name = "silent-success"
    worst: tuple[float, str] | None = None
    for r, tr in _traced(results, traces):
        n = min(r.n, tr.n)
        cc = r.clean_correct_tensor[:n]
        silent = tr.ever_adversarial[:n] & r.robust_correct_tensor[:n]
        rescued = int((tr.rescued[:n] & cc).sum())
        frac = int(silent.sum()) / max(1, int(cc.sum()))
        if worst is None or frac > worst[0]:
            extra = f"; {rescued} more were returned non-adversarial by the backend and rescued" if rescued else ""
            worst = (frac, f"{r.attack}: {int(silent.sum())}/{int(cc.sum())} clean-correct examples had an adversarial "
                           f"iterate but are robust at the returned point{extra}")
    if worst is None:
        return make_flag(name, None, threshold, "no attack with a recorded path (native attacks and full-batch "
                          "third-party queries are recorded)", evaluated=False)
    return make_flag(name, worst[0], threshold, worst[1])


# ---------------------------------------------------------------------- incomplete optimisation
def incomplete_optimization(objective: torch.Tensor, window: float = 0.1, tol: float = 0.05,
                            min_length: int = 20) -> bool | None:
    """Whether an attack's objective (maximised) was still improving at the end of its trajectory.

    After Pintor et al. (NeurIPS 2022): the trajectory is rescaled to [0, 1] by its range and
    replaced by its running maximum; the optimisation is incomplete when that running maximum grew
    by more than ``tol`` over the last ``window`` fraction of the iterations (at least 2; Pintor et
    al. use the last 10 of their attacks' 100 iterations). Returns None for trajectories shorter than
    ``min_length`` or with non-finite values.
    """
    t = objective.to(torch.float64)
    if t.numel() < max(min_length, 3) or not bool(torch.isfinite(t).all()):
        return None
    lo, hi = float(t.min()), float(t.max())
    if not math.isfinite(hi - lo) or hi - lo <= 0.0:
        return False
    k = min(t.numel() - 1, max(2, round(window * t.numel())))
    best = torch.cummax((t - lo) / (hi - lo), dim=0).values
    return bool(float(best[-1] - best[-1 - k]) > tol)


def flag_incomplete_optimization(results: list[AttackResult], traces: Mapping[str, AttackTrace] | None,
                                 config: MaskingConfig | None = None) -> MaskingFlag:
    """The attack's objective was still improving over the last ``incomplete_window`` fraction of its
    iterations (the running maximum of the range-normalised objective grew by more than
    ``incomplete_tol``) for the examples it did not break. Value: the largest fraction of such
    examples over the traced attacks (trajectories shorter than ``incomplete_min_iterations`` are
    not judged)."""
    cfg = config or MaskingConfig()
    name = "incomplete-optimization"
    worst: tuple[float, str] | None = None
    for r, tr in _traced(results, traces):
        n = min(r.n, tr.n)
        robust = r.robust_correct_tensor[:n]
        segs = tr.final_segments()[:n]
        verdicts = [incomplete_optimization(segs[i], cfg.incomplete_window, cfg.incomplete_tol,
                                            cfg.incomplete_min_iterations) for i in range(n) if bool(robust[i])]
        judged = [v for v in verdicts if v is not None]
        if not judged:
            continue
        k = sum(judged)
        frac = k / len(judged)
        if worst is None or frac > worst[0]:
            worst = (frac, f"{r.attack}: the objective was still improving over the last "
                           f"{100 * cfg.incomplete_window:.0f}% of the iterations for {k}/{len(judged)} of the "
                           "examples it did not break")
    if worst is None:
        return make_flag(name, None, cfg.incomplete_threshold,
                          f"needs a recorded attack with at least {cfg.incomplete_min_iterations} iterations and "
                          "an example it did not break", evaluated=False)
    return make_flag(name, worst[0], cfg.incomplete_threshold, worst[1])


# ---------------------------------------------------------------------- budget sensitivity
def budget_reference(results: list[AttackResult]) -> tuple[AttackResult, AttackSpec] | None:
    """The native iterative gradient attack with the largest budget (steps x restarts)."""
    cands = []
    for r in results:
        spec = spec_of(r)
        attack = None if spec is None else spec.native
        if spec is not None and attack is not None and attack.iterative and not attack.ensemble and spec.steps:
            cands.append((spec.steps * spec.restarts, r, spec))
    if not cands:
        return None
    _, r, spec = max(cands, key=lambda c: c[0])
    return r, spec


def budget_variants(spec: AttackSpec) -> list[tuple[str, AttackSpec]]:
    """The attack with twice the iterations (the default step-size rule re-applied, an explicit
    step size kept) and with twice the restarts from random starts."""
    assert spec.steps is not None and spec.eps is not None
    steps = 2 * spec.steps
    upd: dict[str, Any] = {"steps": steps}
    fam = spec.family
    if fam is not None and spec.step_size is not None and math.isclose(
            spec.step_size, default_step_size(fam, spec.eps, spec.steps), rel_tol=1e-9):
        upd["step_size"] = default_step_size(fam, spec.eps, steps)
    restarts = {"restarts": max(2, 2 * spec.restarts)}
    if spec.native is None or not spec.native.own_step_size:  # APGD always starts at a random point
        restarts["random_start"] = True
    return [(f"{steps} iterations", spec.model_copy(update=upd)),
            (f"{restarts['restarts']} restarts", spec.model_copy(update=restarts))]


def flag_budget_sensitivity(model: nn.Module, x: torch.Tensor, y: torch.Tensor, results: list[AttackResult], *,
                            config: MaskingConfig | None = None, batch_size: int = 256) -> MaskingFlag:
    """Robust accuracy changes by more than ``budget_tol`` when the evaluation's strongest native
    BIM/PGD/APGD attack runs with twice the iterations or twice the restarts (on the same examples).
    Value: the largest absolute change."""
    from robustbench_dc.attacks.attack import run_attack

    cfg = config or MaskingConfig()
    name = "budget-sensitivity"
    ref = budget_reference(results)
    if ref is None:
        return make_flag(name, None, cfg.budget_tol, "needs a native BIM, PGD or APGD attack", evaluated=False)
    r, spec = ref
    m = min(x.shape[0], r.n)
    base = prefix(r, m).robust_accuracy
    clean = r.clean_correct_tensor[:m].to(x.device)
    parts = []
    worst = 0.0
    for what, variant in budget_variants(spec):
        correct = 0
        for i in range(0, m, batch_size):
            xb, yb = x[i:min(i + batch_size, m)], y[i:min(i + batch_size, m)]
            x_adv = run_attack(model, xb, yb, variant)
            with torch.no_grad(), eval_mode(model):
                correct += int(((model(x_adv).argmax(1) == yb) & clean[i:i + xb.shape[0]]).sum())
        acc = correct / max(1, m)
        parts.append(f"{what} {100 * acc:.1f}%")
        worst = max(worst, abs(acc - base))
    return make_flag(name, worst, cfg.budget_tol,
                      f"{r.attack} robust accuracy {100 * base:.1f}% on {m} examples; with {', '.join(parts)}")


# ---------------------------------------------------------------------- the eps curve
def large_eps_for(dataset: str | None, config: MaskingConfig) -> float:
    """The L-inf budget of the large-eps check: ``config.large_eps``, else the dataset's (0.5 if unknown)."""
    if config.large_eps is not None:
        return config.large_eps
    try:
        return LARGE_EPS[canonical_dataset(dataset)] if dataset else 0.5
    except ValueError:
        return 0.5


def eps_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat_model: str, eps_list: list[float], *,
              config: MaskingConfig | None = None, batch_size: int = 256) -> tuple[dict[float, float], float]:
    """Robust accuracy at every eps of ``eps_list`` under the diagnostics' PGD (``large_eps_steps``
    steps of 2.5 eps / steps, random start ``large_eps_random_start``), all eps in one sweep; and
    the clean accuracy."""
    from robustbench_dc.evaluation.sweep import run_eps_sweep

    cfg = config or MaskingConfig()
    spec = AttackSpec(name="pgd", threat_model=threat_model, steps=cfg.large_eps_steps,
                      random_start=cfg.large_eps_random_start, seed=cfg.seed)
    eps_sorted = sorted(set(float(e) for e in eps_list))
    # the sweep stacks every eps of a chunk into one batch: chunks of batch_size / E examples keep
    # it at batch_size rows (a bigger stack only costs memory; without random starts the result is the same)
    sw = run_eps_sweep(model, x, y, spec, eps_sorted, batch_size=max(1, batch_size // len(eps_sorted)))
    return dict(zip(eps_sorted, sw.robust_accuracy)), sw.clean_accuracy


def flag_non_monotone_eps(curve: Mapping[float, float], tol: float = 0.01, threat_model: str = "linf") -> MaskingFlag:
    """Robust accuracy rises with eps somewhere on the curve by more than ``tol``. Value: the largest rise
    between consecutive budgets."""
    name = "non-monotone-eps-curve"
    pts = sorted(curve.items())
    if len(pts) < 2:
        return make_flag(name, None, tol, "needs robust accuracies at two or more budgets", evaluated=False)
    rise, where = max(((b[1] - a[1], f"{100 * a[1]:.1f}% at eps={a[0]:.4g} -> {100 * b[1]:.1f}% at eps={b[0]:.4g}")
                       for a, b in zip(pts, pts[1:])), key=lambda t: t[0])
    curve_txt = ", ".join(f"{e:.4g}: {100 * a:.1f}%" for e, a in pts)
    return make_flag(name, max(0.0, rise), tol, f"{threat_model} PGD robust accuracy by eps ({curve_txt}); largest rise "
                                                 f"{where}")


def flag_unconstrained_failure(robust_accuracy: float, clean_accuracy: float, eps: float,
                               threshold: float = 0.0, steps: int = 20) -> MaskingFlag:
    """With a budget that covers the whole input box (L-inf eps 1 on [0, 1] inputs) the attack must
    break every clean-correct example. Value: the fraction of clean-correct examples still correct."""
    name = "unconstrained-attack-failure"
    if not clean_accuracy > 0:
        return make_flag(name, None, threshold, "no clean-correct example", evaluated=False)
    frac = robust_accuracy / clean_accuracy
    return make_flag(name, frac, threshold, f"PGD-linf ({steps} steps) at eps={eps:g} (unbounded on [0, 1] inputs) "
                                             f"left {100 * frac:.1f}% of the clean-correct examples unbroken")


# ---------------------------------------------------------------------- unstable predictions
def flag_unstable_predictions(model: nn.Module, points: torch.Tensor, y: torch.Tensor, radius: float, *,
                              config: MaskingConfig | None = None, batch_size: int = 256) -> MaskingFlag:
    """The loss changes sharply under small random perturbations of the points the attack returned:
    per point the mean over ``unstable_draws`` uniform draws in ``[-radius/2, radius/2]^d`` (clipped to
    [0, 1]) of ``min(1, |L(x + d) - L(x)| / |L(x)|)`` (cross-entropy; Pintor et al.'s score). Value:
    the mean score over the points."""
    cfg = config or MaskingConfig()
    name = "unstable-predictions"
    if points.shape[0] == 0:
        return make_flag(name, None, cfg.unstable_threshold, "no points", evaluated=False)
    dev = model_device(model, points.device)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    scores = []
    with torch.no_grad(), eval_mode(model):
        for i in range(0, points.shape[0], batch_size):
            xb, yb = points[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
            base = F.cross_entropy(model(xb).float(), yb, reduction="none")
            denom = torch.where(base.abs() > 0, base.abs(), torch.ones_like(base))
            acc = torch.zeros_like(base)
            for _ in range(cfg.unstable_draws):
                u = torch.rand(xb.shape, generator=gen, device=dev, dtype=xb.dtype)
                xn = (xb + (u - 0.5) * radius).clamp(0.0, 1.0)
                loss = F.cross_entropy(model(xn).float(), yb, reduction="none")
                acc += ((loss - base).abs() / denom).nan_to_num(nan=1.0).clamp(max=1.0)
            scores.append((acc / cfg.unstable_draws).cpu())
    value = float(torch.cat(scores).mean())
    return make_flag(name, value, cfg.unstable_threshold,
                      f"mean relative cross-entropy change under {cfg.unstable_draws} uniform draws of radius "
                      f"{radius:.4g}/2 around {points.shape[0]} returned points")


# ---------------------------------------------------------------------- AutoAttack's checks
def flag_softmax_output(model: nn.Module, x: torch.Tensor, tol: float = 1e-5) -> MaskingFlag:
    """The model outputs probabilities (every output in [0, 1], rows summing to 1) instead of logits:
    AutoAttack's ``check_range_output``. Value: 1.0 when it does, else 0.0."""
    name = "softmax-output"
    with torch.no_grad(), eval_mode(model):
        out = model(x[:250].to(model_device(model, x.device))).float()
    probs = bool(out.max() < 1 + tol and out.min() > -tol and torch.allclose(out.sum(1), torch.ones_like(out[:, 0]),
                                                                             atol=tol, rtol=0.0))
    return make_flag(name, 1.0 if probs else 0.0, 0.5,
                      "the outputs look like probabilities (in [0, 1], rows sum to 1): attacks need logits"
                      if probs else "the outputs are not probability vectors")


def _is_square(r: AttackResult) -> bool:
    spec = spec_of(r)
    return spec is not None and spec.name.lower() in ("square", "squareattack")


def flag_square_beats_whitebox(results: list[AttackResult], tol: float = 0.002) -> MaskingFlag:
    """Square, a score-based black-box attack, breaks examples that the white-box attacks did not:
    inside AutoAttack (Square runs last, on what APGD-CE, APGD-T and FAB-T left) or as an attack of
    the set (against the worst case of the other attacks with the same threat model and eps). Value:
    the largest fraction of all examples broken by Square only (AutoAttack's ``check_square_sr``)."""
    from robustbench_dc.evaluation.metrics import worst_case

    name = "square-beats-whitebox"
    worst: tuple[float, str] | None = None
    for r in results:
        parts = r.components or []
        names = [p.get("component") for p in parts]
        if "square" in names:
            j = names.index("square")
            before, after = parts[j - 1]["robust"], parts[j]["robust"]
            frac = (before - after) / max(1, r.n)
            if worst is None or frac > worst[0]:
                worst = (frac, f"{r.attack}: Square broke {before - after} of the {before} examples left by the "
                               "white-box components")
    for (tm, eps), rs in group_by_budget(results).items():
        squares = [r for r in rs if _is_square(r)]
        others = [r for r in rs if not _is_square(r) and not r.components]
        for sq in squares:
            if not others:
                continue
            m = min([sq.n] + [o.n for o in others])
            wb = worst_case([prefix(o, m) for o in others]).robust_correct_tensor
            only = wb & ~prefix(sq, m).robust_correct_tensor & prefix(sq, m).clean_correct_tensor
            frac = int(only.sum()) / max(1, m)
            if worst is None or frac > worst[0]:
                worst = (frac, f"{sq.attack} broke {int(only.sum())}/{m} examples that the other attacks did not")
    if worst is None:
        return make_flag(name, None, tol, "needs Square (alone or inside AutoAttack standard)", evaluated=False)
    return make_flag(name, worst[0], tol, worst[1])


_AUTOGRAD_CALLS = frozenset({"grad", "backward", "_make_grads", "vjp", "jvp", "jacrev", "jacfwd", "hessian"})


def flag_dynamic_forward(model: nn.Module, x: torch.Tensor) -> MaskingFlag:
    """The forward pass itself calls autograd or a torch optimiser (an inner optimisation, a
    test-time defence): AutoAttack's ``check_dynamic``, by tracing the Python calls made during one
    forward pass (with gradients enabled) of a few examples. Value: the number of such calls."""
    name = "dynamic-forward"
    calls: list[str] = []

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if event == "call":
            code = frame.f_code
            fname = code.co_filename.replace("\\", "/")
            in_torch = "/torch/" in fname
            if (in_torch and code.co_name in _AUTOGRAD_CALLS) or "/torch/optim/" in fname:
                calls.append(f"{code.co_name} ({fname.rsplit('/torch/', 1)[-1]})")
        return None

    xb = x[:8].to(model_device(model, x.device))
    previous = sys.gettrace()
    with eval_mode(model), torch.enable_grad():
        sys.settrace(tracer)
        try:
            model(xb)
        finally:
            sys.settrace(previous)
    detail = (f"{len(calls)} autograd/optimiser calls during one forward pass, e.g. {', '.join(sorted(set(calls))[:3])}"
              if calls else "no autograd or optimiser call during one forward pass")
    return make_flag(name, float(len(calls)), 0.0, detail)
