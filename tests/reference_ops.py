"""An independent, deliberately plain implementation of the decoupled operators.

Written from the formula table of REFERENCE.md section 1 with ``F.unfold`` (one column
per output position), sharing no code with ``robustbench_dc.operators``. The tests
compare the fast path against it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _h(name: str, n: torch.Tensor, alpha: float, beta: float, rho: float) -> torch.Tensor:
    if name == "sphere":
        return alpha * torch.ones_like(n)
    if name == "ball":
        return alpha * torch.clamp(n, max=rho) / rho
    if name == "tanh":
        return alpha * torch.tanh(n / rho)
    if name == "linear":
        return alpha * n
    if name == "seg":
        return torch.where(n <= rho, alpha * n, beta * n + alpha * rho - beta * rho)
    if name == "log":
        return alpha * torch.log(1 + n)
    if name == "mix":
        return alpha * n + beta * torch.log(1 + n)
    raise KeyError(name)


def _g(name: str, c: torch.Tensor, k: float) -> torch.Tensor:
    theta = torch.acos(c.clamp(-1, 1))
    if name == "linear":
        return 1 - 2 * theta / math.pi
    if name == "cos":
        return c
    if name == "sigmoid":
        a = math.pi / (2 * k)
        const = (1 + math.exp(-a)) / (1 - math.exp(-a))
        u = theta / k - a
        return const * (1 - torch.exp(u)) / (1 + torch.exp(u))
    if name == "sqcos":
        return torch.sign(c) * c ** 2
    raise KeyError(name)


def reference_conv2d(x, w, *, stride=1, padding=0, dilation=1, magnitude="tanh", angular="cos",
                     alpha=1.0, beta=0.5, rho=1.0, k=0.3, weighted=None, eps=1e-4):
    n, c, hh, ww = x.shape
    o, _, kh, kw = w.shape
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # N, C*kh*kw, L
    wf = w.reshape(o, -1)
    dot = torch.einsum("ok,nkl->nol", wf, cols)
    xn = torch.sqrt((cols ** 2).sum(1, keepdim=True) + eps)  # N, 1, L
    wn = torch.sqrt((wf ** 2).sum(1) + eps).view(1, o, 1)
    cos = (dot / (xn * wn)).clamp(-1, 1)
    g = _g(angular, cos, k)
    if weighted is None:
        h = _h(magnitude, xn, alpha, beta, rho)
    elif weighted == "linear":
        h = _h(magnitude, xn, alpha, beta, rho) * wn
    elif weighted == "nonlinear":
        h = _h(magnitude, xn * wn, alpha, beta, rho)
    elif weighted == "separable":
        h = _h(magnitude, xn, alpha, beta, rho) * torch.tanh(wn / rho)
    else:
        raise KeyError(weighted)
    out = h * g
    ho = (hh + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (ww + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    return out.view(n, o, ho, wo)
