"""The single entry point to run any :class:`AttackSpec`, whatever its backend.

:func:`run_attack` resolves the spec, builds target labels for targeted attacks,
dispatches to the native loop or a third-party backend, handles restarts the
backend does not implement itself, and passes the result through
:func:`~robustbench_dc.attacks.checks.check_adversarial` before returning it:
a batch that violates the threat model raises
:class:`~robustbench_dc.attacks.checks.ConstraintViolation`.

Example::

    >>> x_adv = run_attack(model, x, y, AttackSpec(name="pgd", eps=8 / 255))
    >>> x_adv, y = run_attack_loader(model, test_loader, load_attack_config("pgd-linf"), dataset="cifar10")
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from robustbench_dc.attacks.backends import backend_handles_restarts, run_foolbox, run_torchattacks
from robustbench_dc.attacks.checks import check_adversarial
from robustbench_dc.attacks.guards import SuccessRecorder, preserved_flags
from robustbench_dc.attacks.losses import attack_loss, attack_success, make_targets
from robustbench_dc.attacks.native import BestTracker, attack_mode
from robustbench_dc.attacks.spec import AttackSpec
from robustbench_dc.attacks.trace import AttackTrace, TraceView
from robustbench_dc.attacks.utils import eval_mode, model_device, seeded

__all__ = ["run_attack", "run_attack_detailed", "run_attack_loader", "validate_inputs"]


def validate_inputs(x: torch.Tensor, y: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` is a finite float batch in [0, 1] and ``y``
    an integer vector of matching length."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"x: must be a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
    if x.dim() < 2:
        raise ValueError(f"x: must have shape (N, ...), got {tuple(x.shape)}")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y: must have shape ({x.shape[0]},), got {tuple(getattr(y, 'shape', ()))}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"y: must be an integer tensor, got {y.dtype}")
    if x.numel() and (not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError(
            f"x: clean inputs must be finite and in [0, 1] (normalisation belongs inside the "
            f"model), got min {float(x.min()):.4g}, max {float(x.max()):.4g}"
        )


class _KeepParamGrads:
    """Restore every parameter's ``.grad`` after a third-party backend ran (foolbox
    calls ``backward()``, which would accumulate parameter gradients)."""

    def __init__(self, model: nn.Module) -> None:
        self.params = list(model.parameters())

    def __enter__(self) -> None:
        self.saved = [None if p.grad is None else p.grad.clone() for p in self.params]

    def __exit__(self, *exc: object) -> None:
        for p, g in zip(self.params, self.saved):
            p.grad = g


def _dispatch(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, targets: torch.Tensor | None,
    trace: TraceView | None = None,
) -> tuple[torch.Tensor, list[dict[str, Any]] | None]:
    attack = spec.native
    if attack is not None:
        out = attack.run(model, x, y, spec, targets=targets, trace=trace)
        return out if attack.ensemble else (out, None)
    with _KeepParamGrads(model), preserved_flags(model), attack_mode(model, x):
        recorder = SuccessRecorder(model, x, y, spec.eps or 0.0, spec.threat_model, targets, trace)
        x_adv = _dispatch_third_party(recorder, x, y, spec, targets)
        return recorder.rescue(x_adv, spec.label), None


def _dispatch_third_party(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, targets: torch.Tensor | None
) -> torch.Tensor:
    runner = run_torchattacks if spec.backend == "torchattacks" else run_foolbox
    if spec.restarts == 1 or backend_handles_restarts(spec):
        with seeded(spec.seed, x.device):
            return runner(model, x, y, spec, targets)
    # Generic restarts: keep per example the first success, else the highest loss.
    best = BestTracker(x)
    loss = spec.loss or "ce"
    for r in range(spec.restarts):
        if r > 0 and isinstance(model, SuccessRecorder) and model.trace is not None:
            model.trace.new_segment()
        with seeded(spec.seed + r, x.device):
            cand = runner(model, x, y, spec, targets)
        with torch.no_grad(), eval_mode(model):
            logits = model(cand)
            best.update(cand, attack_loss(logits, y, loss, targets), attack_success(logits, y, targets))
        if r + 1 < spec.restarts and bool(best.success.all()):
            break
    return best.x


def run_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    *,
    dataset: str | None = None,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run ``spec`` on one batch and return constraint-checked adversarial inputs.

    Args:
        model (nn.Module): maps (N, C, H, W) floats in [0, 1] to (N, K) logits
            (normalisation inside the model). Put in eval mode during the attack;
            the previous train/eval flag of every submodule is restored.
        x (Tensor): (N, C, H, W) (or any (N, ...)) clean inputs in [0, 1].
        y (Tensor): (N,) int64 labels.
        spec (AttackSpec): the attack; resolved with ``dataset`` if ``eps`` is None.
        dataset (str | None): dataset name for the standard eps. Default None.
        targets (Tensor | None): (N,) target labels for a targeted spec; default None
            -> derived from ``spec.target`` ("random" with ``spec.seed``, or
            "least-likely") on the clean logits (APGD-T chooses its own targets).

    Returns:
        Tensor: (N, ...) adversarial inputs on ``x``'s device, same dtype and shape.

    Raises:
        ConstraintViolation: if the backend produced non-finite, out-of-[0, 1] or
            out-of-budget inputs.

    Example::

        >>> x_adv = run_attack(model, x, y, AttackSpec(name="fgsm", eps=0.3))
        >>> robust = (model(x_adv).argmax(1) == y).float().mean()
    """
    return run_attack_detailed(model, x, y, spec, dataset=dataset, targets=targets)[0]


