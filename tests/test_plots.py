"""Figures: structure of each plot (axes, artists, data, labels), run-folder reading and redrawing."""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from robustbench_dc.cli.plot import register
from robustbench_dc.plots import (
    CLASS_COLORS,
    load_run,
    plot_embedding_grid,
    plot_embeddings,
    plot_eps_curves,
    plot_lipschitz,
    plot_training_curves,
    plot_transfer_matrix,
    redraw_run,
    save_figure,
)

OPERATORS = ["Baseline", "SphereConv", "BallConv", "TanhConv"]
N = 60


def _panel(label: str, scale: float, seed: int, acc: float | None = 0.95) -> dict:
    rng = np.random.default_rng(seed)
    labels = np.arange(N) % 10
    angles = 2 * np.pi * labels / 10
    feats = scale * np.stack([np.cos(angles), np.sin(angles)], 1) * rng.uniform(0.5, 1.0, (N, 1))
    return {"label": label, "features": feats, "labels": labels, "accuracy": acc}


def _panels(seed: int = 0) -> list[dict]:
    return [_panel(lab, scale, seed + i) for i, (lab, scale) in enumerate(zip(OPERATORS, (40.0, 1.0, 1.5, 0.9)))]


def _plot_axes(fig: Figure):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def _assert_labelled(fig: Figure) -> None:
    for ax in _plot_axes(fig):
        assert ax.get_title().strip(), ax
        assert ax.get_xlabel().strip(), ax.get_title()
        assert ax.get_ylabel().strip(), ax.get_title()


# ----------------------------------------------------------------------------- embeddings


def test_embeddings_one_panel_per_operator_with_class_colours_and_one_legend():
    panels = _panels()
    fig = plot_embeddings(panels, title="2-D MNIST features \u2014 natural training")
    axes = _plot_axes(fig)
    assert len(axes) == len(OPERATORS)
    assert [ax.get_title().split(" (")[0] for ax in axes] == OPERATORS
    assert "95.0%" in axes[0].get_title()
    assert "natural training" in fig.get_suptitle()
    for ax, p in zip(axes, panels):
        scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(scatters) == 1
        sc = scatters[0]
        np.testing.assert_allclose(sc.get_offsets(), p["features"])
        face = sc.get_facecolors()
        assert face.shape == (N, 4)
        for rgba, cls in zip(face, p["labels"]):
            assert np.allclose(rgba[:3], to_rgb(CLASS_COLORS[cls]))
        # symmetric, equal-aspect, per-panel limits that contain every point
        lo, hi = ax.get_xlim()
        assert lo == pytest.approx(-hi) and ax.get_ylim() == pytest.approx((lo, hi))
        assert hi >= np.abs(p["features"]).max()
        assert ax.get_aspect() == 1.0
        assert f"per-panel range \u00b1{hi:.3g}" in ax.get_title()
        assert ax.get_legend() is None
    assert axes[0].get_xlim()[1] > 10 * axes[1].get_xlim()[1]  # baseline range >> bounded operators
    assert len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [str(d) for d in range(10)]
    _assert_labelled(fig)


def test_embeddings_shared_limits_and_bad_shapes():
    fig = plot_embeddings(_panels(), shared_limits=True)
    lims = {ax.get_xlim() for ax in _plot_axes(fig)}
    assert len(lims) == 1
    bad = _panel("x", 1.0, 0)
    bad["features"] = bad["features"][:, :1]
    with pytest.raises(ValueError, match="shape"):
        plot_embeddings([bad])


def test_embedding_grid_rows_natural_adversarial_columns_operators():
    nat = _panels(0)
    adv = _panels(10)[:3]  # TanhConv missing from the adversarial row
    fig = plot_embedding_grid(nat, adv)
    axes = _plot_axes(fig)
    assert len(axes) == 2 * len(OPERATORS)
    titles = [ax.get_title().split(" (")[0] for ax in axes]
    assert titles == OPERATORS + OPERATORS
    assert "natural" in axes[0].get_ylabel() and "adversarial" in axes[4].get_ylabel()
    assert not [c for c in axes[-1].collections if isinstance(c, PathCollection)]  # "not available" cell
    assert sum(len(ax.collections) for ax in axes) == 7
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == 10
    _assert_labelled(fig)


