"""A model the zoo does not know: ``path/to/file.py:factory`` (or ``package.module:factory``),
a function or class in the user's own code that returns the network.

The factory is called with the model's parameters (``--param KEY=VALUE``, a protocol model's
``params``) and must return an ``nn.Module`` that takes ``[0, 1]`` inputs of the dataset's shape
(normalisation inside) and returns logits. The file is loaded the way operator plugins are: its
problems are one-line errors naming the file; the file's sha256 is recorded with every result (and
in a protocol's job keys: editing it re-runs the jobs of the models it builds).

Example (``my_net.py``)::

    def build(width=16):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, width), torch.nn.ReLU(),
                                   torch.nn.Linear(width, 10))

    rbdc evaluate --model my_net.py:build --dataset mnist --checkpoint my_net.pt
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from robustbench_dc.errors import InvalidParameterError
from robustbench_dc.operators import PluginError, load_reference, reference_source_sha256

__all__ = ["is_factory_reference", "build_user_model", "factory_source_sha256"]


def is_factory_reference(name: str | None) -> bool:
    """Whether ``name`` names user code (``file.py:factory``, ``package.module:factory``) rather than
    a zoo card or architecture (which never contain ``:``)."""
    return isinstance(name, str) and ":" in name and bool(name.rpartition(":")[2])


def factory_source_sha256(ref: str, base_dir: str | Path | None = None) -> str | None:
    """sha256 of the file a factory reference comes from (None for an installed package's module)."""
    return reference_source_sha256(ref, base_dir, kind="model")


def build_user_model(ref: str, dataset: str, params: Mapping[str, Any] | None = None,
                     base_dir: str | Path | None = None) -> nn.Module:
    """Call the factory ``ref`` with ``params`` and check what it returned: an ``nn.Module`` whose
    output on one input of ``dataset``'s shape is a finite ``(1, num_classes)`` tensor of logits.

    Raises:
        UnknownOperatorError, PluginError: the file cannot be found or imported (named in the message).
        InvalidParameterError: the factory does not take a parameter given.
        PluginError: it fails, returns no module, or a module whose output is not the logits.
    """
    from robustbench_dc.data import dataset_info

    factory = load_reference(ref, base_dir, kind="model")
    if not callable(factory):
        raise PluginError(f"model {ref!r}: {type(factory).__name__} is not callable (a function or class that "
                          "returns the network)")
    kwargs = dict(params or {})
    try:
        signature = inspect.signature(factory)
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        unknown = sorted(k for k in kwargs if k not in signature.parameters and not accepts_any)
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        unknown = []
    if unknown:
        raise InvalidParameterError(f"model {ref!r}: the factory takes no parameter {', '.join(unknown)} "
                                    f"(it takes: {', '.join(signature.parameters) or 'nothing'})")
    try:
        model = factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - user code: one line naming it
        raise PluginError(f"model {ref!r}: the factory failed: {type(exc).__name__}: "
                          f"{' '.join(str(exc).split())}") from exc
    if not isinstance(model, nn.Module):
        raise PluginError(f"model {ref!r}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    info = dataset_info(dataset)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probe = next(iter(model.parameters()), None)
            x = torch.zeros(1, *info.shape, device=probe.device if probe is not None else "cpu")
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - user code
        raise PluginError(f"model {ref!r}: a forward pass on one {dataset} input of shape {tuple(x.shape)} failed: "
                          f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, info.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PluginError(f"model {ref!r}: returns {shape} for one {dataset} input; the suite needs logits of "
                          f"shape (1, {info.num_classes}) (inputs in [0, 1], normalisation inside the model)")
    return model
