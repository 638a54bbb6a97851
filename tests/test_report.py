"""The report's model of the response (sdl.surrogate), the Pareto front and the PNG, on campaigns
whose trials are written straight into a store from known functions of the parameters."""

from __future__ import annotations

import numpy as np
import pytest

from sdl import surrogate
from sdl.analysis.base import Descriptor
from sdl.config import load_campaign
from sdl.report import campaign_record, hypervolume, pareto_front, write_report
from sdl.store import Store

PARAMETERS = [
    {"name": "a", "type": "float", "bounds": [0, 1]},
    {"name": "b", "type": "float", "bounds": [1, 100], "log_scale": True, "unit": "mM"},
    {"name": "agent", "type": "choice", "values": ["x", "y"]},
    {"name": "dummy", "type": "int", "bounds": [0, 10]},  # has no effect
    {"name": "solvent", "type": "fixed", "value": "water"},
]
TARGET = {"descriptor": "saxs.radius_nm", "goal": "target", "value": 2.0, "tolerance": 0.3}
TWO = [{"descriptor": "saxs.radius_nm", "goal": "maximize"}, {"descriptor": "saxs.polydispersity", "goal": "minimize"}]


def make_campaign(objectives: list[dict]):
    return load_campaign({
        "name": "t", "parameters": PARAMETERS, "objectives": objectives,
        "workflow": [{"name": "m", "instrument": "saxs", "action": "measure", "technique": "saxs"}],
    })


def radius(p: dict) -> float:
    """Smooth in a (strong) and log10(b) (weak); the agent shifts it a little; dummy does nothing."""
    return 3.0 * np.sin(3.0 * p["a"]) + 0.6 * np.log10(p["b"]) + (0.4 if p["agent"] == "y" else 0.0)


def polydispersity(p: dict) -> float:
    return 0.05 + 0.1 * p["a"] ** 2


def draw(rng: np.random.Generator, n: int) -> list[dict]:
    return [{"a": float(rng.random()), "b": float(10 ** (2 * rng.random())), "agent": str(rng.choice(["x", "y"])),
             "dummy": int(rng.integers(0, 11)), "solvent": "water"} for _ in range(n)]


def r2(pred: np.ndarray, true: np.ndarray) -> float:
    return 1.0 - float(np.sum((pred - true) ** 2) / np.sum((true - true.mean()) ** 2))


def filled_store(tmp_path, objectives: list[dict], n: int = 25) -> tuple[Store, str]:
    """A store with one campaign of n completed trials (noisy radius and polydispersity), one
    failed trial and one completed trial whose radius is missing."""
    c = make_campaign(objectives)
    store = Store("sqlite:///" + str(tmp_path / "x.db"))
    cid = "t-1"
    store.create_campaign(cid, c.name, c.model_dump_json())
    rng = np.random.default_rng(1)
    for i, p in enumerate(draw(rng, n + 2)):
        store.add_trial(cid, i, p, f"s{i}", None)
        if i == n:
            store.finish_trial(cid, i, status="failed", strategy_state=None, failure="robot jammed")
            continue
        r = radius(p) + rng.normal(0, 0.02)
        descriptors = [Descriptor(name="saxs.polydispersity", value=polydispersity(p), uncertainty=0.01)]
        if i < n:
            descriptors.append(Descriptor(name="saxs.radius_nm", value=r, uncertainty=0.02, unit="nm"))
        store.finish_trial(cid, i, status="completed", strategy_state=None, score=abs(r - 2.0), descriptors=descriptors)
    return store, cid


@pytest.fixture(scope="module")
def fitted():
    c = make_campaign([TARGET])
    rng = np.random.default_rng(0)
    train, test = draw(rng, 30), draw(rng, 60)
    y = np.array([radius(p) for p in train]) + rng.normal(0, 0.02, len(train))
    return c, train, y, surrogate.fit(c, train, y), test


def test_encode_maps_to_unit_cube_one_hot_and_drops_fixed():
    c = make_campaign([TARGET])
    assert [col.name for col in surrogate.columns(c)] == ["a", "b", "agent=x", "agent=y", "dummy"]
    X = surrogate.encode(c, [{"a": 0.25, "b": 10.0, "agent": "y", "dummy": 10, "solvent": "water"},
                             {"a": 1.0, "b": 1.0, "agent": "x", "dummy": 0, "solvent": "water"}])
    np.testing.assert_allclose(X.numpy(), [[0.25, 0.5, 0, 1, 1], [1, 0, 1, 0, 0]])  # b: log10 scale
    with pytest.raises(ValueError, match="not one of"):
        surrogate.encode(c, [{"a": 0.5, "b": 5.0, "agent": "z", "dummy": 1}])


