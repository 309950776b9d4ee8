"""A card's trained weights, wherever they are: shipped inside the package (the MNIST cards), in
the user's cache after ``rbdc zoo train CARD`` (``$RBDC_HOME/models/CARD/``, default
``~/.cache/robustbench_dc/models/``), or hosted at the card's ``url`` (downloaded once, its sha256
checked, cached). Every weights file is checked against its sha256 before it is loaded.

Example::

    $ rbdc zoo train mnist2d-tanh-mnist          # the card's recipe, resumable, into the cache
                                                 # (robustbench_dc.training.train_card)
    >>> load_model("mnist2d-tanh-mnist")         # finds the weights there
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustbench_dc.runtime import rbdc_home
from robustbench_dc.zoo.cards import CardError, ModelCard, get_card, load_weights, sha256_file

__all__ = ["weights_dir", "cached_weights", "weights_status", "find_weights", "card_config", "load_model",
           "load_card_checkpoint", "WEIGHTS_NAME", "PROVENANCE_NAME"]

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.pt"
PROVENANCE_NAME = "weights.json"


def weights_dir(card: ModelCard) -> Path:
    """Where ``rbdc zoo train`` puts a card's weights: ``$RBDC_HOME/models/CARD``."""
    return rbdc_home() / "models" / card.name


def cached_weights(card: ModelCard) -> tuple[Path, str] | None:
    """The cached weights of ``card`` and their sha256, when the cache holds a finished training
    (``weights.json`` written after ``model.pt``) of this card's network."""
    folder = weights_dir(card)
    path, record = folder / WEIGHTS_NAME, folder / PROVENANCE_NAME
    if not (path.is_file() and record.is_file()):
        return None
    try:
        info = json.loads(record.read_text())
    except ValueError:
        return None
    if info.get("card_config") != card_config(card):  # the card changed since: these are other weights
        return None
    return path, str(info.get("sha256"))


def weights_status(card: ModelCard) -> str:
    """``shipped`` (in the package), ``cached`` (trained here), ``downloadable`` (the card's url) or
    ``untrained`` (``rbdc zoo train`` makes them)."""
    if card.checkpoint is not None and (p := card.checkpoint_path()) is not None and p.is_file():
        return "shipped"
    if cached_weights(card) is not None:
        return "cached"
    if card.url is not None:
        return "downloadable"
    return "untrained"


def find_weights(card: ModelCard, *, download: bool = True) -> tuple[Path, str | None] | None:
    """The weights file of ``card`` and the sha256 it must have: the card's own checkpoint, else
    the cache, else a download of the card's url into the cache (verified). None when there are none.

    Raises:
        CardError: the card's url could not be downloaded or its sha256 differs.
    """
    if card.checkpoint is not None:
        path = card.checkpoint_path()
        assert path is not None
        return path, card.sha256
    cached = cached_weights(card)
    if cached is not None:
        return cached
    if card.url is not None and download:
        return _download(card), card.sha256
    return None


def _download(card: ModelCard) -> Path:
    from robustbench_dc.data.download import download_file
    from robustbench_dc.errors import UserError

    folder = weights_dir(card)
    folder.mkdir(parents=True, exist_ok=True)
    assert card.url is not None and card.sha256 is not None  # the card's validation
    base, _, filename = card.url.rpartition("/")
    try:
        path = download_file(filename, folder, [base + "/"], sha256=card.sha256)
    except UserError as exc:
        raise CardError(f"model {card.name!r}: could not download its weights from {card.url}: {exc}") from exc
    target = folder / WEIGHTS_NAME
    path.replace(target)
    (folder / PROVENANCE_NAME).write_text(json.dumps({"card": card.name, "card_config": card_config(card),
                                                      "sha256": card.sha256, "source": card.url}, indent=1))
    return target


def card_config(card: ModelCard) -> dict[str, Any]:
    """What the weights depend on: the network and its training."""
    return {"arch": card.arch, "operator": card.operator, "operator_params": card.operator_params,
            "arch_params": card.arch_params, "dataset": card.dataset, "recipe": card.recipe}


def load_model(name: str, pretrained: bool = True, map_location: str | torch.device = "cpu") -> nn.Module:
    """Build a zoo entry and load its checkpoint (``pretrained=False``: the untrained network).

    The checkpoint's sha256 is checked against the card and the file is read with
    ``torch.load(..., weights_only=True)`` (no code from the file runs). A checkpoint may
    be a plain state dict or a training checkpoint holding it under ``"model"``.

    Raises:
        CardError: unknown name, invalid card, a card without trained weights (unless
            ``pretrained=False``), missing checkpoint file or checksum mismatch.
        CheckpointError: the checkpoint does not fit the network.
    """
    card = get_card(name)
    model = card.build()
    if pretrained and load_card_checkpoint(card, model, map_location) is None:
        raise CardError(f"model {card.name!r}: no trained weights yet; train them with `rbdc zoo train "
                        f"{card.name}` (they go to the cache, where load_model finds them), or ask for an "
                        f"untrained network: load_model({card.name!r}, pretrained=False)")
    return model


def load_card_checkpoint(card: ModelCard, model: nn.Module, map_location: str | torch.device = "cpu") -> Path | None:
    """Load the checkpoint ``card`` records into ``model`` (its sha256 checked against the card);
    returns its path, or None when the card records none (``model`` stays as it is).

    Raises:
        CardError: the checkpoint file is missing or its sha256 differs from the card's.
    """
    found = find_weights(card)
    if found is None:
        log.info("model %s: no trained weights; the network is untrained", card.name)
        return None
    ckpt, expected = found
    if not ckpt.is_file():
        raise CardError(f"model {card.name!r}: checkpoint {ckpt} not found (rbdc zoo train {card.name}, or load "
                        "with pretrained=False)")
    if expected is not None:
        digest = sha256_file(ckpt)
        if digest != expected:
            says = "the card says" if card.checkpoint is not None or card.url is not None else \
                "its weights.json says"
            raise CardError(f"model {card.name!r}: checkpoint {ckpt} has sha256 {digest}, {says} {expected}")
    load_weights(model, ckpt, map_location)
    return ckpt
