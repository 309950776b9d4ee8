"""Model zoo: architectures with any operator, [0, 1] inputs, logits out, cards and checkpoints."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from robustbench_dc.operators import DecoupledConv2d, DecoupledLinear
from robustbench_dc.zoo import CardError, Normalize, build_model, list_archs, list_cards, load_model

SHAPES = {"cifar10": (3, 32, 32), "mnist": (1, 28, 28)}


def _count(model, cls):
    return sum(1 for m in model.modules() if type(m) is cls)


@pytest.mark.parametrize("arch,dataset,kw", [
    ("cnn9", "cifar10", dict(width=0.125)),
    ("resnet32", "cifar10", dict(width=0.5)),
    ("mnist2d", "mnist", dict(width=0.25)),
])
@pytest.mark.parametrize("operator", ["baseline", "tanh+cos", "sphere+sqcos", "ball+linear"])
def test_every_arch_builds_with_every_operator(arch, dataset, kw, operator):
    torch.manual_seed(0)
    model = build_model(arch, operator, dataset=dataset, **kw).eval()
    x = torch.rand(3, *SHAPES[dataset])
    logits = model(x)
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    assert type(model.classifier) is nn.Linear
    assert isinstance(model.normalize, Normalize)
    assert "normalize.mean" in model.state_dict()
    n_dec = _count(model, DecoupledConv2d)
    expected_convs = {"cnn9": 9, "resnet32": 31, "mnist2d": 6}[arch]
    if operator == "baseline":
        assert n_dec == 0 and _count(model, nn.Conv2d) >= expected_convs
    else:
        assert n_dec == expected_convs
        # 1x1 projection shortcuts stay ordinary layers.
        assert _count(model, nn.Conv2d) == (2 if arch == "resnet32" else 0)


def test_normalization_is_inside_the_model():
    model = build_model("mnist2d", "baseline", dataset="mnist", width=0.25)
    torch.testing.assert_close(model.normalize.mean.flatten(), torch.tensor([0.1307]))
    x = torch.full((1, 1, 28, 28), 0.1307)
    assert model.normalize(x).abs().max() < 1e-6
    cifar = build_model("cnn9", "baseline", dataset="cifar10", width=0.125)
    assert cifar.normalize.std.numel() == 3 and cifar.body[0].in_channels == 3


def test_mnist2d_exposes_two_dimensional_features():
    model = build_model("mnist2d", "tanh+cos", dataset="mnist", width=0.25).eval()
    x = torch.rand(5, 1, 28, 28)
    feats = model.features(x)
    assert feats.shape == (5, 2)
    assert isinstance(model.embed, DecoupledLinear)
    torch.testing.assert_close(model(x), model.classifier(feats))
    # A bounded operator bounds the embedding (alpha = 1 times the fixed embedding scale).
    assert model.embed_scale == 10.0
    assert feats.abs().max() <= 10.0
    assert build_model("mnist2d", "baseline", dataset="mnist", width=0.25).embed_scale == 1.0


def test_parameters_are_split_between_architecture_and_operator():
    model = build_model("cnn9", "tanh+cos", dataset="cifar10", width=0.125, rho=0.25, alpha=2.0)
    conv = model.body[0]
    assert conv.out_channels == 16 and conv.rho == 0.25 and conv.alpha == 2.0
    assert model.info["arch_params"]["width"] == 0.125
    assert model.info["operator"]["params"]["rho"] == 0.25
    with pytest.raises(ValueError, match="widht.*architecture 'cnn9' takes: .*width"):
        build_model("cnn9", "tanh+cos", widht=0.5)
    with pytest.raises(ValueError, match="arch: unknown 'vgg99'; known: cnn9"):
        build_model("vgg99")
    # wrong types are the user's mistake, named, not a TypeError from deep inside the builder
    from robustbench_dc.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="width: architecture 'cnn9' takes a number, got 'abc'"):
        build_model("cnn9", "baseline", width="abc")
    with pytest.raises(InvalidParameterError, match="widths: architecture 'resnet32' takes a list of numbers"):
        build_model("resnet32", "baseline", widths="wide")
    with pytest.raises(InvalidParameterError, match="width: must be > 0, got 0"):
        build_model("cnn9", "baseline", width=0)


def test_resnet32_has_three_stages_of_five_blocks_and_configurable_widths():
    model = build_model("resnet32", "baseline", widths=(8, 16, 32))
    assert len(model.stages) == 15
    assert [model.stages[i].conv1.out_channels for i in (0, 5, 10)] == [8, 16, 32]
    assert model.stages[5].conv1.stride == (2, 2)
    assert {"resnet20", "resnet32", "resnet56"} <= set(list_archs())


def test_every_bundled_card_builds():
    cards = list_cards()
    names = {c.name for c in cards}
    assert {"cnn9-tanh-cifar10", "cnn9-baseline-cifar10", "mnist2d-sphere-mnist", "resnet32-tanh-cifar10"} <= names
    for card in cards:
        if card.arch == "mnist2d":
            assert card.build()(torch.rand(1, 1, 28, 28)).shape == (1, 10)


def _write_card(folder, name, **extra):
    lines = [f"name: {name}", "arch: mnist2d", "operator: tanh+cos", "operator_params: {rho: 0.5}",
             "arch_params: {width: 0.25}", "dataset: mnist"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n")


def test_load_model_loads_a_verified_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("RBDC_MODELS", str(tmp_path))
    torch.manual_seed(1)
    trained = build_model("mnist2d", "tanh+cos", dataset="mnist", width=0.25, rho=0.5)
    ckpt = tmp_path / "toy.pt"
    torch.save({"model": trained.state_dict(), "epoch": 3}, ckpt)
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    _write_card(tmp_path, "toy", checkpoint="toy.pt", sha256=digest)
    loaded = load_model("toy").eval()
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), trained.eval()(x))
    fresh = load_model("toy", pretrained=False).eval()
    assert not torch.allclose(fresh(x), loaded(x))

    _write_card(tmp_path, "toy-bad", checkpoint="toy.pt", sha256="'" + "0" * 64 + "'")
    with pytest.raises(CardError, match="has sha256"):
        load_model("toy-bad")
    _write_card(tmp_path, "toy-missing", checkpoint="absent.pt")
    with pytest.raises(CardError, match="not found"):
        load_model("toy-missing")


def test_checkpoints_are_loaded_without_running_pickled_code(tmp_path, monkeypatch):
    monkeypatch.setenv("RBDC_MODELS", str(tmp_path))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    import pickle
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"model": Evil()}))
    _write_card(tmp_path, "evil", checkpoint="evil.pt")
    with pytest.raises(Exception):
        load_model("evil")
    assert not marker.exists()


def test_invalid_cards_name_the_problem(tmp_path, monkeypatch):
    monkeypatch.setenv("RBDC_MODELS", str(tmp_path))
    (tmp_path / "bad.yaml").write_text("name: bad\narch: vgg99\ndataset: mnist\ncolour: red\n")
    with pytest.raises(CardError, match=r"bad.yaml: arch: .*unknown 'vgg99'.*colour: Extra inputs"):
        list_cards()


def test_an_architecture_name_is_not_silently_replaced() -> None:
    from robustbench_dc.zoo.registry import ARCHS, register_arch

    original = ARCHS["mnist2d"]

    def other(operator, num_classes=10):  # pragma: no cover - never built
        raise AssertionError

    with pytest.raises(ValueError, match="architecture 'mnist2d' is already registered; pass overwrite=True"):
        register_arch("mnist2d")(other)
    assert ARCHS["mnist2d"] is original
    register_arch("MNIST2D")(original)  # the same builder again (a re-import) is fine
    try:
        register_arch("mnist2d", overwrite=True)(other)
        assert ARCHS["mnist2d"] is other
    finally:
        ARCHS["mnist2d"] = original
