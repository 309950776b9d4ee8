"""Forward passes that recompute only what a changed window of the input reaches.

Square Attack changes one small square window of the current best input per query (a side of 1
to 5 pixels for four fifths of AutoAttack's 5,000 queries on 32 x 32 images) and keeps the change
where it lowers the margin. In a network whose first layers are spatially local (convolutions,
pooling, element-wise maps: the zoo's CNN-9 and MNIST CNN), a change inside a window reaches only a
slightly larger window of each following feature map (the kernel's halo per convolution, halved by
each pooling) until, a few layers later, it covers most of the map. :class:`WindowedForward` keeps
the feature maps of the current best inputs and computes each local layer on the part of its input
that the change reaches, then the rest of the network on full maps from the layer where the change
covers more than half of the map.

The same function up to float32 rounding: a convolution on a crop sums the same products as on the
full map, but the convolution library may block (and so round) differently for the two shapes; the
logits agree to ~1e-6 (``tests/test_windowed.py``). Used only where every layer of the split is
known to be local (:func:`layer_window`), no hook would be bypassed, and the logits of the first
batch computed both ways agree.

Example::

    >>> fwd = WindowedForward.build(model, x, model(x))  # None where it does not apply
    >>> z = fwd.window(x2, (r0, r1, c0, c1))      # x2 differs from x only in rows r0:r1, columns c0:c1
    >>> fwd.accept(rows)                          # x2[rows] are the new current inputs of those rows
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
import torch.nn.modules.module as torch_module
from torch import Tensor, nn

from robustbench_dc.attacks.passes import PassCounter
from robustbench_dc.zoo.base import Normalize

__all__ = ["WindowedForward", "layer_window"]

log = logging.getLogger(__name__)

#: From this fraction of a feature map on, the rest of the network runs on full maps.
FULL_FRACTION = 0.5
#: The most memory the cached feature maps of a batch may take; a larger batch runs full passes
#: (CNN-9 on CIFAR-10 caches ~0.65 MB per input at width 0.25, ~2.6 MB at full width).
MAX_CACHE_BYTES = 2 * 1024**3

# Modules that act per position (in evaluation mode); a subclass of one need not.
_POINTWISE = (nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid,
              nn.Softplus, nn.Hardtanh, nn.BatchNorm2d, nn.Dropout, nn.Dropout2d, Normalize)

Rect = tuple[int, int, int, int]  # rows r0:r1, columns c0:c1, half-open


@dataclass(frozen=True)
class _Window:
    """A layer whose output at a position reads a ``kernel`` window of its (zero-padded) input."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    run: Callable[[Tensor], Tensor]  # the layer on an input already padded (no padding added)

    def reach(self, rect: Rect, size: tuple[int, int]) -> tuple[Rect, Rect]:
        """The output rectangle a change inside ``rect`` reaches (empty: r0 >= r1 or c0 >= c1), and the
        input rectangle (in padded-free coordinates, may extend past the map) that computes it."""
        out: list[int] = []
        inp: list[int] = []
        for d in range(2):
            a0, a1 = rect[2 * d], rect[2 * d + 1]
            k, s, p, dil = self.kernel[d], self.stride[d], self.padding[d], self.dilation[d]
            span = dil * (k - 1) + 1
            n_out = (size[d] + 2 * p - span) // s + 1
            o0 = max(0, -((span - 1 - a0 - p) // s))   # ceil((a0 + p - span + 1) / s)
            o1 = min(n_out, (a1 - 1 + p) // s + 1)
            out += [o0, o1]
            inp += [o0 * s - p, (o1 - 1) * s - p + span]
        return (out[0], out[1], out[2], out[3]), (inp[0], inp[1], inp[2], inp[3])


def layer_window(m: nn.Module) -> _Window | str | None:
    """How ``m`` (in evaluation mode) maps positions: ``"point"`` (per position), a :class:`_Window`
    (a convolution or pooling with zero padding given as numbers), or None (unknown or not local)."""
    if type(m) in _POINTWISE and not (type(m) is nn.BatchNorm2d and m.training):  # exact types: a subclass may not be
        return "point"
    if type(m) is nn.Conv2d:
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            return None
        conv: Any = m
        return _Window(conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                       lambda t: F.conv2d(t, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups))
    if type(m) is nn.MaxPool2d:
        k, s, p, d = (m.kernel_size, m.stride, m.padding, m.dilation)
        pair = [v if isinstance(v, tuple) else (v, v) for v in (k, s, p, d)]
        if m.ceil_mode or m.return_indices or pair[2] != (0, 0):
            return None
        return _Window(pair[0], pair[1], (0, 0), pair[3], m)
    geometry, run = getattr(m, "window_geometry", None), getattr(m, "forward_unpadded", None)
    if callable(geometry) and callable(run):
        g = geometry()
        return None if g is None else _Window(g[0], g[1], g[2], g[3], run)
    return None


def _only_counted(model: nn.Module) -> bool:
    """No hook would miss a windowed pass: none anywhere but :class:`PassCounter`'s on ``model``."""
    if (torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks
            or torch_module._global_backward_hooks or torch_module._global_backward_pre_hooks):
        return False
    for m in model.modules():
        hooks = [m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks]
        if m is not model:
            hooks.append(m._forward_hooks)
        if any(hooks):
            return False
    return len(PassCounter.counting(model)) == len(model._forward_hooks)


class WindowedForward:
    """The logits of inputs that differ from the current ones in one window, computed from the
    current inputs' feature maps (see the module docstring). Rows are the batch the object was built
    with, narrowed by :meth:`keep`. Build it with :meth:`build` inside
    :func:`~robustbench_dc.attacks.steps.attack_mode` and under ``torch.no_grad()``."""

    def __init__(self, model: nn.Module, plan: list[tuple[nn.Module, _Window | str]], tail: Callable[[Tensor], Tensor],
                 x: Tensor) -> None:
        self.model, self.plan, self.tail = model, plan, tail
        self.maps: dict[int, Tensor] = {}     # the current inputs of every window layer
        z = x
        for i, (layer, kind) in enumerate(plan):
            if kind != "point":
                self.maps[i] = z
            z = layer(z)
        self.out = z                           # the last local layer's output
        self.logits = tail(z)
        self._pending: list[tuple[int, Rect | None, Tensor]] = []
        self._pending_logits: Tensor | None = None

    @classmethod
    def build(cls, model: nn.Module, x: Tensor, logits: Tensor) -> WindowedForward | None:
        """For ``model`` (with a :meth:`~robustbench_dc.zoo.base.ZooModel.local_split`) at the inputs
        ``x`` (N, C, H, W), whose logits ``model(x)`` are ``logits``; None where a layer is not known
        to be local, a hook would be bypassed, or the logits computed layer by layer differ from
        ``logits`` by more than float32 rounding."""
        split = getattr(model, "local_split", None)
        got = split() if callable(split) and x.dim() == 4 and not model.training else None
        if got is None or not _only_counted(model):
            return None
        layers, tail = got
        plan = [(m, layer_window(m)) for m in layers]
        if any(kind is None for _, kind in plan):
            return None
        need = cls(model, plan, tail, x[:1].clone()).cache_bytes() * x.shape[0]  # type: ignore[arg-type]
        if need > MAX_CACHE_BYTES:
            log.info("windowed forward passes off for %s: the feature maps of %d inputs would take %.2f GiB "
                     "(MAX_CACHE_BYTES: %.2f GiB)", type(model).__name__, x.shape[0], need / 1024**3,
                     MAX_CACHE_BYTES / 1024**3)
            return None
        fwd = cls(model, plan, tail, x.clone())  # type: ignore[arg-type]  # None excluded above
        z = logits.float()
        tol = 1e-4 * max(1.0, float(z.abs().max()))
        if z.shape != fwd.logits.shape or float((z - fwd.logits.float()).abs().max()) > tol:
            log.info("windowed forward passes off for %s: its local split does not give its logits",
                     type(model).__name__)
            return None
        return fwd

    @property
    def rows(self) -> int:
        return int(self.logits.shape[0])

    def cache_bytes(self) -> int:
        """The memory the cached feature maps take."""
        return sum(t.numel() * t.element_size() for t in (*self.maps.values(), self.out))

    def keep(self, index: Tensor) -> None:
        """Keep only the rows ``index`` (in this order)."""
        self.maps = {i: t[index] for i, t in self.maps.items()}
        self.out, self.logits = self.out[index], self.logits[index]

    def window(self, x: Tensor, rect: Rect) -> Tensor:
        """The logits of ``x`` (one row per current row), which differs from the current inputs only
        inside ``rect`` (rows r0:r1, columns c0:c1). Counts one forward pass per row."""
        for counter in PassCounter.counting(self.model):
            counter.add_forward(x.shape[0])
        r0, r1, c0, c1 = rect
        crop: Tensor | None = x[:, :, r0:r1, c0:c1].clone()
        full: Tensor | None = None
        pending: list[tuple[int, Rect | None, Tensor]] = []
        for i, (layer, kind) in enumerate(self.plan):
            if full is not None:
                if kind != "point":
                    pending.append((i, None, full))
                full = layer(full)
                continue
            assert crop is not None
            if kind == "point":
                crop = layer(crop)
                continue
            assert isinstance(kind, _Window)
            current = self.maps[i]
            h, w = current.shape[-2:]
            if (rect[1] - rect[0]) * (rect[3] - rect[2]) > FULL_FRACTION * h * w:
                full = _pasted(current, rect, crop)
                pending.append((i, None, full))
                full = layer(full)
                continue
            pending.append((i, rect, crop))
            out_rect, in_rect = kind.reach(rect, (h, w))
            if out_rect[0] >= out_rect[1] or out_rect[2] >= out_rect[3]:  # the change reaches nothing
                self._pending, self._pending_logits = pending, self.logits
                return self.logits.clone()
            crop = kind.run(_padded_crop(current, in_rect, rect, crop))
            rect = out_rect
        if full is None:
            assert crop is not None
            pending.append((-1, rect, crop))
            full = _pasted(self.out, rect, crop)
        else:
            pending.append((-1, None, full))
        logits = self.tail(full)
        self._pending, self._pending_logits = pending, logits
        return logits

    def accept(self, rows: Tensor) -> None:
        """The inputs of the last :meth:`window` call become the current ones at ``rows``."""
        for i, rect, t in self._pending:
            target = self.out if i < 0 else self.maps[i]
            if rect is None:
                target[rows] = t[rows]
            else:
                r0, r1, c0, c1 = rect
                target[rows, :, r0:r1, c0:c1] = t[rows]
        if self._pending_logits is not None:
            self.logits[rows] = self._pending_logits[rows]


def _pasted(current: Tensor, rect: Rect, crop: Tensor) -> Tensor:
    """``current`` with ``crop`` in ``rect`` (a new tensor)."""
    out = current.clone()
    out[:, :, rect[0]:rect[1], rect[2]:rect[3]] = crop
    return out


def _padded_crop(current: Tensor, in_rect: Rect, rect: Rect, crop: Tensor) -> Tensor:
    """The part ``in_rect`` of ``current`` (zeros outside the map) with ``crop`` in ``rect``, in
    ``current``'s memory format."""
    n, c, h, w = current.shape
    i0, i1, j0, j1 = in_rect
    fmt = torch.channels_last if current.is_contiguous(memory_format=torch.channels_last) and \
        not current.is_contiguous() else torch.contiguous_format
    buf = torch.empty((n, c, i1 - i0, j1 - j0), dtype=current.dtype, device=current.device, memory_format=fmt).zero_()
    a0, a1, b0, b1 = max(i0, 0), min(i1, h), max(j0, 0), min(j1, w)
    buf[:, :, a0 - i0:a1 - i0, b0 - j0:b1 - j0] = current[:, :, a0:a1, b0:b1]
    # the changed values, where they fall inside the needed rectangle
    r0, r1, s0, s1 = max(rect[0], i0), min(rect[1], i1), max(rect[2], j0), min(rect[3], j1)
    if r0 < r1 and s0 < s1:
        buf[:, :, r0 - i0:r1 - i0, s0 - j0:s1 - j0] = crop[:, :, r0 - rect[0]:r1 - rect[0], s0 - rect[2]:s1 - rect[2]]
    return buf
