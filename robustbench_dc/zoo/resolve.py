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

from robustbench_dc.errors import UsageError, gather
from robustbench_dc.operators import OperatorSpec, get_operator
from robustbench_dc.zoo.cards import CardError, ModelCard, get_card, load_weights
from robustbench_dc.zoo.registry import build_model, split_params
from robustbench_dc.zoo.user import build_user_model, factory_source_sha256, is_factory_reference
from robustbench_dc.zoo.weights import find_weights, load_card_checkpoint

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
    #: sha256 of the user's file that built the model (``file.py:factory``), else None
    source_sha256: str | None = None
    #: the data a protocol run evaluated the model on (``mnist-sample``), when it came from a run
    data: str | None = None


def _same_dataset(a: str, b: str) -> bool:
    from robustbench_dc.data import dataset_info

    try:  # a subset (the bundled MNIST sample) is its base dataset for the model
        return dataset_info(a).base_name == dataset_info(b).base_name
    except Exception:  # noqa: BLE001 - an unknown name is reported where it is used
        return a == b


def _card_checks(card: str | ModelCard, dataset: str | None, operator: str | OperatorSpec | None,
                 op_name: str | None, params: Mapping[str, Any], checkpoint: str | Path | None, pretrained: bool,
                 base_dir: str | Path | None) -> ModelCard:
    """The card, after checking everything given with it; every problem is reported at once
    (an unknown card, a misspelt operator, another dataset, weights that do not exist)."""
    found: list[ModelCard] = []

    def the_card() -> None:
        found.append(card if isinstance(card, ModelCard) else get_card(card))

    def the_dataset() -> None:
        if found and dataset is not None and not _same_dataset(dataset, found[0].dataset):
            raise UsageError(f"dataset: the card {found[0].name!r} is built for {found[0].dataset}, got "
                             f"{dataset!r} (the data to evaluate or train on is --data)")

    def the_operator() -> None:
        if operator is not None:
            get_operator(operator, base_dir=base_dir)

    def the_weights() -> None:
        if not found or checkpoint is not None or not pretrained:
            return
        c = found[0]
        if find_weights(c, download=False) is None and c.url is None:
            raise CardError(f"model {c.name!r}: no trained weights yet; train them with `rbdc zoo train {c.name}` "
                            "(they go to the cache, where --model finds them), pass a checkpoint (--checkpoint), "
                            "or ask for an untrained network (--untrained; pretrained=False in Python)")
        if bool(params) or (op_name is not None and op_name != c.operator):
            raise CardError(f"model {c.name!r}: the card's weights do not fit the operator or parameters given; "
                            "pass a checkpoint of that network (--checkpoint), or ask for an untrained one "
                            "(--untrained; pretrained=False in Python)")

    gather(the_card, the_dataset, the_operator, the_weights)
    return found[0]


def resolve_model(card: str | ModelCard | None = None, *, arch: str | None = None,
                  operator: str | OperatorSpec | None = None, dataset: str | None = None,
                  params: Mapping[str, Any] | None = None, checkpoint: str | Path | None = None,
                  pretrained: bool = True, seed: int | None = 0, base_dir: str | Path | None = None,
                  map_location: str | torch.device = "cpu") -> ModelChoice:
    """Build the model a card, or an architecture + operator + parameters, describes.

    Args:
        card: a zoo card name, a path to a card file, or a :class:`ModelCard`; or a model from the
            user's code, ``path/to/file.py:factory`` (as ``arch``).
        arch: an architecture (instead of a card), e.g. ``"mnist2d"``, ``"cnn9"``, or
            ``path/to/file.py:factory`` (:mod:`robustbench_dc.zoo.user`: called with ``params``).
        operator: the operator spec (default: the card's, else ``"baseline"``).
        dataset: the dataset the model is built for; required with ``arch``, and with a card
            only a check (it must be the card's).
        params: architecture and operator parameters, told apart by name; with a card they
            override the card's.
        checkpoint: a weights file to load (a ``model.pt`` or a training checkpoint).
        pretrained: with a card and no ``checkpoint``: load the checkpoint the card records
            (sha256 checked); a card without one, or an ``operator``/``params`` that change the
            card's network, is then an error. ``False``: the untrained network, on purpose.
        seed: ``torch.manual_seed(seed)`` before building, so the initial weights are
            reproducible (None: leave the global generator alone).
        base_dir: folder against which a relative ``path/to/file.py:Name`` operator resolves.
        map_location: where the weights are loaded.

    Raises:
        UsageError: both or neither of ``card`` and ``arch``, ``arch`` without ``dataset``, or
            a ``dataset`` that is not the card's.
        UserErrors: several of the problems listed here at once (each is one line of ``errors``).
        CardError, UnknownOperatorError, InvalidParameterError: an unknown card, operator,
            architecture or parameter.
        MissingFileError, CheckpointError, CardError: a checkpoint that is missing, unreadable,
            of another network, or not the card's (sha256); a card without trained weights.
    """
    params = dict(params or {})
    if card is not None and arch:
        raise UsageError("model: give a zoo card or an architecture, not both (--model or --arch)")
    if isinstance(card, str) and is_factory_reference(card) and not card.endswith((".yaml", ".yml")):
        card, arch = None, card  # --model my_net.py:build: a model from the user's own code
    if seed is not None:
        torch.manual_seed(seed)
    op_name = operator if isinstance(operator, str) or operator is None else operator.name
    if card is not None:
        c = _card_checks(card, dataset, operator, op_name, params, checkpoint, pretrained, base_dir)
        arch_extra, op_extra = split_params(c.arch, params)  # the parameters override the card's
        model = build_model(c.arch, operator or c.operator, dataset=c.dataset, base_dir=base_dir,
                            **{**c.arch_params, **arch_extra}, **{**c.operator_params, **op_extra})
        choice = ModelChoice(c.name, model, c.dataset, c.recipe, c.arch, op_name or c.operator, params, c)
        if checkpoint is None and pretrained:
            choice.checkpoint = load_card_checkpoint(c, model, map_location)
    elif arch and is_factory_reference(arch):
        if not dataset:
            raise UsageError(f"model: {arch} needs the dataset it is built for (--dataset mnist|fashion-mnist|cifar10)")
        if op_name not in (None, "baseline"):
            raise UsageError(f"operator: {arch} builds its own layers; --operator applies to the zoo's architectures")
        model = build_user_model(arch, dataset, params, base_dir)
        choice = ModelChoice(arch.rpartition(":")[2], model, dataset, None, arch, "baseline", params,
                             source_sha256=factory_source_sha256(arch, base_dir))
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
