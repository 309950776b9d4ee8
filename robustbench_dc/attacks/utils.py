"""Small internal helpers shared by the attack modules."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["eval_mode", "model_device", "seeded", "per_example", "float32_logits", "upcast_logits"]


def upcast_logits(logits: torch.Tensor) -> torch.Tensor:
    """bfloat16 / float16 logits (a model run under autocast) as float32; other dtypes unchanged."""
    return logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits


class _Float32Logits(nn.Module):
    """``model`` with its logits cast to float32 (under autocast a final linear layer returns
    bfloat16, which third-party attacks mix with their own float32 buffers)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upcast_logits(self.model(x))


def float32_logits(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """``model`` itself, or, under autocast on ``x``'s device, a wrapper returning float32 logits."""
    return _Float32Logits(model) if torch.is_autocast_enabled(x.device.type) else model


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule of ``model`` in eval mode; restore each one's previous
    ``training`` flag on exit (also on error)."""
    saved = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in saved:
            m.training = flag


def model_device(model: nn.Module, default: torch.device | None = None) -> torch.device:
    """Device of the model's first parameter or buffer (``default`` or CPU if none)."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return default if default is not None else torch.device("cpu")


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG (CPU and, if used, the CUDA device) inside the block
    and restore the previous RNG state afterwards."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if (
        device.type == "cuda"
    ) else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def per_example(value: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcastable (N, 1, ..., 1) tensor of a scalar or per-example (N,) value."""
    if isinstance(value, torch.Tensor):
        t = value.to(device=x.device, dtype=x.dtype)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
    else:  # a fill kernel, no host-to-device copy
        t = torch.full((x.shape[0],), float(value), dtype=x.dtype, device=x.device)
    if t.shape != (x.shape[0],):
        raise ValueError(f"eps: per-example values must have shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t.view(-1, *([1] * (x.dim() - 1)))
