"""Exact operator norms of affine layers at their real input shapes (one :class:`LayerNorm` per layer).

The norms are those of each layer AS A LINEAR MAP at its real input shape (recorded with forward
hooks), so a convolution's stride, padding (mode included), dilation and groups all count:

- ``||W||_2`` (largest singular value): exact SVD for ``nn.Linear``; power iteration on ``W^T W``
  (``W v`` = the bias-free layer, ``W^T u`` = its autograd adjoint) for convolutions and average
  pools; closed form for BatchNorm in evaluation mode (``max |gamma / sqrt(var + eps)|``) and the
  zoo's ``Normalize`` (``1 / min(std)``). Power iteration converges from below, slowly when the top
  singular values are close; by default (``method="auto"``) an unconverged power iteration is
  refined by ARPACK Lanczos from its last iterate. The value is exact up to the tolerance
  (``converged``); an unconverged value is slightly low.
- ``||W||_inf`` (max absolute row sum): the layer with ``|W|`` and no bias applied to a tensor of
  ones (exact for zero and circular padding when no tap wraps twice; an upper bound otherwise).

Activations: ReLU / ReLU6 / Tanh / Hardtanh / Softplus / Softsign: 1; LeakyReLU: ``max(1, |slope|)``;
ELU: ``max(1, alpha)``; Sigmoid: 1/4; SiLU: 1.1; GELU: 1.13 (rounded-up maxima of the derivative).
Max pooling is 1-Lipschitz in Linf; in L2 it is ``sqrt(M)``-Lipschitz where ``M`` is the largest
number of windows containing one input (``M = 1`` when ``kernel <= stride``). Flatten, reshapes,
Identity and Dropout (evaluation mode) are isometries.


:mod:`.chain` multiplies them into a network bound.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from robustbench_dc.lipschitz._utils import eval_mode, example_generator, model_device_dtype
from robustbench_dc.operators import DecoupledLayer
from robustbench_dc.zoo.base import Normalize

__all__ = ["LayerNorm", "layer_operator_norms", "operator_norm", "NORM_METHODS"]

log = logging.getLogger(__name__)

NORM_METHODS = ("auto", "power", "lanczos")
SQRT2 = math.sqrt(2.0)

_ACTIVATIONS: dict[type, Callable[[Any], float]] = {  # Any: the activation module (typed attributes)
    nn.ReLU: lambda m: 1.0, nn.ReLU6: lambda m: 1.0, nn.Tanh: lambda m: 1.0, nn.Hardtanh: lambda m: 1.0,
    nn.Softplus: lambda m: 1.0, nn.Softsign: lambda m: 1.0, nn.CELU: lambda m: 1.0,
    nn.LeakyReLU: lambda m: max(1.0, abs(float(m.negative_slope))),
    nn.ELU: lambda m: max(1.0, float(m.alpha)), nn.Sigmoid: lambda m: 0.25, nn.Hardsigmoid: lambda m: 1.0 / 6.0,
    nn.SiLU: lambda m: 1.1, nn.GELU: lambda m: 1.13,
}
_ISOMETRIES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
               nn.AlphaDropout)
_STAT_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)


@dataclass
class LayerNorm:
    """Operator norm (affine layers) or Lipschitz constant (other known layers) of one layer.

    Attributes:
        name: module path (``""`` for the root).
        type: class name.
        kind: ``"affine"``, ``"activation"``, ``"pooling"``, ``"isometry"``, ``"decoupled"`` or
            ``"unsupported"``.
        input_shape: per-example input shape recorded on a sample forward pass.
        computed: whether a norm was computed.
        l2, linf: ``||A||_{2->2}`` and ``||A||_{inf->inf}`` of the linear part (or the Lipschitz
            constant of a nonlinearity); ``None`` when not computed.
        method: how ``l2`` was obtained.
        reason: why nothing was computed.
        iterations, converged: power-iteration diagnostics.
        calls: how many times the module ran in the sample forward pass.
    """

    name: str
    type: str
    kind: str
    input_shape: list[int] | None
    computed: bool
    l2: float | None = None
    linf: float | None = None
    method: str | None = None
    reason: str | None = None
    iterations: int | None = None
    converged: bool | None = None
    calls: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- operator norms


def _linear_copy(module: nn.Module, abs_weight: bool = False) -> nn.Module:
    """A float64 evaluation-mode copy of ``module`` with zero bias (its linear part)."""
    m = copy.deepcopy(module).to(torch.float64).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.requires_grad_(False)
        bias, weight = getattr(m, "bias", None), getattr(m, "weight", None)
        if isinstance(bias, Tensor):
            bias.zero_()
        if abs_weight and isinstance(weight, Tensor):
            weight.abs_()
    return m


class _Gram:
    """``v -> A^T A v`` for a linear map ``apply`` (``A^T`` by autograd through one stored graph)."""

    def __init__(self, apply: Callable[[Tensor], Tensor], shape: Sequence[int], device: torch.device) -> None:
        self.apply, self.shape, self.device = apply, tuple(shape), device
        self.z = torch.zeros(self.shape, dtype=torch.float64, device=device, requires_grad=True)
        with torch.enable_grad():
            self.out = apply(self.z)
        self.calls = 0

    def __call__(self, v: Tensor) -> Tensor:
        self.calls += 1
        with torch.no_grad():
            u = self.apply(v)
        return torch.autograd.grad(self.out, self.z, u, retain_graph=True)[0]


def _power_iteration(gram: _Gram, v: Tensor, iters: int, tol: float) -> tuple[float, int, bool, Tensor]:
    """Power iteration on ``A^T A`` from ``v``: ``(sigma, iterations, converged, last iterate)``.

    ``sigma = sqrt(||A^T A v||)`` for the unit iterate ``v``: a lower bound of ``sigma_max``
    (``||A v||^2 <= ||A^T A v|| <= sigma_max^2``) that increases to it. Converged: relative change
    of ``sigma`` below ``tol``.
    """
    v = v / v.norm()
    sigma, prev = 0.0, -1.0
    for i in range(1, max(1, iters) + 1):
        w = gram(v)
        wn = float(w.norm())
        if wn == 0.0:
            return 0.0, i, True, v
        sigma = math.sqrt(wn)
        v = w / wn
        if abs(sigma - prev) <= tol * sigma:
            return sigma, i, True, v
        prev = sigma
    return sigma, iters, False, v


def _lanczos(gram: _Gram, v0: Tensor, iters: int, tol: float) -> tuple[float, int, bool]:
    """``sigma_max`` by ARPACK Lanczos (``scipy.sparse.linalg.eigsh``) on ``A^T A`` from ``v0``."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    n = v0.numel()
    start = gram.calls

    def matvec(v: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(gram.shape)).to(gram.device)
        return gram(t).cpu().numpy().ravel()

    op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    try:
        val = eigsh(op, k=1, which="LA", v0=v0.detach().cpu().numpy().ravel(), tol=tol, maxiter=max(iters, 10),
                    return_eigenvectors=False)
        return math.sqrt(max(float(val[0]), 0.0)), gram.calls - start, True
    except ArpackNoConvergence as exc:
        vals = getattr(exc, "eigenvalues", None)
        best = math.sqrt(max(float(vals[0]), 0.0)) if vals is not None and len(vals) else 0.0
        return best, gram.calls - start, False