# ----------------------------------------------------------------------------- eps curves


def test_eps_curves_one_line_per_model_in_percent():
    curves = {
        "Baseline": {"eps": [0.0, 0.1, 0.2, 0.3], "robust_accuracy": [0.99, 0.5, 0.1, 0.0]},
        "TanhConv": {"eps": [0.0, 0.1, 0.2, 0.3], "robust_accuracy": [0.98, 0.7, 0.4, 0.2]},
        "TanhConv-adv": {"eps": [0.0, 0.1, 0.2, 0.3], "robust_accuracy": [0.97, 0.9, 0.8, 0.6]},
    }
    fig = plot_eps_curves(curves, attack="pgd-linf-s40")
    (ax,) = _plot_axes(fig)
    lines = ax.get_lines()
    assert len(lines) == 3
    for line, (name, c) in zip(lines, curves.items()):
        assert line.get_label() == name
        np.testing.assert_allclose(line.get_xdata(), c["eps"])
        np.testing.assert_allclose(line.get_ydata(), 100 * np.array(c["robust_accuracy"]))
    assert [line.get_linestyle() for line in lines] == ["-", "-", "--"]
    assert len({line.get_color() for line in lines}) == 3
    assert "L-inf" in ax.get_xlabel() and "[0, 1]" in ax.get_xlabel()
    assert ax.get_ylabel() == "robust accuracy (%)"
    assert "pgd-linf-s40" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(curves)
    _assert_labelled(fig)
    assert "L2" in plot_eps_curves(curves, attack="pgd-l2").axes[0].get_xlabel()
    with pytest.raises(ValueError, match="eps values"):
        plot_eps_curves({"m": {"eps": [0.1], "robust_accuracy": [0.1, 0.2]}})


# ----------------------------------------------------------------------------- transfer


def test_transfer_heatmap_data_ticks_and_annotations():
    matrix = {"Baseline": {"Baseline": 0.0, "TanhConv": 0.45, "BallConv": 0.5},
              "TanhConv": {"Baseline": 0.3, "TanhConv": 0.1, "BallConv": None}}
    fig = plot_transfer_matrix(matrix, attack="pgd-linf")
    (ax,) = _plot_axes(fig)
    (im,) = [a for a in ax.get_images() if isinstance(a, AxesImage)]
    data = np.ma.filled(im.get_array().astype(float), np.nan)
    expect = np.array([[0.0, 45.0, 50.0], [30.0, 10.0, np.nan]])
    np.testing.assert_allclose(data, expect)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Baseline", "TanhConv"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Baseline", "TanhConv", "BallConv"]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["0.0", "45.0", "50.0", "30.0", "10.0", "n/a"]
    assert ax.get_xlabel() == "target model (evaluated on)"
    assert ax.get_ylabel() == "source model (crafted on)"
    assert any(a.get_label() == "<colorbar>" for a in fig.axes)
    _assert_labelled(fig)


# ----------------------------------------------------------------------------- Lipschitz


def test_lipschitz_grouped_bars_heights_and_log_option():
    est = {"baseline": {"grad-norm L2": 3.1, "CLEVER L2": 0.4},
           "tanhconv": {"grad-norm L2": 0.8, "CLEVER L2": 0.2},
           "tanhconv-adv": {"grad-norm L2": 0.5}}
    fig = plot_lipschitz(est)
    (ax,) = _plot_axes(fig)
    assert len(ax.patches) == 6 and len(ax.containers) == 3
    for cont, (m, d) in zip(ax.containers, est.items()):
        heights = [b.get_height() for b in cont]
        np.testing.assert_allclose(heights, [d.get("grad-norm L2", np.nan), d.get("CLEVER L2", np.nan)])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["grad-norm L2", "CLEVER L2"]
    assert "lower bound" in ax.get_ylabel()
    assert ax.get_yscale() == "linear"
    assert ax.containers[2][0].get_hatch() == "//"  # adversarial: hatched
    _assert_labelled(fig)
    assert plot_lipschitz(est, log_scale=True).axes[0].get_yscale() == "log"
    wide = {"a": {"k": 1000.0}, "b": {"k": 0.5}}
    assert plot_lipschitz(wide, log_scale=None).axes[0].get_yscale() == "log"


