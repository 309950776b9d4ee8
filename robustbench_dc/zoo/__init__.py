"""Model zoo: baseline vs decoupled networks with any operator.

``build_model(arch, operator, ...)`` builds an architecture with any operator;
``load_model(name)`` builds a model card's entry and loads its checkpoint.
"""

from . import cnn9, mnist2d, resnet  # noqa: F401  (register the architectures)
from .base import Normalize, ZooModel
from .cards import CardError, ModelCard, card_dirs, get_card, list_cards, load_card, load_model, sha256_file
from .registry import ARCHS, build_model, list_archs, register_arch, split_params

__all__ = [
    "Normalize", "ZooModel", "CardError", "ModelCard", "card_dirs", "get_card", "list_cards", "load_card",
    "load_model", "sha256_file", "ARCHS", "build_model", "list_archs", "register_arch", "split_params",
]
