"""Training: recipes, augmentation, adversarial mixing, resume = uninterrupted, divergence."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustbench_dc.training import (
    CHECKPOINT_NAME,
    MODEL_NAME,
    RecipeError,
    TrainingDiverged,
    evaluate_accuracy,
    get_recipe,
    random_crop,
    random_flip,
    train,
)
from robustbench_dc.training.loop import _lr_factor
from robustbench_dc.zoo import build_model


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.3
    x[torch.arange(n), 0, y * 2 + 3, 5:20] = 1.0  # a class-dependent stripe: learnable
    return x, y


def _model(seed=0, operator="tanh+cos"):
    torch.manual_seed(seed)
    params = {} if operator == "baseline" else {"rho_mode": "relative"}
    return build_model("mnist2d", operator, dataset="mnist", width=0.125, **params)


RECIPE = dict(epochs=3, batch_size=32, optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9},
              schedule={"name": "step", "milestones": [0.5]}, augmentation={"crop_padding": 2, "flip": True},
              adversarial={"method": "fgsm", "eps": 0.1, "ratio": 0.5}, tricks={"weight_projection_every": 2},
              seed=7)


def test_resume_gives_the_same_final_weights_as_an_uninterrupted_run(tmp_path):
    data = _data()
    full = train(_model(), data, RECIPE, out_dir=tmp_path / "full")
    # A run killed during epoch 2 (after epoch 1's checkpoint), resumed with a fresh model object.
    part = tmp_path / "part"

    class Killed(Exception):
        pass

    def kill_after_first_epoch(record):
        if record["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        train(_model(), data, RECIPE, out_dir=part, on_epoch_end=kill_after_first_epoch)
    assert torch.load(part / CHECKPOINT_NAME, weights_only=True)["epoch"] == 1
    resumed = train(_model(seed=123), data, RECIPE, out_dir=part)
    assert resumed.resumed_from == 1 and resumed.iterations == full.iterations
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    assert resumed.sha256 == full.sha256
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in full.history])


def test_resume_refuses_a_checkpoint_of_another_recipe(tmp_path):
    data = _data(64)
    train(_model(), data, {**RECIPE, "epochs": 1}, out_dir=tmp_path)
    with pytest.raises(ValueError, match="different recipe"):
        train(_model(), data, {**RECIPE, "epochs": 1, "seed": 8}, out_dir=tmp_path)


def test_training_learns_and_writes_checkpoints(tmp_path):
    x, y = _data(256)
    result = train(_model(operator="baseline"), (x, y), {"epochs": 4, "batch_size": 32,
                                                         "optimizer": {"lr": 3e-3}}, out_dir=tmp_path)
    assert evaluate_accuracy(result.model, (x, y)) > 0.5
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert (tmp_path / MODEL_NAME).is_file() and (tmp_path / "train.json").is_file()
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    data = _data(64)
    model = _model(operator="baseline")
    calls = {"n": 0}
    original = model.forward

    def poisoned(x):
        calls["n"] += 1
        out = original(x)
        return out * float("nan") if calls["n"] > 3 else out  # epoch 2 diverges (2 steps per epoch)

    model.forward = poisoned
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2.*checkpoint-last.pt \(epoch 1\)"):
        train(model, data, {"epochs": 3, "batch_size": 32}, out_dir=tmp_path)
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / MODEL_NAME).exists()


def test_fgsm_mixing_replaces_the_requested_fraction():
    from robustbench_dc.training.loop import _adversarial_batch

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x = torch.full((10, 1, 2, 2), 0.5)
    y = torch.randint(0, 2, (10,))
    recipe = get_recipe({"epochs": 1, "adversarial": {"method": "fgsm", "eps": 0.1, "ratio": 0.3,
                                                      "adv_weight": 0.5}})
    mixed, weights = _adversarial_batch(model, x, y, recipe, torch.Generator().manual_seed(0))
    changed = (mixed - x).flatten(1).abs().amax(1)
    assert torch.allclose(changed[:3], torch.full((3,), 0.1)) and (changed[3:] == 0).all()
    assert weights.tolist() == [0.5] * 3 + [1.0] * 7


class _PrecisionProbe(nn.Module):
    """Records, for every forward pass, whether the model was in training mode and under autocast."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, torch.is_autocast_enabled("cpu")))
        return self.inner(x)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_adversarial_examples_are_crafted_in_the_training_precision(precision):
    probe = _PrecisionProbe(_model())
    train(probe, _data(64), {"epochs": 1, "batch_size": 32, "precision": precision,
                             "adversarial": {"method": "fgsm", "eps": 0.1, "ratio": 0.5}, "recalibrate_batches": 0})
    crafting = [amp for training, amp in probe.calls if not training]  # FGSM runs the model in eval mode
    stepping = [amp for training, amp in probe.calls if training]
    assert len(crafting) >= 2 and len(stepping) == 2
    assert set(crafting) == set(stepping) == {precision == "bf16"}