def run_attack_detailed(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    *,
    dataset: str | None = None,
    targets: torch.Tensor | None = None,
    trace: AttackTrace | TraceView | None = None,
) -> tuple[torch.Tensor, list[dict[str, Any]] | None]:
    """:func:`run_attack`, and the per-component breakdown of an ensemble (native ``autoattack``:
    see :func:`~robustbench_dc.autoattack.ensemble.autoattack`); ``None`` for other attacks.

    ``trace`` (an :class:`~robustbench_dc.attacks.trace.AttackTrace` over the batch, or a view of
    one) records the attack's iterates for the attack-failure indicators."""
    validate_inputs(x, y)
    spec = spec.resolve(dataset)
    assert spec.eps is not None
    if x.shape[0] == 0:
        return x.detach().clone(), None
    out_device = x.device
    dev = model_device(model, x.device)
    xd, yd = x.detach().to(dev), y.detach().to(dev)
    own_targets = spec.native is not None and spec.native.chooses_targets  # APGD-T: the top clean logits
    if spec.targeted and targets is None and not own_targets:
        with torch.no_grad(), eval_mode(model):
            clean_logits = model(xd)
        gen = torch.Generator(device=dev).manual_seed(spec.seed)
        targets = make_targets(clean_logits, yd, spec.target, gen)
    elif targets is not None:
        targets = targets.detach().to(dev)
    view = trace.view() if isinstance(trace, AttackTrace) else trace
    x_adv, parts = _dispatch(model, xd, yd, spec, targets if spec.targeted else None, view)
    if x_adv.dtype != xd.dtype:
        x_adv = x_adv.to(xd.dtype)
    check_adversarial(x_adv, xd, spec.eps, spec.threat_model)
    return x_adv.detach().to(out_device), parts


def run_attack_loader(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    spec: AttackSpec,
    *,
    dataset: str | None = None,
    n: int | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attack the first ``n`` examples of ``loader`` (in order), batch by batch.

    Args:
        model (nn.Module): as in :func:`run_attack`.
        loader (Iterable): yields ``(x, y)`` batches, x (B, C, H, W) in [0, 1], y (B,).
        spec (AttackSpec): the attack.
        dataset (str | None): dataset name for the standard eps. Default None.
        n (int | None): stop after this many examples; None (default) = all.
        progress (bool): show a tqdm bar. Default False.

    Returns:
        tuple[Tensor, Tensor]: adversarial inputs (n, C, H, W) and labels (n,), on CPU.

    Example::

        >>> x_adv, y = run_attack_loader(model, loader, AttackSpec(name="pgd"), dataset="mnist", n=1000)
    """
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    seen = 0
    bar = tqdm(total=n, disable=not progress, desc=spec.label, unit="ex")
    try:
        for xb, yb in loader:
            if n is not None and seen >= n:
                break
            if n is not None:
                xb, yb = xb[: n - seen], yb[: n - seen]
            xs.append(run_attack(model, xb, yb, spec, dataset=dataset).cpu())
            ys.append(yb.cpu())
            seen += xb.shape[0]
            bar.update(xb.shape[0])
    finally:
        bar.close()
    if not xs:
        raise ValueError("loader: yielded no examples")
    return torch.cat(xs), torch.cat(ys)
