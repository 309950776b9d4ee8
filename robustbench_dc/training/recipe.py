"""Training recipes: validated configuration, and the named recipes of the suite (one place).

A recipe is everything that decides a training run besides the model and the data:
optimizer, schedule, length, batch size, regularisation, augmentation, the paper's
optimisation tricks, the adversarial-training attack, and the seed.

Named recipes (``RECIPES``) reproduce the authors' settings where they are published
(CNN-9 on CIFAR: Adam lr 1e-3, batch 128, 64k iterations, lr/10 at 34k and 54k, random
flips). Recipes are overridden field by field: ``get_recipe("cifar10-natural",
iterations=2000)``; nested fields with dotted keys or dicts:
``get_recipe("mnist-fgsm-at", **{"adversarial.eps": 0.2})``.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from robustbench_dc._pydantic import Eps
from robustbench_dc._pydantic import problems as validation_problems
from robustbench_dc._text import did_you_mean
from robustbench_dc.errors import UserError

__all__ = ["Recipe", "Optimizer", "Schedule", "Augmentation", "Adversarial", "Tricks", "RECIPES",
           "get_recipe", "list_recipes", "RecipeError"]


class RecipeError(UserError, ValueError):
    """An unknown recipe name or an invalid field; the message names the field and value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Optimizer(_Strict):
    """``sgd`` (momentum, optional Nesterov) or ``adam``."""

    name: Literal["sgd", "adam"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)


class Schedule(_Strict):
    """Learning-rate schedule, stepped every iteration.

    ``step``: multiply by ``gamma`` at each milestone (fractions of the run in (0, 1),
    or iteration counts >= 1); ``cosine``: cosine annealing to 0; ``onecycle``: linear
    warm-up to ``lr`` over ``warmup`` of the run, then linear decay to 0; ``constant``.
    """

    name: Literal["constant", "step", "cosine", "onecycle"] = "constant"
    milestones: tuple[float, ...] = ()
    gamma: float = Field(0.1, gt=0)
    warmup: float = Field(0.3, gt=0, lt=1)


class Augmentation(_Strict):
    """Random crop with zero padding and horizontal flip, applied to [0, 1] tensors."""

    crop_padding: int = Field(0, ge=0)
    flip: bool = False


class Adversarial(_Strict):
    """The training attack (``None`` in the recipe means natural training).

    - ``fgsm``: FGSM examples mixed with clean ones (Goodfellow et al. 2015; Kurakin et
      al. 2017): a fraction ``ratio`` of each batch is replaced by its FGSM counterpart,
      and the loss weights the adversarial part by ``adv_weight`` (Kurakin's lambda).
    - ``pgd``: PGD with random start (Madry et al. 2018), ``ratio`` 1 by default.
    - ``fgsm-rs``: FGSM from a uniform random start with step ``step_size`` (default
      1.25 * eps; Wong et al. 2020, "fast is better than free").

    Examples are crafted with the model in evaluation mode.
    """

    method: Literal["fgsm", "pgd", "fgsm-rs"] = "fgsm"
    threat_model: Literal["linf", "l2"] = "linf"
    eps: Eps = Field(gt=0)
    steps: int = Field(1, ge=1)
    step_size: float | None = Field(None, gt=0)
    ratio: float = Field(0.5, gt=0, le=1)
    adv_weight: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> "Adversarial":
        if self.method in ("fgsm", "fgsm-rs") and self.steps != 1:
            raise ValueError(f"steps: {self.method} takes one step, got {self.steps}")
        return self

    def resolved_step_size(self) -> float:
        if self.step_size is not None:
            return self.step_size
        if self.method == "fgsm":
            return self.eps
        if self.method == "fgsm-rs":
            return 1.25 * self.eps
        return 2.5 * self.eps / self.steps


class Tricks(_Strict):
    """The paper's optimisation tricks: weight projection every N steps, weighted gradients, the
    orthogonality penalty of normalised filters (``orthogonality``), and ISONet's orthogonal-convolution
    penalty (``isometry``: its coefficient, the authors' 1e-4; see :mod:`robustbench_dc.zoo.isonet`)."""

    weight_projection_every: int | None = Field(None, ge=1)
    weight_projection_scale: float = Field(1.0, gt=0)
    weighted_gradients: bool = False
    orthogonality: float = Field(0.0, ge=0)
    isometry: float = Field(0.0, ge=0)


