"""Protocol runner: end to end on tiny synthetic data, caching, kill-and-resume, clear errors, submission."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from robustbench_dc.cli import main
from robustbench_dc.protocol import run_protocol

from synthetic import write_learnable_mnist

REPO = Path(__file__).resolve().parents[1]


RECIPE = {"base": "mnist-fast", "epochs": 3, "batch_size": 32, "optimizer": {"lr": 0.01}}


def _protocol(tmp: Path, **changes) -> dict:
    data = write_learnable_mnist(tmp / "data")
    proto = {
        "name": "tiny",
        "seed": 3,
        "dataset": {"name": "mnist", "data_dir": str(data), "n_train": 256, "n_test": 48},
        "models": [
            {"name": "base", "arch": "mnist2d", "operator": "baseline", "params": {"width": 0.125}, "recipe": RECIPE},
            {"name": "tanh", "arch": "mnist2d", "operator": "tanh+cos", "params": {"width": 0.125, "rho": 2.0},
             "recipe": RECIPE},
            {"name": "src", "arch": "mnist2d", "operator": "baseline", "params": {"width": 0.125}, "seed": 11,
             "role": "source", "recipe": {"base": "mnist-fast", "epochs": 1}},
        ],
        "evaluation": {"attacks": ["fgsm-linf", {"config": "pgd-linf", "steps": 3}],
                       "transfer": {"sources": ["src"], "targets": "all", "attacks": ["fgsm-linf"]},
                       "sweeps": [{"attack": "fgsm-linf", "eps": [0.3, 0.1]}], "batch_size": 48},
        "lipschitz": {"n": 8, "norms": ["l2", "linf"]},
        "figures": ["embeddings", "eps_curves", "transfer", "lipschitz", "training"],
    }
    proto.update(changes)
    return proto


def _write(tmp: Path, proto: dict, name: str = "tiny.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(proto, sort_keys=False))
    return path


def _results(summary: dict) -> dict:
    """The numbers of a run (no timestamps, paths or run-specific fields)."""
    keep = ("clean_accuracy", "whitebox", "worst_case", "transfer", "lipschitz", "checkpoint_sha256")
    return {name: {k: m.get(k) for k in keep} for name, m in summary["models"].items()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    path = _write(tmp, _protocol(tmp))
    result = run_protocol(path, tmp / "out", progress=False)
    return tmp, path, result


def test_protocol_runs_end_to_end(finished_run):
    tmp, _, result = finished_run
    out = tmp / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["models"]) == {"base", "tanh", "src"}
    tanh = summary["models"]["tanh"]
    assert tanh["label"] == "TanhConv" and tanh["training"] == "natural"
    assert set(tanh["whitebox"]) == {"fgsm-linf-eps0.3000-s1", "pgd-linf-eps0.3000-s3"}
    assert 0.0 <= tanh["worst_case"]["robust_accuracy"] <= min(r["robust_accuracy"] for r in tanh["whitebox"].values())
    assert set(tanh["transfer"]) == {"src"} and set(tanh["lipschitz"]) == {"grad-norm-l2", "grad-norm-linf"}
    assert len(tanh["flags"]) >= 6
    assert summary["models"]["base"]["clean_accuracy"] > 0.5  # the stripes are learnable
    assert summary["data_sha256"] and summary["versions"]["torch"]
    assert summary["command"] is None  # a library call: no command line (never read from sys.argv)
    sweep = json.loads((out / "models" / "tanh" / "sweep-fgsm-linf.json").read_text())
    assert sweep["eps"] == [0.1, 0.3]
    emb = __import__("numpy").load(out / "models" / "tanh" / "embedding.npz")
    assert emb["features"].shape == (48, 2)
    for fig in ("embeddings", "transfer", "lipschitz", "training"):
        assert list((out / "figures").glob(f"{fig}*.png")), fig
    assert "| tanh (TanhConv)" in result.leaderboard and "| base (Baseline)" in result.leaderboard
    assert (out / "leaderboard.html").is_file()
    with sqlite3.connect(out / "results.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM models").fetchone()[0] == 3


def test_rerunning_does_no_work_and_a_change_reruns_only_what_depends_on_it(finished_run):
    tmp, path, _ = finished_run
    again = run_protocol(path, tmp / "out", progress=False)
    assert again.executed == [] and len(again.cached) > 10
    proto = yaml.safe_load(path.read_text())
    proto["models"][1]["params"]["rho"] = 0.5
    changed = run_protocol(_write(tmp, proto, "changed.yaml"), tmp / "out", progress=False)
    assert "train:tanh" in changed.executed and "whitebox:tanh" in changed.executed
    assert not any(j.endswith(":base") or j.endswith(":src") for j in changed.executed)
    assert {"transfer", "figures", "report"} <= set(changed.executed)


def _keys(path: Path) -> dict[str, str]:
    from robustbench_dc.protocol import plan_protocol

    return {j.id: j.key for j in plan_protocol(path).jobs}


def test_job_keys_cover_the_package_code(tmp_path, monkeypatch):
    """A run folder never serves results computed by other code: an edit of the package changes
    every job's key (the version number alone does not change in a checkout)."""
    from robustbench_dc.protocol import plan as plan_mod
    from robustbench_dc.provenance import code_fingerprint, package_versions

    path = _write(tmp_path, _protocol(tmp_path))
    before = _keys(path)
    assert _keys(path) == before  # deterministic
    assert len(code_fingerprint()) == 64 and package_versions()["robustbench_dc_code"] == code_fingerprint()[:16]
    monkeypatch.setattr(plan_mod, "code_fingerprint", lambda: "0" * 64)
    after = _keys(path)
    assert set(after) == set(before) and all(after[j] != before[j] for j in before)


