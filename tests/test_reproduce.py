"""The Tables 7-8 report: every number comes from the stored results, every claim is judged by rule."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from robustbench_dc.reproduce import OPERATORS, TABLE7, TABLE8, build_tables, judge_claims, render_markdown

EPS = "eps0.0314"
LABELS = {"fgsm": f"fgsm-linf-{EPS}-s1", "bim": f"bim-linf-{EPS}-s10", "pgd": f"pgd-linf-{EPS}-s20-r2",
          "autoattack": f"autoattack-linf-{EPS}"}


def _summary(white=TABLE7, black=TABLE8, strong: float | None = 0.01) -> dict:
    """A run summary whose numbers are the paper's (so every claim of the paper holds), plus strong attacks."""
    models = {"source": {"label": "Baseline", "training": "natural", "role": "source", "clean_accuracy": 0.8}}
    for training in ("natural", "adversarial"):
        for op in OPERATORS:
            name = f"{op.lower()}-{training[:3]}"
            wb = {LABELS[a]: {"robust_accuracy": white[training][a][op] / 100} for a in ("fgsm", "bim")}
            if strong is not None:
                wb[LABELS["pgd"]] = {"robust_accuracy": strong}
                wb[LABELS["autoattack"]] = {"robust_accuracy": strong}
            models[name] = {
                "label": op, "training": training, "role": "model",
                "clean_accuracy": white[training]["none"][op] / 100, "whitebox": wb,
                "transfer": {"source": {LABELS[a]: black[training][a][op] / 100 for a in ("fgsm", "bim")}},
                "flags": {"one-step-beats-iterative": {"triggered": op == "TanhConv"},
                          "zero-gradients": {"triggered": False}},
            }
    return {"run_id": "r", "protocol": {"name": "table7-8-cpu"}, "dataset": "cifar10", "n_test": 1000, "seed": 0,
            "data_sha256": "ab" * 32, "train_data_sha256": "cd" * 32, "command": "rbdc run protocols/x.yaml",
            "versions": {"torch": "2.13.0"}, "models": models}


def test_every_number_comes_from_the_summary() -> None:
    summary = _summary()
    t = build_tables(summary)
    assert t.source == "source"
    for training in ("natural", "adversarial"):
        for attack in ("none", "fgsm", "bim"):
            for op in OPERATORS:
                assert t.value("table7", training, attack, op) == pytest.approx(TABLE7[training][attack][op] / 100)
                assert t.value("table8", training, attack, op) == pytest.approx(TABLE8[training][attack][op] / 100)
    changed = copy.deepcopy(summary)
    changed["models"]["ballconv-adv"]["whitebox"][LABELS["bim"]]["robust_accuracy"] = 0.4321
    changed["models"]["tanhconv-nat"]["transfer"]["source"][LABELS["fgsm"]] = 0.1234
    t2 = build_tables(changed)
    assert t2.value("table7", "adversarial", "bim", "BallConv") == 0.4321
    assert t2.value("table8", "natural", "fgsm", "TanhConv") == 0.1234
    md = render_markdown(t2, "table7")
    assert "| adversarial | BIM `bim-linf-eps0.0314-s10` | 8.0 (7.96) | 35.1 (35.07) | 43.2 (17.38) | 19.9 (19.86) |" \
        in md
    assert "12.3 (50.61)" in render_markdown(t2, "table8")


def test_missing_numbers_stay_missing() -> None:
    summary = _summary(strong=None)
    del summary["models"]["sphereconv-nat"]["whitebox"][LABELS["fgsm"]]
    t = build_tables(summary)
    assert t.value("table7", "natural", "fgsm", "SphereConv") is None
    md = render_markdown(t, "table7")
    assert "| natural | FGSM `fgsm-linf-eps0.0314-s1` | 18.8 (18.82) | - (43.64) |" in md
    assert "AutoAttack" not in md.split("## The paper")[0]  # no strong rows when none ran
    claims = {c.key: c.status for c in judge_claims(t)}
    assert claims["fgsm-natural"] == "not evaluated" and claims["strong-attacks"] == "not evaluated"


def test_the_papers_own_numbers_reproduce_every_claim_of_the_paper() -> None:
    claims = {c.key: c for c in judge_claims(build_tables(_summary()))}
    for key in ("clean-accuracy", "fgsm-natural", "bim-natural-low", "fgsm-at-baseline", "sphere-at-bim",
                "blackbox-vs-whitebox"):
        assert claims[key].status == "reproduced", (key, claims[key].evidence)
    # the strong attacks (1% for everyone) erase the bounded operators' advantage
    assert claims["strong-attacks"].status == "not reproduced"


