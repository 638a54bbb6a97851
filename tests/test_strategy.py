"""The Ax strategy's book-keeping: failed recipes, lab faults, manual experiments, noise setting."""

from __future__ import annotations

import pytest

from sdl.strategy.ax_strategy import AxStrategy
from tests.test_loop import campaign


def _data(s: AxStrategy, index: int) -> dict[str, tuple[float, float]]:
    df = s.client._experiment.lookup_data().df
    rows = df[df["trial_index"] == index]
    return {r.metric_name: (r.mean, r.sem) for r in rows.itertuples()}


@pytest.mark.parametrize("noise", ["inferred", "measured"])
def test_failed_recipe_is_learned_as_the_worst_outcome(tmp_path, noise):
    s = AxStrategy(campaign(tmp_path, **{"strategy.noise": noise}))
    (i0, _), (i1, _), (i2, _), (i3, _) = s.ask(4)
    s.fail(i0, "lab fault before anything was seen", infeasible=True)  # nothing to compare with yet
    s.tell(i1, {"saxs_radius_nm__dist": (3.0, 0.1), "saxs_polydispersity": (0.2, 0.01)})
    s.tell(i2, {"saxs_radius_nm__dist": (1.0, 0.1), "saxs_polydispersity": (0.1, 0.01)})
    s.fail(i3, "no particles formed", infeasible=True)
    status = {t.index: t.status.name for t in s.client._experiment.trials.values()}
    assert status[i0] == "FAILED" and status[i3] == "COMPLETED"
    imputed = _data(s, i3)
    assert set(imputed) == {"saxs_radius_nm__dist"}  # the worst distance; constraints left out
    assert imputed["saxs_radius_nm__dist"][0] == 3.0
    measured_sem = _data(s, i1)["saxs_radius_nm__dist"][1]
    assert (measured_sem == 0.1) if noise == "measured" else measured_sem != measured_sem  # NaN: inferred


def test_lab_fault_teaches_nothing_and_manual_experiment_attaches(tmp_path):
    s = AxStrategy(campaign(tmp_path))
    [(i0, p0)] = s.ask(1)
    s.fail(i0, "driver timed out")
    assert s.client._experiment.trials[i0].status.name == "FAILED"
    i1 = s.attach(dict(p0), {"saxs_radius_nm__dist": (0.5, 0.1)})
    assert i1 == i0 + 1 and s.client._experiment.trials[i1].status.name == "COMPLETED"
    [(i2, _)] = s.ask(1)
    assert i2 == i1 + 1


def _choice_campaign(tmp_path):
    from sdl.config import load_campaign

    return load_campaign({
        "name": "choices", "store": f"sqlite:///{tmp_path}/x.db", "lab": {"world": None},
        "parameters": [{"name": "x", "type": "float", "bounds": [0.0, 1.0]},
                       {"name": "kind", "type": "choice", "values": ["a", "b", "c"]},
                       {"name": "batch", "type": "fixed", "value": "B1"}],
        "workflow": [{"name": "m", "instrument": "sim", "action": "measure", "technique": "sim"}],
        "objectives": [{"descriptor": "sim.f", "goal": "minimize"}],
        "strategy": {"kind": "bayesian", "initial_trials": 3, "initialize_with_center": False, "seed": 0},
    })


def _observed(s: AxStrategy) -> None:
    """Category c is clearly best, but seen only once; a and b many times."""
    for k in range(12):
        x = (k % 6) / 5
        kind = "a" if k < 6 else "b"
        s.attach({"x": x, "kind": kind, "batch": "B1"}, {"sim_f": (1.0 + (x - 0.3) ** 2, 0.01)})
    s.attach({"x": 0.9, "kind": "c", "batch": "B1"}, {"sim_f": (0.2, 0.01)})


def test_choice_parameter_is_optimised_once_per_value_with_a_shared_budget(tmp_path, monkeypatch):
    from ax.generators.torch.botorch_modular.acquisition import Acquisition as AxAcquisition

    from sdl.strategy.acquisition import IMPROVEMENT_OPTIMIZER

    calls = []
    original = AxAcquisition.optimize

    def spy(self, n, search_space_digest, **kw):
        names = search_space_digest.feature_names
        fixed = kw.get("fixed_features") or {}
        calls.append(({names[j]: v for j, v in fixed.items()}, dict(kw.get("optimizer_options") or {})))
        return original(self, n, search_space_digest, **kw)

    monkeypatch.setattr(AxAcquisition, "optimize", spy)
    s = AxStrategy(_choice_campaign(tmp_path))
    _observed(s)
    [(i, p)] = s.ask(1)
    assert len(calls) == 3  # one optimisation per value of `kind`, none over the relaxed one-hot columns
    patterns = [tuple(v for k, v in sorted(f.items()) if "kind" in k) for f, _ in calls]
    assert sorted(patterns) == [(0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0)]
    for _, options in calls:  # the budget is shared among the 3 values
        assert options["num_restarts"] == max(1, round(IMPROVEMENT_OPTIMIZER["num_restarts"] / 3))
        assert options["raw_samples"] == IMPROVEMENT_OPTIMIZER["raw_samples"] // 3
    assert p["kind"] == "c" and p["batch"] == "B1"  # the value with the best expected improvement
    assert s.expected_improvement(i) is not None


def test_a_snapshot_with_the_choice_acquisition_restores_and_proposes_the_same(tmp_path):
    s = AxStrategy(_choice_campaign(tmp_path))
    _observed(s)
    restored = AxStrategy(s.campaign, s.snapshot())
    [(i, p)], [(j, q)] = s.ask(1), restored.ask(1)
    assert i == j and p["kind"] == q["kind"] == "c"
    assert p["x"] == pytest.approx(q["x"], abs=1e-3)
