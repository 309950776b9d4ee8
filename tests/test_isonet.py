"""Isometric networks and the zoo's pooling / projection parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustbench_dc.cli import main
from robustbench_dc.declarative import FeatureProjection, RobustGlobalPool2d
from robustbench_dc.errors import InvalidParameterError
from robustbench_dc.training import train
from robustbench_dc.zoo import build_model
from robustbench_dc.zoo.isonet import SReLU, dirac_init, orthogonal_conv_penalty

from synthetic import mnist_sample_tensors

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_dirac_square_convolution_is_an_isometry() -> None:
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    dirac_init(conv)
    assert float(orthogonal_conv_penalty(conv).detach()) == 0.0
    x = torch.randn(4, 8, 10, 10)
    torch.testing.assert_close(conv(x).norm(), x.norm())
    nn.init.kaiming_normal_(conv.weight)
    assert float(orthogonal_conv_penalty(conv).detach()) > 1.0


def test_penalty_is_the_gram_deviation_on_the_smaller_channel_dimension() -> None:
    torch.manual_seed(0)
    for c_out, c_in in ((3, 7), (7, 3)):
        conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        w = conv.weight.flatten(1)  # (c_out, c_in)
        gram = w @ w.t() if c_out <= c_in else w.t() @ w
        expected = 0.5 * (gram - torch.eye(gram.shape[0])).pow(2).sum()
        torch.testing.assert_close(orthogonal_conv_penalty(conv), expected)


@pytest.mark.parametrize("arch", ["isonet", "risonet"])
def test_isonet_starts_isometric_without_batchnorm(arch: str) -> None:
    model = build_model(arch, "baseline", dataset="mnist", width=0.5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert float(orthogonal_conv_penalty(model).detach()) == 0.0
    shifts = [m.shift for m in model.modules() if isinstance(m, SReLU)]
    assert shifts and all(bool((s == -1.0).all()) for s in shifts)
    if arch == "risonet":
        alphas = [m.alpha for m in model.modules() if hasattr(m, "alpha")]
        assert alphas and all(float(a) == 0.0 for a in alphas)  # every residual block starts as SReLU(x)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_the_isometry_penalty_decreases_under_training() -> None:
    x, y, _, _ = mnist_sample_tensors(10)
    torch.manual_seed(0)
    model = build_model("isonet", "baseline", dataset="mnist", width=0.5, blocks=2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
    before = float(orthogonal_conv_penalty(model).detach())
    recipe = {"name": "iso", "optimizer": {"name": "adam", "lr": 1e-3}, "iterations": 30, "batch_size": 32,
              "tricks": {"isometry": 1e-2}, "precision": "fp32", "compile": False}
    train(model, (x[:960], y[:960]), recipe)
    after = float(orthogonal_conv_penalty(model).detach())
    assert after < 0.8 * before, (before, after)


def test_zoo_architectures_take_robust_pooling_and_projections() -> None:
    m = build_model("risonet", "baseline", dataset="mnist", width=0.25, pool="welsch", projection="l2-sphere")
    assert isinstance(m.pool, RobustGlobalPool2d) and m.pool.penalty.name == "welsch"
    assert isinstance(m.projection, FeatureProjection)
    out = m(torch.rand(3, 1, 28, 28))
    out.sum().backward()
    assert m.pool.c_raw.grad is not None and m.projection.r_raw.grad is not None
    assert m.info["arch_params"]["pool"] == "welsch"
    r = build_model("resnet20", "tanh+cos", dataset="cifar10", width=0.25, pool={"penalty": "huber", "c": 0.5})
    assert r(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(InvalidParameterError, match="pool"):
        build_model("isonet", "baseline", pool="tukey")
    with pytest.raises(InvalidParameterError, match="projection"):
        build_model("cnn9", "baseline", projection="l3-sphere")


def test_operators_list_shows_the_neighbouring_layers(capsys) -> None:
    assert main(["operators", "list"]) == 0
    out = capsys.readouterr().out
    for text in ("welsch", "1 - exp(-z^2 / (2 c^2))", "projection=<norm>-<set>", "risonet", "tricks.isometry"):
        assert text in out