@pytest.mark.parametrize("edit, key, status", [
    (lambda w, b: w["natural"]["none"].update(BallConv=80.0), "clean-accuracy", "mixed"),
    (lambda w, b: [w["natural"]["fgsm"].update({op: 10.0}) for op in ("SphereConv", "BallConv", "TanhConv")],
     "fgsm-natural", "not reproduced"),
    (lambda w, b: w["natural"]["bim"].update(TanhConv=30.0), "bim-natural-low", "mixed"),
    (lambda w, b: w["adversarial"]["bim"].update(Baseline=40.0), "fgsm-at-baseline", "mixed"),
    (lambda w, b: w["adversarial"]["bim"].update(TanhConv=36.0), "sphere-at-bim", "mixed"),
    (lambda w, b: [b["adversarial"]["bim"].update({op: 20.0}) for op in OPERATORS], "blackbox-vs-whitebox",
     "not reproduced"),
])
def test_each_claim_follows_its_rule(edit, key, status) -> None:
    white, black = copy.deepcopy(TABLE7), copy.deepcopy(TABLE8)
    edit(white, black)
    claims = {c.key: c for c in judge_claims(build_tables(_summary(white, black)))}
    assert claims[key].status == status, claims[key].evidence


def test_flags_and_provenance_are_in_the_report() -> None:
    md = render_markdown(build_tables(_summary()), "table7")
    assert "- TanhConv, natural training (`tanhconv-nat`): one-step-beats-iterative (2 evaluated)" in md
    assert "- Baseline, natural training (`baseline-nat`): none (2 evaluated)" in md
    for text in ("command: `rbdc run protocols/x.yaml`", "seed: 0", "ab" * 32, "'torch': '2.13.0'"):
        assert text in md


def test_scale_settings_prefixes_and_phase_times_come_from_the_summary() -> None:
    from robustbench_dc.reproduce import phase_seconds

    s = _summary()
    for m in s["models"].values():
        for label, r in (m.get("whitebox") or {}).items():
            r["n"] = 500 if label in (LABELS["pgd"], LABELS["autoattack"]) else 1000
        m.update(arch="cnn9", operator_params={"rho": 1.0}, arch_params={"width": 0.25}, seed=0,
                 recipe={"epochs": 4, "batch_size": 128, "optimizer": {"name": "adam", "lr": 0.003},
                         "schedule": {"name": "onecycle", "warmup": 0.15},
                         "augmentation": {"flip": True, "crop_padding": 4}, "precision": "auto", "compile": "auto",
                         "adversarial": None},
                 trained_with={"precision": "bf16", "compiled": m["label"] != "Baseline"})
    s["job_seconds"] = {"train:baseline-nat": 100.0, "train:sphereconv-nat": 140.0, "whitebox:baseline-nat": 30.0,
                        "transfer": 12.5, "figures": 2.0}
    s["machine"] = {"cpu_model": "Test CPU", "usable_cores": 2, "memory_bytes": 2 ** 34, "gpu_used": False,
                    "platform": "Linux"}
    t = build_tables(s)
    assert t.n_examples == {"fgsm": 1000, "bim": 1000, "pgd": 500, "autoattack": 500}
    assert phase_seconds(t) == {"training": 240.0, "white-box attacks (with masking diagnostics)": 30.0,
                                "transfer attacks": 12.5, "figures": 2.0}
    md = render_markdown(t, "table7")
    assert "Test examples: the first 1000 of the test set; PGD on the first 500; AutoAttack on the first 500." in md
    assert "| training | 4.0 min (240 s) |" in md and "| all jobs | 4.7 min (284 s) |" in md
    assert "4 epochs, batch 128, adam lr 0.003, onecycle (warm-up 0.15), augmentation: flip, crop 4" in md
    # a bundled protocol run by name is shown where a user finds it, not at the installed copy's path
    s["protocol"] = {"name": "table7-8-cpu", "path": "/x/site-packages/robustbench_dc/resources/protocols/t.yaml",
                     "sha256": "ef" * 32}
    assert "Protocol `protocols/t.yaml`" in render_markdown(build_tables(s), "table7")
    # what the recipe's "auto" settings resolved to, from the run's training records
    assert "precision auto (ran bf16), compile auto (ran eager)" in md
    assert "precision auto (ran bf16), compile auto (ran compiled)" in md
    assert "| `baseline-nat` | Baseline (model) | cnn9 `None` | width=0.25, rho=1.0 |" in md
    assert "machine: Test CPU, 2 usable cores, 16 GiB memory, no GPU (Linux)" in md
    # the CPU's vector capability where the run recorded it (it decides what precision "auto" trained in)
    s["machine"].update(cpu_capability="AVX2", cpu_bf16_native=False)
    assert "machine: Test CPU, 2 usable cores, AVX2 without native bfloat16, 16 GiB memory" in render_markdown(
        build_tables(s), "table7")
    assert "Protocol `table7-8-cpu`. Every setting the paper does not publish" in md
    # the black-box table has no strong attacks and no prefix note
    assert "on the first 500" not in render_markdown(t, "table8")