def _operator_norm(module: nn.Module, input_shape: Sequence[int], iters: int, tol: float, method: str,
                   seed: int) -> tuple[float, int, bool, str]:
    if method not in NORM_METHODS:
        raise ValueError(f"method: must be one of {NORM_METHODS}, got {method!r}")
    device, _ = model_device_dtype(module)
    gram = _Gram(_linear_copy(module), input_shape, device)
    v = torch.randn(tuple(input_shape), generator=example_generator(seed), dtype=torch.float64).to(device)
    if method == "lanczos" and v.numel() >= 3:
        sigma, its, conv = _lanczos(gram, v, iters, tol)
        if conv:
            return sigma, its, conv, "Lanczos (ARPACK)"
    sigma, its, conv, v = _power_iteration(gram, v, iters, tol)
    if conv or method == "power" or v.numel() < 3:
        return sigma, its, conv, "power iteration"
    # "auto": power iteration did not settle (close top singular values): Lanczos from its iterate.
    s2, its2, conv2 = _lanczos(gram, v, iters, tol)
    return max(sigma, s2), its + its2, conv2, "power iteration + Lanczos refinement"


def operator_norm(module: nn.Module, input_shape: Sequence[int], iters: int = 200, tol: float = 1e-7,
                  method: str = "auto", seed: int = 0) -> tuple[float, int, bool]:
    """``||A||_2`` of an affine module's linear part at ``input_shape`` (batch dimension included).

    The linear part is the module in float64 with its bias zeroed; ``A^T`` is its autograd adjoint.
    ``method``: ``"power"`` (power iteration on ``A^T A``, ``iters`` steps at most), ``"lanczos"``
    (ARPACK ``eigsh`` on ``A^T A``) or ``"auto"`` (power iteration, refined by Lanczos from the last
    iterate when it has not converged: power iteration is slow when the top singular values are close).
    Returns ``(sigma, applications of A^T A, converged)``.
    """
    sigma, its, conv, _ = _operator_norm(module, input_shape, iters, tol, method, seed)
    return sigma, its, conv


