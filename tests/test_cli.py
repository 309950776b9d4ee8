"""The rbdc command: listings work, user errors are one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys

from robustbench_dc.cli import main


def test_operators_list_shows_the_family(capsys):
    assert main(["operators", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("sphere", "ball", "tanh", "linear", "seg", "log", "mix", "cos", "sigmoid", "sqcos", "separable"):
        assert name in out


def test_zoo_list_shows_the_cards(capsys):
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    assert "cnn9-tanh-cifar10" in out and "mnist2d-baseline-mnist" in out


def test_nonexistent_dataset_folder_is_a_one_line_error_with_exit_code_2(tmp_path):
    missing = tmp_path / "no-such-folder"
    proc = subprocess.run([sys.executable, "-m", "robustbench_dc", "data", "check", "mnist", "--data-dir",
                           str(missing)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rbdc: error:") and str(missing) in lines[0]
    assert "Traceback" not in proc.stderr


def test_unknown_operator_error_lists_known_names(capsys):
    assert main(["zoo", "show", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "known: cnn9-ball-cifar10" in err


def test_train_evaluate_and_transfer_from_the_command_line(tmp_path, capsys):
    import json

    common = ["--data", "mnist-sample", "--param", "width=0.125"]
    for op in ("baseline", "tanh+cos"):
        code = main(["train", "--arch", "mnist2d", "--dataset", "mnist", "--operator", op, *common,
                     "--recipe", "mnist-fast", "--epochs", "1", "--n-train", "512", "--n-test", "64",
                     "--out", str(tmp_path / op), "--quiet"])
        assert code == 0 and (tmp_path / op / "model.pt").is_file()
    out = capsys.readouterr().out
    assert "epoch   1" in out and "sha256:" in out

    report = tmp_path / "wb.json"
    assert main(["evaluate", "--arch", "mnist2d", "--dataset", "mnist", "--operator", "tanh+cos", *common,
                 "--checkpoint", str(tmp_path / "tanh+cos" / "model.pt"), "-n", "32", "--attack", "fgsm-linf",
                 "--attack", "pgd-linf", "--steps", "3", "--json", str(report), "--quiet"]) == 0
    payload = json.loads(report.read_text())
    assert [r["attack"] for r in payload["whitebox"]["results"]] == ["fgsm-linf-eps0.3000-s1", "pgd-linf-eps0.3000-s3"]
    assert payload["provenance"]["data_sha256"] and payload["provenance"]["versions"]["torch"]
    assert len(payload["whitebox"]["flags"]) == 6


def test_train_with_an_unknown_recipe_is_a_one_line_error(tmp_path, capsys):
    code = main(["train", "--arch", "mnist2d", "--dataset", "mnist", "--recipe", "nope", "--out", str(tmp_path)])
    assert code == 2
    assert "recipe: unknown 'nope'" in capsys.readouterr().err


def test_param_overrides_a_card_parameter(tmp_path):
    import argparse

    from robustbench_dc.cli_engine import resolve_model

    ns = argparse.Namespace(model="mnist2d-tanh-mnist", arch=None, operator=None, dataset=None,
                            param=["width=0.125", "rho=0.5"], checkpoint=None)
    model = resolve_model(ns).model
    assert model.info["arch_params"]["width"] == 0.125
    assert model.info["operator"]["params"]["rho"] == 0.5
