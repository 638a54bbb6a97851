"""Each objective kind, constraint kind and acquisition end to end on the simulated lab, the stop
rule, warm start, and the YAML errors for a wrong one."""

from __future__ import annotations

import math

import pytest
import torch

from sdl.config import load_campaign
from sdl.errors import ConfigError
from sdl.runner import Orchestrator, run_campaign
from sdl.runner.lab import running_lab
from sdl.store import Store
from sdl.strategy.acquisition import CostWeightedLogNEI
from tests.test_loop import DEMO, campaign, check_consistent

OXIDE = DEMO.parent / "oxide_phase_purity.yaml"
MAP = DEMO.parent / "nanoparticle_map.yaml"


def _run(c, embedded_broker):
    c = c.model_copy(update={"broker": embedded_broker.url})
    store = Store(c.store)
    orch = Orchestrator(c, store, embedded_broker.url)
    with running_lab(c.lab.world, c.lab.id, embedded_broker.url, seed=c.strategy.seed, time_scale=0):
        summary = orch.run()
    return summary, store, orch.strategy


def _acquisitions(strategy) -> list[str]:
    """The acquisition class behind each model-based proposal."""
    out = []
    for t in sorted(strategy.client._experiment.trials.values(), key=lambda t: t.index):
        gr = t.generator_runs[0] if t.generator_runs else None
        if gr is not None and gr._generation_node_name == "MBM":
            acqf = (gr._generator_kwargs or {}).get("botorch_acqf_class")
            out.append(getattr(acqf, "__name__", "default"))
    return out


def bayes(tmp_path, path=DEMO, n=4, **over):
    return campaign(tmp_path, **{"strategy.kind": "bayesian", "strategy.initial_trials": 2,
                                 "budget.max_experiments": n, **over}) if path == DEMO else load_campaign(
        path, **{"store": f"sqlite:///{tmp_path}/sdl.db", "strategy.initial_trials": 2,
                 "budget.max_experiments": n, "budget.stop_on_target": False, **over})


GOALS = {
    "maximize": [{"descriptor": "saxs.radius_nm", "goal": "maximize"}],
    "minimize": [{"descriptor": "saxs.polydispersity", "goal": "minimize"}],
    "target": [{"descriptor": "saxs.radius_nm", "goal": "target", "value": 8.0, "tolerance": 0.5}],
    "pareto": [{"descriptor": "saxs.radius_nm", "goal": "maximize", "threshold": 3.0},
               {"descriptor": "saxs.polydispersity", "goal": "minimize", "threshold": 0.3}],
}


@pytest.mark.slow
@pytest.mark.parametrize("goal", sorted(GOALS))
def test_objective_kinds_end_to_end(tmp_path, embedded_broker, goal):
    c = bayes(tmp_path, objectives=GOALS[goal], constraints=[])
    s, store, strategy = _run(c, embedded_broker)
    check_consistent(store, s.campaign_id, 4)
    opt = strategy.client._experiment.optimization_config
    assert type(opt).__name__ == ("MultiObjectiveOptimizationConfig" if goal == "pareto" else "OptimizationConfig")
    if goal == "pareto":  # thresholds became the reference point
        thresholds = {str(t) for t in opt.objective_thresholds}
        assert thresholds == {"OutcomeConstraint(saxs_radius_nm >= 3.0)", "OutcomeConstraint(saxs_polydispersity <= 0.3)"}
        assert "pareto_front" in __import__("sdl.report", fromlist=["x"]).campaign_record(store, s.campaign_id)
    else:
        assert opt.objective.minimize == (goal != "maximize")
    # sdl's log-NEI (128 QMC samples) / Ax's log-NEHVI
    assert _acquisitions(strategy) == ["default" if goal == "pareto" else "LogNEI"] * 2
    assert all(strategy.expected_improvement(i) is not None for i in (2, 3))


