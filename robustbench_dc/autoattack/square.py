"""Native Square Attack: a score-based black-box attack by random search, L-inf and L2.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020, as AutoAttack runs it (fra31/auto-attack, ``square.py``):
untargeted, the margin loss ``f_y - max_{l != y} f_l``, 5,000 queries, ``p_init = 0.8`` and the
schedule of ``p`` in query counts (AutoAttack passes ``resc_schedule=False``: the piecewise
constant schedule at 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 queries, ``p`` halving at
each).

L-inf: start at ``x + eps * s`` with a random sign ``s`` per (channel, column) (vertical
stripes), clipped to [0, 1]; then at every query one square window of side
``round(sqrt(p d / c))``, at a random position shared by the batch, gets the value ``x +- eps``
(a random sign per channel, shared by the batch) and the new point is kept where it lowers the
margin or misclassifies. L2: the grid of ``s x s`` "meta pseudo-Gaussian" blocks at the start,
then per query mass moved from a second random window into the first, keeping
``||delta||_2 = eps`` (Section 3.2 of the paper; the reference code's update, line for line).

As in the reference, the random draws come from one generator seeded with ``seed`` on the CPU,
in the reference's order, so that with the same seed and the same model outputs the native
attack makes the same queries as Croce & Hein's code. An example leaves the batch once its
margin is <= 0 (misclassified); each query is one forward pass of the examples still in it,
under :func:`~robustbench_dc.attacks.steps.attack_mode` (batch norms folded, parameters frozen,
channels-last where it pays). Every query's margin is recorded in ``trace`` (objective
``-margin``, success ``margin <= 0``).

An L-inf query changes one window of the current best point, so where the model allows it (the
zoo's CNN-9 and MNIST network) the query recomputes only the part of each feature map that the
window reaches (:class:`~robustbench_dc.attacks.windowed.WindowedForward`): the same margins up to
float32 rounding, at a third of a full pass's time for the 1-5 pixel windows of most of
AutoAttack's queries on a width-0.25 CNN-9 (``windowed=False``: full passes). Passes are counted
as full ones: a query is one forward pass of each example, however little of it is recomputed.

Example::

    >>> x_adv = square(model, x, y, eps=8 / 255)          # L-inf, 5,000 queries
    >>> (model(x_adv).argmax(1) != y).float().mean()       # success rate
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from robustbench_dc.attacks.losses import margin_loss
from robustbench_dc.attacks.steps import attack_mode
from robustbench_dc.attacks.trace import TraceView
from robustbench_dc.attacks.windowed import WindowedForward

__all__ = ["square", "p_schedule"]

# AutoAttack's schedule: (last query of the stage, p / p_init); p_init / 512 after the last stage.
_STAGES = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


def p_schedule(it: int, p_init: float, queries: int, rescale: bool = False) -> float:
    """The fraction ``p`` of pixels a window covers at query ``it`` (0-based). ``rescale`` stretches
    the schedule, written for 10,000 queries, over ``queries`` (the reference's ``resc_schedule``;
    AutoAttack: False)."""
    if rescale:
        it = int(it / queries * 10000)
    for last, div in _STAGES:
        if it <= last:
            return p_init / div
    return p_init / 512


class _Draws:
    """The reference's random draws (``torch.rand`` on the CPU), from one seeded generator."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.gen = torch.Generator().manual_seed(int(seed))
        self.device = device

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.gen)

    def sign(self, *shape: int) -> torch.Tensor:
        return torch.sign(2 * self.rand(*shape) - 1).to(self.device)

    def int(self, high: int) -> int:
        """Uniform in ``[0, high)`` as the reference draws it (0 when ``high`` is 0)."""
        return int(high * self.rand(1))


def _margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fwd: WindowedForward | None = None,
            rect: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """``f_y - max_{l != y} f_l`` per row (<= 0: misclassified), in float32; with ``fwd`` and ``rect``
    from its windowed pass (``x`` differs from its current points only in ``rect``)."""
    with torch.autocast(x.device.type, enabled=False):
        z = (model(x) if fwd is None or rect is None else fwd.window(x, rect)).float()
    return -margin_loss(z, y)


