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
