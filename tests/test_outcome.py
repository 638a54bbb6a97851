"""What a campaign came to (sdl.outcome): target met and when, the best trial by the rule, each
objective's and constraint's status, the descriptor the evaluation used, numbers without noise.
Campaigns are written straight into a store; nothing runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdl.analysis.base import Descriptor, choose
from sdl.config import load_campaign
from sdl.outcome import Shown, chosen, fmt_number, fmt_value, from_store, outcome, score_legend
from sdl.report import campaign_record
from sdl.store import Store
from sdl.strategy import evaluate

ROOT = Path(__file__).parents[1]
RECIPE = dict(temperature_C=80.51234, precursor_mM=5.123456, surfactant_ratio=1.0000001, reducing_agent="citrate",
              time_min=30.0)


def nanoparticle_campaign(url: str):
    return load_campaign(ROOT / "campaigns" / "nanoparticle_size.yaml", store=url)


def saxs(radius, pd, model, analyser="saxs_ml", flags=(), p=0.55, radius_sem=0.0513, pd_sem=0.004):
    other = "rod" if model != "rod" else "sphere"
    return [Descriptor(name="saxs.radius_nm", value=radius, uncertainty=radius_sem, unit="nm", analyser=analyser,
                       flags=list(flags)),
            Descriptor(name="saxs.polydispersity", value=pd, uncertainty=pd_sem, analyser=analyser, flags=list(flags)),
            Descriptor(name="saxs.model", value=model, probabilities={model: p, other: round(1 - p, 6)},
                       analyser=analyser, flags=list(flags))]


def stored_campaign(tmp_path, cases: list, cid: str = "np-1", store: Store | None = None) -> tuple[Store, str]:
    """The nanoparticle campaign with one trial per case: a list of descriptors (in the order the
    analyser chain produced them; completed, evaluated as the orchestrator does) or a failure text."""
    url = "sqlite:///" + str(tmp_path / "x.db")
    c = nanoparticle_campaign(url)
    store = store or Store(url)
    store.create_campaign(cid, c.name, c.model_dump_json())
    for i, case in enumerate(cases):
        store.add_trial(cid, i, RECIPE, f"{cid}-{i}", None)
        if isinstance(case, str):
            store.finish_trial(cid, i, status="failed", strategy_state=None, failure=case)
            continue
        ev = evaluate(c, list(choose(case).values()))
        store.finish_trial(cid, i, status="completed", strategy_state=None, score=ev.score, target_met=ev.target_met,
                           objectives={k: list(v) for k, v in ev.metrics.items()}, descriptors=case)
    return store, cid


# trial 0 off target, 1 violates the polydispersity bound, 2 failed, 3 meets the target: the ML
# analyser flagged its curve out of distribution (and said rod), the fit gave sphere, 8.15 nm
MET = [saxs(9.3, 0.05, "sphere"), saxs(7.9412, 0.14, "sphere"), "robot jammed",
       saxs(8.1, 0.0712, "rod", flags=["ood"]) + saxs(8.15, 0.0712, "sphere", "saxs_fit", p=0.97, radius_sem=0.02,
                                                      pd_sem=0.003)]


def test_numbers_are_written_without_float_noise():
    assert fmt_number(0.1 + 0.2) == "0.3"
    assert fmt_number(80.51234) == "80.51" and fmt_number(30.0) == "30" and fmt_number(7) == "7"
    assert fmt_number(1.0000001) == "1" and fmt_number(12345.6) == "12346" and fmt_number(0.0) == "0"
    assert fmt_value(7.9412, 0.0513) == "7.94 ± 0.05"  # rounded to the uncertainty's precision
    assert fmt_value(0.0712, 0.004) == "0.071 ± 0.004"
    assert fmt_value(8.15, 0.02) == "8.150 ± 0.020"  # leading 1 or 2: two significant digits
    assert fmt_value(1234.5, 23.0) == "1234 ± 23"
    assert fmt_value(5.0, None) == "5" and fmt_value(7.94, 0.0) == "7.94"
    assert fmt_value(7.9412, 0.0513, plus_minus=False) == "7.94"


def test_target_met_outcome_says_where_and_what(tmp_path):
    store, cid = stored_campaign(tmp_path, MET)
    o = from_store(store, cid)
    assert (o.target_met_at, o.target_met_trial, o.best, o.best_meets_constraints) == (4, 3, 3, True)
    assert o.headline() == "target met at experiment 4 (trial 3)"
    assert o.best_line().startswith("best: trial 3 (score 0.3, lower is better")
    text = "\n".join(o.lines())
    lines = [" ".join(line.split()) for line in o.lines()]  # columns collapsed to single spaces
    assert "objective saxs.radius_nm = 8.150 ± 0.020 nm, target 8 ± 0.5 nm met" in lines
    assert "constraint saxs.polydispersity = 0.071 <= 0.1 ok" in lines
    assert "saxs.model = sphere (p = 0.97), wanted sphere ok" in lines
    # the values the evaluation used (the fit's), and what the other analyser said
    assert "measured saxs.radius_nm = 8.150 ± 0.020 nm by saxs_fit; saxs_ml gave 8.10 ± 0.05 nm [ood]" in lines
    assert "saxs.model = sphere (p = 0.97) by saxs_fit; saxs_ml gave rod (p = 0.55) [ood]" in lines
    assert "made with temperature_C = 80.51 degC" in lines and "precursor_mM = 5.123 mM" in lines
    assert "surfactant_ratio = 1" in lines and "reducing_agent = citrate" in lines and "time_min = 30 min" in lines
    assert "0000" not in text and "9999" not in text  # no float noise


def test_not_met_and_the_closest_trial_is_the_least_violating(tmp_path):
    # trial 0: radius on target, polydispersity far over the bound (score 0.04 + 1 + 2.0 = 3.04)
    # trial 1: off target, polydispersity just over (score 3 + 1 + 0.1 = 4.1): violates less
    # trial 2: a polydisperse rod, off target by far (violation 1 + 2, score 15)
    store, cid = stored_campaign(tmp_path, [saxs(8.02, 0.30, "sphere"), saxs(9.5, 0.11, "sphere"),
                                            saxs(14.0, 0.20, "rod")])
    trials = store.trials(cid)
    assert trials[0].score < trials[1].score < trials[2].score
    o = from_store(store, cid)
    assert not o.target_met and o.headline() == "target not met in 3 experiments"
    assert o.best == 1 and not o.best_meets_constraints
    assert o.best_line().startswith("best: no trial met every constraint; closest: trial 1")
    lines = [" ".join(line.split()) for line in o.lines()]
    assert "objective saxs.radius_nm = 9.50 ± 0.05 nm, target 8 ± 0.5 nm not met" in lines
    assert "constraint saxs.polydispersity = 0.110 <= 0.1 violated" in lines
    rec = campaign_record(store, cid)
    assert rec["best"]["index"] == 1 and rec["outcome"]["best_meets_constraints"] is False
    assert rec["outcome"]["target_met"] is False and rec["target_met_at"] is None


def test_best_meets_the_constraints_before_it_scores_low(tmp_path):
    # trial 0 misses the target but meets every constraint (score 2.0); trial 1 hits the radius but
    # is polydisperse (score 0 + 1 + 0.5 = 1.5): lower score, yet not the best
    store, cid = stored_campaign(tmp_path, [saxs(9.0, 0.08, "sphere"), saxs(8.0, 0.15, "sphere")])
    o = from_store(store, cid)
    trials = store.trials(cid)
    assert trials[1].score < trials[0].score
    assert o.best == 0 and o.best_meets_constraints
    assert campaign_record(store, cid)["best"]["index"] == 0
    assert o.best_line() == "best: trial 0 (score 2, lower is better)"


def test_the_descriptor_shown_is_the_one_the_evaluation_used(tmp_path):
    store, cid = stored_campaign(tmp_path, MET)
    rec = campaign_record(store, cid)
    best = rec["best"]
    assert best["index"] == 3 and best["parameters"] == RECIPE  # the shape the Python API reads
    model = best["descriptors"]["saxs.model"]
    assert model["value"] == "sphere" and model["analyser"] == "saxs_fit"  # not the ML's (ood) "rod"
    assert model["probabilities"] == {"sphere": 0.97, "rod": 0.03}
    assert [a["value"] for a in best["alternatives"]["saxs.model"]] == ["rod"]
    assert best["alternatives"]["saxs.model"][0]["analyser"] == "saxs_ml"
    assert rec["trials"][0]["alternatives"] == {}  # one analyser ran
    out = rec["outcome"]
    assert out["headline"] == "target met at experiment 4 (trial 3)" and out["target_met_trial"] == 3
    assert [c["status"] for c in out["constraints"]] == ["ok", "ok"]
    assert out["objectives"][0]["wanted"] == "8 ± 0.5 nm" and out["objectives"][0]["status"] == "met"
    assert [p["text"] for p in out["parameters"]][0] == "temperature_C = 80.51 degC"
    json.dumps(rec, default=str)  # `sdl status --json` prints it


def test_one_line_per_trial_names_the_analysers_where_several_gave_a_value():
    m = chosen(MET[3])
    assert m["saxs.model"].short() == "model=sphere(0.97) [saxs_fit; saxs_ml: rod(0.55)[ood]]"
    assert chosen(MET[0])["saxs.radius_nm"].short() == "radius_nm=9.30±0.05"
    assert Shown.of(MET[0][0]).text() == "saxs.radius_nm = 9.30 ± 0.05 nm"


def test_outcome_without_a_target(tmp_path):
    c = load_campaign({
        "name": "two", "parameters": [{"name": "a", "type": "float", "bounds": [0, 1]}],
        "workflow": [{"name": "m", "instrument": "saxs", "action": "measure", "technique": "saxs"}],
        "objectives": [{"descriptor": "saxs.radius_nm", "goal": "maximize"},
                       {"descriptor": "saxs.polydispersity", "goal": "minimize"}]})
    store = Store("sqlite:///" + str(tmp_path / "y.db"))
    store.create_campaign("two-1", c.name, c.model_dump_json())
    for i, (r, pd) in enumerate([(5.0, 0.2), (7.0, 0.1)]):
        store.add_trial("two-1", i, {"a": 0.1 * i}, f"s{i}", None)
        ds = saxs(r, pd, "sphere")[:2]
        ev = evaluate(c, ds)
        store.finish_trial("two-1", i, status="completed", strategy_state=None, score=ev.score,
                           target_met=ev.target_met, descriptors=ds)
    o = outcome(c, store.trials("two-1"), store.descriptors("two-1"))
    assert not o.has_target and o.headline().startswith("no target to meet (maximize saxs.radius_nm")
    assert o.best == 1 and "Pareto front" in o.best_line()
    assert "saxs.radius_nm = 7.00 ± 0.05 nm (maximize)" in " ".join(" ".join(o.lines()).split())
    assert score_legend(c) == ("score (lower is better) = -saxs.radius_nm + +saxs.polydispersity + 10 per needed "
                               "descriptor not produced (docs/strategy.md, Score)")


def test_no_trials_no_best(tmp_path):
    store, cid = stored_campaign(tmp_path, [])
    o = from_store(store, cid)
    assert o.best is None and o.headline() == "target not met in 0 experiments"
    assert campaign_record(store, cid)["best"] is None


def test_score_legend_names_the_targets():
    c = nanoparticle_campaign("sqlite://")
    assert score_legend(c).startswith("score (lower is better) = |saxs.radius_nm - 8| / 0.5 + per violated constraint")


@pytest.mark.parametrize("running", [True, False])
def test_in_progress_trials_are_counted_apart(tmp_path, running):
    store, cid = stored_campaign(tmp_path, [saxs(9.3, 0.05, "sphere")])
    if running:
        store.add_trial(cid, 1, RECIPE, "s1", None)
    head = from_store(store, cid).headline()
    assert head == ("target not met in 1 experiment, 1 in progress" if running else "target not met in 1 experiment")