def test_fgsm_bim_against_strong_attacks_is_said_by_rule() -> None:
    from robustbench_dc.reproduce import strong_attack_gaps

    gaps = {(tr, op): gap for tr, op, _, gap in strong_attack_gaps(build_tables(_summary(strong=0.01)))}
    # natural SphereConv: FGSM 43.64% vs strong 1%: a gap; natural Baseline: FGSM 18.82% vs 1%: under 20 points
    assert gaps[("natural", "SphereConv")] is True and gaps[("natural", "Baseline")] is False
    md = render_markdown(build_tables(_summary(strong=0.01)), "table7")
    assert ("- SphereConv, natural training: FGSM 43.6, BIM 8.9, PGD 1.0, AutoAttack 1.0: **looks robust under "
            "FGSM/BIM but not under the strong attacks**") in md
    assert "- Baseline, natural training: FGSM 18.8, BIM 8.7, PGD 1.0, AutoAttack 1.0: no such gap" in md
    no_strong = build_tables(_summary(strong=None))
    assert all(gap is None for *_, gap in strong_attack_gaps(no_strong))
    assert "FGSM/BIM against the strong attacks" not in render_markdown(no_strong, "table7")


def test_ambiguous_or_foreign_models_are_refused() -> None:
    s = _summary()
    s["models"]["extra"] = dict(s["models"]["baseline-nat"])
    with pytest.raises(ValueError, match="both Baseline, natural training"):
        build_tables(s)
    s = _summary()
    s["models"]["baseline-nat"]["label"] = "MyConv"
    with pytest.raises(ValueError, match="label 'MyConv' / training 'natural' is not a cell"):
        build_tables(s)