def test_random_crop_shifts_content_within_the_padding_and_flip_mirrors():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    out = random_crop(x, 2, g)
    assert out.shape == x.shape
    for i in range(2):
        # Each crop is x shifted by (dy, dx) in [-2, 2]^2 with zeros filled in.
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = torch.zeros(6, 6)
                src = x[i, 0, max(0, dy):6 + min(0, dy), max(0, dx):6 + min(0, dx)]
                shifted[max(0, -dy):6 + min(0, -dy), max(0, -dx):6 + min(0, -dx)] = src
                found |= torch.equal(out[i, 0], shifted)
        assert found
    flipped = random_flip(x, torch.Generator().manual_seed(1))
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))
    many = random_flip(torch.arange(1000.0).view(1000, 1, 1, 1).expand(1000, 1, 1, 2).contiguous() *
                       torch.tensor([1.0, -1.0]).view(1, 1, 1, 2), torch.Generator().manual_seed(2))
    assert 400 < int((many[:, 0, 0, 0] < 0).sum()) < 600


def test_schedules():
    step = get_recipe({"iterations": 100, "schedule": {"name": "step", "milestones": [0.5, 80], "gamma": 0.1}})
    assert [_lr_factor(step, i, 100) for i in (0, 49, 50, 79, 80)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    cos = get_recipe({"iterations": 100, "schedule": {"name": "cosine"}})
    assert _lr_factor(cos, 50, 100) == pytest.approx(0.5) and _lr_factor(cos, 100, 100) == pytest.approx(0)
    one = get_recipe({"iterations": 100, "schedule": {"name": "onecycle", "warmup": 0.2}})
    assert _lr_factor(one, 19, 100) == pytest.approx(1.0) and _lr_factor(one, 60, 100) == pytest.approx(0.5)


def test_named_recipes_and_validation_errors():
    paper = get_recipe("cifar10-natural")
    assert (paper.optimizer.name, paper.optimizer.lr, paper.batch_size, paper.iterations) == ("adam", 1e-3, 128, 64000)
    assert paper.schedule.milestones == (34000, 54000)
    at = get_recipe("cifar10-fgsm-at")
    assert at.adversarial.method == "fgsm" and at.adversarial.eps == pytest.approx(8 / 255)
    assert get_recipe("mnist-fgsm-at", **{"adversarial.eps": 0.2}).adversarial.eps == 0.2
    with pytest.raises(RecipeError, match="batch_size: Input should be greater than or equal to 1, got -3"):
        get_recipe("mnist-natural", batch_size=-3)
    with pytest.raises(RecipeError, match="recipe: unknown 'nope'; known: cifar10-fgsm-at"):
        get_recipe("nope")
    with pytest.raises(RecipeError, match="steps: fgsm takes one step"):
        get_recipe({"epochs": 1, "adversarial": {"method": "fgsm", "eps": 0.1, "steps": 5}})
    assert math.isclose(get_recipe({"epochs": 1, "adversarial": {"method": "fgsm-rs", "eps": 0.1}})
                        .adversarial.resolved_step_size(), 0.125)


def test_relative_rho_running_means_are_recalibrated_after_each_epoch():
    data = _data(128)
    recipe = {"epochs": 2, "batch_size": 32, "optimizer": {"lr": 3e-3}}
    fresh = train(_model(), data, {**recipe, "recalibrate_batches": 2})
    stale = train(_model(), data, {**recipe, "recalibrate_batches": 0})
    x = data[0][:64]
    from robustbench_dc.operators import DecoupledLayer
    for model in (fresh.model,):
        layers = [m for m in model.modules() if isinstance(m, DecoupledLayer)]
        assert all(int(layer.xnorm_steps) == 2 for layer in layers)
    # Evaluation-mode outputs of the recalibrated model are close to the batch-statistics ones.
    fresh.model.eval()
    with torch.no_grad():
        eval_out = fresh.model(x)
        for m in fresh.model.modules():
            if isinstance(m, DecoupledLayer):
                m.xnorm_steps.zero_()  # eval falls back to the batch mean
        batch_out = fresh.model(x)
    assert (eval_out.argmax(1) == batch_out.argmax(1)).float().mean() > 0.9
    assert all(int(m.xnorm_steps) == 8 for m in stale.model.modules() if isinstance(m, DecoupledLayer))


def test_the_machine_record_says_whether_auto_precision_trains_in_bf16():
    # two machines of the same "AMD EPYC" model name trained the same protocol in bf16 and in fp32:
    # the record must tell them apart
    from robustbench_dc.runtime import machine_info
    from robustbench_dc.training.loop import resolve_precision

    info = machine_info()
    assert info["cpu_bf16_native"] is resolve_precision("auto", torch.device("cpu"))
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_fast_mode_trains_in_bf16_channels_last_and_returns_an_ordinary_model():
    from robustbench_dc.training.loop import resolve_precision

    assert resolve_precision("fp32", torch.device("cpu")) is False
    assert resolve_precision("bf16", torch.device("cpu")) is True
    assert get_recipe({"epochs": 1}).precision == "auto" and get_recipe({"epochs": 1}).channels_last
    data = _data(64)
    runs = {}
    for precision in ("fp32", "bf16"):
        result = train(_model(operator="tanh+cos"), data, {"epochs": 1, "batch_size": 32, "precision": precision,
                                                           "channels_last": precision == "bf16"})
        assert all(torch.isfinite(p).all() for p in result.model.parameters())
        assert all(p.is_contiguous() for p in result.model.parameters())
        runs[precision] = torch.cat([p.detach().flatten() for p in result.model.parameters()])
    assert not torch.equal(runs["fp32"], runs["bf16"])  # bf16 really ran
    torch.testing.assert_close(runs["fp32"], runs["bf16"], atol=0.05, rtol=0.05)  # but trains the same way
