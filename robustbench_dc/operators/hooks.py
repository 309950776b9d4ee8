"""Optimisation tricks of Decoupled Networks (Liu et al., CVPR 2018, Sec. 5) as training hooks.

- Weight projection: every ``every`` optimiser steps, ``w <- s * w / ||w||`` for every
  filter of every decoupled layer (s = 1 in the authors' code, every 100 iterations).
- Weighted gradients: each filter's gradient is multiplied by ``||w||``, which turns the
  gradient of ``w_hat . x`` into ``x_hat - (w_hat . x_hat) w_hat`` up to scale.
- Orthogonality penalty: ``coef * 0.5 * ||W_hat^T W_hat - I||^2`` over the normalised
  filters of each decoupled layer (coef 1e-5 in the authors' code).

And one speed switch: :func:`compiled_responses` / :func:`set_compiled` run the decoupled
responses through ``torch.compile`` (:mod:`.compiled`).
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
from torch import Tensor, nn

from robustbench_dc.operators.compiled import compile_available
from robustbench_dc.operators.functional import filter_norm
from robustbench_dc.operators.layers import DecoupledLayer

__all__ = ["decoupled_layers", "project_weights", "WeightProjection", "enable_weighted_gradients",
           "orthogonality_penalty", "recalibrate_xnorm", "set_compiled", "compiled_responses", "resolve_compile"]


def decoupled_layers(model: nn.Module) -> Iterator[DecoupledLayer]:
    """Every decoupled layer of ``model`` (instances of :class:`DecoupledLayer`)."""
    for module in model.modules():
        if isinstance(module, DecoupledLayer):
            yield module


def _per_filter(norm: Tensor, weight: Tensor) -> Tensor:
    return norm.view(-1, *([1] * (weight.dim() - 1)))


@torch.no_grad()
def project_weights(model: nn.Module, scale: float = 1.0) -> int:
    """Set every decoupled filter to ``scale * w / ||w||``; returns the number of layers touched.

    ``||w||`` here is the plain Euclidean norm (no epsilon), so projected filters have
    norm exactly ``scale``.
    """
    count = 0
    for layer in decoupled_layers(model):
        w = layer.weight
        w.mul_(scale / _per_filter(filter_norm(w, 0.0).clamp_min(1e-12), w))
        count += 1
    return count


class WeightProjection:
    """Call :meth:`step` after each optimiser step; projects the weights every ``every`` calls.

    Example::

        projection = WeightProjection(model, every=100)
        for x, y in loader:
            ...; optimizer.step(); projection.step()
    """

    def __init__(self, model: nn.Module, every: int = 100, scale: float = 1.0) -> None:
        if every < 1:
            raise ValueError(f"every: must be >= 1, got {every}")
        if scale <= 0:
            raise ValueError(f"scale: must be > 0, got {scale}")
        self.model, self.every, self.scale = model, int(every), float(scale)
        self.steps = 0

    def step(self) -> bool:
        """Count one optimiser step; returns ``True`` when a projection happened."""
        self.steps += 1
        if self.steps % self.every == 0:
            project_weights(self.model, self.scale)
            return True
        return False

    def state_dict(self) -> dict[str, int]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.steps = int(state["steps"])


def enable_weighted_gradients(model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """Multiply each decoupled filter's gradient by its norm ``||w||`` (a tensor hook).

    Returns the hook handles; call ``handle.remove()`` on each to switch it off.
    """
    handles = []
    for layer in decoupled_layers(model):
        weight = layer.weight

        def hook(grad: Tensor, weight: Tensor = weight) -> Tensor:
            return grad * _per_filter(filter_norm(weight.detach(), 0.0), grad)

        handles.append(weight.register_hook(hook))
    return handles


def orthogonality_penalty(model: nn.Module, coef: float = 1e-5) -> Tensor:
    """``coef * 0.5 * sum_layers ||W_hat W_hat^T - I||_F^2`` over normalised filters."""
    total: Tensor | None = None
    for layer in decoupled_layers(model):
        w = layer.weight.flatten(1)
        w_hat = w / filter_norm(w, layer.eps).unsqueeze(1)
        gram = w_hat @ w_hat.t()
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        term = 0.5 * (gram - eye).pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return coef * total


@torch.no_grad()
def recalibrate_xnorm(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Re-estimate the running mean of ``||x||`` of every ``rho_mode="relative"`` layer.

    The running means are reset and re-accumulated over ``batches`` with the current
    weights; everything else runs in evaluation mode (batch-norm uses its running
    statistics), so the estimate is the one the evaluation-mode network sees. Returns the
    number of layers recalibrated (0: nothing to do, no forward pass).

    Why: the authors track the mean with an EMA of decay 0.999 over 64k iterations, which
    forgets the early weights; over the few hundred iterations of a CPU-scale run it does
    not, and the stale mean wrecks evaluation-mode accuracy.
    """
    layers = [m for m in decoupled_layers(model) if m.rho_mode == "relative"]
    if not layers:
        return 0
    was_training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        for layer in layers:
            layer.xnorm_steps.zero_()
            layer.xnorm_running.zero_()
            layer.train()
        for x in batches:
            model(x)
    finally:
        for m, mode in was_training.items():
            m.training = mode
    return len(layers)


def set_compiled(model: nn.Module, enabled: bool = True) -> int:
    """Turn the compiled response on (or off) for every decoupled layer of ``model``.

    Returns the number of layers whose setting changed. The setting has no effect on
    operators that take the fused cosine path with a radius shared by all channels (already
    at about the cost of a convolution). Values are the same either way; the compiled
    backward cannot be differentiated again (double backward needs it off).
    """
    n = 0
    for m in decoupled_layers(model):
        if m.compiled != enabled:
            m.compiled = enabled
            n += 1
    return n


@contextlib.contextmanager
def compiled_responses(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Context manager: compiled responses for ``model``'s decoupled layers inside the block.

    Example::

        with compiled_responses(model):
            train_some_epochs(model)
    """
    before = {m: m.compiled for m in decoupled_layers(model)}
    set_compiled(model, enabled)
    try:
        yield model
    finally:
        for m, value in before.items():
            m.compiled = value


def resolve_compile(setting: bool | str, model: nn.Module, device_type: str, work: int, min_work: int) -> bool:
    """Whether to run ``model``'s decoupled responses compiled for a job of size ``work``.

    ``setting``: ``False`` never; ``True`` whenever ``model`` has a layer that compilation
    changes (:attr:`DecoupledLayer.compilable`); ``"auto"`` when, in addition, ``work``
    (training steps, or attacked examples x attack iterations) reaches ``min_work`` and
    ``torch.compile`` is available for ``device_type``: compiling costs 10-30 s per operator
    on a 2-core CPU, which only a long job recovers.
    """
    if setting not in (True, False, "auto"):
        raise ValueError(f"compile: must be true, false or 'auto', got {setting!r}")
    if setting is False or not any(m.compilable for m in decoupled_layers(model)):
        return False
    if setting is True:
        return True
    return work >= min_work and compile_available(device_type)
