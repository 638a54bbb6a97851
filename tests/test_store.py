"""The store against SQLite and the real PostgreSQL: round trips, lossless arrays, atomic finish."""

import numpy as np
import pytest

from sdl.analysis.base import Descriptor
from sdl.measurement import Measurement
from sdl.store import CommandRow, Store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path}/t.db")
    else:
        s = Store(request.getfixturevalue("postgres_url"))
    yield s
    s.close()


def test_campaign_trial_measurement_descriptor_round_trip(store):
    store.create_campaign("c1", "demo", '{"name": "demo"}')
    store.add_trial("c1", 0, {"temperature_C": 80.5, "agent": "citrate"}, "demo-0000", strategy_state='{"s": 1}')
    store.add_command(CommandRow(id="c1:0:saxs", campaign_id="c1", trial_index=0, step="saxs", instrument="saxs",
                                 action="measure", params_json="{}"))
    q = np.geomspace(1e-3, 0.5, 200)
    arrays = {"q_inv_angstrom": q, "intensity": np.exp(-q) * 1e3, "counts": np.arange(200, dtype=np.int32),
              "map": np.random.default_rng(0).random((30, 40)).astype(np.float32)}
    store.add_measurement("c1", 0, "saxs", "c1:0:saxs", Measurement(technique="saxs", arrays=arrays), {"status": "done"})
    store.finish_trial("c1", 0, status="completed", strategy_state='{"s": 2}', objectives={"m": [1.0, 0.1]},
                       target_met=False, score=2.5,
                       descriptors=[Descriptor(name="saxs.radius_nm", value=7.9, uncertainty=0.1, unit="nm"),
                                    Descriptor(name="saxs.model", value="sphere", probabilities={"sphere": 0.9})])

    [t] = store.trials("c1")
    assert t.status == "completed" and t.parameters == {"temperature_C": 80.5, "agent": "citrate"}
    assert t.objectives == {"m": [1.0, 0.1]} and t.score == 2.5
    assert store.find_campaign("demo").strategy_state == '{"s": 2}'
    [m] = store.measurements("c1")
    from sdl.store import unpack_arrays

    back = unpack_arrays(m.arrays)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)  # lossless, dtype kept
    ds = {d.name: d for d in store.descriptors("c1")}
    assert ds["saxs.radius_nm"].value_num == 7.9 and ds["saxs.model"].value_str == "sphere"
    assert [c.status for c in store.commands("c1")] == ["done"]
    kinds = [e.kind for e in store.events("c1")]
    assert kinds[:2] == ["campaign_created", "trial_proposed"] and "trial_completed" in kinds


def test_failed_transaction_keeps_earlier_rows(store):
    store.create_campaign("c2", "demo", "{}")
    store.add_trial("c2", 0, {"x": 1}, "s0", strategy_state="A")
    with pytest.raises(Exception):
        store.add_trial("c2", 0, {"x": 2}, "s0-dup", strategy_state="B")  # duplicate index: rolled back whole
    assert [t.parameters for t in store.trials("c2")] == [{"x": 1}]
    assert store.find_campaign("c2").strategy_state == "A"


def test_find_campaign_errors_name_known(store):
    from sdl.errors import StoreError

    store.create_campaign("c3", "demo", "{}")
    with pytest.raises(StoreError, match="no campaign 'other'.*known: c3"):
        store.find_campaign("other")


def test_bad_store_url():
    from sdl.errors import StoreError

    with pytest.raises(StoreError, match="cannot open store"):
        Store("postgresql+psycopg://nobody@127.0.0.1:1/none")


def test_find_campaign_prefers_the_latest_with_trials(store):
    from sdl.errors import StoreError

    store.create_campaign("old", "demo", "{}")
    store.add_trial("old", 0, {"x": 1}, "s0", strategy_state=None)
    store.create_campaign("ghost", "demo", "{}")  # a run that failed before its first trial
    store.update_campaign("ghost", status="failed", stop_reason="no driver online")
    assert store.find_campaign(None).id == "old"
    assert store.find_campaign("demo").id == "old"  # by name, too
    assert store.find_campaign("ghost").id == "ghost"  # an id is exact
    assert [c.id for c in store.newer_without_trials("old")] == ["ghost"]
    assert store.newer_without_trials("ghost") == []
    store.create_campaign("other", "else", "{}")
    assert store.find_campaign("else").id == "other"  # no campaign of that name has trials: the latest
    with pytest.raises(StoreError, match="no campaign 'nope'"):
        store.find_campaign("nope")


def test_find_campaign_without_trials_anywhere_gives_the_latest(store):
    store.create_campaign("a", "demo", "{}")
    store.create_campaign("b", "demo", "{}")
    assert store.find_campaign(None).id == "b"


def test_store_option_names_only_a_non_default_store():
    from sdl.store import DEFAULT_STORE, store_option

    assert store_option(DEFAULT_STORE) == ""
    assert store_option("sqlite:///x.db") == " --store sqlite:///x.db"
    assert store_option("postgresql://u@h/db?options=-csearch_path%3Ds") == \
        " --store 'postgresql://u@h/db?options=-csearch_path%3Ds'"
