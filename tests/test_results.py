"""Results store and leaderboard: round trip, replacement, concurrency, atomicity, rendering."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import sqlite3
import time
from pathlib import Path

import pytest

from robustbench_dc.results import LeaderboardEntry, ResultsStore, rank_entries, render_leaderboard, write_leaderboard
from robustbench_dc.results.leaderboard import available_metrics

FGSM = "fgsm-linf-eps0.3000-s1"
PGD = "pgd-linf-eps0.3000-s40"
HOSTILE = "<script>alert(1)</script>"


def _model(clean: float, fgsm: float, pgd: float, worst: float | None, operator: str = "tanh+cos",
           **extra: object) -> dict:
    m = {"arch": "mnist2d", "operator": operator, "operator_params": {"rho": 1.0}, "label": "TanhConv",
         "training": "natural", "recipe": {"name": "mnist-fast", "epochs": 2}, "clean_accuracy": clean,
         "whitebox": {FGSM: {"robust_accuracy": fgsm, "attack_success_rate": 1 - fgsm, "eps": 0.3,
                             "threat_model": "linf", "backend": "native"},
                      PGD: {"robust_accuracy": pgd, "attack_success_rate": 1 - pgd, "eps": 0.3,
                            "threat_model": "linf", "backend": "native"}}}
    if worst is not None:
        m["worst_case"] = {"robust_accuracy": worst}
    m.update(extra)
    return m


def _summary(run_id: str = "quickstart-3fa2b1c4d5e6", models: dict | None = None, **top: object) -> dict:
    s = {
        "run_id": run_id,
        "protocol": {"name": "quickstart", "path": "protocols/quickstart.yaml", "sha256": "ab" * 32},
        "dataset": "mnist-sample", "n_test": 500, "seed": 0, "data_sha256": "cd" * 32,
        "threat_model": "linf", "eps": 0.3,
        "started": "2026-11-21T07:00:00+00:00", "finished": "2026-11-21T07:05:00+00:00",
        "command": "rbdc run protocols/quickstart.yaml",
        "versions": {"robustbench_dc": "0.1.0", "torch": "2.13.0+cpu", "python": "3.11.7"},
        "models": models if models is not None else {
            "tanh": _model(0.91, 0.20, 0.10, 0.05,
                           transfer={"baseline": {FGSM: 0.6}},
                           flags={"one-step-beats-iterative": {"triggered": True, "value": 0.1, "message": "m"},
                                  "clean-below-chance": {"triggered": False, "value": 0.0, "message": "ok"}},
                           lipschitz={"grad-norm-l2": 3.2, "grad-norm-linf": 40.1},
                           checkpoint="runs/quickstart/models/tanh/model.pt", checkpoint_sha256="ef" * 32),
            "baseline": _model(0.98, 0.30, 0.02, 0.01, operator="baseline"),
            # same worst case as "baseline" but lower clean accuracy: ranks after it
            "sphere": _model(0.95, 0.40, 0.03, 0.01, operator="sphere+cos"),
            # minimal: no transfer/flags/lipschitz/checkpoint/worst_case
            "linear": {"arch": "mnist2d", "operator": "linear+cos", "clean_accuracy": 0.5},
        },
    }
    s.update(top)
    return s


def _counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("runs", "models", "evaluations", "flags", "lipschitz")}


# ----------------------------------------------------------------------------- store


def test_round_trip_values_and_ranking(tmp_path):
    db = tmp_path / "sub" / "results.sqlite"
    with ResultsStore(db) as store:
        assert store.ingest_summary(_summary()) == "quickstart-3fa2b1c4d5e6"
        assert store.integrity_check() == "ok"
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        (run,) = store.runs()
        assert run["dataset"] == "mnist-sample" and run["n_test"] == 500 and run["eps"] == pytest.approx(0.3)
        assert run["protocol_sha256"] == "ab" * 32 and run["versions"]["torch"] == "2.13.0+cpu"
        assert run["models"] == ["tanh", "baseline", "sphere", "linear"]
        entries = {e.name: e for e in store.entries(dataset="mnist-sample", threat_model="linf", eps=0.3)}
        assert store.entries(dataset="cifar10") == [] and store.entries(eps=0.1) == []
        assert len(store.entries(protocol="quickstart")) == 4

    t = entries["tanh"]
    assert (t.architecture, t.operator, t.operator_params) == ("mnist2d", "tanh+cos", {"rho": 1.0})
    assert t.clean_accuracy == pytest.approx(0.91) and t.worst_case_robust_accuracy == pytest.approx(0.05)
    assert t.robust_accuracy == {FGSM: pytest.approx(0.2), PGD: pytest.approx(0.1)}
    assert t.attack_success_rate[FGSM] == pytest.approx(0.8)
    assert t.transfer_robust_accuracy == {"baseline": {FGSM: pytest.approx(0.6)}}
    assert t.flags == ["one-step-beats-iterative"]  # only the triggered one
    assert t.lipschitz == {"grad-norm-l2": pytest.approx(3.2), "grad-norm-linf": pytest.approx(40.1)}
    assert t.recipe == {"name": "mnist-fast", "epochs": 2} and t.training == "natural"
    assert (t.version, t.protocol, t.n_test, t.date) == ("0.1.0", "quickstart", 500, "2026-11-21T07:05:00+00:00")
    lin = entries["linear"]
    assert lin.worst_case_robust_accuracy is None and lin.robust_accuracy == {} and lin.flags == []

    board = list(entries.values())
    # default: worst case desc; baseline/sphere tie at 0.01 -> clean accuracy decides; missing value last
    assert [e.name for e in rank_entries(board)] == ["tanh", "baseline", "sphere", "linear"]
    assert [e.name for e in rank_entries(board, "clean_accuracy")] == ["baseline", "sphere", "tanh", "linear"]
    assert [e.name for e in rank_entries(board, FGSM)] == ["sphere", "baseline", "tanh", "linear"]
    assert [e.name for e in rank_entries(board, f"transfer:baseline:{FGSM}")][0] == "tanh"
    assert f"transfer:baseline:{FGSM}" in available_metrics(board)
    with pytest.raises(ValueError, match=f"unknown leaderboard metric 'nope'.*clean_accuracy.*{PGD}"):
        rank_entries(board, "nope")


def test_missing_key_is_a_clear_value_error(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        bad = _summary()
        del bad["dataset"]
        with pytest.raises(ValueError, match="dataset"):
            store.ingest_summary(bad)
        bad = _summary()
        del bad["models"]["sphere"]["operator"]
        with pytest.raises(ValueError, match=r"models\.sphere\.operator"):
            store.ingest_summary(bad)
        bad = _summary()
        del bad["threat_model"]
        with pytest.raises(ValueError, match="threat_model"):
            store.ingest_summary(bad)
        assert store.runs() == []
        # present-but-None threat model/eps (a protocol without attacks) and a not-yet-evaluated model are fine
        ok = _summary(threat_model=None, eps=None, models={"m": {"arch": "a", "operator": "o", "role": "reference"}})
        store.ingest_summary(ok)
        (entry,) = store.entries()
        assert entry.clean_accuracy is None and entry.threat_model is None and entry.eps is None


def test_reingest_replaces_rows(tmp_path):
    db = tmp_path / "r.sqlite"
    with ResultsStore(db) as store:
        store.ingest_summary(_summary())
        store.ingest_summary(_summary(run_id="other"))
        before = _counts(db)
        assert before["runs"] == 2 and before["models"] == 8 and before["flags"] == 4
        changed = _summary()
        changed["models"]["tanh"]["clean_accuracy"] = 0.5
        del changed["models"]["linear"]
        store.ingest_summary(changed)
        store.ingest_summary(changed)
        after = _counts(db)
        assert after["runs"] == 2 and after["models"] == 7 and after["flags"] == 4
        assert after["evaluations"] == before["evaluations"]  # "linear" had no evaluations
        e = {(x.run_id, x.name): x for x in store.entries()}
        assert e[("quickstart-3fa2b1c4d5e6", "tanh")].clean_accuracy == pytest.approx(0.5)
        assert e[("other", "tanh")].clean_accuracy == pytest.approx(0.91)
        assert ("quickstart-3fa2b1c4d5e6", "linear") not in e
        assert store.integrity_check() == "ok"


def test_failed_ingest_leaves_no_partial_rows(tmp_path):
    db = tmp_path / "r.sqlite"
    with ResultsStore(db) as store:
        bad = _summary(run_id="bad")
        bad["models"]["zzz"] = _model(0.9, 0.2, 0.1, 0.05)
        bad["models"]["zzz"]["whitebox"][PGD]["robust_accuracy"] = "not a number"  # after good models
        with pytest.raises(ValueError, match=r"models\.zzz\.whitebox\..*robust_accuracy"):
            store.ingest_summary(bad)
        assert _counts(db) == dict.fromkeys(("runs", "models", "evaluations", "flags", "lipschitz"), 0)
        # a failed replacement keeps the previous version of the run intact
        store.ingest_summary(_summary(run_id="bad"))
        good = _counts(db)
        bad["models"]["zzz"]["clean_accuracy"] = 1.5
        with pytest.raises(ValueError, match="fraction"):
            store.ingest_summary(bad)
        assert _counts(db) == good
        assert not store.conn.in_transaction
        assert {e.name for e in store.entries()} == {"tanh", "baseline", "sphere", "linear"}


def _writer(db: str, worker: int, n: int) -> None:
    with ResultsStore(db) as store:
        for i in range(n):
            store.ingest_summary(_summary(run_id=f"w{worker}-r{i:02d}"))


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    db = tmp_path / "shared.sqlite"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(db), w, 20)) for w in range(3)]
    start = time.monotonic()
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    assert time.monotonic() - start < 120
    with ResultsStore(db) as store:
        ids = {r["run_id"] for r in store.runs()}
        assert ids == {f"w{w}-r{i:02d}" for w in range(3) for i in range(20)}
        assert len(store.entries()) == 60 * 4
        assert store.integrity_check() == "ok"
    counts = _counts(db)
    assert counts["models"] == 240 and counts["flags"] == 120 and counts["lipschitz"] == 120


# ----------------------------------------------------------------------------- rendering


def _hostile_entries() -> list[LeaderboardEntry]:
    base = dict(architecture="mnist2d", dataset="mnist-sample", threat_model="linf", eps=0.3, n_test=500,
                run_id="r1", protocol="quickstart", version="0.1.0", date="2026-11-21T07:05:00+00:00")
    return [
        LeaderboardEntry(name=HOSTILE, operator=HOSTILE, operator_params={"rho": HOSTILE}, clean_accuracy=0.9123,
                         robust_accuracy={FGSM: 0.2}, worst_case_robust_accuracy=0.051, flags=["one-step-beats-iterative"],
                         label='"quoted" & <b>', **base),
        LeaderboardEntry(name="pipe|name, with \"quotes\"\nnewline", operator="a|b", clean_accuracy=0.95,
                         robust_accuracy={FGSM: 0.3}, worst_case_robust_accuracy=0.2,
                         transfer_robust_accuracy={"baseline": {FGSM: 0.6}}, recipe={"name": "x"}, **base),
    ]


def test_html_escapes_everything_and_is_sortable():
    page = render_leaderboard(_hostile_entries(), "html")
    assert "<script>alert" not in page and "alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;quoted&quot; &amp; &lt;b&gt;" in page
    assert page.count("<script>") == 1 and "addEventListener(\"click\"" in page and "data-sort" in page
    assert 'data-type="num"' in page and "aria-sort" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page and "src=" not in page
    assert "91.2" in page and "5.1" in page and "\u26a0 one-step-beats-iterative" in page
    assert "mnist-sample" in page and "linf" in page and "eps = 0.3" in page and "n_test = 500" in page
    assert "ranked by worst-case robust accuracy" in page
    # ranked: the pipe entry (worst case 0.2) comes first
    assert page.index("pipe|name") < page.index("&lt;script&gt;alert")


def test_markdown_escapes_pipes():
    md = render_leaderboard(_hostile_entries(), "md", metric="clean_accuracy")
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert len(rows) == 4
    ncols = rows[0].replace("\\|", "").count("|")
    assert all(r.replace("\\|", "").count("|") == ncols for r in rows)
    assert "pipe\\|name" in md and "a\\|b" in md and "<script>" not in md
    assert rows[2].startswith("| 1 | pipe")  # by clean accuracy 0.95 > 0.9123
    assert "| 91.2 |" in rows[3] and "ranked by clean accuracy" in md


def test_csv_and_json_round_trip(tmp_path):
    entries = _hostile_entries()
    rows = list(csv.reader(io.StringIO(render_leaderboard(entries, "csv"))))
    header, first, second = rows
    assert len(first) == len(header) == len(second)
    rec = dict(zip(header, first))
    assert rec["name"] == entries[1].name and rec["operator"] == "a|b" and rec["rank"] == "1"
    assert float(rec["worst_case_robust_accuracy"]) == 0.2 and float(rec[f"transfer:baseline:{FGSM}"]) == 0.6
    assert dict(zip(header, second))["flags"] == "one-step-beats-iterative"

    data = json.loads(render_leaderboard(entries, "json"))
    assert [d["rank"] for d in data] == [1, 2]
    assert [LeaderboardEntry.from_dict(d) for d in data] == [entries[1], entries[0]]

    # the binarization test gets its columns only for the attacks that ran it; blank where an entry has none
    entries[0].binarization = {FGSM: {"attack_success_rate": 0.75, "noise_success_rate": 0.0, "n_valid": 4,
                                      "n_points": 5, "construction_failure_rate": 0.2}}
    header, first, second = list(csv.reader(io.StringIO(render_leaderboard(entries, "csv"))))
    assert [h for h in header if h.startswith("binarization:")] == [
        f"binarization:{FGSM}:{k}" for k in ("attack_success_rate", "noise_success_rate",
                                               "construction_failure_rate", "n_valid", "n_points")]
    b = dict(zip(header, second))
    assert (float(b[f"binarization:{FGSM}:attack_success_rate"]), b[f"binarization:{FGSM}:n_valid"]) == (0.75, "4")
    assert dict(zip(header, first))[f"binarization:{FGSM}:attack_success_rate"] == ""
    entries[0].binarization = {}

    paths = write_leaderboard(entries, tmp_path / "board", formats=("md", "html", "json"))
    assert [p.name for p in paths] == ["leaderboard.md", "leaderboard.html", "leaderboard.json"]
    assert json.loads(paths[2].read_text(encoding="utf-8")) == data
    assert sorted(p.name for p in (tmp_path / "board").iterdir()) == sorted(p.name for p in paths)  # no temp files
    with pytest.raises(ValueError, match="available: md, csv, json, html"):
        render_leaderboard(entries, "pdf")


def test_cli_show_prints_and_writes(tmp_path, capsys):
    import robustbench_dc.cli as cli

    db = tmp_path / "results.sqlite"
    with ResultsStore(db) as store:
        store.ingest_summary(_summary())
    assert cli.main(["leaderboard", "show", "--db", str(db), "--metric", FGSM, "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert lines[2].startswith("| 1 | sphere") and f"ranked by robust accuracy under {FGSM}" in out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "leaderboard.csv", "leaderboard.html", "leaderboard.json", "leaderboard.md"]
    assert cli.main(["leaderboard", "show", "--db", str(db), "--metric", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown leaderboard metric" in err
    assert cli.main(["leaderboard", "show", "--db", str(tmp_path / "missing.sqlite")]) == 2
    assert "results database not found" in capsys.readouterr().err
    assert not (tmp_path / "missing.sqlite").exists()


def test_find_db_picks_the_run_made_last(tmp_path, monkeypatch):
    import os

    from robustbench_dc.errors import MissingFileError, UserError
    from robustbench_dc.results import find_db

    with pytest.raises(MissingFileError, match=r"not found: no .*runs/results.sqlite nor"):
        find_db(root=tmp_path / "runs")
    with pytest.raises(UserError, match="results database not found: nope.sqlite"):
        find_db("nope.sqlite")
    shared, quick = tmp_path / "runs" / "results.sqlite", tmp_path / "runs" / "quickstart" / "results.sqlite"
    for i, db in enumerate((shared, quick)):
        with ResultsStore(db) as store:
            store.ingest_summary(_summary(run_id=f"run-{i}"))
        os.utime(db, (1_000_000 + i, 1_000_000 + i))
    assert find_db(root=tmp_path / "runs") == quick
    os.utime(shared, (2_000_000, 2_000_000))
    assert find_db(root=tmp_path / "runs") == shared
    assert find_db(quick) == quick  # given: used as it is


def test_cli_leaderboard_without_db_reads_the_latest_run_and_says_which(tmp_path, capsys, monkeypatch):
    import robustbench_dc.cli as cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["leaderboard"]) == 2
    assert "results database not found" in capsys.readouterr().err
    db = tmp_path / "runs" / "quickstart" / "results.sqlite"  # where `rbdc run quickstart` writes
    with ResultsStore(db) as store:
        store.ingest_summary(_summary())
    for argv in (["leaderboard"], ["leaderboard", "show"], ["leaderboard", "--metric", FGSM, "show"]):
        assert cli.main(argv) == 0
        captured = capsys.readouterr()
        assert f"results from {Path('runs') / 'quickstart' / 'results.sqlite'}" in captured.err
        assert "| 1 |" in captured.out
    # show's options given before the action are kept; after it they count too
    assert cli.main(["leaderboard", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)
    assert cli.main(["leaderboard", "show", "--format", "csv", "--db", str(db)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("rank,") and "results from" not in captured.err


def test_entries_export_in_robustbench_model_info_format(tmp_path, capsys):
    import robustbench_dc.cli as cli
    from robustbench_dc.results import model_info

    db = tmp_path / "results.sqlite"
    with ResultsStore(db) as store:
        store.ingest_summary(_summary())
        entries = store.entries()
    info = model_info(entries[0])
    rb_fields = ["link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                 "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote"]
    assert list(info)[:len(rb_fields)] == rb_fields and list(info)[len(rb_fields):] == ["robustbench_dc"]
    e = entries[0]
    assert info["clean_acc"] == f"{100 * e.clean_accuracy:.2f}" and info["architecture"] == e.architecture
    assert info["number_forward_passes"] == 1 and info["additional_data"] is False
    has_aa = any(k.startswith("autoattack") for k in e.robust_accuracy)
    assert (info["autoattack_acc"] is None) == (not has_aa)  # never another attack's number under AutoAttack's name
    extra = info["robustbench_dc"]
    assert extra["operator"] == e.operator and extra["flags"] == e.flags
    assert extra["worst_case_acc"] == (None if e.worst_case_robust_accuracy is None
                                       else f"{100 * e.worst_case_robust_accuracy:.2f}")
    assert cli.main(["leaderboard", "--db", str(db), "--robustbench", str(tmp_path / "mi")]) == 0
    written = sorted((tmp_path / "mi").rglob("*.json"))
    assert len(written) == len(entries)
    assert all(p.parent.name in ("Linf", "L2") and p.parent.parent.name == e.dataset for p in written)
    assert json.loads(written[0].read_text())["robustbench_dc"]["run_id"] == e.run_id


def test_robustbench_eps_is_written_as_robustbench_writes_it():
    from robustbench_dc.results.robustbench import _eps_text

    assert _eps_text(8 / 255) == "8/255" and _eps_text(0.3) == "0.3" and _eps_text(0.5) == "0.5"
    assert _eps_text(None) is None


def _board_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and line[2].isdigit()]


def test_the_leaderboard_has_one_row_per_entry_and_keeps_the_history(tmp_path, capsys):
    """Two submissions against one protocol used to show every model once per run (11 rows for 4
    models), the transfer source among them with dashes."""
    import robustbench_dc.cli as cli

    db = tmp_path / "results.sqlite"
    src = {"arch": "mnist2d", "operator": "baseline", "role": "source", "seed": 1}
    refs = {"tanh": _model(0.91, 0.20, 0.10, 0.05, role="model"),
            "baseline": _model(0.98, 0.30, 0.02, 0.01, operator="baseline", role="model")}
    with ResultsStore(db) as store:
        store.ingest_summary(_summary("run-1", {**refs, "src": src}, finished="2026-11-21T07:00:00+00:00"))
        store.ingest_summary(_summary("run-2", {**refs, "src": src, "mine": _model(0.9, 0.5, 0.3, 0.25)},
                                      finished="2026-11-21T08:00:00+00:00"))
        changed = _model(0.97, 0.30, 0.02, 0.02, operator="baseline", role="model")
        changed["operator_params"] = {"rho": 2.0}  # a changed configuration under the same name: a new entry
        store.ingest_summary(_summary("run-3", {"tanh": refs["tanh"], "baseline": changed, "src": src,
                                                "other": _model(0.8, 0.4, 0.2, 0.15)},
                                      finished="2026-11-21T09:00:00+00:00"))
        history = store.entries()
        board = store.entries(latest=True)
    assert len(history) == 11
    names = [e.name for e in board]
    assert len(board) == 5 and "src" not in " ".join(names)
    from robustbench_dc.results.leaderboard import configuration_key

    keys = sorted({configuration_key(e) for e in history if e.name == "baseline"})
    assert len(keys) == 2 and sorted(n for n in names if n.startswith("baseline")) == [f"baseline [{k}]" for k in keys]
    assert {e.run_id for e in board if e.name == "tanh"} == {"run-3"}  # the newest run of an identical config

    assert cli.main(["leaderboard", "show", "--db", str(db)]) == 0
    rows = _board_rows(capsys.readouterr().out)
    assert sorted(r[1].split(" (")[0] for r in rows) == sorted(names) and len(rows) == 5
    assert rows[0][1].startswith("mine")  # ranked: the best worst case first
    assert cli.main(["leaderboard", "history", "--db", str(db)]) == 0
    rows = _board_rows(capsys.readouterr().out)
    assert len(rows) == 11 and [r[-1] for r in rows][:3] == ["run-1"] * 3
