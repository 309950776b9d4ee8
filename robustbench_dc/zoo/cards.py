"""Model cards: one YAML file per zoo entry under ``models/``.

A card names the architecture, the operator and its parameters, the dataset and the
training recipe, and once trained the checkpoint path and its sha256::

    name: cnn9-tanh-cifar10
    arch: cnn9
    operator: tanh+cos
    operator_params: {rho: 1.0}
    arch_params: {width: 0.25}
    dataset: cifar10
    recipe: cifar10-natural
    checkpoint: checkpoints/cnn9-tanh-cifar10.pt   # relative to the card's folder
    sha256: 3f2a...

Cards are looked up in ``$RBDC_MODELS`` (a folder, or several separated by ``:``), then
the ``models/`` folder of the repository checkout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import nn

from robustbench_dc._pydantic import one_line
from robustbench_dc._text import did_you_mean
from robustbench_dc._yaml import MAX_BYTES, safe_load
from robustbench_dc.data.download import file_digest
from robustbench_dc.errors import MissingFileError, UserError
from robustbench_dc.resources import resource_dir
from robustbench_dc.zoo.registry import build_model, list_archs

__all__ = ["ModelCard", "CardError", "CheckpointError", "card_dirs", "list_cards", "get_card", "load_card",
           "load_weights", "sha256_file", "state_dict_mismatch"]


class CardError(UserError, ValueError):
    """A model card that cannot be found, parsed or validated; the message says which and why."""


class CheckpointError(UserError, RuntimeError):
    """A weights file that cannot be read or does not fit the model."""


class ModelCard(BaseModel):
    """One zoo entry (validated; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    arch: str
    operator: str = "baseline"
    operator_params: dict[str, Any] = Field(default_factory=dict)
    arch_params: dict[str, Any] = Field(default_factory=dict)
    dataset: str
    recipe: str | dict[str, Any] | None = None
    description: str = ""
    checkpoint: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    #: hosted weights (downloaded once into the cache, checked against ``sha256``)
    url: str | None = Field(default=None, pattern=r"^(https?|file)://\S+$")
    path: Path | None = Field(default=None, exclude=True)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        if value.lower() not in list_archs():
            # the loader prefixes 'arch: '
            raise ValueError(f"unknown {value!r}{did_you_mean(value, list_archs())}; known: {', '.join(list_archs())}")
        return value.lower()

    @model_validator(mode="after")
    def _url_has_sha256(self) -> "ModelCard":
        if self.url is not None and self.sha256 is None:
            raise ValueError("url: hosted weights need their sha256 (the card's sha256 field)")
        return self

    def build(self) -> nn.Module:
        """The untrained network described by this card."""
        return build_model(self.arch, self.operator, dataset=self.dataset, **self.arch_params, **self.operator_params)

    def checkpoint_path(self) -> Path | None:
        if self.checkpoint is None:
            return None
        p = Path(self.checkpoint)
        if not p.is_absolute() and self.path is not None:
            p = self.path.parent / p
        return p


def card_dirs() -> list[Path]:
    """Folders searched for cards, in order."""
    dirs = [Path(p) for p in os.environ.get("RBDC_MODELS", "").split(os.pathsep) if p]
    dirs.append(resource_dir("models"))
    return dirs


def load_card(path: str | Path) -> ModelCard:
    """Parse and validate one card file (safe YAML)."""
    path = Path(path)
    if path.stat().st_size > MAX_BYTES:
        raise CardError(f"{path}: larger than the {MAX_BYTES:,} bytes a model card may have")
    try:
        data = safe_load(path.read_bytes())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CardError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise CardError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return ModelCard(**data, path=path)
    except ValidationError as exc:
        raise CardError(f"{path}: {one_line(exc)}") from None


def list_cards() -> list[ModelCard]:
    """Every card found (the first of a name wins), sorted by name."""
    seen: dict[str, ModelCard] = {}
    for folder in card_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
            card = load_card(path)
            seen.setdefault(card.name, card)
    return [seen[k] for k in sorted(seen)]


def get_card(name: str) -> ModelCard:
    """The card called ``name`` (or a path to a card file)."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return load_card(name)
    cards = {c.name: c for c in list_cards()}
    if name not in cards:
        raise CardError(f"model: unknown {name!r}{did_you_mean(name, cards)}; known: {', '.join(cards) or '(no cards found)'}")
    return cards[name]


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file."""
    return file_digest(path, "sha256")


def load_weights(model: nn.Module, path: str | Path, map_location: str | torch.device = "cpu") -> None:
    """Load a ``model.pt`` (a state dict) or a training checkpoint (``{"model": state, ...}``) into
    ``model``, read with ``torch.load(..., weights_only=True)`` (no code from the file runs).

    Raises:
        MissingFileError: no such file.
        CheckpointError: the file is not a weights file, or its tensors do not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint: {path} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors of every kind: not a weights file
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
        raise CheckpointError(f"checkpoint: cannot read {path} as weights ({type(exc).__name__}: {first})") from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint: {path} holds a {type(state).__name__}, not a state dict")
    problem = state_dict_mismatch(model, state)
    if problem:
        raise CheckpointError(f"checkpoint: {path} does not fit the model: {problem}")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # anything the comparison above does not see (a layer's own checks)
        first = " ".join(str(exc).split())
        raise CheckpointError(f"checkpoint: {path} does not fit the model: {first[:300]}") from exc


def _shape(value: Any) -> str:
    return "x".join(map(str, value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def state_dict_mismatch(model: nn.Module, state: dict[str, Any]) -> str:
    """What keeps ``state`` from loading into ``model``, in one short line: the first parameter of
    another shape, the first one the model has and the file lacks, and the first one the file has
    and the model lacks, each with its shape and how many more there are; "" when it fits."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and isinstance(state[k], torch.Tensor)
             and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []

    def more(items: list[str]) -> str:
        return f" (and {len(items) - 1} more)" if len(items) > 1 else ""

    if wrong:
        parts.append(f"{wrong[0]} is {_shape(state[wrong[0]])} in the file, {_shape(own[wrong[0]])} in the model"
                     + more(wrong))
    if missing:
        parts.append(f"the model's {missing[0]} ({_shape(own[missing[0]])}) is not in the file" + more(missing))
    if unexpected:
        parts.append(f"the file's {unexpected[0]} ({_shape(state[unexpected[0]])}) is not in the model"
                     + more(unexpected))
    return "; ".join(parts)