def test_rbdc_reproduce_writes_tables_and_figures_from_run_folders(tmp_path, capsys) -> None:
    import json

    import numpy as np

    from robustbench_dc.cli import main

    tables_run = tmp_path / "t78"
    tables_run.mkdir()
    (tables_run / "summary.json").write_text(json.dumps(_summary()))
    fig_run = tmp_path / "f67"
    summary = {"run_id": "f", "dataset": "mnist", "seed": 0, "data_sha256": "ee" * 32, "command": "rbdc run f67",
               "versions": {"torch": "2.13.0"}, "models": {}}
    rng = np.random.default_rng(0)
    for training in ("natural", "adversarial"):
        for op in OPERATORS:
            name = f"{op.lower()}-{training[:3]}"
            summary["models"][name] = {"label": op, "training": training, "role": "model", "clean_accuracy": 0.9}
            d = fig_run / "models" / name
            d.mkdir(parents=True)
            np.savez(d / "embedding.npz", features=rng.normal(size=(50, 2)), labels=np.arange(50) % 10)
    (fig_run / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "figures"
    assert main(["reproduce", "--tables", str(tables_run), "--figures", str(fig_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    names = {p.split("/")[-1] for p in printed}
    assert names == {"table7.md", "table8.md", "tables78.json", "figure6.png", "figure6.json", "figure7.png",
                     "figure7.json", "figures67.md"}
    data = json.loads((out / "tables78.json").read_text())
    assert data["ours"]["white_box"]["adversarial"]["bim"]["SphereConv"] == pytest.approx(0.3507)
    assert {c["key"]: c["status"] for c in data["claims"]}["sphere-at-bim"] == "reproduced"
    # each model's settings travel with the numbers (what "auto" precision resolved to differs between CPUs)
    assert data["settings"]["baseline-nat"]["label"] == "Baseline" and "trained_with" in data["settings"]["baseline-nat"]
    fig7 = json.loads((out / "figure7.json").read_text())
    assert fig7["models"] == ["baseline-adv", "sphereconv-adv", "ballconv-adv", "tanhconv-adv"]
    assert fig7["data_sha256"] == "ee" * 32 and fig7["command"] == "rbdc run f67"
    assert fig7["report_command"] == f"rbdc reproduce --figures {fig_run} --out {out}"
    assert (out / "figure6.png").stat().st_size > 10_000
    assert main(["reproduce", "--out", str(out)]) == 2  # nothing to read: a one-line error


def test_summary_prints_the_claims_and_flags_of_a_written_report(tmp_path, capsys) -> None:
    import json

    from robustbench_dc.cli import main
    from robustbench_dc.reproduce import tables_summary

    run = tmp_path / "t78"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(_summary()))
    out = tmp_path / "figures"
    assert main(["reproduce", "--tables", str(run), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["reproduce", "--summary", str(out / "tables78.json")]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "tables78.json").read_text())
    bullets = [line for line in printed.splitlines() if line.startswith("- ")]
    assert len(bullets) == len(data["claims"])
    for line, claim in zip(bullets, data["claims"]):
        assert claim["text"] in line and claim["evidence"] in line and claim["status"] in line.lower()
    assert "**Reproduced**" in printed
    data["flags"] = {"a": [], "b": ["gradient norm zero"]}
    assert tables_summary(data).splitlines()[-1] == \
        "Masking flags or attack-failure indicators triggered: `b`: gradient norm zero."
    data["flags"] = {"a": [], "b": []}
    assert tables_summary(data).splitlines()[-1] == \
        "No masking flag or attack-failure indicator triggered on any of the 2 models."
    assert main(["reproduce", "--summary", str(tmp_path / "none.json")]) == 2


def test_the_readme_shows_the_committed_reports_claims() -> None:
    """The README's summary of Tables 7-8 is the committed report's, word for word."""
    from pathlib import Path

    from robustbench_dc.reproduce import tables_summary

    root = Path(__file__).resolve().parents[1]
    assert tables_summary(root / "figures" / "tables78.json") in (root / "README.md").read_text()


def test_figure_claims_follow_their_rules() -> None:
    import numpy as np

    from robustbench_dc.reproduce.report import angular_accuracy, figure_claims

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    angles = labels * 2 * np.pi / 10 + rng.normal(scale=0.05, size=labels.size)
    radial = np.stack([np.cos(angles), np.sin(angles)], 1)
    assert angular_accuracy(radial * rng.uniform(1, 100, size=(labels.size, 1)), labels) == 1.0
    assert angular_accuracy(rng.normal(size=(labels.size, 2)), labels) < 0.5

    def panels(scale_bounded: float, mixed_up: bool) -> dict:
        feats = {op: radial * (100 if op == "Baseline" else scale_bounded) for op in OPERATORS}
        if mixed_up:
            feats["TanhConv"] = rng.normal(size=radial.shape) * scale_bounded
        return {t: {op: {"features": f, "labels": labels} for op, f in feats.items()}
                for t in ("natural", "adversarial")}

    ok = {c.key: c.status for c in figure_claims(panels(7.0, False))}
    assert ok == {"features-by-angle": "reproduced", "bounded-features": "reproduced"}
    bad = {c.key: c.status for c in figure_claims(panels(60.0, True))}
    assert bad == {"features-by-angle": "mixed", "bounded-features": "not reproduced"}


def _load_script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_folder(root, summary: dict):
    import json

    root.mkdir(parents=True)
    (root / "summary.json").write_text(json.dumps(summary))
    return root


def test_the_noise_between_two_runs_is_measured_cell_by_cell(tmp_path) -> None:
    noise = _load_script("table78_noise")
    a = _summary()
    for i, m in enumerate(a["models"].values()):
        m["checkpoint_sha256"] = f"{i:064x}"
    a["protocol"]["sha256"] = "ff" * 32
    b = copy.deepcopy(a)
    b["models"]["ballconv-adv"]["whitebox"][LABELS["bim"]]["robust_accuracy"] += 0.004
    b["models"]["ballconv-adv"]["checkpoint_sha256"] = "e" * 64
    out = noise.compare(_run_folder(tmp_path / "a", a), _run_folder(tmp_path / "b", b))
    assert out["same_protocol"] and out["same_seed"] and out["same_data"]
    assert out["n_different"] == 1 and out["max_abs_difference"] == pytest.approx(0.004)
    assert list(out["differences"]) == ["table7/adversarial/bim/BallConv"]
    assert out["checkpoints_identical"]["ballconv-adv"] is False and out["checkpoints_identical"]["baseline-nat"]
    same = noise.compare(tmp_path / "a", tmp_path / "a")
    assert same["n_different"] == 0 and same["max_abs_difference"] == 0 and same["n_numbers"] > 40
    # what "auto" resolved to is compared too: machines differ in native bfloat16
    b["models"]["ballconv-adv"]["trained_with"] = {"precision": "fp32", "compiled": True}
    out = noise.compare(tmp_path / "a", _run_folder(tmp_path / "c", b))
    assert out["provenance"][1]["trained_with"]["ballconv-adv"] == {"precision": "fp32", "compiled": True}
    assert out["provenance"][0]["trained_with"]["ballconv-adv"] is None
    # a partial re-run (the naturally trained half) is compared on the cells both runs have
    part = copy.deepcopy(a)
    part["models"] = {k: v for k, v in part["models"].items() if not k.endswith("-adv")}
    part["models"]["sphereconv-nat"]["clean_accuracy"] -= 0.01
    out = noise.compare(tmp_path / "a", _run_folder(tmp_path / "d", part))
    assert out["only_in_b"] == [] and out["only_in_a"] and all("/adversarial/" in k for k in out["only_in_a"])
    assert out["n_numbers"] == same["n_numbers"] - len(out["only_in_a"])
    assert out["max_abs_difference"] == pytest.approx(0.01)
    assert set(out["checkpoints_identical"]) == set(part["models"])  # models of one run only are not compared
    assert set(out["differences"]) == {"table7/natural/none/SphereConv", "table8/natural/none/SphereConv"}
    assert out["claims_same_verdict"]["same"] == out["claims_same_verdict"]["evaluated_in_both"] > 0
    assert any(v["b"] == "not evaluated" and v["a"] != "not evaluated" for v in out["claims"].values())
    part["models"]["baseline-nat"]["clean_accuracy"] = 0.99  # now no bounded operator beats the baseline's clean accuracy
    flipped = noise.compare(tmp_path / "a", _run_folder(tmp_path / "e", part))
    cv = flipped["claims_same_verdict"]
    assert cv["same"] == cv["evaluated_in_both"] - 1


def test_phase_times_of_a_finished_run_are_read_not_retimed(tmp_path) -> None:
    import json

    phases = _load_script("table78_phases")
    s = _summary()
    s["job_seconds"] = {"train:baseline-nat": 61.0, "whitebox:baseline-nat": 9.5, "transfer": 4.0}
    assert phases.baseline_cost_floor(s) == {
        "total_seconds": 74.5, "phase_seconds": {"training": 61.0, "white-box attacks": 9.5, "other": 4.0},
        "recorded_total_seconds": 74.5, "meaning": phases.baseline_cost_floor(s)["meaning"]}
    slower = dict(s, job_seconds={**s["job_seconds"], "train:tanhconv-nat": 90.0, "whitebox:tanhconv-nat": 20.0,
                                  "train:source": 50.0, "train:tanhconv-adv": 100.0})
    assert phases.baseline_cost_floor(slower) is None  # no adversarially trained Baseline to stand in for TanhConv's
    slower["job_seconds"] |= {"train:baseline-adv": 80.0}
    floor = phases.baseline_cost_floor(slower)
    assert floor["phase_seconds"] == {"training": 61.0 + 61.0 + 50.0 + 80.0 + 80.0, "white-box attacks": 19.0,
                                      "other": 4.0}
    assert floor["recorded_total_seconds"] == 61.0 + 9.5 + 4.0 + 90.0 + 20.0 + 50.0 + 100.0 + 80.0
    run = _run_folder(tmp_path / "run", s)
    (run / "models" / "baseline-nat").mkdir(parents=True)
    (run / "models" / "baseline-nat" / "train.json").write_text(json.dumps(
        {"compiled": False, "iterations": 10, "history": [{"seconds": 30.0, "images_per_second": 100.0},
                                                          {"seconds": 31.0, "images_per_second": 99.0}]}))
    (run / "models" / "baseline-nat" / "whitebox.json").write_text(json.dumps(
        {"results": [{"attack": "fgsm", "seconds": 2.5, "n": 1000},
                     {"attack": "aa", "seconds": 5.0, "n": 500,
                      "components": [{"component": "clean", "seconds": 0.0, "attacked": 0},
                                     {"component": "square", "seconds": 4.0, "attacked": 20}]}]}))
    out = phases.measure(run)
    assert out["phase_seconds"] == {"training": 61.0, "white-box attacks (with masking diagnostics)": 9.5,
                                    "transfer attacks": 4.0}
    assert out["training"]["baseline-nat"]["epoch_seconds"] == [30.0, 31.0]
    assert out["whitebox"]["baseline-nat"] == {
        "job_seconds": 9.5, "crafting_seconds": {"fgsm": 2.5, "aa": 5.0}, "n": {"fgsm": 1000, "aa": 500},
        "other_seconds": 2.0,
        "components": {"aa": {"clean": {"seconds": 0.0, "attacked": 0}, "square": {"seconds": 4.0, "attacked": 20}}}}


def test_indicators_and_the_binarization_test_stand_beside_each_model() -> None:
    s = _summary()
    m = s["models"]["sphereconv-adv"]
    m["flags"]["silent-success"] = {"triggered": True, "evaluated": True}
    m["flags"]["square-beats-whitebox"] = {"triggered": False, "evaluated": False}
    m["whitebox"][LABELS["bim"]]["binarization"] = {
        "attack": LABELS["bim"], "n_points": 50, "n_valid": 48, "attack_success_rate": 0.9375,
        "noise_success_rate": 0.125, "construction_failure_rate": 0.04}
    md = render_markdown(build_tables(s), "table7")
    line = next(x for x in md.splitlines() if x.startswith("- SphereConv, adversarial training"))
    assert "silent-success (3 evaluated)" in line  # the unevaluated Square check is not counted
    assert (f"binarization test of `{LABELS['bim']}`: attack success 93.8% of 48 points (random noise 12.5%, "
            "construction failed on 4.0%)") in line


@pytest.mark.parametrize("part", ["table7-8-cpu-natural-half", "table7-8-cpu-baseline-only", "table7-8-cpu-tanhconv-at",
                                  "table7-8-cpu-baseline-at", "table7-8-cpu-ballconv-at"])
def test_partial_protocols_copy_the_full_protocol_verbatim(part) -> None:
    """The partial protocols of benchmarks/protocols measure the noise of the full one: their models, dataset,
    seed and attacks must be the full protocol's, or their numbers would not be comparable."""
    from pathlib import Path

    from robustbench_dc.protocol.schema import load_protocol

    root = Path(__file__).resolve().parents[1]
    full, _ = load_protocol(root / "protocols" / "table7-8-cpu.yaml")
    sub, _ = load_protocol(root / "benchmarks" / "protocols" / f"{part}.yaml")
    by_name = {m.name: m for m in full.models}
    assert sub.models and all(m == by_name[m.name] for m in sub.models)
    assert (sub.seed, sub.dataset, sub.evaluation.attacks, sub.evaluation.batch_size) == (
        full.seed, full.dataset, full.evaluation.attacks, full.evaluation.batch_size)
    kept = {m.name for m in sub.models}
    natural = [n for n in kept if n != "baseline-src" and not n.endswith("-at")]
    assert all(by_name[n].recipe == by_name["baseline"].recipe for n in natural)
    assert all(by_name[n].recipe == by_name["baseline-at"].recipe for n in kept if n.endswith("-at"))
    if sub.evaluation.transfer is not None:
        assert sub.evaluation.transfer.attacks == full.evaluation.transfer.attacks
        assert sub.evaluation.transfer.sources == full.evaluation.transfer.sources


def _quickstart_like() -> dict:
    """A summary like the quickstart's: MNIST sample, the four operators with natural training only."""
    s = _summary()
    s["dataset"] = "mnist-sample"
    s["models"] = {n: m for n, m in s["models"].items() if m.get("training") == "natural" and m["role"] == "model"}
    for m in s["models"].values():
        m.pop("transfer")
    return s


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s.update(_quickstart_like()), ["dataset is 'mnist-sample'", "no model for Baseline (adversarial)",
                                              "TanhConv (adversarial)", "no transfer source"]),
    (lambda s: s["models"].pop("ballconv-adv"), ["no model for BallConv (adversarial)"]),
    (lambda s: [m["whitebox"].pop(LABELS["bim"]) for m in s["models"].values() if m["role"] == "model"],
     ["no white-box fgsm and bim results for Baseline (natural)"]),
    (lambda s: s["models"]["tanhconv-adv"].pop("transfer"), ["no transfer fgsm and bim results for TanhConv (adversarial)"]),
    (lambda s: [m["whitebox"].pop(LABELS[a], None) for m in s["models"].values() if m["role"] == "model"
                for a in ("pgd", "autoattack")], ["no white-box pgd or autoattack results for Baseline (natural)"]),
])
def test_reproduce_refuses_runs_that_are_not_the_tables_protocol(edit, expected, tmp_path, capsys) -> None:
    """`rbdc reproduce --tables runs/quickstart` used to judge the paper's CIFAR-10 claims on MNIST numbers."""
    import json

    from robustbench_dc.cli import main

    s = _summary()
    edit(s)
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(s))
    out = tmp_path / "figures"
    assert main(["reproduce", "--tables", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a run of the Tables 7-8 protocol family" in err
    for text in expected:
        assert text in err
    assert not out.exists()


def test_reproduce_checks_both_runs_before_writing_anything(tmp_path, capsys) -> None:
    import json

    import numpy as np

    from robustbench_dc.cli import main

    tables_run = tmp_path / "t78"
    tables_run.mkdir()
    (tables_run / "summary.json").write_text(json.dumps(_summary()))
    fig_run = tmp_path / "f67"  # natural training only, like the quickstart: Figure 7 has nothing to show
    summary = {"run_id": "f", "dataset": "mnist-sample", "models": {}}
    for op in OPERATORS:
        summary["models"][op.lower()] = {"label": op, "training": "natural", "role": "model"}
        (fig_run / "models" / op.lower()).mkdir(parents=True)
        np.savez(fig_run / "models" / op.lower() / "embedding.npz", features=np.zeros((4, 2)), labels=np.arange(4))
    (fig_run / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "figures"
    assert main(["reproduce", "--tables", str(tables_run), "--figures", str(fig_run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a run of the Figures 6-7 protocol family" in err and "SphereConv (adversarial)" in err
    assert not out.exists()
    summary["dataset"] = "cifar10"
    (fig_run / "summary.json").write_text(json.dumps(summary))
    assert main(["reproduce", "--figures", str(fig_run), "--out", str(out)]) == 2
    assert "dataset is 'cifar10'" in capsys.readouterr().err


def test_the_reproduction_page_is_written_by_rbdc_reproduce(tmp_path, capsys) -> None:
    """docs/reproduction.md is what `rbdc reproduce --page` writes from the committed report, word
    for word (regenerate it with the command it records); a fresh report keeps its job times."""
    import json
    import shlex

    from robustbench_dc.cli import main
    from robustbench_dc.reproduce import reproduction_page

    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "reproduction.md").read_text()
    command = re.search(r"Generated by `([^`]+)`", page).group(1)
    argv = shlex.split(command)
    assert argv[:2] == ["rbdc", "reproduce"] and "--page" in argv

    def opt(name: str) -> list[str]:
        return [argv[i + 1] for i, a in enumerate(argv) if a == name]

    import os

    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert page == reproduction_page(opt("--out")[0], phases=(opt("--phases") or [None])[0],
                                         noise=opt("--noise"), command=command)
    finally:
        os.chdir(cwd)
    assert "73.3 min" in page and "Run-to-run noise" in page and "**Reproduced**" in page

    run = tmp_path / "t78"
    run.mkdir()
    s = _summary()
    s["job_seconds"] = {"train:baseline-nat": 120.0, "whitebox:baseline-nat": 60.0, "transfer": 6.0}
    (run / "summary.json").write_text(json.dumps(s))
    out = tmp_path / "figures"
    assert main(["reproduce", "--tables", str(run), "--out", str(out), "--page", str(tmp_path / "page.md")]) == 0
    written = (tmp_path / "page.md").read_text()
    assert "| training | 2.0 min (120 s) |" in written and "| all jobs | 3.1 min (186 s) |" in written
    assert json.loads((out / "tables78.json").read_text())["job_seconds"]["transfer"] == 6.0