@pytest.mark.slow
def test_constraint_kinds_and_categorical_parameter_end_to_end(tmp_path, embedded_broker):
    # numeric <= and >=, categorical equals; the demo's reducing agent is a categorical parameter
    c = bayes(tmp_path, constraints=[{"descriptor": "saxs.polydispersity", "op": "<=", "bound": 0.1},
                                     {"descriptor": "saxs.radius_nm", "op": ">=", "bound": 2.0},
                                     {"descriptor": "saxs.model", "equals": "sphere", "min_probability": 0.8}])
    s, store, strategy = _run(c, embedded_broker)
    check_consistent(store, s.campaign_id, 4)
    cons = {str(oc) for oc in strategy.client._experiment.optimization_config.outcome_constraints}
    assert cons == {f"OutcomeConstraint({x})" for x in ("saxs_polydispersity <= 0.1", "saxs_radius_nm >= 2.0",
                                                        "saxs_model__is_sphere >= 0.8")}
    assert {t.parameters["reducing_agent"] for t in store.trials(s.campaign_id)} <= {"citrate", "borohydride",
                                                                                     "ascorbic_acid"}


@pytest.mark.slow
def test_linear_parameter_constraint_and_fixed_parameter(tmp_path, embedded_broker):
    c = bayes(tmp_path, OXIDE, n=4, parameter_constraints=["calcination_temperature_C + 400 * zr_fraction <= 1000"],
              parameters=[{"name": "zr_fraction", "type": "float", "bounds": [0.0, 1.0]},
                          {"name": "calcination_temperature_C", "type": "float", "bounds": [300, 1100]},
                          {"name": "calcination_time_h", "type": "float", "bounds": [0.5, 24], "log_scale": True},
                          {"name": "atmosphere", "type": "fixed", "value": "air"}])
    s, store, _ = _run(c, embedded_broker)
    trials = store.trials(s.campaign_id)
    assert len(trials) == 4
    for t in trials:
        p = t.parameters
        assert p["calcination_temperature_C"] + 400 * p["zr_fraction"] <= 1000 + 1e-6
        assert p["atmosphere"] == "air"


@pytest.mark.slow
def test_map_goal_uses_integrated_posterior_variance(tmp_path, embedded_broker):
    c = bayes(tmp_path, MAP, n=4)
    s, store, strategy = _run(c, embedded_broker)
    check_consistent(store, s.campaign_id, 4)
    assert _acquisitions(strategy) == ["qNegIntegratedPosteriorVariance"] * 2
    assert strategy.expected_improvement(3) is None  # mapping has no improvement to run out of
    assert not any(t.target_met for t in store.trials(s.campaign_id))  # nothing to meet: runs its budget
    assert {t.parameters["reducing_agent"] for t in store.trials(s.campaign_id)} == {"citrate"}


@pytest.mark.slow
def test_cost_aware_acquisition_and_its_snapshot(tmp_path, embedded_broker):
    c = bayes(tmp_path, **{"strategy.cost": {"base": 0.1, "per": {"time_min": 1 / 60}}})
    s, store, strategy = _run(c, embedded_broker)
    check_consistent(store, s.campaign_id, 4)
    assert _acquisitions(strategy) == ["CostWeightedLogNEI"] * 2
    assert all(strategy.expected_improvement(i) > 0 for i in (2, 3))
    from sdl.strategy.ax_strategy import AxStrategy

    again = AxStrategy(c, strategy.snapshot())  # the custom acquisition survives the JSON snapshot
    assert _acquisitions(again) == _acquisitions(strategy)


def test_cost_is_computed_in_the_parameters_units():
    acqf = CostWeightedLogNEI.__new__(CostWeightedLogNEI)
    torch.nn.Module.__init__(acqf)
    acqf.cost_base, acqf.cost_columns = 0.5, [(0, 2.0, False), (1, 1 / 60, True)]  # linear, log10-transformed
    X = torch.tensor([[[3.0, math.log10(120.0), 7.0]]], dtype=torch.double)  # 1 batch x q=1 x d=3
    assert acqf.cost(X).item() == pytest.approx(0.5 + 2 * 3 + 120 / 60)


@pytest.mark.slow
def test_stop_rule_no_expected_improvement_left(tmp_path, embedded_broker):
    c = bayes(tmp_path, n=10, constraints=[], **{"budget.min_expected_improvement": 1e6, "budget.patience": 2})
    s, store, strategy = _run(c, embedded_broker)
    assert s.n_trials == 4  # 2 start trials + 2 model-based proposals, each below the threshold
    assert "no expected improvement left" in s.stop_reason
    assert [e.kind for e in store.events(s.campaign_id)].count("proposal") == 2


