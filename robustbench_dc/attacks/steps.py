"""The step primitives shared by the suite's gradient attacks (native FGSM/BIM/PGD, APGD, the
eps sweep, the masking diagnostics and the backends): best-iterate bookkeeping, random starts,
projection onto the eps-ball, the input gradient and the step direction, and
:func:`attack_mode` (how every attack runs the model).

Its own module so that :mod:`~robustbench_dc.attacks.native` and
:mod:`~robustbench_dc.attacks.apgd` both build on it without importing each other.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import torch
import torch.nn.modules.module as torch_module
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from robustbench_dc.attacks.utils import eval_mode

__all__ = ["BestTracker", "attack_mode", "folded_batch_norm", "whole_batches", "default_compact"]

TINY = 1e-12
_COMPACTION: ContextVar[bool] = ContextVar("rbdc_compaction", default=True)


@contextmanager
def whole_batches() -> Iterator[None]:
    """Inside the block the native attacks keep the whole batch at every step (no compaction), so
    that row ``i`` of every query the model sees is example ``i`` (the binarization test gives every
    example its own readout). Results are unchanged; only examples already broken keep computing."""
    token = _COMPACTION.set(False)
    try:
        yield
    finally:
        _COMPACTION.reset(token)


def default_compact(x: torch.Tensor) -> bool:
    """Whether an attack drops broken examples from its batch: on the CPU (it costs a host sync per
    step elsewhere), unless :func:`whole_batches` is active."""
    return x.device.type == "cpu" and _COMPACTION.get()


class BestTracker:
    """Per-example bookkeeping of the best adversarial candidate.

    A candidate replaces the current one for an example that has not succeeded
    yet if it succeeds or has a higher objective. Updates use ``torch.where``
    only (no host synchronisation).

    Args:
        x (Tensor): (N, ...) clean inputs (returned for examples without candidates).
    """

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x.detach().clone()
        self.loss = torch.full((x.shape[0],), float("-inf"), dtype=x.dtype, device=x.device)
        self.success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def update_at(self, idx: torch.Tensor | None, cand: torch.Tensor, loss: torch.Tensor,
                  success: torch.Tensor) -> None:
        """:meth:`update` for the examples ``idx`` of the batch (all when ``None``)."""
        if idx is None:
            self.update(cand, loss, success)
            return
        take = ~self.success[idx] & (success | (loss > self.loss[idx]))
        rows = idx[take]
        self.x[rows] = cand[take].detach()
        self.loss[rows] = loss[take].detach().to(self.loss.dtype)
        self.success[rows] = self.success[rows] | success[take]

    def take_rest_at(self, idx: torch.Tensor | None, cand: torch.Tensor) -> None:
        """Candidates become the answer of every example (of ``idx``) without a success yet."""
        if idx is None:
            self.x = torch.where(self.success.view(-1, *([1] * (cand.dim() - 1))), self.x, cand.detach())
            return
        rows = idx[~self.success[idx]]
        self.x[rows] = cand[~self.success[idx]].detach()

    def update(self, cand: torch.Tensor, loss: torch.Tensor, success: torch.Tensor) -> None:
        """Offer candidates ``cand`` (N, ...) with objective ``loss`` (N,) and bool ``success`` (N,)."""
        take = ~self.success & (success | (loss > self.loss))
        self.x = torch.where(take.view(-1, *([1] * (cand.dim() - 1))), cand.detach(), self.x)
        self.loss = torch.where(take, loss.detach().to(self.loss.dtype), self.loss)
        self.success = self.success | success


def random_start_point(
    x: torch.Tensor, eps: torch.Tensor, threat_model: str, generator: torch.Generator | None
) -> torch.Tensor:
    """Uniform sample in the L-inf box, or uniform in the L2 ball (radius eps * u^(1/d))."""
    if threat_model == "linf":
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * eps
    d = x[0].numel()
    direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    direction = direction / direction.flatten(1).norm(dim=1).clamp_min(TINY).view_as(eps)
    u = torch.rand(eps.shape, generator=generator, device=x.device, dtype=x.dtype)
    return direction * eps * u.pow(1.0 / d)


def project_onto_ball(x0: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, threat_model: str) -> torch.Tensor:
    """Project ``x`` onto the eps-ball around ``x0`` (per example), then onto [0, 1]."""
    delta = x - x0
    if threat_model == "linf":
        delta = torch.maximum(torch.minimum(delta, eps), -eps)
    else:
        norm = delta.flatten(1).norm(dim=1).view_as(eps)
        delta = delta * torch.clamp(eps / norm.clamp_min(TINY), max=1.0)
    return (x0 + delta).clamp(0.0, 1.0)


def input_gradient(obj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d(sum obj)/dx; zeros where the output does not depend differentiably on x."""
    if not obj.requires_grad:
        return torch.zeros_like(x)
    (g,) = torch.autograd.grad(obj.sum(), x, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


def step_direction(g: torch.Tensor, threat_model: str) -> torch.Tensor:
    if threat_model == "linf":
        return g.sign()
    norm = g.flatten(1).norm(dim=1).view(-1, *([1] * (g.dim() - 1)))
    return g / norm.clamp_min(TINY)


@contextmanager
def attack_mode(model: nn.Module, x: torch.Tensor, compact: bool | None = None) -> Iterator[bool]:
    """How every attack of the suite runs the model: eval mode, batch norms folded into the
    convolutions before them (:func:`folded_batch_norm`), parameters frozen (no weight gradients,
    also for backends that call ``backward()``) and, on the CPU with 4-D inputs, channels-last weights.
    Every flag, module and layout is restored on exit. Yields whether channels-last is on (then pass
    inputs channels-last too)."""
    compact = default_compact(x) if compact is None else compact
    channels_last = compact and x.dim() == 4
    with eval_mode(model), folded_batch_norm(model), _frozen_parameters(model), \
            _channels_last(model, channels_last):
        yield channels_last


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def _fold(seq: nn.Sequential, i: int) -> tuple[nn.Module, int] | None:
    """Modules ``i, i + 1, ...`` of ``seq`` as one module, and how many it replaces; or None. Module
    ``i + 1`` must be a plain ``nn.BatchNorm2d`` in evaluation mode with running statistics, and no
    module involved may have hooks (a hook would no longer see what it was registered on). A plain
    ``nn.Conv2d`` at ``i`` takes the batch norm into its weights; a layer with a
    ``fold_batch_norm(bn, relu)`` method (a decoupled convolution) into its response kernel, where
    that applies, together with an ``nn.ReLU`` at ``i + 2`` (which the fold requires: the kernel's
    output must not be modified in place)."""
    conv, bn = seq[i], seq[i + 1]
    if (type(bn) is not nn.BatchNorm2d or conv.training or bn.training or bn.running_mean is None
            or bn.running_var is None or _hooked(conv) or _hooked(bn)):
        return None
    if type(conv) is nn.Conv2d:
        return (fuse_conv_bn_eval(conv, bn), 2) if bn.num_features == conv.out_channels else None
    fold = getattr(conv, "fold_batch_norm", None)
    if not callable(fold) or i + 2 >= len(seq) or type(seq[i + 2]) is not nn.ReLU or _hooked(seq[i + 2]):
        return None
    folded = fold(bn, relu=True)
    return None if folded is None else (folded, 3)


@contextmanager
def folded_batch_norm(model: nn.Module) -> Iterator[int]:
    """Inside the block every ``nn.Conv2d`` directly followed by an ``nn.BatchNorm2d`` in the same
    ``nn.Sequential`` (both in evaluation mode, the BN with running statistics) is one convolution
    with the BN folded into its weights and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``), and
    the BN an ``nn.Identity``. A decoupled convolution whose response kernel can apply the BN
    (:meth:`~robustbench_dc.operators.layers.DecoupledConv2d.fold_batch_norm`) becomes one module
    with the BN and the ReLU after it. The original modules are put back on exit. The same function
    up to float32 rounding (logits within ~1e-6), without the BN's forward and backward passes: an
    attack gradient costs 16-22% less on the CPU for the Baseline, BallConv and TanhConv CNN-9s
    (benchmarks/attack_fold.py). Attacks craft on the folded model; every returned point is then
    scored on the original one. Yields the number of folds. Nothing is folded while global module
    hooks are registered."""
    folds: list[tuple[nn.Sequential, int, list[nn.Module], nn.Module]] = []
    if not (torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks or torch_module._global_backward_hooks
            or torch_module._global_backward_pre_hooks):
        for seq in model.modules():
            if isinstance(seq, nn.Sequential):
                i = 0
                while i < len(seq) - 1:
                    found = _fold(seq, i)
                    if found is None:
                        i += 1
                        continue
                    folds.append((seq, i, [seq[j] for j in range(i, i + found[1])], found[0]))
                    i += found[1]
    try:
        for seq, i, originals, folded in folds:
            seq[i] = folded
            for j in range(1, len(originals)):
                seq[i + j] = nn.Identity()
        yield len(folds)
    finally:
        for seq, i, originals, _ in reversed(folds):
            for j, m in enumerate(originals):
                seq[i + j] = m


@contextmanager
def _channels_last(model: nn.Module, enabled: bool) -> Iterator[None]:
    """4-D weights in channels-last layout during the attack (faster CPU convolutions);
    the original layout is restored afterwards. Values are unchanged."""
    converted = []
    if enabled:
        for p in model.parameters():
            if p.dim() == 4 and not p.is_contiguous(memory_format=torch.channels_last):
                p.data = p.data.contiguous(memory_format=torch.channels_last)
                converted.append(p)
    try:
        yield
    finally:
        for p in converted:
            p.data = p.data.contiguous()


@contextmanager
def _frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring gradients during the attack (less autograd bookkeeping)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
