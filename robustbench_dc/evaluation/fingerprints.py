"""Identities and batched scoring for the evaluation: what a transfer cache entry is keyed by (the
model's weights, the data slice), and a model's logits over a whole test set in batches."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

__all__ = ["model_fingerprint", "data_fingerprint", "batched_logits"]


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of the model's class and ``state_dict`` (names, shapes, dtypes, bytes).

    Parameter-free models of the same class share a fingerprint: give such
    models explicit keys (``model_keys=``) where it matters."""
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous()
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:  # pragma: no cover - extra state
            h.update(repr(t).encode())
    return h.hexdigest()


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 of the bytes, shapes and dtypes of ``x`` and ``y`` (data slice identity)."""
    h = hashlib.sha256()
    for t in (x, y):
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@torch.no_grad()
def batched_logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in batches (no grad), shape (N, K)."""
    outs = [model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)