# ----------------------------------------------------------------------------- training curves


def _history(n: int, offset: float = 0.0, eval_acc: bool = True) -> list[dict]:
    return [{"epoch": e, "loss": 1.0 / e + offset, "train_accuracy": 0.5 + 0.1 * e,
             **({"eval_accuracy": 0.45 + 0.1 * e} if eval_acc else {})} for e in range(1, n + 1)]


def test_training_curves_loss_and_accuracy_with_line_styles():
    hist = {"baseline": _history(3), "tanh-nat": {"history": _history(3), "training": "natural"},
            "tanh": [dict(h, training="adversarial") for h in _history(3, 0.5)]}
    fig = plot_training_curves(hist)
    axes = _plot_axes(fig)
    assert len(axes) == 3
    loss_ax = next(ax for ax in axes if "loss" in ax.get_ylabel())
    acc_axes = [ax for ax in axes if "accuracy" in ax.get_ylabel()]
    assert len(acc_axes) == 2
    assert [line.get_linestyle() for line in loss_ax.get_lines()] == ["-", "-", "--"]
    np.testing.assert_allclose(loss_ax.get_lines()[2].get_ydata(), [1.5, 1.0, 0.5 + 1 / 3])
    np.testing.assert_allclose(acc_axes[0].get_lines()[0].get_ydata(), [60.0, 70.0, 80.0])
    np.testing.assert_allclose(acc_axes[0].get_lines()[0].get_xdata(), [1, 2, 3])
    assert len(fig.legends) == 1
    _assert_labelled(fig)
    # adversarial from the name; no eval accuracy -> two axes
    fig2 = plot_training_curves({"cnn-adv": _history(2, eval_acc=False)})
    assert len(fig2.axes) == 2 and fig2.axes[0].get_lines()[0].get_linestyle() == "--"


# ----------------------------------------------------------------------------- saving


def test_save_figure_png_and_valid_svg(tmp_path):
    fig = plot_eps_curves({"m": {"eps": [0, 0.1], "robust_accuracy": [1.0, 0.5]}}, attack="fgsm-linf")
    paths = save_figure(fig, tmp_path / "sub" / "eps-fgsm-linf-eps0.1")
    assert [p.name for p in paths] == ["eps-fgsm-linf-eps0.1.png", "eps-fgsm-linf-eps0.1.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    root = ET.parse(paths[1]).getroot()
    assert root.tag.endswith("svg")
    assert "Robust accuracy vs eps" in paths[1].read_text()
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name.startswith(".")]  # no temp files left
    with pytest.raises(ValueError, match="format"):
        save_figure(fig, tmp_path / "x", formats=("bmp",))


# ----------------------------------------------------------------------------- run folder


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _make_run(root: Path) -> Path:
    models = {"baseline-nat": ("baseline", "Baseline", "natural", 40.0),
              "tanh-nat": ("tanh+cos", "TanhConv", "natural", 1.0),
              "baseline-adv": ("baseline", "Baseline", "adversarial", 30.0),
              "tanh-adv": ("tanh+cos", "TanhConv", "adversarial", 0.8)}
    _write(root / "summary.json", {"protocol": "test", "dataset": "mnist",
                                   "models": {n: {"operator": o, "label": lab, "training": t}
                                              for n, (o, lab, t, _) in models.items()}})
    eps = [0.0, 0.1, 0.2, 0.3]
    for i, (name, (_, label, training, scale)) in enumerate(models.items()):
        d = root / "models" / name
        _write(d / "train.json", {"history": _history(2, 0.1 * i)})
        _write(d / "whitebox.json", {"model": name, "n": 10, "clean_accuracy": 0.9,
                                     "results": [{"attack": "pgd-linf-eps0.3000-s10", "eps": 0.3,
                                                  "robust_accuracy": 0.1 * i}], "flags": []})
        for attack in ("pgd-linf-s10", "fgsm-linf-s1"):
            _write(d / f"sweep-{attack}.json", {"attack": attack, "eps": eps,
                                                "robust_accuracy": [0.9, 0.5, 0.2 + 0.05 * i, 0.1]})
        _write(d / "lipschitz.json", {"estimates": {"grad-norm-l2": 3.0 / (i + 1), "clever-l2": 0.5 / (i + 1)}})
        p = _panel(label, scale, i)
        np.savez(d / "embedding.npz", features=p["features"], labels=p["labels"])
    names = list(models)
    _write(root / "transfer.json", {"sources": names, "targets": names, "attacks": ["pgd-linf-eps0.3000-s10"],
                                    "matrices": {"pgd-linf-eps0.3000-s10":
                                                 {s: {t: 0.1 * (i + j) for j, t in enumerate(names)}
                                                  for i, s in enumerate(names)}}})
    return root


