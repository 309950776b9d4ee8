"""``DecoupledConv2d`` and ``DecoupledLinear``: drop-in replacements of ``nn.Conv2d`` / ``nn.Linear``.

Example::

    >>> conv = DecoupledConv2d(3, 16, 3, padding=1, magnitude="tanh", angular="cos")
    >>> conv(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 16, 32, 32])
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_dc.errors import InvalidParameterError
from robustbench_dc.operators.angular import Angular, get_angular
from robustbench_dc.operators.functional import WEIGHTED, decoupled_conv2d, decoupled_linear, pair, patch_norm2d, response_route
from robustbench_dc.operators.fused import SquaredChannelSum
from robustbench_dc.operators.magnitude import Magnitude, get_magnitude

__all__ = ["DecoupledLayer", "DecoupledConv2d", "DecoupledLinear", "RHO_MODES"]


RHO_MODES = ("absolute", "relative")
EMA_DECAY = 0.999
RADIUS_EPS = 1e-4


class DecoupledLayer(nn.Module):
    """Shared hyper-parameters, validation and operator radius of the decoupled layers.

    The radius ``rho`` used by ``ball``, ``tanh``, ``seg`` and the ``nonlinear`` /
    ``separable`` weightings is

    - ``rho_mode="absolute"``, ``learnable_rho=False``: the constant ``rho``;
    - ``rho_mode="absolute"``, ``learnable_rho=True``: ``r_c^2 + 1e-4`` with one parameter
      ``r_c`` per output channel, initialised to ``sqrt(rho)``;
    - ``rho_mode="relative"`` (the authors' learnable radius): ``(r_c^2 + 1e-4) * m`` where
      ``m`` is the mean patch norm ``||x||``: the batch mean over (N, H, W) in training
      mode, and in evaluation mode its exponential moving average (decay 0.999,
      zero-debiased like TensorFlow's ``ExponentialMovingAverage`` on tensors, so one
      training batch already gives its mean; before any training batch the batch mean
      is used). ``r_c`` is a parameter when
      ``learnable_rho=True`` and a fixed buffer otherwise. ``model.eval()`` matters.

    Any module inheriting from this class (and holding a ``weight`` whose first dimension
    indexes the output filters) is treated as decoupled by the optimisation hooks and
    the Lipschitz tools.
    """

    magnitude: Magnitude
    angular: Angular
    # parameters and buffers, declared for the type checker (nn.Module's __getattr__ is untyped)
    weight: Tensor
    bias: Tensor | None
    radius: Tensor | None
    xnorm_running: Tensor
    xnorm_steps: Tensor

    def _init_decoupled(self, out_features: int, magnitude: str | Callable[..., Tensor],
                        angular: str | Callable[..., Tensor], alpha: float, beta: float, rho: float,
                        k: float, weighted: str | None, learnable_rho: bool, rho_mode: str,
                        eps: float, factory: dict[str, Any]) -> None:
        self.magnitude = get_magnitude(magnitude)
        self.angular = get_angular(angular)
        if weighted is not None:
            weighted = str(weighted).lower()
            if weighted in ("none", ""):
                weighted = None
        if weighted not in WEIGHTED:
            raise InvalidParameterError(f"weighted: must be one of {WEIGHTED}, got {weighted!r}")
        if rho_mode not in RHO_MODES:
            raise InvalidParameterError(f"rho_mode: must be one of {RHO_MODES}, got {rho_mode!r}")
        if not (isinstance(rho, (int, float)) and rho > 0):
            raise InvalidParameterError(f"rho: must be > 0, got {rho!r}")
        if not (isinstance(k, (int, float)) and k > 0):
            raise InvalidParameterError(f"k: must be > 0, got {k!r}")
        if not (isinstance(eps, (int, float)) and eps >= 0):
            raise InvalidParameterError(f"eps: must be >= 0, got {eps!r}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.rho = float(rho)
        self.k = float(k)
        self.weighted = weighted
        self.learnable_rho = bool(learnable_rho)
        self.rho_mode = rho_mode
        self.eps = float(eps)
        if learnable_rho or rho_mode == "relative":
            r0 = torch.full((out_features,), math.sqrt(rho), **factory)
            if learnable_rho:
                self.radius = nn.Parameter(r0)
            else:
                self.register_buffer("radius", r0)
        else:
            self.radius = None
        if rho_mode == "relative":
            self.register_buffer("xnorm_running", torch.zeros((), **factory))
            self.register_buffer("xnorm_steps", torch.zeros((), dtype=torch.long,
                                                            device=factory.get("device")))

    @property
    def uses_rho(self) -> bool:
        """Whether the operator reads the radius (bounded ball/tanh, seg, weighted variants)."""
        return self.magnitude.uses_rho or self.weighted in ("nonlinear", "separable")

    @property
    def bounded(self) -> bool:
        """``True`` when ``|output| <= alpha`` whatever the input (before any bias)."""
        return self.magnitude.bounded and self.weighted in (None, "nonlinear", "separable") and \
            self.angular.name in ("linear", "cos", "sigmoid", "sqcos")

    def running_xnorm(self) -> Tensor | None:
        """The zero-debiased running mean of ``||x||`` (``None`` before any training batch)."""
        if self.rho_mode != "relative" or int(self.xnorm_steps) == 0:
            return None
        return self.xnorm_running

    def effective_rho(self, xnorm: Tensor) -> float | Tensor:
        """The radius for this forward pass (float, or a per-output-channel tensor).

        In ``rho_mode="relative"`` a training-mode call also updates the running mean;
        an evaluation-mode call before any training batch falls back to the batch mean.
        No host-device synchronisation happens here: on an accelerator the choice between the
        running and the batch mean is a ``torch.where`` (so the radius stays connected to ``x``
        in autograd's graph, with zero gradient); on the CPU the step count is read directly, and
        the radius of a trained layer does not depend on ``x``, so that an attack's backward pass
        skips the radius's gradient (a reduction over the whole response per layer).
        """
        if self.radius is None:
            return self.rho
        scale = self.radius.pow(2) + RADIUS_EPS
        if self.rho_mode == "absolute":
            return scale
        if not self.training and self.xnorm_steps.device.type == "cpu":
            return scale * (self.xnorm_running.to(xnorm.dtype) if int(self.xnorm_steps) > 0 else xnorm.mean())
        batch_mean = xnorm.mean()
        if self.training:
            with torch.no_grad():
                # Zero-debiased EMA: s_t = s_{t-1} + (1 - d) / (1 - d^t) * (m_t - s_{t-1}).
                self.xnorm_steps.add_(1)
                weight = (1.0 - EMA_DECAY) / (1.0 - EMA_DECAY ** self.xnorm_steps.double())
                self.xnorm_running.add_(weight.to(self.xnorm_running.dtype)
                                        * (batch_mean.detach().to(self.xnorm_running.dtype) - self.xnorm_running))
            return scale * batch_mean
        running = torch.where(self.xnorm_steps > 0, self.xnorm_running.to(xnorm.dtype), batch_mean)
        return scale * running

    #: Use the fused autograd path where it applies (same values; ``False`` forces the
    #: generic autograd path, e.g. to compare the two).
    fused: bool = True
    #: Run the generic path through ``torch.compile`` (see
    #: :mod:`~robustbench_dc.operators.compiled`; set by ``compiled_responses(model)``).
    compiled: bool = False

    @property
    def compilable(self) -> bool:
        """Whether :attr:`compiled` changes this layer's computation: with it, the response
        would not take the fused cosine path (any angular function but cos, the nonlinear
        weighting, a per-channel radius read by the magnitude function). Asks the same
        routing as the forward pass; the radius tensor stands for the effective radius,
        which has its shape."""
        rho = self.radius if self.radius is not None else self.rho
        return response_route(self.angular, self.weighted, self.magnitude, rho, self.alpha, self.beta, self.eps,
                      self.fused, compiled=True) != "fused"

    def _response_kwargs(self) -> dict[str, Any]:
        return dict(magnitude=self.magnitude, angular=self.angular, weighted=self.weighted,
                    alpha=self.alpha, beta=self.beta, k=self.k, eps=self.eps, fused=self.fused,
                    compiled=self.compiled)

    def _decoupled_repr(self) -> str:
        s = f"magnitude={self.magnitude.name}, angular={self.angular.name}"
        if self.weighted is not None:
            s += f", weighted={self.weighted}"
        s += f", alpha={self.alpha:g}"
        if self.magnitude.name in ("seg", "mix"):
            s += f", beta={self.beta:g}"
        if self.uses_rho:
            s += f", rho={self.rho:g}, rho_mode={self.rho_mode}"
            if self.learnable_rho:
                s += ", learnable_rho=True"
        if self.angular.name == "sigmoid":
            s += f", k={self.k:g}"
        return s


class DecoupledConv2d(DecoupledLayer):
    """Decoupled convolution ``f_d(w, x) = h(||x||) * g(theta)`` (Liu et al., CVPR 2018).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation: as ``nn.Conv2d``
            (``padding`` may also be ``"same"`` / ``"valid"``).
        magnitude: ``"sphere" | "ball" | "tanh" | "linear" | "seg" | "log" | "mix"`` or a
            registered / plain callable (default ``"tanh"``).
        angular: ``"linear" | "cos" | "sigmoid" | "sqcos"`` or a callable (default ``"cos"``).
        alpha: magnitude scale (default 1). Bounded operators satisfy ``|f| <= alpha``.
        beta: second slope of ``seg``, weight of the log term of ``mix`` (default 0.5).
        rho: operator radius of ``ball``, ``tanh``, ``seg`` and the weighted variants
            (default 1); see :class:`DecoupledLayer` for ``rho_mode`` / ``learnable_rho``.
        k: steepness of the sigmoid angular function (default 0.3).
        weighted: ``None`` (default), ``"linear"``, ``"nonlinear"`` or ``"separable"``.
        eps: added inside the square roots of ``||w||`` and ``||x||`` (default 1e-4).
        bias: add a learnable bias after the decoupled response (default ``False``).
        padding_mode: ``"zeros"`` (default), ``"reflect"``, ``"replicate"`` or ``"circular"``.

    Shapes: input ``(N, C_in, H, W)``, output ``(N, C_out, H', W')`` as ``nn.Conv2d``;
    ``weight`` has ``nn.Conv2d``'s shape ``(C_out, C_in, kh, kw)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] | str = 0,
                 dilation: int | Sequence[int] = 1, magnitude: str | Callable[..., Tensor] = "tanh",
                 angular: str | Callable[..., Tensor] = "cos", alpha: float = 1.0, beta: float = 0.5,
                 rho: float = 1.0, k: float = 0.3, weighted: str | None = None,
                 learnable_rho: bool = False, rho_mode: str = "absolute", eps: float = 1e-4,
                 bias: bool = False, padding_mode: str = "zeros", device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"channels: must be > 0, got in={in_channels}, out={out_channels}")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"padding_mode: must be zeros/reflect/replicate/circular, got {padding_mode!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = pair(kernel_size)
        self.stride = pair(stride)
        self.padding = padding if isinstance(padding, str) else pair(padding)
        self.dilation = pair(dilation)
        self.padding_mode = padding_mode
        if isinstance(self.padding, str) and padding_mode != "zeros":
            raise ValueError("padding: string padding needs padding_mode='zeros'")
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self._init_decoupled(out_channels, magnitude, angular, alpha, beta, rho, k, weighted,
                             learnable_rho, rho_mode, eps, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise like ``nn.Conv2d`` (Kaiming-uniform with a = sqrt(5))."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def window_geometry(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]] | None:
        """``(kernel_size, stride, padding, dilation)`` where each output position depends only on
        a window of the input (zero padding given as numbers, a radius that does not depend on the
        batch); else None (a relative radius before any training batch takes the batch mean). For
        :class:`~robustbench_dc.attacks.windowed.WindowedForward`, with :meth:`forward_unpadded`."""
        if self.padding_mode != "zeros" or isinstance(self.padding, str) or \
                (self.rho_mode == "relative" and self.uses_rho and self.running_xnorm() is None):
            return None
        return self.kernel_size, self.stride, self.padding, self.dilation

    def forward_unpadded(self, x: Tensor) -> Tensor:
        """The forward pass on ``x`` already padded with zeros (no padding added)."""
        return self._forward(x, padding=(0, 0))

    def _geometry(self, x: Tensor) -> tuple[Tensor, Any]:
        if self.padding_mode == "zeros":
            return x, self.padding
        padding = self.padding
        assert not isinstance(padding, str)  # string padding only with padding_mode="zeros" (__init__)
        ph, pw = padding
        return F.pad(x, (pw, pw, ph, ph), mode=self.padding_mode), 0

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(x)

    def _forward(self, x: Tensor, affine: tuple[Tensor, Tensor] | None = None,
                 padding: tuple[int, int] | None = None, relu: bool = False) -> Tensor:
        x, padding = self._geometry(x) if padding is None else (x, padding)
        xnorm = patch_norm2d(x, self.kernel_size, self.stride, padding, self.dilation, self.eps)
        rho = self.effective_rho(xnorm)
        fold = affine is not None and not (isinstance(rho, Tensor) and rho.requires_grad)
        out = decoupled_conv2d(x, self.weight, stride=self.stride, padding=padding, dilation=self.dilation, rho=rho,
                               xnorm=xnorm, affine=affine if fold else None, relu=relu and fold,
                               **self._response_kwargs())
        if fold:
            return out
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        # a radius that depends on x (the batch mean of ||x|| before any training step, or on an
        # accelerator): the kernel cannot apply the affine map, which follows it instead, with the ReLU
        out = out if affine is None else torch.addcmul(affine[1], out, affine[0])
        return torch.relu(out) if relu else out

    def fold_batch_norm(self, bn: nn.BatchNorm2d, relu: bool = False) -> nn.Module | None:
        """This layer followed by ``bn`` (both in evaluation mode, ``bn`` with running statistics), and
        by a ReLU with ``relu``, as one module whose compiled response kernel also applies the batch
        norm; for attacks, whose parameters are frozen (the module holds a snapshot of ``bn``).
        ``None`` where the response does not take the compiled cosine path with a per-channel radius
        (BallConv / TanhConv with the authors' learnable radius, under
        :func:`~robustbench_dc.operators.hooks.compiled_responses`). The same function up to float32
        rounding, without the batch norm's own forward and backward passes.
        :func:`~robustbench_dc.attacks.steps.folded_batch_norm` calls it."""
        rho = self.radius if self.radius is not None else self.rho
        if self.training or bn.training or bn.running_mean is None or bn.running_var is None or not self.compiled \
                or response_route(self.angular, self.weighted, self.magnitude, rho, self.alpha, self.beta, self.eps,
                          self.fused, compiled=True) != "cos-compiled":
            return None
        return _BatchNormFolded(self, bn, relu)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        if self.bias is not None:
            s += ", bias=True"
        return s + ", " + self._decoupled_repr()


class _BatchNormFolded(nn.Module):
    """A :class:`DecoupledConv2d` and the evaluation-mode batch norm after it (and a ReLU with
    ``relu``), as one module: the batch norm's per-channel scale and shift (a snapshot) are applied
    in the response's kernel, and so is the ReLU (with its gradient), where the radius does not
    depend on ``x``; else both follow the kernel. Made by :meth:`DecoupledConv2d.fold_batch_norm`,
    for attacks only."""

    def __init__(self, layer: DecoupledConv2d, bn: nn.BatchNorm2d, relu: bool = False) -> None:
        super().__init__()
        self.layer, self.relu = layer, relu
        with torch.no_grad():
            assert bn.running_mean is not None and bn.running_var is not None
            scale = torch.rsqrt(bn.running_var.float() + bn.eps)
            if bn.weight is not None:
                scale = scale * bn.weight.float()
            shift = -bn.running_mean.float() * scale
            if bn.bias is not None:
                shift = shift + bn.bias.float()
            if layer.bias is not None:
                shift = shift + scale * layer.bias.float()
        self.register_buffer("scale", scale.view(1, -1, 1, 1))
        self.register_buffer("shift", shift.view(1, -1, 1, 1))

    def forward(self, x: Tensor, padding: tuple[int, int] | None = None) -> Tensor:
        return self.layer._forward(x, (self.scale, self.shift), padding, self.relu)  # type: ignore[arg-type]

    def window_geometry(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]] | None:
        """As :meth:`DecoupledConv2d.window_geometry` (the batch norm and the ReLU act per position)."""
        return self.layer.window_geometry()

    def forward_unpadded(self, x: Tensor) -> Tensor:
        """The forward pass on ``x`` already padded with zeros (no padding added)."""
        return self.forward(x, padding=(0, 0))


class DecoupledLinear(DecoupledLayer):
    """Decoupled fully-connected layer ``f_d(w, x) = h(||x||) * g(theta)`` per output unit.

    Same keywords as :class:`DecoupledConv2d`; ``weight`` has ``nn.Linear``'s shape
    ``(out_features, in_features)``; input ``(..., in_features)``, output
    ``(..., out_features)``. In ``rho_mode="relative"`` the mean of ``||x||`` is taken over
    all leading dimensions.
    """

    def __init__(self, in_features: int, out_features: int, magnitude: str | Callable[..., Tensor] = "tanh",
                 angular: str | Callable[..., Tensor] = "cos", alpha: float = 1.0, beta: float = 0.5,
                 rho: float = 1.0, k: float = 0.3, weighted: str | None = None,
                 learnable_rho: bool = False, rho_mode: str = "absolute", eps: float = 1e-4,
                 bias: bool = False, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"features: must be > 0, got in={in_features}, out={out_features}")
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self._init_decoupled(out_features, magnitude, angular, alpha, beta, rho, k, weighted,
                             learnable_rho, rho_mode, eps, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise like ``nn.Linear``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        xnorm = torch.sqrt(SquaredChannelSum.apply(x, -1) + self.eps)
        out = decoupled_linear(x, self.weight, rho=self.effective_rho(xnorm), xnorm=xnorm,
                               **self._response_kwargs())
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        s = f"in_features={self.in_features}, out_features={self.out_features}"
        if self.bias is not None:
            s += ", bias=True"
        return s + ", " + self._decoupled_repr()
