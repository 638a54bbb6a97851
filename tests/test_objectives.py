"""Descriptors -> metrics: targets, bounds, categorical constraints, untrusted flags."""

import pytest

from sdl.analysis.base import Descriptor
from sdl.config import load_campaign
from sdl.errors import AnalysisError
from sdl.strategy.objectives import evaluate, feasible, metrics, outcome_constraints

DEMO = "campaigns/nanoparticle_size.yaml"


def _d(radius=8.1, pd=0.05, model="sphere", p=0.95, flags=()):
    return [Descriptor(name="saxs.radius_nm", value=radius, uncertainty=0.2, unit="nm", flags=list(flags)),
            Descriptor(name="saxs.polydispersity", value=pd, uncertainty=0.01),
            Descriptor(name="saxs.model", value=model, probabilities={model: p, "cylinder": 1 - p})]


@pytest.fixture
def campaign():
    from pathlib import Path

    return load_campaign(Path(__file__).parents[1] / DEMO)


def test_metric_specs(campaign):
    specs = {m.name: m for m in metrics(campaign)}
    assert specs["saxs_radius_nm__dist"].minimize and specs["saxs_radius_nm__dist"].kind == "objective"
    assert outcome_constraints(campaign) == ["saxs_polydispersity <= 0.1", "saxs_model__is_sphere >= 0.5"]


def test_objective_and_constraint_on_one_descriptor_keep_both(campaign):
    c = campaign.model_copy(update={"objectives": [type(campaign.objectives[0])(descriptor="saxs.radius_nm",
                                                                                goal="maximize")],
                                    "constraints": [type(campaign.constraints[0])(descriptor="saxs.radius_nm", op="<=",
                                                                                  bound=10.0)]})
    assert [m.name for m in metrics(c)] == ["saxs_radius_nm"]  # one metric, modelled once
    assert outcome_constraints(c) == ["saxs_radius_nm <= 10.0"]  # and its bound is not lost
    two = c.model_copy(update={"constraints": [*c.constraints, type(c.constraints[0])(
        descriptor="saxs.radius_nm", op="<=", bound=9.0)]})
    assert outcome_constraints(two) == ["saxs_radius_nm <= 9.0"]  # Ax takes one bound per side: the tightest


def test_target_met_and_metrics(campaign):
    e = evaluate(campaign, _d())
    assert e.target_met
    assert e.metrics["saxs_radius_nm__dist"][0] == pytest.approx(0.1)
    assert e.metrics["saxs_radius_nm__dist"][1] == pytest.approx(0.2)  # descriptor uncertainty is the SEM
    assert e.metrics["saxs_model__is_sphere"][0] == pytest.approx(0.95)


@pytest.mark.parametrize("kw", [dict(radius=8.7), dict(pd=0.2), dict(model="cylinder", p=0.9)])
def test_target_missed(campaign, kw):
    e = evaluate(campaign, _d(**kw))
    assert not e.target_met and e.score > evaluate(campaign, _d()).score


def test_untrusted_descriptor_reported(campaign):
    e = evaluate(campaign, _d(flags=["ood"]))
    assert e.untrusted == ["saxs.radius_nm"] and not e.target_met


def test_missing_descriptor_leaves_its_metric_out_and_misses_target(campaign):
    e = evaluate(campaign, [_d()[0], _d()[2]])
    assert e.missing == ["saxs.polydispersity"] and not e.target_met
    assert "saxs_polydispersity" not in e.metrics and "saxs_radius_nm__dist" in e.metrics
    assert e.score > evaluate(campaign, _d(radius=8.7)).score


def test_no_needed_descriptor_at_all_is_an_analysis_error(campaign):
    with pytest.raises(AnalysisError, match="none of the descriptors the campaign needs"):
        evaluate(campaign, [])


def test_feasible_reads_the_constraints_only(campaign):
    ok = evaluate(campaign, _d(radius=3.0)).metrics  # far from the target, constraints met
    assert feasible(campaign, ok)
    assert not feasible(campaign, evaluate(campaign, _d(pd=0.2)).metrics)
    assert not feasible(campaign, evaluate(campaign, _d(model="cylinder", p=0.9)).metrics)
    assert not feasible(campaign, {k: v for k, v in ok.items() if k != "saxs_polydispersity"})  # missing
