"""``torch.compile``d decoupled responses: one fused kernel for the element-wise work.

Operators that the fused cosine path (:mod:`.fused`) does not cover (the ``linear``,
``sigmoid`` and ``sqcos`` angular functions, the ``nonlinear`` weighting, a per-channel
radius) go through :func:`~robustbench_dc.operators.functional.decoupled_response`, where
autograd records every element-wise step on the full ``(N, C_out, H, W)`` response and
keeps its intermediates. Compiled with TorchInductor, the same Python function becomes one
forward kernel and one backward kernel that keep only the inputs (the inner products and
the small norm tensors) and recompute the rest: fewer passes over memory, and the memory
of a convolution.

Compilation costs seconds per operator (tens on a 2-core CPU, cached on disk by
TorchInductor for later processes), so it pays off for training runs, not for a single
forward pass. It is therefore opt-in:
:func:`~robustbench_dc.operators.hooks.compiled_responses` turns it on for a model's
decoupled layers (the training loop does so when a recipe's ``compile`` resolves to
true). Where ``torch.compile`` cannot work (no C++ compiler, an unsupported platform) or
fails on first use, a warning is logged once and the eager path is used: results are
the same, only slower.

The compiled backward is not differentiable a second time (a TorchInductor limit), so
double backward (gradient-norm penalties, input-gradient Lipschitz estimates) needs the
eager path; ``compiled_responses`` is a context manager so that compilation is scoped to
the training loop.
"""

from __future__ import annotations

import functools
import logging
import shutil
import types
from typing import Any, Callable

import torch
from torch import Tensor

from .angular import Angular
from .magnitude import Magnitude

__all__ = ["compile_available", "compiled_response"]

log = logging.getLogger(__name__)

# One compiled function per operator definition; a key maps to None when compiling it failed.
_COMPILED: dict[tuple[Any, ...], Callable[..., Tensor] | None] = {}


@functools.lru_cache(maxsize=None)
def compile_available(device_type: str = "cpu") -> bool:
    """Whether ``torch.compile`` (TorchInductor) can generate kernels for ``device_type``.

    CPU kernels need a C++ compiler; CUDA kernels need Triton. This only checks that the
    tools are present; a failure at compile time still falls back to eager (with a warning).
    """
    if not hasattr(torch, "compile"):
        return False
    if device_type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:
            return False
        return bool(has_triton())
    if device_type != "cpu":
        return False
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return bool(get_cpp_compiler())
    except Exception:  # noqa: BLE001 - private API: fall back to looking for a compiler
        return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs (bf16 / fp16), else the input's own dtype."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def _make(magnitude: Magnitude, angular: Angular, weighted: str | None, alpha: float, beta: float,
          k: float, index: int) -> Callable[..., Tensor]:
    from .functional import decoupled_response

    def response(dot: Tensor, xnorm: Tensor, wnorm: Tensor, rho: float | Tensor) -> Tensor:
        ct = _compute_dtype(dot.dtype)
        out = decoupled_response(dot.to(ct), xnorm.to(ct), wnorm.to(ct), magnitude=magnitude, angular=angular,
                                 weighted=weighted, alpha=alpha, beta=beta, rho=rho, k=k)
        return out.to(dot.dtype)

    # Dynamo keeps its cache of compiled graphs on the code object; closures share one, so
    # several operators in one process would exhaust its recompile limit. A renamed copy
    # gives every operator its own cache.
    code = response.__code__.replace(co_name=f"rbdc_decoupled_response_{index}")
    fn = types.FunctionType(code, response.__globals__, code.co_name, response.__defaults__,
                            response.__closure__)
    return torch.compile(fn, dynamic=None)


def compiled_response(dot: Tensor, xnorm: Tensor, wnorm: Tensor, *, magnitude: Magnitude, angular: Angular,
                      weighted: str | None = None, alpha: float = 1.0, beta: float = 0.5,
                      rho: float | Tensor = 1.0, k: float = 0.3) -> Tensor:
    """:func:`~robustbench_dc.operators.functional.decoupled_response` through ``torch.compile``.

    Same arguments and values (computed in at least float32, returned in ``dot``'s dtype).
    Falls back to the eager function, with one warning, where compilation is not possible.
    """
    key = (magnitude, angular, weighted, float(alpha), float(beta), float(k))
    fn = _COMPILED.get(key, False)
    if fn is False:
        if not compile_available(dot.device.type):
            log.warning("torch.compile is not available for %s tensors (no C++ compiler / Triton): "
                        "decoupled responses run eagerly", dot.device.type)
            fn = None
        else:
            fn = _make(magnitude, angular, weighted, float(alpha), float(beta), float(k), len(_COMPILED))
        _COMPILED[key] = fn
    if fn is None:
        return _eager(dot, xnorm, wnorm, magnitude, angular, weighted, alpha, beta, rho, k)
    try:
        return fn(dot, xnorm, wnorm, rho)
    except Exception as exc:  # noqa: BLE001 - decided below: compiler failure or the caller's error
        failure = exc
    # Run eagerly; if that fails too, the error is the caller's (bad shapes...), not the compiler's.
    out = _eager(dot, xnorm, wnorm, magnitude, angular, weighted, alpha, beta, rho, k)
    log.warning("torch.compile failed for the decoupled response %s+%s (%s: %s); it runs eagerly from now on",
                magnitude.name, angular.name, type(failure).__name__, str(failure).splitlines()[0][:200])
    _COMPILED[key] = None
    return out


def _eager(dot: Tensor, xnorm: Tensor, wnorm: Tensor, magnitude: Magnitude, angular: Angular,
           weighted: str | None, alpha: float, beta: float, rho: float | Tensor, k: float) -> Tensor:
    from .functional import decoupled_response

    ct = _compute_dtype(dot.dtype)
    out = decoupled_response(dot.to(ct), xnorm.to(ct), wnorm.to(ct), magnitude=magnitude, angular=angular,
                             weighted=weighted, alpha=alpha, beta=beta, rho=rho, k=k)
    return out.to(dot.dtype)