@pytest.mark.slow
def test_stop_rule_waits_until_a_trial_meets_the_constraints(tmp_path, embedded_broker):
    # nothing can meet this bound: low expected improvement means "feasible region not found yet"
    c = bayes(tmp_path, n=5, constraints=[{"descriptor": "saxs.polydispersity", "op": "<=", "bound": 1e-4}],
              **{"budget.min_expected_improvement": 1e6, "budget.patience": 2})
    s, store, strategy = _run(c, embedded_broker)
    assert s.n_trials == 5 and "budget" in s.stop_reason


@pytest.mark.slow
def test_warm_start_reuses_an_earlier_campaigns_descriptors(tmp_path, embedded_broker):
    first = campaign(tmp_path, **{"budget.max_experiments": 4, "broker": embedded_broker.url})
    store = Store(first.store)
    earlier = run_campaign(first, store=store)
    done = [t for t in store.trials(earlier.campaign_id) if t.status == "completed"]
    # a new target: the earlier descriptors are re-evaluated, not copied
    second = bayes(tmp_path, n=2, objectives=[{"descriptor": "saxs.radius_nm", "goal": "target",
                                                          "value": 4.0, "tolerance": 0.5}],
                   **{"strategy.initial_trials": len(done), "strategy.warm_start": {"campaign": earlier.campaign_id}})
    s, store, strategy = _run(second, embedded_broker)
    trials = store.trials(s.campaign_id)
    prior = [t for t in trials if t.manual]
    assert len(prior) == len(done) and len(trials) - len(prior) == 2  # priors not in the budget
    radius = {d.trial_index: d.value_num for d in store.descriptors(earlier.campaign_id) if d.name == "saxs.radius_nm"
              and "ood" not in d.flags_json}
    for p, d in zip(prior, done):
        if d.index in radius:
            assert p.objectives["saxs_radius_nm__dist"][0] == pytest.approx(abs(radius[d.index] - 4.0), rel=0.2)
    # the Sobol start counted the prior trials: the first new proposal is already model-based
    assert _acquisitions(strategy) == ["LogNEI", "LogNEI"]


@pytest.mark.parametrize("change, message", [
    ({"objectives": [{"descriptor": "saxs.radius_nm", "goal": "map"},
                     {"descriptor": "saxs.polydispersity", "goal": "minimize"}]}, "must be the only objective"),
    ({"objectives": [{"descriptor": "saxs.radius_nm", "goal": "maximize", "threshold": 3}]}, "as a constraint"),
    ({"objectives": [{"descriptor": "saxs.radius_nm", "goal": "target", "value": 8, "tolerance": 1, "threshold": 3},
                     {"descriptor": "saxs.polydispersity", "goal": "minimize"}]}, "applies to goals"),
    ({"objectives": [{"descriptor": "saxs.radius_nm", "goal": "maximise"}]}, "'maximize', 'minimize', 'target' or 'map'"),
    ({"strategy.cost": {"per": {"speed": 1.0}}}, "not a float/int parameter"),
    ({"strategy.cost": {"per": {"time_min": -1.0}}}, "must be >= 0"),
    ({"strategy.cost": {"per": {"time_min": 1.0}}, "objectives": [
        {"descriptor": "saxs.radius_nm", "goal": "maximize"}, {"descriptor": "saxs.polydispersity", "goal": "minimize"}]},
     "does not apply to goal 'map' or to several objectives"),
    ({"budget.min_expected_improvement": 0}, "greater than 0"),
    ({"strategy.kind": "ax"}, "'bayesian', 'sobol' or 'ax_default'"),
    ({"strategy.warm_start": {"store": "sqlite:///x.db"}}, "warm_start.campaign"),
])
def test_wrong_strategy_yaml_is_a_clear_error(tmp_path, change, message):
    with pytest.raises(ConfigError) as e:
        campaign(tmp_path, **change) if not any("." in k for k in change) else load_campaign(DEMO, **change)
    assert message in str(e.value)


def test_warm_start_from_an_unknown_campaign_is_a_clear_error(tmp_path, embedded_broker):
    c = bayes(tmp_path, **{"strategy.warm_start": {"campaign": "no-such-campaign"}})
    with pytest.raises(Exception, match="no-such-campaign"):
        Orchestrator(c, Store(c.store), embedded_broker.url)