def _eta(s: int, draws: _Draws, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The L2 update's ``s x s`` block: two opposite-signed "pseudo-Gaussian" rectangles, unit L2
    norm, transposed with probability 1/2 (the reference's ``eta``)."""
    def rect(a: int, b: int) -> torch.Tensor:
        d = torch.zeros(a, b)  # float32, as the reference computes it
        ca, cb = a // 2, b // 2
        for k in range(max(a // 2 + 1, b // 2 + 1)):
            d[max(ca - k, 0):min(ca - k + 2 * k + 1, a), max(cb - k, 0):min(cb - k + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2
        return d / d.pow(2).sum().sqrt()
    d = torch.cat((rect(s // 2, s), -rect(s - s // 2, s)))
    d = d / d.pow(2).sum().sqrt()
    if draws.rand(1) > 0.5:
        d = d.t()
    return d.to(device, dtype)


def _unit_l2(d: torch.Tensor) -> torch.Tensor:
    return d / (d.flatten(1).norm(dim=1).view(-1, *([1] * (d.dim() - 1))) + 1e-12)


def _linf_start(x: torch.Tensor, eps: float, draws: _Draws) -> torch.Tensor:
    n, c, _, w = x.shape
    return (x + eps * draws.sign(n, c, 1, w)).clamp(0.0, 1.0)


def _l2_start(x: torch.Tensor, eps: float, draws: _Draws) -> torch.Tensor:
    n, c, h, w = x.shape
    delta = torch.zeros_like(x)
    s = h // 5
    sp = (h - s * 5) // 2
    vh = sp
    for _ in range(h // s):
        vw = sp
        for _ in range(w // s):
            delta[:, :, vh:vh + s, vw:vw + s] += _eta(s, draws, x.device, x.dtype).view(1, 1, s, s) * draws.sign(n, c, 1, 1)
            vw += s
        vh += s
    return (x + _unit_l2(delta) * eps).clamp(0.0, 1.0)


def _linf_step(xc: torch.Tensor, xb: torch.Tensor, eps: float, p: float,
               draws: _Draws) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """One L-inf proposal: a window of ``xb`` set to ``xc +- eps`` (clipped to [0, 1]); and the window."""
    c, h, w = xc.shape[1:]
    s = min(max(int(round(math.sqrt(p * c * h * w / c))), 1), h, w)
    vh, vw = draws.int(h - s), draws.int(w - s)
    signs = draws.sign(c, 1, 1)
    new = xb.clone()
    win = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
    xw = xc[win]
    new[win] = torch.minimum(torch.maximum(xb[win] + 2 * eps * signs, xw - eps), xw + eps).clamp(0.0, 1.0)
    return new, (vh, vh + s, vw, vw + s)


def _l2_step(xc: torch.Tensor, xb: torch.Tensor, eps: float, p: float, draws: _Draws) -> tuple[torch.Tensor, None]:
    """One L2 proposal (the reference's update): mass of window 2 moved into window 1 (then the whole
    perturbation rescaled: no window holds the change)."""
    n, c, h, w = xc.shape
    s = max(int(round(math.sqrt(p * h * w))), 3)
    s = min(s + 1 if s % 2 == 0 else s, h, w)
    delta = xb - xc
    vh, vw = draws.int(h - s), draws.int(w - s)
    w1 = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
    norm_w1 = delta[w1].pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
    vh2, vw2 = draws.int(h - s), draws.int(w - s)
    w2 = (slice(None), slice(None), slice(vh2, vh2 + s), slice(vw2, vw2 + s))
    mask = torch.zeros_like(xc)
    mask[w1] = 1.0
    mask[w2] = 1.0
    norm_img = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    norm_windows = (delta * mask).pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
    new = _eta(s, draws, xc.device, xc.dtype).view(1, 1, s, s) * draws.sign(n, c, 1, 1)
    new = new + delta[w1] / (1e-12 + norm_w1)
    room = ((eps ** 2 - norm_img ** 2).clamp_min(0.0) / c + norm_windows ** 2).sqrt()
    new = new / (1e-12 + new.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()) * room
    delta[w2] = 0.0
    delta[w1] = new
    return (xc + _unit_l2(delta) * eps).clamp(0.0, 1.0), None


def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, threat_model: str = "linf",
           queries: int = 5000, p_init: float = 0.8, rescale_schedule: bool = False, seed: int = 0,
           windowed: bool = True, trace: TraceView | None = None) -> torch.Tensor:
    """Square Attack (untargeted, margin loss) on one batch.

    Args:
        model (nn.Module): (N, C, H, W) inputs in [0, 1] -> (N, K) logits; only its outputs are used.
        x (Tensor): (N, C, H, W) clean inputs. y (Tensor): (N,) labels.
        eps (float): the budget. threat_model (str): ``"linf"`` (default) or ``"l2"``.
        queries (int): iterations (one query each). Default 5,000 (AutoAttack's).
        p_init (float): initial fraction of pixels a window covers. Default 0.8 (AutoAttack's).
        rescale_schedule (bool): stretch ``p``'s schedule over ``queries`` (the reference's default;
            AutoAttack turns it off). Default False.
        seed (int): seed of the random search. Default 0.
        windowed (bool): L-inf queries recompute only the part of each feature map that the changed
            window reaches, where the model allows it
            (:class:`~robustbench_dc.attacks.windowed.WindowedForward`; the same margins up to
            float32 rounding). Default True; False: every query is a full forward pass.
        trace (TraceView | None): records every query's objective (``-margin``) and success.

    Returns:
        Tensor: (N, C, H, W) detached, within ``eps`` of ``x`` and in [0, 1]: per example the best
        point of the search (misclassified where the attack succeeded); ``x`` where the clean
        input is already misclassified (those are not searched, as in the reference).
    """
    if threat_model not in ("linf", "l2"):
        raise ValueError(f"threat_model: must be 'linf' or 'l2', got {threat_model!r}")
    if x.dim() != 4 or y.shape != (x.shape[0],):
        raise ValueError(f"x, y: need (N, C, H, W) images and (N,) labels, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not (eps > 0 and queries >= 1 and 0 < p_init <= 1):
        raise ValueError(f"eps, queries, p_init: need eps > 0, queries >= 1, 0 < p_init <= 1; "
                         f"got {eps}, {queries}, {p_init}")
    x = x.detach()
    y = y.detach().to(device=x.device, dtype=torch.long)
    if x.shape[0] == 0:
        return x.clone()
    draws = _Draws(seed, x.device)
    start, step = (_linf_start, _linf_step) if threat_model == "linf" else (_l2_start, _l2_step)
    out = x.clone()
    with torch.no_grad(), attack_mode(model, x) as channels_last:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        with torch.autocast(x.device.type, enabled=False):
            todo = (model(x.contiguous(memory_format=fmt)).argmax(1) == y).nonzero().squeeze(1)
        if todo.numel():  # as the reference: only the correctly classified examples are searched
            view = None if trace is None else trace.view(todo)
            out[todo] = _search(model, x[todo], y[todo], eps, start, step, queries, p_init, rescale_schedule,
                                draws, fmt, view, windowed and threat_model == "linf")
    return out.contiguous()


def _search(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, start: Callable[..., torch.Tensor],
            step: Callable[..., tuple[torch.Tensor, tuple[int, int, int, int] | None]], queries: int, p_init: float,
            rescale: bool, draws: _Draws, fmt: torch.memory_format, trace: TraceView | None, windowed: bool) -> torch.Tensor:
    """The random search on correctly classified rows (the reference's ``attack_single_run``)."""
    x_best = start(x, eps, draws).contiguous(memory_format=fmt)
    with torch.autocast(x.device.type, enabled=False):
        logits = model(x_best).float()
        fwd = WindowedForward.build(model, x_best, logits) if windowed else None
    margin = -margin_loss(logits, y)
    if trace is not None:
        trace.new_segment()
        trace.record(-margin, margin <= 0)
    if bool((margin < 0).all()):
        return x_best
    held = torch.arange(x.shape[0], device=x.device)  # the rows whose feature maps fwd holds
    for it in range(queries):
        todo = (margin > 0).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        cand, rect = step(x[todo], x_best[todo], eps, p_schedule(it, p_init, queries, rescale), draws)
        cand = cand.contiguous(memory_format=fmt)
        if fwd is not None and todo.numel() != held.numel():  # rows only ever leave
            fwd.keep(torch.searchsorted(held, todo))
            held = todo
        m = _margin(model, cand, y[todo], fwd, rect)
        better = m < margin[todo]        # the margin is the loss: improved, or misclassified
        rows = todo[better]
        margin[rows] = m[better]
        x_best[rows] = cand[better]
        if fwd is not None:
            fwd.accept(better.nonzero().squeeze(1))
        if trace is not None:
            trace.record(-margin[todo], m <= 0, todo)
    return x_best