def test_editing_a_user_operator_file_reruns_only_the_jobs_that_use_it(tmp_path):
    """The key of a model built from ``file.py:Name`` includes the file's hash, as the code that runs
    sees it: an edit reaches the key when the file is imported again (a new process), never while the
    old module is still the one in use."""
    from robustbench_dc.operators import registry

    ops = tmp_path / "my_ops.py"
    ops.write_text("from robustbench_dc.operators import DecoupledConv2d\n\n\n"
                   "class WideTanhConv(DecoupledConv2d):\n"
                   "    def __init__(self, *args, **kwargs):\n"
                   "        super().__init__(*args, **{'magnitude': 'tanh', 'rho': 2.0, **kwargs})\n")
    proto = _protocol(tmp_path)
    proto["models"][1] = {"name": "mine", "arch": "mnist2d", "operator": "my_ops.py:WideTanhConv",
                          "params": {"width": 0.125}, "recipe": RECIPE}
    path = _write(tmp_path, proto)
    before = _keys(path)
    ops.write_text(ops.read_text() + "\n# tuned\n")
    assert _keys(path) == before  # the module in memory is the old file's
    del sys.modules[registry._module_name_for(ops.resolve())]  # as a new process would import it
    after = _keys(path)
    changed = {j for j in before if after[j] != before[j]}
    assert {"train:mine", "whitebox:mine", "transfer", "figures", "report"} <= changed
    assert not any(j.endswith(":base") or j.endswith(":src") for j in changed)


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    path = _write(tmp_path, _protocol(tmp_path))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "train:tanh" in out and "to run" in out
    assert not (tmp_path / "out").exists()


