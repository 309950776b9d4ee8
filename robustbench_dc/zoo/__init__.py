"""Model zoo: baseline vs decoupled networks with any operator.

``build_model(arch, operator, ...)`` builds an architecture with any operator;
``load_model(name)`` builds a model card's entry and loads its checkpoint;
``resolve_model(card=..., arch=..., operator=..., dataset=..., params=..., checkpoint=...)``
is the one way the commands and the protocol runner get a model (card or architecture,
seeded initialisation, the card's or a given checkpoint).
"""

from robustbench_dc.zoo import cnn9, isonet, mnist2d, resnet  # noqa: F401  (register the architectures)
from robustbench_dc.zoo.base import Normalize, ZooModel
from robustbench_dc.zoo.cards import (
    CardError,
    CheckpointError,
    ModelCard,
    card_dirs,
    get_card,
    list_cards,
    load_card,
    load_weights,
    sha256_file,
)
from robustbench_dc.zoo.registry import ARCHS, build_model, list_archs, register_arch, split_params
from robustbench_dc.zoo.resolve import ModelChoice, resolve_model
from robustbench_dc.zoo.weights import (
    find_weights,
    load_card_checkpoint,
    load_model,
    weights_dir,
    weights_status,
)

__all__ = [
    "Normalize", "ZooModel", "CardError", "CheckpointError", "ModelCard", "card_dirs", "get_card", "list_cards",
    "load_card", "load_card_checkpoint", "load_model", "weights_status", "weights_dir",
    "find_weights", "load_weights", "sha256_file", "ARCHS", "build_model",
    "list_archs", "register_arch", "split_params", "ModelChoice", "resolve_model",
]
