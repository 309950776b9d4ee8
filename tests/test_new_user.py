"""What a new user meets first: answers that must be refusals, and mistakes that must be easy to fix
(issue 30). Each test failed on the code before the fix: a random network returned without a word,
an unknown key without a hint, one problem of a command line hiding the others, no estimate of a
run's time, a background log that stayed empty until a job ended, stale documents."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from robustbench_dc.cli import main

from synthetic import write_learnable_mnist

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
FAST = {"base": "mnist-fast", "epochs": 1, "batch_size": 32}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mnist")
    write_learnable_mnist(folder, n_train=64, n_test=16)
    return folder


def _protocol(data: Path, **changes: object) -> dict:
    p = {"name": "newuser", "seed": 0,
         "dataset": {"name": "mnist", "data_dir": str(data), "n_train": 64, "n_test": 16},
         "models": [{"name": "base", "arch": "mnist2d", "operator": "baseline", "params": {"width": 0.125},
                     "recipe": FAST}],
         "evaluation": {"attacks": ["fgsm-linf"]}, "figures": []}
    p.update(changes)
    return p


# ----------------------------------------------------------------------------- weights, never silent
def test_a_card_without_weights_is_refused_unless_an_untrained_network_is_asked_for(tmp_path, capsys,
                                                                                   monkeypatch) -> None:
    from robustbench_dc.zoo import CardError, load_model

    monkeypatch.setenv("RBDC_HOME", str(tmp_path))  # an empty cache: the CIFAR-10 cards have no weights
    with pytest.raises(CardError, match=r"'cnn9-sphere-cifar10': no trained weights yet; train them with "
                                        r"`rbdc zoo train cnn9-sphere-cifar10`.*pretrained=False"):
        load_model("cnn9-sphere-cifar10")
    assert load_model("cnn9-sphere-cifar10", pretrained=False).eval()(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    args = ["evaluate", "--model", "cnn9-sphere-cifar10", "--data", "mnist-sample", "-n", "8", "--attack", "fgsm",
            "--no-masking", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no trained weights" in err and "--untrained" in err
    # an MNIST card carries its weights: loaded, not a random network
    args = ["evaluate", "--model", "mnist2d-sphere-mnist", "--data", "mnist-sample", "-n", "8", "--attack", "fgsm",
            "--no-masking", "--quiet"]
    assert main(args) == 0 and "untrained" not in capsys.readouterr().out
    assert main([*args, "--untrained"]) == 0
    assert "(untrained: weights initialised from seed 0): first 8 test examples of mnist-sample" in \
        capsys.readouterr().out


# ----------------------------------------------------------------------------- did you mean
@pytest.mark.parametrize("edit, hint", [
    (lambda p: p["evaluation"].update(sweep=[]), "evaluation.sweep: unknown key (did you mean 'sweeps'?)"),
    (lambda p: p.update(figures=["embedings"]), "(did you mean 'embeddings'?)"),
    (lambda p: p["models"][0].update(operator="tahn+cos"), "unknown 'tahn+cos' (did you mean 'tanh+cos'?)"),
    (lambda p: p["models"][0].update(operator="sphereconvv"), "(did you mean 'sphereconv'?)"),
    (lambda p: p["models"][0].update(recipe="mnist-fats"), "unknown 'mnist-fats' (did you mean 'mnist-fast'?)"),
    (lambda p: p["models"][0].update(arch="mnist2", params={}), "unknown 'mnist2' (did you mean 'mnist2d'?)"),
    (lambda p: p["models"][0].update(card="mnist2d-tanh-mnst", arch=None, operator=None, params={}),
     "(did you mean 'mnist2d-tanh-mnist'?)"),
    (lambda p: p["evaluation"].update(attacks=["pgd-lnf"]), "unknown name 'pgd-lnf' (did you mean 'pgd-linf'?)"),
    (lambda p: p["evaluation"].update(attacks=[{"name": "pgd", "stepz": 3}]), "(did you mean 'steps'?)"),
])
def test_a_misspelt_name_or_key_gets_the_closest_known_one(edit, hint, data, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    proto = _protocol(data)
    edit(proto)
    proto["models"][0] = {k: v for k, v in proto["models"][0].items() if v is not None}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(proto, sort_keys=False))
    assert main(["run", "p.yaml", "--dry-run"]) == 2
    assert hint in capsys.readouterr().err


def test_nothing_close_gets_no_hint() -> None:
    from robustbench_dc._text import did_you_mean

    assert did_you_mean("zzzzzz", ["sweeps", "attacks"]) == ""
    assert did_you_mean("Sweeps", ["sweeps"]) == " (did you mean 'sweeps'?)"


# ----------------------------------------------------------------------------- every problem at once
def test_every_problem_of_a_command_line_is_reported_at_once(capsys) -> None:
    """With --model, a typo in --operator used to hide behind the dataset error."""
    code = main(["evaluate", "--model", "mnist2d-tanh-mnist", "--operator", "tahn+cos", "--dataset", "cifar10",
                 "--attack", "pgd-lnf", "--data", "mnist-smaple", "--untrained"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("rbdc: error: ") for line in lines) and len(lines) == 4, lines
    text = "\n".join(lines)
    for part in ("is built for mnist, got 'cifar10'", "did you mean 'tanh+cos'", "did you mean 'pgd-linf'",
                 "did you mean 'mnist-sample'"):
        assert part in text
    assert main(["train", "--model", "mnist2d-tanh-mnst", "--recipe", "mnist-fats", "--out", "x", "--data", "foo"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 3


# ----------------------------------------------------------------------------- dry runs say how long
def test_dry_runs_estimate_each_job_from_the_suites_own_measurements(data, tmp_path, capsys, monkeypatch,
                                                                     rbdc_home) -> None:
    from robustbench_dc.protocol import plan_protocol
    from robustbench_dc.protocol.estimate import estimate_jobs
    from robustbench_dc.runtime import machine_kind, timings_log

    monkeypatch.chdir(tmp_path)
    proto = _protocol(data, submission={"arch": "mnist2d", "params": {"width": 0.125}, "recipe": FAST})
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(proto, sort_keys=False))
    timings_log().unlink(missing_ok=True)
    assert main(["run", "p.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "train:base" in out and "no estimate: never measured" in out
    assert re.search(r"estimated time on this machine \(.*\): unknown for \d+ job\(s\) to run", out)
    # a run records each job's time; the next dry run (of a submission too) reads them
    assert main(["run", "p.yaml", "--quiet"]) == 0
    capsys.readouterr()
    records = [json.loads(line) for line in timings_log().read_text().splitlines()]
    assert {r["job"] for r in records} >= {"train:base", "whitebox:base", "report"}
    assert all(r["machine"] == machine_kind() and r["protocol"] == "newuser" for r in records)
    plan = plan_protocol("p.yaml")
    again = estimate_jobs(plan)
    train = next(r for r in records if r["job"] == "train:base")
    assert again["train:base"].seconds == pytest.approx(train["seconds"])
    assert again["train:base"].source == "measured on this machine (this protocol)"
    (tmp_path / "ops.py").write_text("from robustbench_dc.operators import DecoupledConv2d\n"
                                     "class MyOp(DecoupledConv2d):\n    pass\n")
    assert main(["leaderboard", "submit", "ops.py:MyOp", "--protocol", "p.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"train:MyOp +to run .*~\d+ s \(median of this plan's other 1 train job\(s\)\)", out), out
    assert re.search(r"train:base +cached", out)
    assert f"code this protocol runs besides the package's: {(tmp_path / 'ops.py').resolve()}" in out
    assert not (tmp_path / "runs" / "newuser" / "models" / "MyOp").exists()  # a dry run writes nothing


def test_the_bundled_protocols_come_with_measured_job_times() -> None:
    from robustbench_dc.protocol.estimate import bundled_timings
    from robustbench_dc.resources import resource_dir

    data = json.loads((resource_dir("protocols") / "timings.json").read_text())
    assert data["command"].startswith("python scripts/bundled_timings.py ")
    names = {r["protocol"] for r in data["runs"]}
    assert {"quickstart", "leaderboard-mnist", "table7-8-cpu"} <= names
    for run in data["runs"]:
        assert run["machine"] and run["command"] and run["versions"] and run["job_seconds"]
        sha = run["protocol_sha256"]
        if run["protocol"] in ("quickstart", "leaderboard-mnist"):  # measured with today's protocol file
            import hashlib

            assert hashlib.sha256((resource_dir("protocols") / f"{run['protocol']}.yaml").read_bytes()).hexdigest() \
                == sha
    assert len(bundled_timings()) == sum(len(r["job_seconds"]) for r in data["runs"])


# ----------------------------------------------------------------------------- background logs
def test_a_run_without_a_terminal_logs_each_job_as_it_starts_and_ends(data, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(_protocol(data), sort_keys=False))
    assert main(["run", "p.yaml", "--quiet"]) == 0  # capsys: stdout is not a terminal
    lines = capsys.readouterr().out.splitlines()
    started = [i for i, line in enumerate(lines) if re.match(r"\d\d:\d\d:\d\d \[ 1/\d+\] train base +started$", line)]
    done = [i for i, line in enumerate(lines) if re.match(r"\d\d:\d\d:\d\d \[ 1/\d+\] train base +done in ", line)]
    assert len(started) == 1 and len(done) == 1 and started[0] < done[0]


# ----------------------------------------------------------------------------- documents
def test_the_documents_agree_with_the_measurements_they_cite() -> None:
    readme = (REPO / "README.md").read_text()
    assert "RBDC_DATA=../shared/data" not in readme  # a path that only resolved on the project's machines
    quick = re.search(r"runs the quickstart\s+protocol, offline, in (.*?) on (.*?):", readme, re.S)
    assert quick and "measured" in quick.group(2) and re.search(r"AMD EPYC|Xeon", quick.group(2))
    table = (REPO / "protocols" / "README.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| `table7-8-cpu.yaml`"))
    cited = re.search(r"`(benchmarks/results/[^`]+phases[^`]+\.json)`", row)
    assert cited, row
    phases = json.loads((REPO / cited.group(1)).read_text())
    minutes = sum(phases["job_seconds"].values()) / 60
    assert f"{minutes:.1f} minutes" in row and "over its" not in row
    assert f"{minutes:.1f}" in readme


def test_the_readme_is_a_guide_of_at_most_300_lines_whose_links_resolve() -> None:
    """The README is the user's guide; everything else lives in docs/ (every relative link resolves)."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).exists(), f"{page.name}: broken link {target}"
