"""``torch.compile``d decoupled responses: one fused kernel for the element-wise work.

Operators that the fused cosine path (:mod:`.fused`) does not cover (the ``linear``,
``sigmoid`` and ``sqcos`` angular functions, the ``nonlinear`` weighting, a per-channel
radius) go through :func:`~robustbench_dc.operators.response.decoupled_response`, where
autograd records every element-wise step on the full ``(N, C_out, H, W)`` response and
keeps its intermediates. Compiled with TorchInductor (:func:`compiled_response`), the same
Python function becomes one forward kernel and one backward kernel that keep only the
inputs (the inner products and the small norm tensors) and recompute the rest.

The cosine with a per-channel radius (the authors' learnable relative radius) is linear in
the inner product, so :func:`compiled_cos_response` keeps only its output, as the fused
path does, and recomputes the magnitude in a compiled backward (its derivative by
``torch.func.vjp``): the activation memory of the fused path. It needs a magnitude that
never vanishes (the built-ins with ``alpha > 0``); other magnitudes take the generic kernel.
When only the inputs need gradients (an attack: the radius and the weights are frozen) and the
magnitude is not piecewise linear (TanhConv's ``exp``), the forward kernel also stores the two
factors of the input gradient, and the backward is one multiplication and one channel sum. An
attack also folds the evaluation-mode batch norm after such a layer into this kernel (a per-channel
scale and ``shift``; :meth:`~robustbench_dc.operators.layers.DecoupledConv2d.fold_batch_norm`).

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
from torch.autograd.function import once_differentiable
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

from robustbench_dc.operators.angular import Angular
from robustbench_dc.operators.magnitude import Magnitude
from robustbench_dc.operators.response import decoupled_response

__all__ = ["compile_available", "compiled_response", "compiled_cos_response"]

log = logging.getLogger(__name__)

# Per operator definition: the plain function and its compiled version (None: run it eagerly).
_COMPILED: dict[tuple[Any, ...], tuple[Callable[..., Any], Callable[..., Any] | None]] = {}


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


def _own_code(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """A copy of ``fn`` with its own code object. Dynamo keeps its cache of compiled graphs on
    the code object, which closures share: without a copy, several operators in one process
    would exhaust its recompile limit."""
    code = fn.__code__.replace(co_name=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


def _compile(fn: Callable[..., Any]) -> Callable[..., Any]:
    return torch.compile(fn, dynamic=None)


def _nhwc_applies(args: tuple[Any, ...]) -> bool:
    """Whether to pass ``args`` as (N, H, W, C) views: the first is a 4-D tensor in channels-last
    layout (and not also plainly contiguous), and every tensor is 4-D or 0-D (so that all of them
    permute alike; a radius of shape (C, 1, 1) would not)."""
    t = args[0]
    return (isinstance(t, Tensor) and t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
            and not t.is_contiguous() and all(a.dim() in (0, 4) for a in args if isinstance(a, Tensor)))


def _permuted(x: Any, dims: tuple[int, ...]) -> Any:
    """``x`` with every 4-D tensor in it (``x`` itself, or the items of a tuple) permuted by ``dims``."""
    if isinstance(x, tuple):
        return tuple(_permuted(t, dims) for t in x)
    return x.permute(*dims) if isinstance(x, Tensor) and x.dim() == 4 else x


_TO_NHWC, _FROM_NHWC = (0, 2, 3, 1), (0, 3, 1, 2)


def _intercepted() -> bool:
    """Whether a Python dispatch mode intercepts every operation (torch's FLOP counter, a debug or
    tracing mode), outside of compilation. The call then runs eagerly: a compiled kernel run under
    torch's FLOP counter left a compiled CNN-9 training step 2.4x slower for the rest of the process
    (benchmarks/flops.py, TanhConv, bf16; no warning, no recompilation counted)."""
    return not torch.compiler.is_compiling() and is_in_torch_dispatch_mode()


def _call(key: tuple[Any, ...], build: Callable[[], Callable[..., Any]], args: tuple[Any, ...], what: str,
          elementwise: bool = True) -> Any:
    """Call the compiled version of the function ``build()`` makes for ``key`` (built and
    compiled once per key), or the function itself where compilation is not possible.

    With ``elementwise`` (the caller's promise: the function is element-wise with
    broadcasting, its only reductions ``sum_to_size`` onto an argument's shape, as the
    suite's own functions are) it may run on any consistent permutation of its 4-D
    arguments. When the first argument is channels-last, every 4-D argument is
    passed as an ``(N, H, W, C)`` view, contiguous for the channels-last ones, and every 4-D
    result is permuted back: TorchInductor then writes one loop over contiguous memory, where
    the ``(N, C, H, W)`` views of the same tensors (channels-last responses beside the
    ``(N, 1, H, W)`` norms) made it transpose 8x8 tiles on every load and store (~1.6x slower
    on the CPU). Values are the same.

    A failure of the compiled call falls back to the plain function with one warning, and
    the key stays eager from then on; if the plain function fails too, the error is the
    caller's (bad shapes...) and is raised, with compilation left on.
    """
    if elementwise and _nhwc_applies(args):
        return _permuted(_call(key + ("nhwc",), build, _permuted(args, _TO_NHWC), what), _FROM_NHWC)
    # One compiled function per call signature (rank, dtype, requires_grad of each tensor): Dynamo
    # guards on these, and a layer family called with several signatures (conv and linear layers;
    # trainable parameters in training, frozen ones under attack) would otherwise exhaust the
    # recompile limit of a single function and fall back to eager. Batch sizes stay dynamic.
    key = key + (tuple((a.dim(), a.dtype, a.requires_grad) if isinstance(a, Tensor) else type(a) for a in args),)
    entry = _COMPILED.get(key)
    if entry is None:
        fn = build()
        compiled = None
        device = next(a for a in args if isinstance(a, Tensor)).device.type
        if compile_available(device):
            compiled = _compile(_own_code(fn, f"rbdc_{key[0]}_{len(_COMPILED)}"))
        else:
            log.warning("torch.compile is not available for %s tensors (no C++ compiler / Triton): "
                        "the %s runs eagerly", device, what)
        entry = _COMPILED[key] = (fn, compiled)
    fn, compiled = entry
    if compiled is None or _intercepted():
        return fn(*args)
    try:
        return compiled(*args)
    except Exception as exc:  # noqa: BLE001 - decided below: compiler failure or the caller's error
        failure = exc
    out = fn(*args)
    log.warning("torch.compile failed for the %s (%s: %s); it runs eagerly from now on",
                what, type(failure).__name__, str(failure).splitlines()[0][:200])
    _COMPILED[key] = (fn, None)
    return out


def _response_fn(magnitude: Magnitude, angular: Angular, weighted: str | None, alpha: float, beta: float,
                 k: float) -> Callable[..., Tensor]:
    def response(dot: Tensor, xnorm: Tensor, wnorm: Tensor, rho: float | Tensor) -> Tensor:
        ct = _compute_dtype(dot.dtype)
        out = decoupled_response(dot.to(ct), xnorm.to(ct), wnorm.to(ct), magnitude=magnitude, angular=angular,
                                 weighted=weighted, alpha=alpha, beta=beta, rho=rho, k=k)
        return out.to(dot.dtype)

    return response


def compiled_response(dot: Tensor, xnorm: Tensor, wnorm: Tensor, *, magnitude: Magnitude, angular: Angular,
                      weighted: str | None = None, alpha: float = 1.0, beta: float = 0.5,
                      rho: float | Tensor = 1.0, k: float = 0.3) -> Tensor:
    """:func:`~robustbench_dc.operators.response.decoupled_response` through ``torch.compile``.

    Same arguments and values (computed in at least float32, returned in ``dot``'s dtype).
    Falls back to the eager function, with one warning, where compilation is not possible.
    """
    params = (magnitude, angular, weighted, float(alpha), float(beta), float(k))
    # a user's magnitude or angular function may reduce over a dimension: only the built-ins are
    # known to be element-wise
    builtin = magnitude.fn.__module__ == Magnitude.__module__ and angular.fn.__module__ == Angular.__module__
    return _call(("response", *params), lambda: _response_fn(*params), (dot, xnorm, wnorm, rho),
                 f"decoupled response {magnitude.name}+{angular.name}", elementwise=builtin)


# ----------------------------------------------------------------------------- cosine, per-channel radius
def _vjp(fn: Callable[..., Tensor], *primals: Tensor) -> tuple[Tensor, Callable[[Tensor], tuple[Tensor, ...]]]:
    """``torch.func.vjp`` without auxiliary outputs: (value, vjp function)."""
    out = torch.func.vjp(fn, *primals)
    return out[0], out[1]


def _cos_channel_fns(magnitude: Magnitude, alpha: float, beta: float, has_s: bool, needs: tuple[bool, ...] = (True,) * 4
                     ) -> tuple[Callable[..., Tensor], Callable[..., tuple[Tensor | None, ...]]]:
    """The forward and backward of :class:`_CosChannelResponse`; ``needs``: which of the gradients
    (inner products, ``||x||``, radius, scale) the backward computes (an attack needs neither the
    radius's nor the scale's: their reductions over the whole response are skipped)."""
    need_dot, need_x, need_rho, need_s = needs
    def h_fn(xnorm: Tensor, rho: Tensor) -> Tensor:
        return magnitude(xnorm, alpha=alpha, beta=beta, rho=rho)

    def forward(dot_hat: Tensor, xnorm: Tensor, rho: Tensor, s: Tensor) -> Tensor:
        ct = _compute_dtype(dot_hat.dtype)
        x = xnorm.to(ct)
        out = (dot_hat.to(ct) / x).clamp(-1.0, 1.0) * h_fn(x, rho.to(ct))
        if has_s:
            out = out * s.to(ct)
        return out.to(dot_hat.dtype)

    def backward(grad: Tensor, out: Tensor, xnorm: Tensor, rho: Tensor, s: Tensor) -> tuple[Tensor | None, ...]:
        # out = clip(dot_hat / x) * h(x, rho) * s; the clip acts at rounding level only
        # (|dot_hat| <= ||x||), its gradient passes straight through as in the fused path.
        ct = _compute_dtype(grad.dtype)
        g, x, r = grad.to(ct), xnorm.to(ct), rho.to(ct)
        g_dot = g_x = g_rho = g_s = None
        if need_x or need_rho:
            h, h_vjp = _vjp(h_fn, x, r) if need_rho else _vjp(lambda x_: h_fn(x_, r), x)
        else:
            h = h_fn(x, r)
        p = g * out.to(ct)
        if need_dot:
            scale = h / x
            if has_s:
                scale = scale * s.to(ct)
            g_dot = (g * scale).to(grad.dtype)
        if need_x or need_rho:
            grads = h_vjp(p / h)
            if need_x:
                g_x = (grads[0] - (p / x).sum_to_size(x.shape)).to(xnorm.dtype)
            if need_rho:
                g_rho = grads[1].to(rho.dtype)
        if has_s and need_s:
            g_s = (p / s.to(ct)).sum_to_size(s.shape).to(s.dtype)
        return g_dot, g_x, g_rho, g_s

    return forward, backward


def _cos_channel_input_fns(magnitude: Magnitude, alpha: float, beta: float, has_s: bool, has_shift: bool = False,
                           relu: bool = False
                           ) -> tuple[Callable[..., tuple[Tensor, Tensor, Tensor]], Callable[..., tuple[Tensor, Tensor]]]:
    """The forward and backward of :class:`_CosChannelResponse` when only the inputs' gradients are
    needed (an attack: the radius and the scale are frozen). The forward also returns the two
    factors of the backward, ``A = h s / x`` and ``B = (cos h'(x) - out / x) s`` (``h'`` per
    element, by a vector-Jacobian product on ``||x||`` expanded to the response's shape), so that
    the backward is ``g A`` and ``sum_c g B``: no magnitude function, no division, one pass. It
    keeps two full-size tensors more than the training path, which an attack's batch affords.
    With ``has_shift`` the forward adds a constant per-channel shift to its output (a folded
    batch norm's), which changes no gradient; with ``relu`` it then applies a ReLU, whose gradient
    (``1`` where the shifted output is positive, else ``0``, as ``torch.relu``'s) the two factors
    absorb: the backward is unchanged, and the ReLU costs neither a pass over the response nor its
    own backward."""
    def h_fn(xnorm: Tensor, rho: Tensor) -> Tensor:
        return magnitude(xnorm, alpha=alpha, beta=beta, rho=rho)

    def forward(dot_hat: Tensor, xnorm: Tensor, rho: Tensor, s: Tensor, shift: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        ct = _compute_dtype(dot_hat.dtype)
        x, r = xnorm.to(ct), rho.to(ct)
        # h is element-wise in ||x|| (broadcast over the radius's channels): with ||x|| expanded to the
        # response's shape, the vector-Jacobian product with ones is h' per element
        h, h_vjp = _vjp(lambda x_: h_fn(x_, r), x.expand(dot_hat.shape))
        (dh,) = h_vjp(torch.ones_like(h))
        cos = (dot_hat.to(ct) / x).clamp(-1.0, 1.0)
        out = cos * h_fn(x, r)  # as the training path computes it: the same logits in both
        a = h / x
        b = cos * dh - out / x
        if has_s:
            s_c = s.to(ct)
            out, a, b = out * s_c, a * s_c, b * s_c
        if has_shift:
            out = out + shift.to(ct)
        if relu:
            on = out > 0
            out, a, b = torch.relu(out), torch.where(on, a, 0.0), torch.where(on, b, 0.0)
        return out.to(dot_hat.dtype), a, b

    def backward(grad: Tensor, a: Tensor, b: Tensor, xnorm: Tensor) -> tuple[Tensor, Tensor]:
        g = grad.to(a.dtype)
        return (g * a).to(grad.dtype), (g * b).sum_to_size(xnorm.shape).to(xnorm.dtype)

    return forward, backward


def _shifted(forward: Callable[..., Tensor], relu: bool = False) -> Callable[..., Tensor]:
    """``forward(dot_hat, xnorm, rho, s) + shift`` (then a ReLU with ``relu``), computed in at least float32."""
    def shifted(dot_hat: Tensor, xnorm: Tensor, rho: Tensor, s: Tensor, shift: Tensor) -> Tensor:
        ct = _compute_dtype(dot_hat.dtype)
        out = forward(dot_hat, xnorm, rho, s).to(ct) + shift.to(ct)
        return (torch.relu(out) if relu else out).to(dot_hat.dtype)

    return shifted


class _CosChannelResponse(torch.autograd.Function):
    """``clip(dot_hat / ||x||) * h(||x||, rho_c) * s_c (+ shift_c)`` keeping only its output for the
    backward (or, when only the inputs need gradients, the two factors of their gradients; always
    with a shift, which only attacks use, and then optionally followed by a ReLU)."""

    @staticmethod
    def forward(ctx: Any, dot_hat: Tensor, xnorm: Tensor, rho: Tensor, s: Tensor | None, shift: Tensor | None,
                params: tuple[Any, ...], relu: bool = False) -> Tensor:
        has_s, has_shift = s is not None, shift is not None
        s_t = s if s is not None else rho.new_ones(())
        key = ("cos_channel", *params, has_s)
        ctx.key, ctx.params, ctx.has_s = key, params, has_s
        need_dot, need_x, need_rho, need_s, need_shift = ctx.needs_input_grad[:5]
        if has_shift and (need_rho or (has_s and need_s) or need_shift):
            raise ValueError("a shifted cosine response is for attacks: its radius, scale and shift must be frozen")
        if relu and not has_shift:
            raise ValueError("relu: only after a shift (a folded batch norm, for attacks)")
        if has_shift and not (need_dot or need_x):  # a forward pass without gradients (Square's queries)
            ctx.inputs_only = False
            return _call(key + ("forward-shift-relu" if relu else "forward-shift",),
                         lambda: _shifted(_cos_channel_fns(params[0], params[1], params[2], has_s)[0], relu),
                         (dot_hat, xnorm, rho, s_t, shift), f"decoupled response {params[0].name}+cos (forward)")
        # only the inputs' gradients (an attack): store their factors, unless h is cheap to recompute
        ctx.inputs_only = has_shift or ((need_dot or need_x) and not (need_rho or (has_s and need_s))
                                        and not params[0].piecewise_linear)
        if ctx.inputs_only:
            kind = "forward-inputs" + ("-shift" if has_shift else "") + ("-relu" if relu else "")
            out, a, b = _call(key + (kind,),
                              lambda: _cos_channel_input_fns(params[0], params[1], params[2], has_s, has_shift,
                                                             relu)[0],
                              (dot_hat, xnorm, rho, s_t, shift if shift is not None else rho.new_zeros(())),
                              f"decoupled response {params[0].name}+cos (forward)")
            ctx.save_for_backward(a, b, xnorm)
            return out
        out = _call(key + ("forward",), lambda: _cos_channel_fns(params[0], params[1], params[2], has_s)[0],
                    (dot_hat, xnorm, rho, s_t), f"decoupled response {params[0].name}+cos (forward)")
        ctx.save_for_backward(out, xnorm, rho, s_t)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.inputs_only:
            a, b, xnorm = ctx.saved_tensors
            g_dot, g_x = _call(ctx.key + ("backward-inputs",),
                               lambda: _cos_channel_input_fns(ctx.params[0], ctx.params[1], ctx.params[2],
                                                              ctx.has_s)[1],
                               (grad, a, b, xnorm), f"decoupled response {ctx.params[0].name}+cos (backward)")
            return (g_dot if ctx.needs_input_grad[0] else None), (g_x if ctx.needs_input_grad[1] else None), \
                None, None, None, None, None
        out, xnorm, rho, s_t = ctx.saved_tensors
        needs = tuple(bool(n) for n in ctx.needs_input_grad[:4])
        g_dot, g_x, g_rho, g_s = _call(ctx.key + ("backward", needs),
                                       lambda: _cos_channel_fns(ctx.params[0], ctx.params[1], ctx.params[2], ctx.has_s, needs)[1],
                                       (grad, out, xnorm, rho, s_t),
                                       f"decoupled response {ctx.params[0].name}+cos (backward)")
        return g_dot, g_x, g_rho, g_s, None, None, None


def compiled_cos_response(dot_hat: Tensor, xnorm: Tensor, rho: Tensor, s: Tensor | None, *,
                          magnitude: Magnitude, alpha: float = 1.0, beta: float = 0.5,
                          shift: Tensor | None = None, relu: bool = False) -> Tensor:
    """The cosine response with a per-channel radius, ``clip(<w_hat, x> / ||x||) * h(||x||, rho_c) * s``.

    ``dot_hat`` holds inner products with normalised filters; ``xnorm``, ``rho`` and ``s``
    broadcast against it (``s``: ``||w||`` for ``weighted="linear"``, ``tanh(||w|| / rho)`` for
    ``"separable"``, else None). Like the fused path it keeps only its output for the
    backward (valid when ``h`` and ``s`` have no zeros: built-in magnitudes with alpha > 0),
    so it costs the memory of a convolution; forward and backward are compiled kernels
    (the magnitude's derivative by ``torch.func.vjp``). Not differentiable twice.

    ``shift`` (broadcastable against ``dot_hat``, e.g. ``(1, C, 1, 1)``) is added to the output in
    the same kernel: with ``s``, a following evaluation-mode batch norm folded in
    (:meth:`~robustbench_dc.operators.layers.DecoupledConv2d.fold_batch_norm`). Only for attacks:
    the radius, ``s`` and ``shift`` must not require gradients. ``relu`` (with ``shift`` only): a
    ReLU after the shift, in the same kernel (the batch norm's ReLU), its gradient in the backward's.
    """
    return _CosChannelResponse.apply(dot_hat, xnorm, rho, s, shift, (magnitude, float(alpha), float(beta)), relu)