def test_surrogate_predicts_held_out_points(fitted):
    c, train, y, model, test = fitted
    mean, std = model.predict(test)
    true = np.array([radius(p) for p in test])
    assert r2(mean, true) > 0.95
    assert np.all(std > 0) and np.median(std) < 0.2 * np.std(true)
    # the fit is deterministic: the same data give the same model
    np.testing.assert_allclose(surrogate.fit(c, train, y).predict(test)[0], mean, rtol=1e-6, atol=1e-9)


def test_importances_rank_the_strong_parameter_first_and_the_dummy_last(fitted):
    model = fitted[3]
    imp = model.importances()
    assert list(imp) == sorted(imp, key=imp.get, reverse=True)
    assert set(imp) == {"a", "b", "agent", "dummy"}  # the fixed parameter has no column
    assert sum(imp.values()) == pytest.approx(1.0)
    assert list(imp)[0] == "a" and list(imp)[-1] == "dummy"
    assert imp["a"] > 2 * imp["b"]


def test_pareto_front_respects_directions():
    def rec(i, r, p, status="completed"):
        return {"index": i, "status": status, "descriptors": {"saxs.radius_nm": {"value": r},
                                                              "saxs.polydispersity": {"value": p}}}

    records = [rec(0, 1.0, 0.5), rec(1, 2.0, 0.5), rec(2, 3.0, 0.9), rec(3, 2.0, 0.3), rec(4, 0.5, 0.1),
               rec(5, 10.0, 0.0, status="failed"), rec(6, "n/a", 0.0), rec(7, 2.0, 0.3)]
    # maximise radius, minimise polydispersity: 3 dominates 0 and 1; 7 ties 3, so both stay
    assert pareto_front(make_campaign(TWO), records) == [2, 3, 4, 7]
    both_max = [dict(o, goal="maximize") for o in TWO]
    assert pareto_front(make_campaign(both_max), records) == [2]


