"""The rbdc command: listings work, user errors are one line with exit code 2 (internal errors keep their
traceback), flags mean the same in every command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from robustbench_dc.cli import main
from robustbench_dc.evaluation.masking import FLAG_NAMES


def test_operators_list_shows_the_family(capsys):
    assert main(["operators", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("sphere", "ball", "tanh", "linear", "seg", "log", "mix", "cos", "sigmoid", "sqcos", "separable"):
        assert name in out


def test_output_piped_into_a_reader_that_stops_ends_quietly():
    """``rbdc operators list | head -1``: the reader closes the pipe before rbdc writes; rbdc stops with
    the shell's SIGPIPE status and no traceback (nor a failed flush at interpreter exit)."""
    proc = subprocess.Popen([sys.executable, "-m", "robustbench_dc", "operators", "list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the interpreter has even started: every write meets a closed pipe
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err


def test_a_broken_pipe_that_is_not_stdout_is_still_an_error(monkeypatch, capsys):
    from robustbench_dc.cli import operators as operators_cli

    def fails(args):
        raise BrokenPipeError("a worker's pipe")

    monkeypatch.setattr(operators_cli, "cmd_operators_list", fails)
    with pytest.raises(BrokenPipeError, match="worker"):
        main(["operators", "list"])


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
    # the command main() was given (not sys.argv, which is pytest's here)
    assert payload["provenance"]["command"].startswith("rbdc evaluate --arch mnist2d --dataset mnist --operator")
    assert len(payload["whitebox"]["flags"]) == len(FLAG_NAMES)


def test_train_with_an_unknown_recipe_is_a_one_line_error(tmp_path, capsys):
    code = main(["train", "--arch", "mnist2d", "--dataset", "mnist", "--recipe", "nope", "--out", str(tmp_path)])
    assert code == 2
    assert "recipe: unknown 'nope'" in capsys.readouterr().err


def test_param_overrides_a_card_parameter():
    from robustbench_dc.zoo import resolve_model

    choice = resolve_model("mnist2d-tanh-mnist", params={"width": 0.125, "rho": 0.5}, pretrained=False)
    assert choice.model.info["arch_params"]["width"] == 0.125
    assert choice.model.info["operator"]["params"]["rho"] == 0.5
    assert (choice.name, choice.dataset, choice.checkpoint) == ("mnist2d-tanh-mnist", "mnist", None)


# ----------------------------------------------------------------------------- errors


def test_an_internal_value_error_keeps_its_traceback(monkeypatch, capsys):
    import robustbench_dc.cli.zoo as zoo_cmd
    from robustbench_dc.errors import UsageError

    def bug(args):
        raise ValueError("an internal bug")

    monkeypatch.setattr(zoo_cmd, "cmd_zoo_list", bug)
    with pytest.raises(ValueError, match="an internal bug"):  # propagates: Python prints the traceback
        main(["zoo", "list"])
    assert "rbdc: error" not in capsys.readouterr().err

    def user_mistake(args):
        raise UsageError("--flag: wrong\n  twice")

    monkeypatch.setattr(zoo_cmd, "cmd_zoo_list", user_mistake)
    assert main(["zoo", "list"]) == 2
    assert capsys.readouterr().err == "rbdc: error: --flag: wrong twice\n"
    with pytest.raises(UsageError):  # -v: the traceback of a user error too
        main(["zoo", "list", "-v"])


def test_an_internal_error_in_a_subprocess_prints_a_traceback():
    code = ("import sys, robustbench_dc.cli as cli, robustbench_dc.cli.data as d\n"
            "def bug(args): raise TypeError('internal')\n"
            "d.cmd_data_list = bug\n"
            "sys.exit(cli.main(['data', 'list']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "TypeError: internal" in proc.stderr


def test_user_facing_errors_are_user_errors_and_keep_their_builtin_bases():
    from robustbench_dc.attacks import AttackConfigError, BackendMissingError
    from robustbench_dc.data import DataError
    from robustbench_dc.errors import InvalidParameterError, MissingFileError, UsageError, UserError
    from robustbench_dc.operators import UnknownOperatorError
    from robustbench_dc.protocol import ProtocolError
    from robustbench_dc.reproduce import ReportError
    from robustbench_dc.results import ResultsStoreError
    from robustbench_dc.training import RecipeError
    from robustbench_dc.zoo import CardError, CheckpointError

    bases = {DataError: RuntimeError, CardError: ValueError, UnknownOperatorError: ValueError,
             ProtocolError: ValueError, RecipeError: ValueError, AttackConfigError: ValueError,
             BackendMissingError: ImportError, ReportError: ValueError, ResultsStoreError: ValueError,
             CheckpointError: RuntimeError, UsageError: ValueError, InvalidParameterError: ValueError,
             MissingFileError: FileNotFoundError}
    for cls, base in bases.items():
        assert issubclass(cls, UserError) and issubclass(cls, base), cls
    assert not issubclass(UserError, ValueError)


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--arch", "mnist2d", "--dataset", "mnist", "--param", "width"], "--param: expected KEY=VALUE"),
    (["evaluate", "--arch", "mnist2d", "--data", "mnist-sample"], "an architecture needs the dataset"),
    (["evaluate", "--model", "mnist2d-tanh-mnist", "--arch", "mnist2d"], "not both"),
    (["evaluate", "--model", "mnist2d-tanh-mnist", "--dataset", "cifar10", "--untrained"], "is built for mnist"),
    (["evaluate", "--arch", "mnist2d", "--dataset", "mnist", "--data", "mnist-sample", "--attack", "nope"],
     "attack config: unknown name 'nope'"),
    (["evaluate", "--arch", "mnist2d", "--dataset", "mnist", "--checkpoint", "no-such.pt"],
     "checkpoint: no-such.pt not found"),
    (["evaluate", "--arch", "mnist2d", "--dataset", "mnist", "--data", "mnist-sample", "--eps", "-1"],
     "eps: must be > 0"),
    (["evaluate", "--arch", "vgg99", "--dataset", "mnist"], "arch: unknown 'vgg99'"),
    (["evaluate", "--arch", "mnist2d", "--dataset", "mnist", "--operator", "tanh+cos", "--param", "rho=-1"],
     "rho: must be > 0"),
    (["train", "--arch", "mnist2d", "--dataset", "mnist", "--recipe", "mnist-fast", "--out", "x", "--set", "epochs"],
     "--set: expected"),
    (["lipschitz", "--arch", "mnist2d", "--data", "mnist-sample"], "an architecture needs the dataset"),
    (["lipschitz", "--arch", "mnist2d", "--dataset", "mnist", "--n", "0"], "--n: must be >= 1"),
    (["plot", "no-such-run"], "run folder not found"),
])
def test_user_mistakes_are_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rbdc: error: ") and message in err, err


def test_a_bad_checkpoint_is_a_user_error(tmp_path, capsys):
    import torch

    from robustbench_dc.zoo import build_model

    wide = tmp_path / "wide.pt"
    torch.save(build_model("mnist2d", dataset="mnist", width=0.5).state_dict(), wide)
    (tmp_path / "junk.pt").write_text("not weights")
    for ckpt, message in ((wide, "does not fit the model"), (tmp_path / "junk.pt", "cannot read")):
        assert main(["evaluate", "--arch", "mnist2d", "--dataset", "mnist", "--param", "width=0.125",
                     "--checkpoint", str(ckpt)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


# ----------------------------------------------------------------------------- flags


_COMMANDS = [["operators", "list"], ["zoo", "list"], ["zoo", "show", "c"], ["data", "list"], ["data", "check", "m"],
             ["run", "p.yaml"], ["train", "--out", "o"], ["evaluate"], ["transfer", "--source", "a", "--target", "b"],
             ["lipschitz"], ["plot", "r"], ["leaderboard"], ["leaderboard", "show"],
             ["leaderboard", "submit", "op", "--protocol", "p"], ["reproduce"]]


@pytest.mark.parametrize("argv", _COMMANDS, ids=lambda a: "-".join(a[:2]))
def test_verbose_and_quiet_work_in_every_command_wherever_placed(argv):
    from robustbench_dc.cli import build_parser

    parser = build_parser()
    plain = parser.parse_args(argv)
    assert plain.verbose is False and plain.quiet is False
    for flags in (["-v"], ["--verbose"]):
        for where in (flags + argv, argv[:1] + flags + argv[1:], argv + flags):
            assert parser.parse_args(where).verbose is True, where
    for flag in ("--quiet", "--no-progress"):
        for where in ([flag] + argv, argv + [flag]):
            args = parser.parse_args(where)
            assert args.quiet is True and args.verbose is False, where


def test_dataset_is_the_models_and_data_the_evaluation_data_in_every_command():
    from robustbench_dc.cli import build_parser

    parser = build_parser()
    for command in (["train", "--out", "o"], ["evaluate"], ["lipschitz"]):
        args = parser.parse_args(command + ["--arch", "mnist2d", "--dataset", "mnist", "--data", "mnist-sample"])
        assert (args.dataset, args.data) == ("mnist", "mnist-sample"), command


def test_lipschitz_builds_the_model_for_dataset_and_evaluates_on_data(tmp_path):
    import json

    from robustbench_dc.data import load_dataset

    out = tmp_path / "lip.json"
    assert main(["lipschitz", "--arch", "mnist2d", "--dataset", "fashion-mnist", "--data", "mnist-sample",
                 "--param", "width=0.125", "-n", "4", "--no-clever", "--ball-steps", "1", "--ball-samples", "1",
                 "--iters", "5", "--norms", "l2", "--json", str(out), "--quiet"]) == 0
    d = json.loads(out.read_text())
    assert d["dataset"] == "mnist-sample" and d["data"]["n"] == 4
    assert d["model"]["info"]["dataset"] == "fashion-mnist"
    # the same provenance record as every other command's JSON (command, seed, data checksum, versions)
    assert d["provenance"]["seed"] == 0 and d["provenance"]["data_sha256"] == load_dataset("mnist-sample", "test",
                                                                                            n=4).checksum
    assert d["provenance"]["command"].startswith("rbdc lipschitz") and d["provenance"]["versions"]["torch"]


def test_evaluate_loads_the_checkpoint_the_card_records(tmp_path, capsys, monkeypatch):
    import hashlib
    import json

    import torch
    import yaml

    from robustbench_dc.data import load_dataset
    from robustbench_dc.zoo import build_model, resolve_model

    torch.manual_seed(123)
    trained = build_model("mnist2d", "baseline", dataset="mnist", width=0.125)
    with torch.no_grad():
        for p in trained.parameters():
            p.mul_(3.0)
    ckpt = tmp_path / "cards" / "checkpoints" / "mine.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save(trained.state_dict(), ckpt)
    card = {"name": "mine", "arch": "mnist2d", "operator": "baseline", "arch_params": {"width": 0.125},
            "dataset": "mnist", "recipe": "mnist-fast", "checkpoint": "checkpoints/mine.pt",
            "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()}
    (tmp_path / "cards" / "mine.yaml").write_text(yaml.safe_dump(card))
    monkeypatch.setenv("RBDC_MODELS", str(tmp_path / "cards"))

    choice = resolve_model("mine")
    assert choice.checkpoint == ckpt
    for (name, a), b in zip(choice.model.state_dict().items(), trained.state_dict().values()):
        assert torch.equal(a, b), name
    assert resolve_model("mine", pretrained=False).checkpoint is None

    ds = load_dataset("mnist-sample", "test", n=8)
    with torch.no_grad():
        expected = float((trained.eval()(ds.to_float()).argmax(1) == ds.labels).float().mean())
    out = tmp_path / "wb.json"
    assert main(["evaluate", "--model", "mine", "--data", "mnist-sample", "-n", "8", "--attack", "fgsm-linf",
                 "--no-masking", "--json", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["whitebox"]["clean_accuracy"] == pytest.approx(expected)

    card["sha256"] = "0" * 64
    (tmp_path / "cards" / "mine.yaml").write_text(yaml.safe_dump(card))
    capsys.readouterr()
    assert main(["evaluate", "--model", "mine", "--data", "mnist-sample", "-n", "8", "--quiet"]) == 2
    assert "has sha256" in capsys.readouterr().err
    ckpt.unlink()
    assert main(["evaluate", "--model", "mine", "--data", "mnist-sample", "-n", "8", "--quiet"]) == 2
    assert "not found" in capsys.readouterr().err


def test_one_key_value_parser():
    from robustbench_dc.errors import UsageError
    from robustbench_dc.params import parse_params

    assert parse_params(["rho=0.5", "eps=1e-3", "widths=[8, 16]", "weighted=none", "learnable_rho=true",
                         "magnitude=tanh", "blocks=007", "rho=0.25", "adversarial.eps=0.2"]) == {
        "rho": 0.25, "eps": 0.001, "widths": [8, 16], "weighted": None, "learnable_rho": True,
        "magnitude": "tanh", "blocks": 7, "adversarial.eps": 0.2}
    assert parse_params(None) == {}
    for bad in ("rho", "=1", "rho=", "widths=[8"):
        with pytest.raises(UsageError, match="--set"):
            parse_params([bad], what="--set")
