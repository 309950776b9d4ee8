"""Tables 7-8 of Decoupled Networks from a protocol run's stored results, beside the paper's numbers,
and the paper's claims judged by rules on those numbers.

Input: a run's ``summary.json`` (written by the protocol runner). Each model of role ``model`` is
placed by its ``label`` (``Baseline``, ``SphereConv``, ``BallConv``, ``TanhConv``: the paper's
names, which the planner gives the operators ``baseline``, ``sphere+cos``, ``ball+cos``,
``tanh+cos``) and its ``training`` (``natural`` / ``adversarial``). White-box attacks are found
by their label's name (``fgsm-...``, ``bim-...``; ``pgd-...`` and ``autoattack-...`` become the
extra rows beyond the paper), transfer attacks likewise under the run's source model. Every
number of a table is read from the summary; nothing is typed, and a missing number stays
missing (shown as ``-``, and the claims that need it are ``not evaluated``).

Example::

    >>> tables = build_tables(json.load(open("runs/table7-8-cpu/summary.json")))
    >>> print(render_markdown(tables, "table7"))
    >>> [(c.key, c.status) for c in judge_claims(tables)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from robustbench_dc.errors import UserError
from robustbench_dc.reproduce.paper import ATTACKS, OPERATORS, PAPER_TABLES, TRAININGS

__all__ = ["ReportError", "Tables", "Claim", "build_tables", "tables_run_problems", "judge_claims", "render_markdown",
           "attack_kind", "EXTRA_ATTACKS", "CLAIM_RULES", "strong_attack_gaps", "phase_seconds", "TABLES_DATASET",
           "recipe_text", "machine_text", "minutes_text", "protocol_path", "phases_of"]


class ReportError(UserError, ValueError):
    """Run folders that cannot make the reproduction report (none given, or results that are
    not the cells of Tables 7-8 / Figures 6-7); the message says which model and why."""

#: White-box rows beyond the paper's (the suite's strong attacks), in display order.
EXTRA_ATTACKS: tuple[str, ...] = ("pgd", "autoattack")


def attack_kind(label: str) -> str | None:
    """``"fgsm"``, ``"bim"``, ``"pgd"`` or ``"autoattack"`` from an attack label, else None."""
    name = label.split("-", 1)[0].lower()
    return name if name in ("fgsm", "bim", "pgd", "autoattack") else None


@dataclass
class Tables:
    """Our numbers (fractions in [0, 1]) in the layout of Tables 7-8.

    ``white[training][attack][operator]`` (attack in ``none``, ``fgsm``, ``bim``, ``pgd``,
    ``autoattack``), ``black[training][attack][operator]`` (``none``, ``fgsm``, ``bim``),
    ``models[training][operator]`` the model name, ``flags[model]`` the triggered masking flags,
    ``attack_labels`` the full label of each attack kind, ``source`` the transfer source, and
    the summary's provenance fields.
    """

    white: dict[str, dict[str, dict[str, float | None]]]
    black: dict[str, dict[str, dict[str, float | None]]]
    models: dict[str, dict[str, str]]
    flags: dict[str, list[str]]
    attack_labels: dict[str, str]
    source: str | None
    provenance: dict[str, Any] = field(default_factory=dict)
    #: per model (sources included): arch, operator, parameters, training, recipe, seed, role
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: test examples each white-box attack kind ran on (a strong attack may run on a prefix)
    n_examples: dict[str, int] = field(default_factory=dict)
    #: wall time per job of the run, in seconds, as the runner recorded it
    job_seconds: dict[str, float] = field(default_factory=dict)
    #: per model, the diagnostics that were evaluated (triggered or not)
    checked: dict[str, list[str]] = field(default_factory=dict)
    #: per model and attack label, the binarization test (when the protocol requested it)
    binarization: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def value(self, table: str, training: str, attack: str, operator: str) -> float | None:
        grid = self.white if table == "table7" else self.black
        return grid.get(training, {}).get(attack, {}).get(operator)


def _number(v: Any) -> float | None:
    if isinstance(v, Mapping):
        v = v.get("robust_accuracy")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def build_tables(summary: Mapping[str, Any]) -> Tables:
    """Place every model of a run's summary into the layout of Tables 7-8.

    Raises:
        ReportError: (a ``ValueError``) two models claim the same (operator, training) cell, or a
            model has no paper operator label (it is then not part of the reproduction: give it
            role ``source`` or one of the labels).
    """
    white: dict[str, dict[str, dict[str, float | None]]] = {t: {} for t in TRAININGS}
    black: dict[str, dict[str, dict[str, float | None]]] = {t: {} for t in TRAININGS}
    models: dict[str, dict[str, str]] = {t: {} for t in TRAININGS}
    flags: dict[str, list[str]] = {}
    checked: dict[str, list[str]] = {}
    binarization: dict[str, dict[str, dict[str, Any]]] = {}
    labels: dict[str, str] = {}
    sources: set[str] = set()
    settings: dict[str, dict[str, Any]] = {}
    n_examples: dict[str, int] = {}
    for name, m in summary.get("models", {}).items():
        settings[name] = {k: m.get(k) for k in ("label", "role", "arch", "operator", "operator_params", "arch_params",
                                                 "training", "recipe", "seed", "trained_with")}
        if m.get("role") == "source":
            continue
        op, training = m.get("label"), m.get("training")
        if op not in OPERATORS or training not in TRAININGS:
            raise ReportError(f"model {name!r}: label {op!r} / training {training!r} is not a cell of Tables 7-8 "
                             f"(labels: {', '.join(OPERATORS)}; training: {', '.join(TRAININGS)})")
        if op in models[training]:
            raise ReportError(f"models {models[training][op]!r} and {name!r} are both {op}, {training} training")
        models[training][op] = name
        clean = _number(m.get("clean_accuracy"))
        white[training].setdefault("none", {})[op] = clean
        black[training].setdefault("none", {})[op] = clean
        for label, result in (m.get("whitebox") or {}).items():
            kind = attack_kind(label)
            if kind is not None:
                white[training].setdefault(kind, {})[op] = _number(result)
                labels.setdefault(kind, label)
                if isinstance(result, Mapping) and isinstance(result.get("n"), int):
                    n_examples.setdefault(kind, result["n"])
        for source, attacks in (m.get("transfer") or {}).items():
            sources.add(source)
            for label, value in attacks.items():
                kind = attack_kind(label)
                if kind in ("fgsm", "bim"):
                    black[training].setdefault(kind, {})[op] = _number(value)
        flags[name] = sorted(f for f, v in (m.get("flags") or {}).items()
                             if (v.get("triggered") if isinstance(v, Mapping) else v))
        checked[name] = sorted(f for f, v in (m.get("flags") or {}).items()
                               if not isinstance(v, Mapping) or v.get("evaluated", True))
        binarization[name] = {label: r["binarization"] for label, r in (m.get("whitebox") or {}).items()
                              if isinstance(r, Mapping) and isinstance(r.get("binarization"), Mapping)}
    if len(sources) > 1:
        raise ReportError(f"Table 8 has one black-box source; the run has {sorted(sources)}")
    prov = {k: summary.get(k) for k in ("run_id", "protocol", "dataset", "n_test", "n_train", "seed", "data_sha256",
                                        "train_data_sha256", "command", "versions", "started", "finished", "eps",
                                        "machine")}
    return Tables(white, black, models, flags, labels, next(iter(sources), None), prov, settings, n_examples,
                  dict(summary.get("job_seconds") or {}), checked, binarization)


#: The dataset of the paper's Tables 7-8.
TABLES_DATASET = "cifar10"


def tables_run_problems(summary: Mapping[str, Any]) -> list[str]:
    """What a run's summary lacks to be a run of the Tables 7-8 protocol family (empty: nothing).

    The tables and their claims read: the CIFAR-10 test set; one model per (operator, training)
    cell of the paper (``Baseline``/``SphereConv``/``BallConv``/``TanhConv``, natural and
    adversarial training), each with its clean accuracy and white-box FGSM and BIM results; one
    transfer source whose FGSM and BIM attacks reached every model (Table 8, the black-box
    claim); and PGD or AutoAttack on the naturally trained models (the strong-attacks claim).
    A run of another protocol (the quickstart's MNIST models, say) would otherwise be judged on
    numbers the paper's claims are not about.
    """
    problems: list[str] = []
    dataset = summary.get("dataset")
    if dataset != TABLES_DATASET:
        problems.append(f"dataset is {dataset!r}, the tables need {TABLES_DATASET!r}")
    raw = summary.get("models")
    models: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    cells: dict[tuple[str, str], Mapping[str, Any]] = {}
    sources = []
    for name, m in models.items():
        if not isinstance(m, Mapping):
            continue
        if m.get("role") == "source":
            sources.append(name)
        elif m.get("label") in OPERATORS and m.get("training") in TRAININGS:
            cells.setdefault((m["training"], m["label"]), m)
    missing = [f"{op} ({training})" for training in TRAININGS for op in OPERATORS if (training, op) not in cells]
    if missing:
        problems.append("no model for " + ", ".join(missing))
    if not sources:
        problems.append("no transfer source model (role: source) for Table 8")

    def lacking(kinds: tuple[str, ...], where: str, models_of: list[tuple[str, str]], *, any_of: bool = False) -> None:
        gaps = []
        for training, op in models_of:
            m = cells.get((training, op))
            if m is None:
                continue
            if where == "whitebox":
                have = {attack_kind(label) for label, r in (m.get("whitebox") or {}).items() if _number(r) is not None}
            else:
                have = {attack_kind(label) for attacks in (m.get("transfer") or {}).values()
                        if isinstance(attacks, Mapping) for label, r in attacks.items() if _number(r) is not None}
            need = set(kinds)
            if (not need & have) if any_of else (need - have):
                gaps.append(f"{op} ({training})")
        if gaps:
            what = " or ".join(kinds) if any_of else " and ".join(kinds)
            problems.append(f"no {'white-box' if where == 'whitebox' else where} {what} results for "
                            + ", ".join(gaps))

    every = [(t, op) for t in TRAININGS for op in OPERATORS]
    clean = [f"{op} ({t})" for t, op in every
             if (t, op) in cells and _number(cells[t, op].get("clean_accuracy")) is None]
    if clean:
        problems.append("no clean accuracy for " + ", ".join(clean))
    lacking(("fgsm", "bim"), "whitebox", every)
    lacking(("fgsm", "bim"), "transfer", every)
    lacking(EXTRA_ATTACKS, "whitebox", [("natural", op) for op in OPERATORS], any_of=True)
    return problems


# ----------------------------------------------------------------------------- claims
@dataclass
class Claim:
    """One claim of the paper, its rule, and the verdict on our numbers."""

    key: str
    text: str
    rule: str
    status: str  # "reproduced" | "not reproduced" | "mixed" | "not evaluated"
    evidence: str


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def claim_verdict(checks: list[bool | None]) -> str:
    if not checks or any(c is None for c in checks):
        return "not evaluated"
    return "reproduced" if all(checks) else "not reproduced" if not any(checks) else "mixed"


_BOUNDED = ("SphereConv", "BallConv", "TanhConv")
#: An accuracy "low" under BIM, and a "far better" / "helps" margin, in fractions (the paper's own
#: gaps are 50-75 points; these thresholds are the rules' and are printed with every verdict).
LOW = 0.20
MARGIN = 0.20


def _cmp(a: float | None, b: float | None, op: Callable[[float, float], bool]) -> bool | None:
    return None if a is None or b is None else op(a, b)


def _bounded_beat_baseline(t: Tables, attack: str) -> tuple[list[bool | None], str]:
    w = t.white["natural"].get(attack, {})
    base = w.get("Baseline")
    checks = [_cmp(w.get(op), base, lambda a, b: a > b) for op in _BOUNDED]
    ev = f"Baseline {_pct(base)}; " + ", ".join(f"{op} {_pct(w.get(op))}" for op in _BOUNDED)
    return checks, ev


def _claim_clean(t: Tables) -> tuple[list[bool | None], str]:
    return _bounded_beat_baseline(t, "none")


def _claim_fgsm(t: Tables) -> tuple[list[bool | None], str]:
    return _bounded_beat_baseline(t, "fgsm")


def _claim_bim_low(t: Tables) -> tuple[list[bool | None], str]:
    w = t.white["natural"].get("bim", {})
    return [_cmp(w.get(op), LOW, lambda a, b: a < b) for op in OPERATORS], \
        ", ".join(f"{op} {_pct(w.get(op))}" for op in OPERATORS)


def _claim_at_baseline(t: Tables) -> tuple[list[bool | None], str]:
    nat, adv = t.white["natural"], t.white["adversarial"]
    f_nat, f_adv = nat.get("fgsm", {}).get("Baseline"), adv.get("fgsm", {}).get("Baseline")
    b_adv = adv.get("bim", {}).get("Baseline")
    checks = [_cmp(f_adv, f_nat, lambda a, b: a - b >= MARGIN), _cmp(b_adv, LOW, lambda a, b: a < b)]
    return checks, (f"Baseline FGSM: natural {_pct(f_nat)}, adversarial {_pct(f_adv)}; "
                    f"Baseline BIM after adversarial training {_pct(b_adv)}")


def _claim_sphere_bim(t: Tables) -> tuple[list[bool | None], str]:
    w = t.white["adversarial"].get("bim", {})
    s = w.get("SphereConv")
    return [_cmp(s, w.get(op), lambda a, b: a > b) for op in OPERATORS if op != "SphereConv"], \
        ", ".join(f"{op} {_pct(w.get(op))}" for op in OPERATORS)


def _claim_blackbox(t: Tables) -> tuple[list[bool | None], str]:
    checks, parts = [], []
    for op in OPERATORS:
        wb, bb = t.white["adversarial"].get("bim", {}).get(op), t.black["adversarial"].get("bim", {}).get(op)
        checks.append(_cmp(bb, wb, lambda a, b: a - b >= MARGIN))
        parts.append(f"{op} {_pct(bb)} vs {_pct(wb)}")
    return checks, "BIM black-box vs white-box, adversarial training: " + "; ".join(parts)


def _claim_strong(t: Tables) -> tuple[list[bool | None], str]:
    """Beyond the paper: bounded operators' FGSM advantage survives the strongest attack."""
    nat = t.white["natural"]
    strong = "autoattack" if nat.get("autoattack") else "pgd"
    w = nat.get(strong, {})
    base = w.get("Baseline")
    checks = [_cmp(w.get(op), base, lambda a, b: a - b > 0.01) for op in _BOUNDED]
    return checks, f"{strong}: Baseline {_pct(base)}; " + ", ".join(f"{op} {_pct(w.get(op))}" for op in _BOUNDED)


#: (key, the paper's claim, the rule, the function that evaluates it)
CLAIM_RULES: list[tuple[str, str, str, Callable[[Tables], tuple[list[bool | None], str]]]] = [
    ("clean-accuracy", "Bounded operators reach higher clean accuracy than the baseline (natural training).",
     "clean accuracy of each of SphereConv, BallConv, TanhConv > Baseline's", _claim_clean),
    ("fgsm-natural", "Under natural training, bounded operators resist white-box FGSM better than the baseline.",
     "white-box FGSM accuracy of each bounded operator > Baseline's", _claim_fgsm),
    ("bim-natural-low", "White-box BIM drives every naturally trained model low.",
     f"white-box BIM accuracy of every naturally trained model < {100 * LOW:.0f}%", _claim_bim_low),
    ("fgsm-at-baseline", "FGSM adversarial training helps the baseline against FGSM but not against BIM.",
     f"Baseline FGSM accuracy rises by >= {100 * MARGIN:.0f} points with adversarial training, and its BIM "
     f"accuracy stays < {100 * LOW:.0f}%", _claim_at_baseline),
    ("sphere-at-bim", "With adversarial training, SphereConv resists white-box BIM best.",
     "adversarially trained SphereConv's BIM accuracy > every other adversarially trained model's", _claim_sphere_bim),
    ("blackbox-vs-whitebox", "Adversarially trained models resist black-box attacks far better than white-box ones.",
     f"for every adversarially trained model, black-box BIM accuracy >= white-box BIM accuracy + "
     f"{100 * MARGIN:.0f} points", _claim_blackbox),
    ("strong-attacks", "(Beyond the paper) The bounded operators' white-box advantage survives the strongest attack.",
     "natural training: AutoAttack (else PGD) accuracy of each bounded operator > Baseline's + 1 point",
     _claim_strong),
]


def judge_claims(tables: Tables) -> list[Claim]:
    """Every claim of :data:`CLAIM_RULES`, judged on ``tables``."""
    out = []
    for key, text, rule, fn in CLAIM_RULES:
        checks, evidence = fn(tables)
        out.append(Claim(key, text, rule, claim_verdict(checks), evidence))
    return out


def strong_attack_gaps(tables: Tables) -> list[tuple[str, str, str, bool | None]]:
    """Per (training, operator): does the model look robust under FGSM/BIM but not under the strong
    attacks? Rule: its best FGSM/BIM accuracy exceeds its worst PGD/AutoAttack accuracy by at least
    :data:`MARGIN`. Returns ``(training, operator, evidence, gap)`` (gap None when a number is missing)."""
    out = []
    for training in TRAININGS:
        w = tables.white[training]
        for op in OPERATORS:
            if op not in tables.models[training]:
                continue
            weak = [w.get(a, {}).get(op) for a in ("fgsm", "bim")]
            strong = [w.get(a, {}).get(op) for a in EXTRA_ATTACKS if w.get(a)]
            ev = ", ".join(f"{_ROW_NAMES[a]} {_pct(w.get(a, {}).get(op))}"
                           for a in ("fgsm", "bim") + tuple(a for a in EXTRA_ATTACKS if w.get(a)))
            known_weak, known_strong = [v for v in weak if v is not None], [v for v in strong if v is not None]
            gap = None if not known_weak or not known_strong else max(known_weak) - min(known_strong) >= MARGIN
            out.append((training, op, ev, gap))
    return out


#: Phases of a Tables 7-8 run, by the kind of job (the part of a job id before ``:``).
_PHASES = (("training", ("train",)), ("white-box attacks (with masking diagnostics)", ("whitebox",)),
           ("transfer attacks", ("transfer",)), ("figures", ("figures",)))


def phases_of(job_seconds: Mapping[str, float]) -> dict[str, float]:
    """Wall time per phase from recorded job times (only phases that have jobs)."""
    out: dict[str, float] = {}
    for phase, kinds in _PHASES:
        times = [v for k, v in job_seconds.items() if k.split(":", 1)[0] in kinds]
        if times:
            out[phase] = sum(times)
    return out


def phase_seconds(tables: Tables) -> dict[str, float]:
    """Wall time per phase from the run's recorded job times (only phases that have jobs)."""
    return phases_of(tables.job_seconds)


def _resolved(setting: Any, ran: Any) -> str:
    """``auto (ran bf16)``: a recipe's setting and, when recorded, what it resolved to."""
    return f"{setting}" + (f" (ran {ran})" if ran is not None and str(ran) != str(setting) else "")


def recipe_text(r: Any, trained_with: Any = None) -> str:
    if not isinstance(r, Mapping):
        return str(r)
    ran = trained_with if isinstance(trained_with, Mapping) else {}
    compiled = ran.get("compiled")
    opt, sch, aug, adv = r.get("optimizer") or {}, r.get("schedule") or {}, r.get("augmentation") or {}, \
        r.get("adversarial")
    length = f"{r['epochs']} epochs" if r.get("epochs") else f"{r.get('iterations')} iterations"
    sched = sch.get("name", "?") + (f" (warm-up {sch.get('warmup')})" if sch.get("name") == "onecycle" else "") + \
        (f" (x{sch.get('gamma')} at {list(sch.get('milestones', []))})" if sch.get("name") == "step" else "")
    augs = [x for x, on in (("flip", aug.get("flip")), (f"crop {aug.get('crop_padding')}", aug.get("crop_padding")))
            if on]
    text = (f"{length}, batch {r.get('batch_size')}, {opt.get('name')} lr {opt.get('lr')}, {sched}, "
            f"augmentation: {', '.join(augs) or 'none'}, precision {_resolved(r.get('precision'), ran.get('precision'))}, "
            f"compile {_resolved(r.get('compile'), None if compiled is None else ('compiled' if compiled else 'eager'))}")
    if adv:
        text += (f"; adversarial: {adv.get('method')} eps {adv.get('eps'):.4g}, ratio {adv.get('ratio')}, "
                 f"{adv.get('steps')} step(s)")
    return text


def protocol_path(proto: Mapping[str, Any]) -> str:
    """The protocol as a user finds it: a bundled protocol (run by name, recorded with the absolute
    path of the installed package's copy) as ``protocols/NAME.yaml``, else the recorded path."""
    path = str(proto.get("path") or proto.get("name")).replace("\\", "/")
    marker = "robustbench_dc/resources/protocols/"
    return "protocols/" + path.split(marker, 1)[1] if marker in path else path


def _protocol_text(proto: Any) -> str:
    if not isinstance(proto, Mapping):
        return str(proto)
    return f"`{protocol_path(proto)}`" + (f" (sha256 {proto['sha256']})" if proto.get("sha256") else "")


def machine_text(m: Any) -> str:
    if not isinstance(m, Mapping):
        return "not recorded"
    gpu = f", GPU {m.get('gpu_name')}" if m.get("gpu_used") else ", no GPU"
    mem = m.get("memory_bytes")
    cap = m.get("cpu_capability")
    vec = "" if cap is None else f", {cap}" + (
        "" if m.get("cpu_bf16_native") is None else
        (" with native bfloat16" if m["cpu_bf16_native"] else " without native bfloat16"))
    return (f"{m.get('cpu_model')}, {m.get('usable_cores')} usable cores" + vec
            + (f", {mem / 2**30:.0f} GiB memory" if mem else "") + gpu + f" ({m.get('platform')})")


def binarization_verdict(b: Mapping[str, Any]) -> str:
    """One clause for a stored binarization test."""
    asr, noise = b.get("attack_success_rate"), b.get("noise_success_rate")
    if asr is None:
        return f"binarization test of `{b.get('attack')}`: no valid construction of {b.get('n_points')} points"
    return (f"binarization test of `{b.get('attack')}`: attack success {100 * asr:.1f}% of {b.get('n_valid')} points "
            f"(random noise {100 * (noise or 0.0):.1f}%, construction failed on "
            f"{100 * b.get('construction_failure_rate', 0.0):.1f}%)")


def minutes_text(seconds: float) -> str:
    return f"{seconds / 60:.1f} min ({seconds:.0f} s)"


# ----------------------------------------------------------------------------- rendering
_ROW_NAMES = {"none": "none (clean)", "fgsm": "FGSM", "bim": "BIM", "pgd": "PGD", "autoattack": "AutoAttack"}


def render_markdown(tables: Tables, table: str, title: str | None = None) -> str:
    """``table7`` or ``table8`` in the paper's layout: each cell ``ours (paper)`` in %, the extra
    rows (strong attacks, Table 7 only) without a paper number, the masking flags per model,
    FGSM/BIM against the strong attacks, the claims, the scale and settings of every model, the
    wall time per phase, and the provenance of every number."""
    paper = PAPER_TABLES[table]
    grid = tables.white if table == "table7" else tables.black
    kind = "White-box" if table == "table7" else f"Black-box (transfer from {tables.source or '?'})"
    lines = [f"# {title or ('Table 7' if table == 'table7' else 'Table 8')}: {kind} attacks on "
             f"{tables.provenance.get('dataset')}, accuracy (%)", "",
             "Each cell: ours (paper). Our numbers are read from the run's `summary.json`; the paper's from "
             "Liu et al., CVPR 2018.", "",
             "| training | attack | " + " | ".join(OPERATORS) + " |",
             "|---|---|" + "---:|" * len(OPERATORS)]
    rows = list(ATTACKS) + ([a for a in EXTRA_ATTACKS if any(grid[t].get(a) for t in TRAININGS)]
                            if table == "table7" else [])
    for training in TRAININGS:
        for attack in rows:
            cells = []
            for op in OPERATORS:
                ours = grid[training].get(attack, {}).get(op)
                ref = paper[training].get(attack, {}).get(op)
                cells.append(_pct(ours) + ("" if ref is None else f" ({ref:.2f})"))
            label = tables.attack_labels.get(attack, "") if attack != "none" else ""
            name = _ROW_NAMES[attack] + (f" `{label}`" if label else "")
            lines.append(f"| {training} | {name} | " + " | ".join(cells) + " |")
    p = tables.provenance
    n_all = p.get("n_test")
    prefixes = {k: v for k, v in tables.n_examples.items() if n_all is not None and v != n_all}
    lines += ["", f"Test examples: the first {n_all} of the test set"
              + ("".join(f"; {_ROW_NAMES[k]} on the first {v}" for k, v in prefixes.items()) if table == "table7"
                 else "") + "."]
    lines += ["", "Gradient-masking flags and attack-failure indicators triggered (docs/masking_flags.md; "
                  "in brackets the number evaluated for the model):", ""]
    for training in TRAININGS:
        for op in OPERATORS:
            model = tables.models[training].get(op)
            if model is not None:
                checked = f" ({len(tables.checked[model])} evaluated)" if tables.checked.get(model) else ""
                lines.append(f"- {op}, {training} training (`{model}`): "
                             f"{', '.join(tables.flags.get(model, [])) or 'none'}{checked}"
                             + "".join(f"; {binarization_verdict(b)}"
                                       for b in tables.binarization.get(model, {}).values()))
    gaps = strong_attack_gaps(tables) if table == "table7" else []
    if any(g is not None for *_, g in gaps):
        lines += ["", "## FGSM/BIM against the strong attacks", "",
                  f"A model looks robust under FGSM/BIM but not under the strong attacks when its best FGSM/BIM "
                  f"accuracy exceeds its worst PGD/AutoAttack accuracy by >= {100 * MARGIN:.0f} points"
                  + (" (the strong attacks ran on a prefix of the same test examples)" if prefixes else "") + ".", ""]
        for training, op, ev, gap in gaps:
            verdict = ("**looks robust under FGSM/BIM but not under the strong attacks**" if gap
                       else "not evaluated" if gap is None else "no such gap")
            lines.append(f"- {op}, {training} training: {ev}: {verdict}")
    lines += ["", "## The paper's claims, judged by rule", "", "| claim | rule | verdict | numbers (ours, %) |",
              "|---|---|---|---|"]
    for c in judge_claims(tables):
        lines.append(f"| {c.text} | {c.rule} | **{c.status}** | {c.evidence} |")
    if tables.settings:
        proto = p.get("protocol") or {}
        lines += ["", "## Scale and settings", "", f"Protocol `{protocol_path(proto)}`"
                  + (f": {str(proto.get('description')).rstrip('.')}." if proto.get("description") else ".")
                  + " Every setting the paper does not publish is stated in the protocol file's header.", "",
                  "| model | role | operator | parameters | training recipe | seed |", "|---|---|---|---|---|---|"]
        for name, m in tables.settings.items():
            params = {**(m.get("arch_params") or {}), **(m.get("operator_params") or {})}
            label, role = m.get("label") or "", m.get("role") or ""
            who = label if role in label.lower() else f"{label} ({role})"
            lines.append(f"| `{name}` | {who} | {m.get('arch')} "
                         f"`{m.get('operator')}` | " + ", ".join(f"{k}={v}" for k, v in params.items())
                         + f" | {recipe_text(m.get('recipe'), m.get('trained_with'))} | {m.get('seed')} |")
    phases = phase_seconds(tables)
    if phases:
        lines += ["", "## Wall time per phase", "", "| phase | wall time |", "|---|---:|"]
        lines += [f"| {k} | {minutes_text(v)} |" for k, v in phases.items()]
        lines.append(f"| all jobs | {minutes_text(sum(tables.job_seconds.values()))} |")
        lines += ["", "Per job (s): " + ", ".join(f"{k} {v:.0f}" for k, v in tables.job_seconds.items())]
    lines += ["", "## Provenance", "",
              f"- command: `{p.get('command')}`", f"- run: {p.get('run_id')}, protocol "
              f"{_protocol_text(p.get('protocol'))}",
              f"- seed: {p.get('seed')}; test examples: first {p.get('n_test')}; training examples: "
              f"{p.get('n_train') or 'all'}", f"- data sha256: test {p.get('data_sha256')}, train "
              f"{p.get('train_data_sha256')}", f"- versions: {p.get('versions')}",
              f"- machine: {machine_text(p.get('machine'))}",
              f"- started {p.get('started')}, finished {p.get('finished')}"]
    return "\n".join(lines) + "\n"