class Recipe(_Strict):
    """A complete, validated training recipe. Give ``epochs`` or ``iterations`` (not both).

    ``recalibrate_batches``: after every epoch, the running ``||x||`` means of
    ``rho_mode="relative"`` layers are re-estimated over this many training batches with
    the current weights (see :func:`robustbench_dc.operators.recalibrate_xnorm`); 0 keeps
    the authors' plain EMA, which is stale in short runs.

    ``precision``: ``"bf16"`` runs the forward pass and the loss under bfloat16 autocast,
    and crafts the adversarial examples of adversarial training under it too (as fast
    adversarial training does: Wong et al. 2020, mixed precision throughout; the attack's
    steps and projections stay float32); ``"auto"`` picks bf16 where the
    hardware computes it natively (CPUs with AVX-512 BF16 / AMX, CUDA GPUs with bf16), else
    fp32. ``channels_last`` stores activations and 4-D weights channels-last. The defaults
    (``auto``, channels-last) are the fastest mode measured to keep accuracy:
    ``benchmarks/precision.py`` (MNIST, 3 networks x 2 seeds: within -1.7..+0.4 points of
    fp32) and ``benchmarks/run.py`` (CNN-9 steps 2.1x faster). Evaluation scores in float32;
    its attacks craft in float32 unless told otherwise (``evaluate_whitebox(precision=...)``).

    ``compile``: run the responses of decoupled layers that take the generic path (see
    :attr:`~robustbench_dc.operators.DecoupledLayer.compilable`) through ``torch.compile``
    during training (:mod:`robustbench_dc.operators.compiled`; same values, one fused
    kernel). ``"auto"`` (default) does so when ``torch.compile`` works on the device and the
    run has at least 1,000 steps: compiling costs 10-30 s per operator on a 2-core CPU, and
    it saved 5-43% of a CIFAR-10 CNN-9 training step (``benchmarks/README.md``), less for
    small networks. ``true`` compiles whatever the length (with a warning and eager
    fallback where it cannot); ``false`` never.
    """

    name: str = "custom"
    optimizer: Optimizer = Optimizer()
    schedule: Schedule = Schedule()
    epochs: int | None = Field(None, ge=1)
    iterations: int | None = Field(None, ge=1)
    batch_size: int = Field(128, ge=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augmentation: Augmentation = Augmentation()
    tricks: Tricks = Tricks()
    adversarial: Adversarial | None = None
    recalibrate_batches: int = Field(20, ge=0)
    precision: Literal["fp32", "bf16", "auto"] = "auto"
    channels_last: bool = True
    compile: bool | Literal["auto"] = "auto"
    seed: int = 0

    @model_validator(mode="after")
    def _length(self) -> "Recipe":
        if (self.epochs is None) == (self.iterations is None):
            raise ValueError("give exactly one of epochs / iterations")
        return self

    def override(self, **changes: Any) -> "Recipe":
        """A copy with fields replaced; dotted keys (``"adversarial.eps"``) reach nested fields."""
        data = self.model_dump()
        for key, value in changes.items():
            target = data
            *parents, leaf = key.split(".")
            for p in parents:
                if target.get(p) is None:
                    target[p] = {}
                target = target[p]
            if isinstance(value, dict) and isinstance(target.get(leaf), dict):
                target[leaf] = {**target[leaf], **value}
            else:
                target[leaf] = value
        if "iterations" in changes and "epochs" not in changes:
            data["epochs"] = None
        if "epochs" in changes and "iterations" not in changes:
            data["iterations"] = None
        return validate_recipe(data)


def validate_recipe(data: dict[str, Any]) -> Recipe:
    """Validate a mapping into a :class:`Recipe`; errors name every bad field."""
    try:
        return Recipe(**data)
    except ValidationError as exc:
        problems = "; ".join(p.line() if p.loc else f"recipe: {p.message}{p.got}" for p in validation_problems(exc))
        raise RecipeError(f"recipe {data.get('name', 'custom')!r}: {problems}") from None


def _recipes() -> dict[str, Recipe]:
    paper_cifar = dict(
        optimizer=Optimizer(name="adam", lr=1e-3),
        schedule=Schedule(name="step", milestones=(34_000, 54_000), gamma=0.1),
        iterations=64_000, batch_size=128, augmentation=Augmentation(flip=True),
    )
    mnist = dict(
        optimizer=Optimizer(name="adam", lr=1e-3),
        schedule=Schedule(name="step", milestones=(0.5, 0.75), gamma=0.1),
        epochs=10, batch_size=128,
    )
    cifar_eps = 8 / 255
    recipes = [
        Recipe(name="cifar10-natural", **paper_cifar),
        Recipe(name="cifar10-fgsm-at", adversarial=Adversarial(method="fgsm", eps=cifar_eps, ratio=0.5),
               **paper_cifar),
        Recipe(name="cifar10-pgd-at", adversarial=Adversarial(method="pgd", eps=cifar_eps, steps=7,
                                                              step_size=2 / 255, ratio=1.0), **paper_cifar),
        Recipe(name="cifar10-fgsm-rs-at", adversarial=Adversarial(method="fgsm-rs", eps=cifar_eps, ratio=1.0),
               **paper_cifar),
        Recipe(name="resnet-cifar", optimizer=Optimizer(name="adam", lr=1e-3),
               schedule=Schedule(name="step", milestones=(20_000, 30_000, 37_500), gamma=0.1),
               iterations=42_500, batch_size=128, label_smoothing=0.01,
               augmentation=Augmentation(crop_padding=4, flip=True)),
        Recipe(name="mnist-natural", **mnist),
        Recipe(name="mnist-fgsm-at", adversarial=Adversarial(method="fgsm", eps=0.3, ratio=0.5), **mnist),
        Recipe(name="mnist-pgd-at", adversarial=Adversarial(method="pgd", eps=0.3, steps=10, step_size=0.075,
                                                            ratio=1.0), **mnist),
        # CPU-minutes MNIST training for the quickstart and the MNIST leaderboard.
        Recipe(name="mnist-fast", optimizer=Optimizer(name="adam", lr=3e-3),
               schedule=Schedule(name="onecycle", warmup=0.2), epochs=3, batch_size=64),
        # The MNIST leaderboard's adversarial-training track: PGD-AT (Madry et al. 2018) at the standard
        # eps 0.3 with 5 steps of 2.5 eps / 5 from a random start, every example adversarial, 10 epochs.
        Recipe(name="mnist-fast-pgd-at", optimizer=Optimizer(name="adam", lr=3e-3),
               schedule=Schedule(name="onecycle", warmup=0.2), epochs=10, batch_size=64,
               adversarial=Adversarial(method="pgd", eps=0.3, steps=5, step_size=0.15, ratio=1.0)),
    ]
    return {r.name: r for r in recipes}


RECIPES: dict[str, Recipe] = _recipes()


def list_recipes() -> list[str]:
    return sorted(RECIPES)


def get_recipe(spec: str | Recipe | dict[str, Any], **overrides: Any) -> Recipe:
    """A named recipe (or a mapping with an optional ``base`` name) with overrides applied."""
    if isinstance(spec, Recipe):
        base = spec
    elif isinstance(spec, str):
        if spec not in RECIPES:
            raise RecipeError(f"recipe: unknown {spec!r}{did_you_mean(spec, RECIPES)}; known: {', '.join(list_recipes())}")
        base = RECIPES[spec]
    elif isinstance(spec, dict):
        data = copy.deepcopy(spec)
        base_name = data.pop("base", None)
        if base_name is not None:
            return get_recipe(base_name, **data, **overrides)
        base = validate_recipe(data)
    else:
        raise RecipeError(f"recipe: expected a name, a mapping or a Recipe, got {type(spec).__name__}")
    return base.override(**overrides) if overrides else base