def _run_cli(path: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "robustbench_dc", "run", str(path), "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` is true; False if it finished first."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("timed out waiting for the kill point")


def test_kill_and_resume_gives_the_same_results(finished_run, tmp_path):
    _, path, reference = finished_run
    out = tmp_path / "out"
    points = [
        lambda: any(out.glob(".work/train-base-*/checkpoint-last.pt")),  # inside training
        lambda: (out / ".jobs" / "whitebox__base.json").exists(),         # between jobs
        lambda: (out / ".jobs" / "embedding__tanh.json").exists(),
        lambda: (out / "figures").is_dir(),                               # while drawing
    ]
    kills = 0
    for ready in points:
        kills += _kill_when(_run_cli(path, out), ready)
    assert kills >= 3
    final = _run_cli(path, out)
    assert final.wait(timeout=600) == 0, final.stdout.read().decode()
    resumed = json.loads((out / "summary.json").read_text())
    assert _results(resumed) == _results(reference.summary)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    with sqlite3.connect(out / "results.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


MALFORMED = {
    "wrong-type": (lambda p: p["dataset"].update(n_test="many"), r"dataset.n_test: Input should be a valid integer"),
    "unknown-operator": (lambda p: p["models"][1].update(operator="quux+cos"),
                         r"models\[1\].operator: operator: unknown 'quux\+cos'; known: baseline"),
    "unknown-attack": (lambda p: p["evaluation"].update(attacks=["fgsm-linf", "nope-linf"]),
                       r"evaluation.attacks\[1\]: attack config: unknown name 'nope-linf'"),
    "negative-eps": (lambda p: p["evaluation"].update(attacks=["fgsm-linf", "bim-linf", {"name": "pgd", "eps": -1}]),
                     r"evaluation.attacks\[2\].eps: must be > 0, got -1"),
    "missing-dataset": (lambda p: p.pop("dataset"), r"tiny.yaml: dataset: Field required"),
    "unknown-key": (lambda p: p.update(colour="red"), r"tiny.yaml: colour: unknown key, got 'red'"),
    "unknown-model-param": (lambda p: p["models"][0]["params"].update(widht=2),
                            r"models\[0\].params: .*widht"),
    "transfer-to-nowhere": (lambda p: p["evaluation"]["transfer"].update(sources=["ghost"]),
                            r"evaluation.transfer.sources\[0\]: unknown model 'ghost'"),
    "prefix-too-long": (lambda p: p["evaluation"]["attacks"].append({"config": "bim-linf", "n_test": 49}),
                        r"evaluation.attacks\[2\].n_test: must be an integer in \[1, dataset.n_test=48\], got 49"),
    "prefix-not-int": (lambda p: p["evaluation"]["attacks"].append({"config": "bim-linf", "n_test": True}),
                       r"evaluation.attacks\[2\].n_test: must be an integer"),
    "unknown-masking-setting": (lambda p: p["evaluation"].update(masking={"budget_tol": 0.1, "colour": 1}),
                                r"evaluation.masking: .*unknown setting\(s\) colour"),
    "bad-binarization-setting": (lambda p: p["evaluation"].update(binarization_test={"gap": 2}),
                                 r"evaluation.binarization_test: .*gap: a number in \[0, 1\)"),
    "db-escapes": (lambda p: p.update(leaderboard={"db": "../x.sqlite"}),
                   r"leaderboard.db: '../x.sqlite' is outside the folder the run is started in .*pass --db"),
    "prefix-in-transfer": (lambda p: p["evaluation"]["transfer"].update(attacks=[{"config": "fgsm-linf",
                                                                                  "n_test": 10}]),
                           r"evaluation.transfer.attacks\[0\].n_test: a test-set prefix is allowed only in "
                           r"evaluation.attacks"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_protocols_get_a_clear_error_and_nothing_is_written(case, tmp_path, capsys):
    import re

    proto = _protocol(tmp_path)
    mutate, pattern = MALFORMED[case]
    mutate(proto)
    path = _write(tmp_path, proto)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err), err
    assert all(line.startswith(f"rbdc: error: {path}") for line in err.strip().splitlines()), err
    assert "Traceback" not in err
    assert not out.exists()


def test_bad_yaml_and_several_errors_are_reported_together(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodels: [\n  - {name: a\n")
    assert main(["run", str(bad)]) == 2
    assert re.search(r"bad.yaml: invalid YAML: line \d+", capsys.readouterr().err)
    proto = _protocol(tmp_path)
    proto["colour"] = "red"
    proto["dataset"]["n_test"] = -5
    proto["evaluation"]["attacks"] = [{"name": "pgd", "eps": -1}]
    assert main(["run", str(_write(tmp_path, proto))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 2 and any("colour" in e for e in err) and any("n_test" in e for e in err)


import re  # noqa: E402  (used above)


def test_a_user_operator_file_is_submitted_to_the_leaderboard(tmp_path, capsys):
    # The README's worked example, copied where a user would keep it.
    (tmp_path / "my_ops.py").write_text((REPO / "examples" / "my_ops.py").read_text())
    proto = _protocol(tmp_path)
    proto["models"] = proto["models"][:1]
    proto["evaluation"] = {"attacks": ["fgsm-linf"], "batch_size": 48}
    proto["lipschitz"] = None
    proto["figures"] = ["training"]
    proto["submission"] = {"arch": "mnist2d", "params": {"width": 0.125}, "recipe": {"base": "mnist-fast", "epochs": 1}}
    path = _write(tmp_path, {k: v for k, v in proto.items() if v is not None})
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = main(["leaderboard", "submit", "my_ops.py:SoftSatConv", "--protocol", str(path), "--out",
                     str(tmp_path / "out")])
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "SoftSatConv" in out and "base (Baseline)" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["command"] == (f"rbdc leaderboard submit my_ops.py:SoftSatConv --protocol {path} "
                                  f"--out {tmp_path / 'out'}")  # the command line main() was given
    entry = summary["models"]["SoftSatConv"]
    fgsm = entry["whitebox"]["fgsm-linf-eps0.3000-s1"]
    # the submitted operator was trained and attacked: a robust accuracy no higher than its clean accuracy
    assert entry["checkpoint_sha256"] and entry["operator"].endswith("SoftSatConv")
    assert 0.0 <= fgsm["robust_accuracy"] <= entry["clean_accuracy"] and fgsm["n"] == proto["dataset"]["n_test"]


def test_a_protocol_runs_the_published_autoattack_with_its_breakdown(tmp_path):
    proto = _protocol(tmp_path, models=[{"name": "base", "arch": "mnist2d", "operator": "baseline",
                                         "params": {"width": 0.125}, "recipe": {"base": "mnist-fast", "epochs": 1}}],
                      evaluation={"attacks": ["autoattack"], "batch_size": 16, "masking": False},
                      lipschitz=None, figures=[])
    proto["dataset"]["n_test"] = 16
    run_protocol(_write(tmp_path, proto), tmp_path / "out", progress=False)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    (label, entry), = summary["models"]["base"]["whitebox"].items()
    assert label == "autoattack-linf-eps0.3000"
    parts = entry["components"]
    assert [p["component"] for p in parts] == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    assert parts[1]["budget"] == {"iterations": 100, "restarts": 1}
    assert parts[-1]["robust_accuracy"] == entry["robust_accuracy"]
    from robustbench_dc.results import ResultsStore, render_leaderboard

    with ResultsStore(tmp_path / "out" / "results.sqlite") as store:
        board = json.loads(render_leaderboard(store.entries(), fmt="json"))  # `rbdc leaderboard show` JSON
    rows = board if isinstance(board, list) else board["entries"]
    assert rows[0]["components"][label] == parts


def test_a_slow_attack_runs_on_a_prefix_of_the_test_set(tmp_path):
    proto = _protocol(tmp_path, models=[{"name": "base", "arch": "mnist2d", "operator": "baseline",
                                         "params": {"width": 0.125}, "recipe": {"base": "mnist-fast", "epochs": 1}}],
                      evaluation={"attacks": ["fgsm-linf", {"config": "pgd-linf", "steps": 2, "n_test": 8}],
                                  "batch_size": 5},
                      lipschitz=None, figures=[])
    proto["dataset"]["n_test"] = 16
    run_protocol(_write(tmp_path, proto), tmp_path / "out", progress=False)
    wb = json.loads((tmp_path / "out" / "models" / "base" / "whitebox.json").read_text())
    fgsm, pgd = wb["results"]
    assert (fgsm["n"], pgd["n"]) == (16, 8)
    assert pgd["clean_correct"] == fgsm["clean_correct"][:8]
    (worst,) = wb["worst"].values()
    robust = [a and b for a, b in zip(fgsm["robust_correct"][:8], pgd["robust_correct"])]
    assert worst["n"] == 8 and worst["robust_accuracy"] == sum(robust) / 8
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["models"]["base"]["whitebox"]["pgd-linf-eps0.3000-s2"]["n"] == 8
    # what the recipe's "auto" precision and compile resolved to is recorded beside the recipe
    from robustbench_dc.training.loop import resolve_precision

    ran = summary["models"]["base"]["trained_with"]
    assert ran == {"precision": "bf16" if resolve_precision("auto", torch.device("cpu")) else "fp32", "compiled": False}
    # the runner records each job's wall time and the machine beside the results
    assert set(summary["job_seconds"]) == {"train:base", "whitebox:base"}
    assert all(v > 0 for v in summary["job_seconds"].values())
    assert summary["machine"]["usable_cores"] >= 1 and summary["machine"]["cpu_model"]


def test_a_resumed_run_keeps_the_start_of_its_first_job(tmp_path):
    from robustbench_dc.protocol.execute import _first_start

    jobs = tmp_path / ".jobs"
    jobs.mkdir()
    (jobs / "a.json").write_text(json.dumps({"finished": "2026-01-01T10:05:00+00:00", "seconds": 240.0}))
    (jobs / "b.json").write_text(json.dumps({"finished": "2026-01-01T11:00:00+00:00", "seconds": 30.0}))
    assert _first_start(tmp_path, "2026-01-01T10:30:00+00:00") == "2026-01-01T10:01:00+00:00"
    assert _first_start(tmp_path, "2026-01-01T09:00:00+00:00") == "2026-01-01T09:00:00+00:00"


def test_a_protocol_runs_the_binarization_test_and_the_leaderboard_shows_it(tmp_path):
    proto = _protocol(tmp_path, models=[{"name": "base", "arch": "mnist2d", "operator": "baseline",
                                         "params": {"width": 0.125}, "recipe": {"base": "mnist-fast", "epochs": 1}}],
                      evaluation={"attacks": [{"config": "pgd-linf", "steps": 3}], "batch_size": 16,
                                  "binarization_test": {"n_points": 4, "n_inner": 40},
                                  "masking": {"budget_check": False, "unstable_draws": 2}},
                      lipschitz=None, figures=[])
    proto["dataset"]["n_test"] = 16
    run_protocol(_write(tmp_path, proto), tmp_path / "out", progress=False)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    entry = summary["models"]["base"]
    (label, pgd), = entry["whitebox"].items()
    b = pgd["binarization"]
    assert b["attack"] == label and b["n_points"] == 4 and b["settings"]["n_inner"] == 40
    assert 0 <= b["construction_failure_rate"] <= 1
    assert set(entry["flags"]) >= {"silent-success", "non-monotone-eps-curve", "dynamic-forward"}
    assert "budget-sensitivity" not in entry["flags"]  # switched off in the protocol
    from robustbench_dc.results import ResultsStore, render_leaderboard

    with ResultsStore(tmp_path / "out" / "results.sqlite") as store:
        entries = store.entries()
    assert entries[0].binarization[label] == b
    md = render_leaderboard(entries, fmt="md")
    assert f"{label} binarization test: attack success (%)" in md
    rec = dict(zip(*csv.reader(io.StringIO(render_leaderboard(entries, fmt="csv")))))
    assert int(rec[f"binarization:{label}:n_points"]) == 4
    assert int(rec[f"binarization:{label}:n_valid"]) == b["n_valid"]
    assert float(rec[f"binarization:{label}:construction_failure_rate"]) == b["construction_failure_rate"]


@pytest.mark.parametrize("output", ["../../../../tmp/rbdc-escaped", "/tmp/rbdc-escaped", "link/out"])
def test_a_protocol_cannot_write_outside_the_folder_it_is_run_in(output, tmp_path, capsys, monkeypatch):
    start = tmp_path / "start"
    start.mkdir()
    (start / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    proto = _protocol(tmp_path)
    proto["output"] = output
    path = _write(tmp_path, proto)
    monkeypatch.chdir(start)
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"output: {output!r} is outside the folder the run is started in" in err and "pass --out" in err
    assert "Traceback" not in err
    assert not any((tmp_path / "elsewhere").iterdir()) and not Path("/tmp/rbdc-escaped").exists()
    # the same place chosen on the command line is the user's explicit choice
    assert main(["run", str(path), "--dry-run", "--out", str(tmp_path / "elsewhere" / "run")]) == 0
    proto["output"] = "runs/inside"
    assert main(["run", str(_write(tmp_path, proto)), "--dry-run"]) == 0


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_holds_it(tmp_path, capsys):
    from robustbench_dc.protocol.execute import run_lock

    proto = _protocol(tmp_path, models=[{"name": "base", "arch": "mnist2d", "operator": "baseline",
                                         "params": {"width": 0.125}, "recipe": {"base": "mnist-fast", "epochs": 1}}],
                      evaluation={"attacks": ["fgsm-linf"], "batch_size": 16}, lipschitz=None, figures=[])
    path = _write(tmp_path, proto)
    out = tmp_path / "out"
    out.mkdir()
    with run_lock(out):  # what a first `rbdc run` holds for its whole duration
        assert main(["run", str(path), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"run folder {out} is in use by another rbdc run (pid {os.getpid()})" in err
        assert "Traceback" not in err and not (out / "summary.json").exists()
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the refused run wrote nothing


def test_the_ray_executor_without_ray_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    path = _write(tmp_path, _protocol(tmp_path))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert 'the ray executor needs Ray: pip install "robustbench-dc[ray]"' in err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_the_protocol_reference_page_is_generated_from_the_schema() -> None:
    """docs/protocols.md lists every key with its type, default and an example; regenerate it with
    `python scripts/protocol_reference.py` when the schema changes."""
    from robustbench_dc.protocol.schema import protocol_reference

    page = (Path(__file__).resolve().parents[1] / "docs" / "protocols.md").read_text()
    assert page == protocol_reference(), "docs/protocols.md is stale: run python scripts/protocol_reference.py"
    for key in ("evaluation.sweeps", "evaluation.sweeps[].eps", "models[].recipe", "resources.KIND.cpus",
                "leaderboard.metric", "submission.arch", "lipschitz.clever_n"):
        assert f"| `{key}` |" in page
