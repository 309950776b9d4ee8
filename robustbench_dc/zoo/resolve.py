"""One way to get a model: from a zoo card, or from an architecture + operator + parameters,
initialised from a seed, with the card's checkpoint or a given one loaded.

Every ``rbdc`` command and the protocol runner build their models here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from robustbench_dc.errors import UsageError
from robustbench_dc.operators import OperatorSpec
from robustbench_dc.zoo.cards import ModelCard, get_card, load_card_checkpoint, load_weights
from robustbench_dc.zoo.registry import build_model, split_params

__all__ = ["ModelChoice", "resolve_model"]

log = logging.getLogger(__name__)


@dataclass
class ModelChoice:
    """A resolved model and what it was resolved from.

    Attributes:
        name: the card's name, or ``ARCH-OPERATOR``.
        model: the network (weights loaded when ``checkpoint`` is set).
        dataset: the dataset the network is built for.
        recipe: the card's training recipe (None without a card).
        arch, operator: the architecture and the operator spec.
        params: the parameters given on top of the card's (all of them without a card).
        card: the card, if the model came from one.
        checkpoint: the weights file loaded (None: initialised from the seed).
    """

    name: str
    model: nn.Module
    dataset: str
    recipe: Any = None
    arch: str = ""
    operator: str = "baseline"
    params: dict[str, Any] = field(default_factory=dict)
    card: ModelCard | None = None
    checkpoint: Path | None = None


def _same_dataset(a: str, b: str) -> bool:
    from robustbench_dc.data import dataset_info

    try:  # a subset (the bundled MNIST sample) is its base dataset for the model
        return dataset_info(a).base_name == dataset_info(b).base_name
    except Exception:  # noqa: BLE001 - an unknown name is reported where it is used
        return a == b


def resolve_model(card: str | ModelCard | None = None, *, arch: str | None = None,
                  operator: str | OperatorSpec | None = None, dataset: str | None = None,
                  params: Mapping[str, Any] | None = None, checkpoint: str | Path | None = None,
                  pretrained: bool = True, seed: int | None = 0, base_dir: str | Path | None = None,
                  map_location: str | torch.device = "cpu") -> ModelChoice:
    """Build the model a card, or an architecture + operator + parameters, describes.

    Args:
        card: a zoo card name, a path to a card file, or a :class:`ModelCard`.
        arch: an architecture (instead of a card), e.g. ``"mnist2d"``, ``"cnn9"``.
        operator: the operator spec (default: the card's, else ``"baseline"``).
        dataset: the dataset the model is built for; required with ``arch``, and with a card
            only a check (it must be the card's).
        params: architecture and operator parameters, told apart by name; with a card they
            override the card's.
        checkpoint: a weights file to load (a ``model.pt`` or a training checkpoint).
        pretrained: with a card and no ``checkpoint``: load the checkpoint the card records
            (sha256 checked), unless ``operator``/``params`` change the card's network.
        seed: ``torch.manual_seed(seed)`` before building, so the initial weights are
            reproducible (None: leave the global generator alone).
        base_dir: folder against which a relative ``path/to/file.py:Name`` operator resolves.
        map_location: where the weights are loaded.

    Raises:
        UsageError: both or neither of ``card`` and ``arch``, ``arch`` without ``dataset``, or
            a ``dataset`` that is not the card's.
        CardError, UnknownOperatorError, InvalidParameterError: an unknown card, operator,
            architecture or parameter.
        MissingFileError, CheckpointError, CardError: a checkpoint that is missing, unreadable,
            of another network, or not the card's (sha256).
    """
    params = dict(params or {})
    if card is not None and arch:
        raise UsageError("model: give a zoo card or an architecture, not both (--model or --arch)")
    if seed is not None:
        torch.manual_seed(seed)
    op_name = operator if isinstance(operator, str) or operator is None else operator.name
    if card is not None:
        c = card if isinstance(card, ModelCard) else get_card(card)
        if dataset is not None and not _same_dataset(dataset, c.dataset):
            raise UsageError(f"dataset: the card {c.name!r} is built for {c.dataset}, got {dataset!r} "
                             "(the data to evaluate or train on is --data)")
        arch_extra, op_extra = split_params(c.arch, params)  # the parameters override the card's
        model = build_model(c.arch, operator or c.operator, dataset=c.dataset, base_dir=base_dir,
                            **{**c.arch_params, **arch_extra}, **{**c.operator_params, **op_extra})
        choice = ModelChoice(c.name, model, c.dataset, c.recipe, c.arch, op_name or c.operator, params, c)
        changed = bool(params) or (op_name is not None and op_name != c.operator)
        if checkpoint is None and pretrained and c.checkpoint is not None:
            if changed:
                log.warning("model %s: the card's checkpoint is not loaded, the operator or parameters given "
                            "change its network", c.name)
            else:
                choice.checkpoint = load_card_checkpoint(c, model, map_location)
    elif arch:
        if not dataset:
            raise UsageError("model: an architecture needs the dataset it is built for "
                             "(--arch ARCH --dataset mnist|fashion-mnist|cifar10)")
        model = build_model(arch, operator or "baseline", dataset=dataset, base_dir=base_dir, **params)
        op_name = op_name or "baseline"
        choice = ModelChoice(f"{arch}-{op_name}", model, dataset, None, arch.lower(), op_name, params)
    else:
        raise UsageError("model: give a zoo card or an architecture "
                         "(--model CARD, or --arch ARCH --dataset DATASET [--operator SPEC])")
    if checkpoint is not None:
        load_weights(choice.model, checkpoint, map_location)
        choice.checkpoint = Path(checkpoint)
    return choice