def _linf_norm(module: nn.Module, input_shape: Sequence[int]) -> float:
    """Max absolute row sum: ``|W|`` (no bias) applied to ones."""
    m = _linear_copy(module, abs_weight=True)
    device, _ = model_device_dtype(module)
    with torch.no_grad():
        return float(m(torch.ones(tuple(input_shape), dtype=torch.float64, device=device)).max())


def _windows_per_input(kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> int:
    """Largest number of pooling windows that contain one input position."""
    count = 1
    for k, s, d in zip(kernel, stride, dilation):
        count *= min(k, math.ceil(((k - 1) * d + 1) / s))
    return count


def _adaptive_windows(in_sizes: Sequence[int], out_sizes: Sequence[int | None]) -> int:
    count = 1
    for n, o in zip(in_sizes, out_sizes):
        o = n if o is None else int(o)
        cover = [0] * n
        for i in range(o):
            for p in range((i * n) // o, -((-(i + 1) * n) // o)):
                cover[p] += 1
        count *= max(cover)
    return count


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(int(a) for a in v) if isinstance(v, (tuple, list)) else (int(v),) * n


def module_norm(name: str, module: nn.Module, shape: Sequence[int], iters: int, tol: float, method: str,
                 seed: int) -> LayerNorm:
    """The :class:`LayerNorm` of one module at input ``shape`` (batch dimension included)."""
    refused = refusal_entry(name, module, shape)
    if refused is not None:
        return refused
    tname = type(module).__name__
    per_example = [int(s) for s in shape[1:]]

    def done(kind: str, l2: float, linf: float, how: str, iterations: int | None = None,
             converged: bool | None = None) -> LayerNorm:
        return LayerNorm(name, tname, kind, per_example, True, float(l2), float(linf), how, None, iterations,
                         converged)

    if isinstance(module, Normalize):
        smin = float(module.std.abs().min())
        return done("affine", 1.0 / smin, 1.0 / smin, "closed form: 1 / min(std)")
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        assert module.running_var is not None  # refusal_entry refuses batch-norm without running statistics
        scale = 1.0 / torch.sqrt(module.running_var.double() + module.eps)
        if module.weight is not None:
            scale = scale * module.weight.detach().double()
        m = float(scale.abs().max())
        return done("affine", m, m, "closed form: max |gamma / sqrt(var + eps)| (evaluation mode)")
    if isinstance(module, nn.Linear):
        w = module.weight.detach().double()
        return done("affine", float(torch.linalg.matrix_norm(w, 2)), float(w.abs().sum(1).max()),
                    "exact: SVD of the weight")
    if isinstance(module, (nn.modules.conv._ConvNd, nn.modules.pooling._AvgPoolNd,
                           nn.modules.pooling._AdaptiveAvgPoolNd)):
        sigma, its, conv, how = _operator_norm(module, shape, iters, tol, method, seed)
        how += " on the bias-free layer and its adjoint"
        linf = _linf_norm(module, shape)
        if getattr(module, "padding_mode", "zeros") not in ("zeros", "circular"):
            how += f" (Linf: upper bound for padding_mode={module.padding_mode})"
        if not conv:
            log.info("layer %s: the norm did not reach the tolerance in %d steps (the value is a slightly low "
                     "estimate)", name, its)
        return done("affine", sigma, linf, how, its, conv)
    if isinstance(module, nn.modules.pooling._MaxPoolNd):
        nd = len(shape) - 2
        k, s = _tuple(module.kernel_size, nd), _tuple(module.stride or module.kernel_size, nd)
        m = _windows_per_input(k, s, _tuple(module.dilation, nd))
        return done("pooling", math.sqrt(m), 1.0, f"Lipschitz constant: sqrt({m} windows per input)")
    if isinstance(module, nn.modules.pooling._AdaptiveMaxPoolNd):
        nd = len(shape) - 2
        out = module.output_size if isinstance(module.output_size, (tuple, list)) else (module.output_size,) * nd
        m = _adaptive_windows(shape[2:], out)
        return done("pooling", math.sqrt(m), 1.0, f"Lipschitz constant: sqrt({m} windows per input)")
    for cls, fn in _ACTIVATIONS.items():
        if type(module) is cls:
            lip = fn(module)
            return done("activation", lip, lip, "Lipschitz constant")
    if isinstance(module, _ISOMETRIES):
        return done("isometry", 1.0, 1.0, "isometry (evaluation mode)")
    raise AssertionError(f"unclassified layer type {tname}")  # pragma: no cover - refusal_entry covers the rest


_KNOWN = (Normalize, nn.modules.batchnorm._BatchNorm, nn.Linear, nn.modules.conv._ConvNd,
          nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._MaxPoolNd,
          nn.modules.pooling._AdaptiveMaxPoolNd, *_ISOMETRIES)


def refusal_entry(name: str, module: nn.Module, shape: Sequence[int]) -> LayerNorm | None:
    """The "not computed" entry of a layer without a norm (cheap: no norm is computed), else ``None``."""
    tname = type(module).__name__
    per_example = [int(s) for s in shape[1:]]

    def refuse(kind: str, reason: str) -> LayerNorm:
        return LayerNorm(name, tname, kind, per_example, False, reason=reason)

    if isinstance(module, DecoupledLayer):
        return refuse("decoupled", "decoupled layer, not affine: h(||x||) g(theta) divides by ||x|| and ||w||")
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_var is None:
        return refuse("unsupported", f"{tname} without running statistics normalises by batch statistics "
                                     "(not affine)")
    if isinstance(module, _STAT_NORMS):
        return refuse("unsupported", f"{tname} normalises by statistics of its input (not affine)")
    if type(module) in _ACTIVATIONS or isinstance(module, _KNOWN):
        return None
    return refuse("unsupported", f"layer type {tname} is not understood by the layer-wise walker")


def atomic_module(module: nn.Module) -> bool:
    return isinstance(module, (DecoupledLayer, Normalize)) or next(module.children(), None) is None


def _record_shapes(model: nn.Module, input_shape: Sequence[int]) -> list[tuple[str, nn.Module, list[int], int]]:
    """(name, module, input shape with batch 1, calls) of every atomic module, in order of first call."""
    seen: dict[str, list[Any]] = {}
    handles = []
    skip: set[str] = set()
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in skip):
            continue
        if atomic_module(module):
            skip.add(name)

            def hook(mod: nn.Module, args: tuple, _out: Any, name: str = name) -> None:
                if name in seen:
                    seen[name][3] += 1
                elif args and isinstance(args[0], Tensor):
                    seen[name] = [name, mod, list(args[0].shape), 1]

            handles.append(module.register_forward_hook(hook))
    device, dtype = model_device_dtype(model)
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    return [tuple(v) for v in seen.values()]


def layer_operator_norms(model: nn.Module, input_shape: Sequence[int], iters: int = 200, tol: float = 1e-7,
                         method: str = "auto", seed: int = 0, progress: bool = False) -> list[LayerNorm]:
    """Per-layer operator norms (affine layers) and Lipschitz constants (known nonlinearities).

    Args:
        model: any network; analysed in evaluation mode (flags restored after).
        input_shape: the shape of ONE input example, e.g. ``(1, 28, 28)`` (no batch dimension).
        iters, tol: power-iteration budget and relative tolerance.
        method: ``"auto"`` (power iteration, refined by Lanczos when it has not converged), ``"power"``
            or ``"lanczos"`` for convolutions and average pools (see :func:`operator_norm`).
        seed: seed of the local generators (layer ``i`` uses ``(seed, i)``).
        progress: progress bar over the layers.

    Returns:
        one :class:`LayerNorm` per atomic module (leaf module, decoupled layer or ``Normalize``), in
        the order of their first call on a sample forward pass; decoupled layers and unknown layers
        are marked ``computed=False`` with the reason.
    """
    with eval_mode(model):
        records = _record_shapes(model, input_shape)
        out = []
        for i, (name, module, shape, calls) in enumerate(tqdm(records, desc="layer norms", disable=not progress,
                                                              leave=False)):
            entry = module_norm(name or type(module).__name__, module, shape, iters, tol, method,
                                 seed * 1_000_003 + i)
            entry.calls = calls
            out.append(entry)
    return out