def test_redraw_run_writes_every_figure(tmp_path):
    run = _make_run(tmp_path / "run")
    paths = redraw_run(run)
    names = sorted(p.name for p in paths)
    stems = ["embeddings", "eps-fgsm-linf-s1", "eps-pgd-linf-s10", "lipschitz", "training",
             "transfer-pgd-linf-eps0.3000-s10"]
    assert names == sorted(f"{s}.{f}" for s in stems for f in ("png", "svg"))
    for p in paths:
        assert p.parent == run / "figures" and p.stat().st_size > 0
        if p.suffix == ".svg":
            ET.parse(p)
    svg = (run / "figures" / "embeddings.svg").read_text()
    assert "2-D MNIST features" in svg and "natural (top) vs adversarial (bottom)" in svg
    assert "TanhConv (adversarial)" in (run / "figures" / "eps-pgd-linf-s10.svg").read_text()


def test_load_run_tolerates_missing_and_broken_parts(tmp_path):
    root = tmp_path / "partial"
    d = root / "models" / "only"
    _write(d / "sweep-pgd-linf.json", {"attack": "pgd-linf", "eps": [0, 0.1], "robust_accuracy": [0.9, 0.4]})
    (d / "lipschitz.json").write_text("{not json")
    np.savez(d / "embedding.npz", features=np.zeros((5, 3)), labels=np.zeros(5))
    run = load_run(root)
    assert run["summary"] == {} and run["transfer"] is None and run["dataset"] is None
    m = run["models"]["only"]
    assert m["train"] is None and m["lipschitz"] is None and m["embedding"] is None
    assert list(m["sweeps"]) == ["pgd-linf"]
    assert len(run["problems"]) == 2
    paths = redraw_run(root, formats=["png"])
    assert [p.name for p in paths] == ["eps-pgd-linf.png"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_run(empty)["models"] == {} and redraw_run(empty) == []
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        load_run(tmp_path / "missing")


def test_natural_only_run_uses_single_row_embedding(tmp_path):
    root = tmp_path / "nat"
    _write(root / "summary.json", {"dataset": "mnist", "models": {"a": {"label": "Baseline", "training": "natural"},
                                                                  "b": {"label": "TanhConv", "training": "natural"}}})
    for i, n in enumerate("ab"):
        p = _panel(n, 1.0, i)
        (root / "models" / n).mkdir(parents=True)
        np.savez(root / "models" / n / "embedding.npz", features=p["features"], labels=p["labels"])
    (path,) = redraw_run(root, formats=("svg",))
    text = path.read_text()
    assert "2-D MNIST features \u2014 natural training" in text and "TanhConv" in text


def test_cli_plot_subcommand(tmp_path, capsys):
    run = _make_run(tmp_path / "run")
    parser = argparse.ArgumentParser(prog="rbdc")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plot", str(run), "--format", "png"])
    assert args.func(args) == 0
    out = capsys.readouterr().out.split()
    assert len(out) == 6 and all(p.endswith(".png") and Path(p).is_file() for p in out)
    missing = parser.parse_args(["plot", str(tmp_path / "nope")])
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        missing.func(missing)


def test_plots_never_import_pyplot_or_torchvision():
    import subprocess

    code = ("import sys, robustbench_dc.plots, robustbench_dc.cli; "
            "bad = [m for m in ('matplotlib.pyplot', 'torchvision') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
