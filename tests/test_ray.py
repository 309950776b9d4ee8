"""The Ray executor: the same run folder, results database and figures as the local executor; a failing
job is reported while the others complete; a killed driver resumes. A local Ray with 2 CPUs, started here."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_protocol import _protocol, _results, _write

from robustbench_dc.cli import main
from robustbench_dc.protocol import JobsFailed, job_resources, parse_resources, plan_protocol, run_protocol
from robustbench_dc.protocol.ray_executor import ray_options

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install '.[ray]')")

REPO = Path(__file__).resolve().parents[1]
FAST = {"base": "mnist-fast", "epochs": 1, "batch_size": 32, "optimizer": {"lr": 0.01}}
#: per table, the columns that differ between two runs of the same protocol (times, paths, raw summary)
RUN_SPECIFIC = {"runs": {"started", "finished", "ingested", "summary", "command"}, "models": {"checkpoint"}}


def _small(tmp: Path, **changes) -> dict:
    proto = _protocol(tmp)
    for m in proto["models"]:
        m["recipe"] = FAST
    proto["evaluation"].pop("sweeps")
    proto["figures"] = ["embeddings", "transfer", "lipschitz", "training"]
    proto.update(changes)
    return proto


def _db_rows(path: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        out = {}
        for t in tables:
            cur = db.execute(f"SELECT * FROM {t}")  # noqa: S608 - names read from the database itself
            keep = [i for i, d in enumerate(cur.description) if d[0] not in RUN_SPECIFIC.get(t, set())]
            out[t] = sorted(tuple(row[i] for i in keep) for row in cur.fetchall())
    return out


def _figures(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "figures").glob("*.png"))}


@pytest.fixture(scope="module")
def ray_2cpus():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, one_thread):
    """The reference: the same protocol with the local executor (one thread, as each 1-CPU Ray task)."""
    tmp = tmp_path_factory.mktemp("ray")
    path = _write(tmp, _small(tmp))
    return path, run_protocol(path, tmp / "local", progress=False)


def test_ray_leaves_the_same_results_database_and_figures_as_the_local_executor(local_run, ray_2cpus, tmp_path):
    path, local = local_run
    seen: list[tuple[str, str]] = []
    result = run_protocol(path, tmp_path / "ray", progress=False, executor="ray",
                          on_job=lambda job, status, s: seen.append((job.id, status)))
    assert sorted(result.executed) == sorted(local.executed) and not result.failed
    assert {status for _, status in seen} == {"started", "done"}
    assert sorted(j for j, s in seen if s == "started") == sorted(j for j, s in seen if s == "done")
    # a job starts only after every job it consumes: the report is last, each whitebox after its training
    order = [j for j, s in seen if s == "done"]
    assert order[-1] == "report" and order.index("train:tanh") < order.index("whitebox:tanh")
    assert _results(result.summary) == _results(local.summary)
    assert _db_rows(tmp_path / "ray" / "results.sqlite") == _db_rows(local.run_dir / "results.sqlite")
    assert _figures(tmp_path / "ray") == _figures(local.run_dir) and len(_figures(local.run_dir)) >= 4
    assert result.leaderboard == local.leaderboard
    # a re-run with either executor finds everything done
    again = run_protocol(path, tmp_path / "ray", progress=False, executor="ray")
    assert again.executed == [] and len(again.cached) == len(local.executed)


def test_a_failing_job_is_reported_and_the_others_complete(ray_2cpus, tmp_path, capsys):
    proto = _small(tmp_path)
    proto["models"].append({"name": "bad", "arch": "mnist2d", "operator": "baseline", "params": {"width": 0.125},
                            "recipe": {**FAST, "optimizer": {"lr": 1e9}}})
    path = _write(tmp_path, proto)
    with pytest.raises(JobsFailed) as info:
        run_protocol(path, tmp_path / "out", progress=False, executor="ray")
    result = info.value.result
    assert list(result.failed) == ["train:bad"] and "TrainingDiverged" in result.failed["train:bad"]
    # what needs the diverged model is skipped; everything else ran
    assert {"whitebox:bad", "lipschitz:bad", "transfer", "figures", "report"} <= set(result.skipped)
    assert {"train:base", "train:tanh", "whitebox:base", "whitebox:tanh", "lipschitz:tanh"} <= set(result.executed)
    assert (tmp_path / "out" / "models" / "tanh" / "whitebox.json").is_file()
    assert "train:bad: TrainingDiverged: training diverged" in str(info.value)
    # the command line: one line per failed job, exit 1; the re-run does only what is missing
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--executor", "ray", "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert "train:bad: TrainingDiverged" in err and "Traceback" not in err
    # one line per job as it ends (stdout is not a terminal: each line starts with the time of day, and
    # a job that starts has a line of its own)
    lines = {line.split("]", 1)[1].rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1] for line in out.splitlines()
             if re.match(r"\d\d:\d\d:\d\d \[", line) and not line.endswith("started")}
    assert lines["train bad"] == "failed" and lines["whitebox bad"] == "skipped" and lines["report"] == "skipped"
    assert lines["train base"] == lines["whitebox tanh"] == "cached"


def test_a_job_that_asks_for_more_than_the_cluster_has_is_refused_before_anything_runs(ray_2cpus, tmp_path):
    path = _write(tmp_path, _small(tmp_path))
    with pytest.raises(ValueError, match="train jobs ask for 1 gpus but the Ray cluster has 0"):
        run_protocol(path, tmp_path / "out", progress=False, executor="ray", resources={"train": {"gpus": 1}})
    assert not list((tmp_path / "out").glob("models/*"))


def test_a_killed_driver_resumes_with_the_same_results(local_run, ray_2cpus, tmp_path):
    path, local = local_run
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # the driver joins the running cluster (--address); its tasks die with it. One thread per job, as the
    # reference ran (a job's thread count is part of what fixes its floating-point results)
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, "-m", "robustbench_dc", "run", str(path), "--out", str(out),
                             "--executor", "ray", "--address", address, "--resources", "all=cpus:1", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    t0 = time.time()
    while not list((out / ".jobs").glob("train__*.json")):
        assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
        assert time.time() - t0 < 300, "no training finished in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists() or json.loads((out / "summary.json").read_text())["partial"]
    resumed = run_protocol(path, out, progress=False, executor="ray")
    assert resumed.cached and "report" in resumed.executed
    assert _results(resumed.summary) == _results(local.summary)
    assert _db_rows(out / "results.sqlite") == _db_rows(local.run_dir / "results.sqlite")
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_resources_come_from_the_protocol_and_the_command_line(tmp_path):
    proto = _small(tmp_path, resources={"all": {"cpus": 3}, "train": {"cpus": 2, "memory": "1GiB"},
                                        "whitebox": {"gpus": 0.5}})
    plan = plan_protocol(_write(tmp_path, proto), tmp_path / "out")
    res = job_resources(plan, parse_resources(["train=cpus:1.5", "report=memory:512MB"]), threads=4)
    assert res["train"] == {"cpus": 1.5, "gpus": 0.0, "memory": 2.0**30}
    assert res["whitebox"] == {"cpus": 3.0, "gpus": 0.5, "memory": 0.0}  # "all", then its own kind
    assert res["report"] == {"cpus": 3.0, "gpus": 0.0, "memory": 512e6}
    assert res["figures"] == {"cpus": 3.0, "gpus": 0.0, "memory": 0.0}
    assert ray_options(res["train"]) == {"num_cpus": 1.5, "num_gpus": 0.0, "max_retries": 0, "memory": 2**30}
    assert "memory" not in ray_options(res["figures"])
    # without a resources section a job asks for the threads a local run would use
    bare = plan_protocol(_write(tmp_path, _small(tmp_path), "bare.yaml"), tmp_path / "out")
    assert {r["cpus"] for r in job_resources(bare, None, threads=4).values()} == {4.0}
    assert job_resources(bare, parse_resources(["all=cpus:1"]), threads=4)["train"]["cpus"] == 1.0
    for bad in (["train=cpus"], ["nope=cpus:1"], ["train=cpus:-1"], ["train=memory:lots"], ["train=disk:1"]):
        with pytest.raises(ValueError, match="--resources"):
            parse_resources(bad)


def test_a_job_runs_with_its_cpus_as_torch_threads_and_the_count_is_restored():
    import torch

    from robustbench_dc.protocol import job_threads

    before = torch.get_num_threads()
    with job_threads(3.0):
        assert torch.get_num_threads() == 3
    with job_threads(0.5):  # a fraction of a CPU is still one thread
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_the_local_executor_refuses_ray_options_and_an_unknown_executor(tmp_path, capsys):
    path = _write(tmp_path, _small(tmp_path))
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--address", "ray://x:1"]) == 2
    assert "--address applies to the ray executor only" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        run_protocol(path, tmp_path / "o", executor="dask")
    assert not (tmp_path / "o" / "summary.json").exists()


def test_the_resources_section_is_validated_like_the_rest_of_the_protocol(tmp_path, capsys):
    path = _write(tmp_path, _small(tmp_path, resources={"train": {"cpus": -1}, "attack": {"cpus": 1}}))
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "resources.train.cpus" in err and "resources.attack" in err
