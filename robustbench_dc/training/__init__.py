"""Natural and adversarial training (FGSM-mixed, PGD, FGSM with random start) and recipes."""

from robustbench_dc.training.augment import augment, random_crop, random_flip
from robustbench_dc.training.cards import measured_training_seconds, train_card
from robustbench_dc.training.loop import (
    CHECKPOINT_NAME,
    MODEL_NAME,
    TrainingDiverged,
    TrainResult,
    atomic_torch_save,
    evaluate_accuracy,
    train,
)
from robustbench_dc.training.recipe import (
    RECIPES,
    Adversarial,
    Augmentation,
    Optimizer,
    Recipe,
    RecipeError,
    Schedule,
    Tricks,
    get_recipe,
    list_recipes,
)

__all__ = [
    "augment", "random_crop", "random_flip",
    "CHECKPOINT_NAME", "MODEL_NAME", "TrainingDiverged", "TrainResult", "atomic_torch_save", "evaluate_accuracy",
    "train", "train_card", "measured_training_seconds",
    "RECIPES", "Adversarial", "Augmentation", "Optimizer", "Recipe", "RecipeError", "Schedule", "Tricks",
    "get_recipe", "list_recipes",
]