def test_report_for_a_target_campaign(tmp_path):
    store, cid = filled_store(tmp_path, [TARGET])
    rec = campaign_record(store, cid)
    assert "pareto_front" not in rec
    out = write_report(store, cid, tmp_path / "r.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_report_for_two_objectives(tmp_path):
    store, cid = filled_store(tmp_path, TWO)
    rec = campaign_record(store, cid)
    # brute force: a completed trial with both values that no other has at least as large a radius
    # and at most as large a polydispersity as (strictly better in one)
    points = {t["index"]: (t["descriptors"]["saxs.radius_nm"]["value"], t["descriptors"]["saxs.polydispersity"]["value"])
              for t in rec["trials"] if t["status"] == "completed" and "saxs.radius_nm" in t["descriptors"]}
    expected = [i for i, (r, p) in points.items()
                if not any(rj >= r and pj <= p and (rj, pj) != (r, p) for rj, pj in points.values())]
    assert 2 <= len(expected) < len(points) and rec["pareto_front"] == expected
    out = write_report(store, cid, tmp_path / "r.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_report_with_too_few_trials(tmp_path):
    store, cid = filled_store(tmp_path, [TARGET], n=2)
    out = write_report(store, cid, tmp_path / "r.png")
    assert out.stat().st_size > 0


def test_hypervolume_of_a_known_front():
    # maximise a, minimise b, reference (0, 10): boxes [0,2]x[4,10] and [0,1]x[1,10] overlap in [0,1]x[4,10]
    Y = np.array([[2.0, 4.0], [1.0, 1.0], [0.5, 5.0], [-1.0, 0.0], [np.nan, 1.0]])  # dominated, beyond ref, NaN
    assert hypervolume(Y, ["maximize", "minimize"], np.array([0.0, 10.0])) == pytest.approx(2 * 6 + 1 * 9 - 1 * 6)
    assert hypervolume(Y[3:], ["maximize", "minimize"], np.array([0.0, 10.0])) == 0.0


def _x(ax) -> list[float]:
    """x data of every line and error-bar marker on an axes."""
    return sorted({float(x) for line in ax.get_lines() for x in np.atleast_1d(line.get_xdata())})


def test_report_x_axes_are_trial_indices(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sdl.report import _hypervolume_panel, _target_panel, _trace_panel

    store, cid = filled_store(tmp_path, [TARGET], n=6)
    rec = campaign_record(store, cid)
    trials = rec["trials"]
    trials[4]["target_met"] = True  # trial 4 = experiment 5
    fig, (a, b, c) = plt.subplots(1, 3)
    _trace_panel(a, trials)
    _target_panel(b, trials, make_campaign([TARGET]).objectives[0])
    _hypervolume_panel(c, make_campaign(TWO), campaign_record(*filled_store(tmp_path / "two", TWO, n=6))["trials"])
    indices = [float(t["index"]) for t in trials]
    assert indices[0] == 0.0
    assert set(_x(a)) <= set(indices) and 0.0 in _x(a)  # trials (from 0), not experiments (from 1)
    met = [line for line in a.get_lines() if "target met" in str(line.get_label())]
    assert met and list(met[0].get_xdata()) == [4, 4] and met[0].get_label() == "target met: trial 4 (experiment 5)"
    assert set(_x(b)) <= set(indices) and 0.0 in _x(b)
    assert _x(c)[0] == 0.0 and _x(c)[-1] == indices[-1]
    assert a.get_xlabel() == b.get_xlabel() == c.get_xlabel() == "trial"
    assert b.get_ylabel() == "saxs.radius_nm (nm)"
    plt.close(fig)


def test_report_of_a_campaign_without_trials_says_so(tmp_path):
    from sdl.errors import SdlError

    c = make_campaign([TARGET])
    store = Store("sqlite:///" + str(tmp_path / "x.db"))
    store.create_campaign("ghost", c.name, c.model_dump_json())
    store.update_campaign("ghost", status="failed", stop_reason="no driver online for instrument(s) ['saxs']")
    with pytest.raises(SdlError, match=r"campaign ghost has no trials \(failed: no driver online.*nothing to plot"):
        write_report(store, "ghost", tmp_path / "r.png")
    assert not (tmp_path / "r.png").exists()


def test_export_columns_units_and_numbers(tmp_path):
    import csv

    from sdl.report import export

    store, cid = filled_store(tmp_path, [TARGET], n=4)
    rows = list(csv.reader(open(export(store, cid, tmp_path / "ex") / "trials.csv")))
    header, body = rows[0], rows[1:]
    assert header == ["trial", "status", "sample_id", "a", "b [mM]", "agent", "dummy", "solvent",
                      "saxs.radius_nm [nm]", "saxs.radius_nm_sem [nm]", "target_met", "score", "failure"]
    assert [r[0] for r in body] == ["0", "1", "2", "3", "4", "5"]
    assert body[4][1] == "failed" and body[4][-1] == "robot jammed" and body[4][8] == ""
    numeric = [cell for r in body for cell in r[3:5] + r[8:10] + r[11:12] if cell]
    assert numeric
    for cell in numeric:  # 6 significant digits at most: no float noise
        assert cell == f"{float(cell):.6g}", cell
    assert not any("__" in h for h in header)  # no internal metric names
    descs = list(csv.DictReader(open(tmp_path / "ex" / "descriptors.csv")))
    assert {d["used"] for d in descs} == {"true"}  # one analyser: every descriptor is the one used


def test_export_of_a_categorical_constraint_and_two_analysers(tmp_path):
    import csv

    from sdl.report import export
    from tests.test_outcome import MET, stored_campaign

    store, cid = stored_campaign(tmp_path, MET)
    header, *body = list(csv.reader(open(export(store, cid, tmp_path / "ex") / "trials.csv")))
    assert header[3:8] == ["temperature_C [degC]", "precursor_mM [mM]", "surfactant_ratio", "reducing_agent",
                           "time_min [min]"]
    row = dict(zip(header, body[3]))
    assert row["saxs.model"] == "sphere" and row["saxs.model_p"] == "0.97"  # the fit's, which the evaluation used
    assert row["saxs.radius_nm [nm]"] == "8.15" and row["saxs.radius_nm_sem [nm]"] == "0.02"
    assert row["target_met"] == "true" and row["temperature_C [degC]"] == "80.5123"
    used = [(d["analyser"], d["used"]) for d in csv.DictReader(open(tmp_path / "ex" / "descriptors.csv"))
            if d["trial"] == "3" and d["name"] == "saxs.model"]
    assert used == [("saxs_ml", "false"), ("saxs_fit", "true")]
