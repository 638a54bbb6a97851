"""The scientist in the loop: approving / rejecting proposed trials and adding manual experiments."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from sdl.cli import main
from sdl.errors import ConfigError, StoreError
from sdl.runner import run_campaign
from sdl.store import Store
from tests.test_loop import campaign


def _wait_for(cond, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (v := cond()):
            return v
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_trials_wait_for_approval_and_rejection_is_recorded(tmp_path, capsys):
    c = campaign(tmp_path, **{"strategy.require_approval": True, "budget.max_experiments": 2})
    store = Store(c.store)
    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("s", run_campaign(c, store=store)))
    th.start()
    try:
        cid = _wait_for(lambda: store.campaigns()[0].id if store.campaigns() else None)
        _wait_for(lambda: len(store.trials(cid)) == 1)
        time.sleep(1.0)  # nothing runs while the trial waits
        assert store.trials(cid)[0].status == "proposed" and not store.commands(cid)
        assert main(["reject", cid, "0", "--reason", "too hot for this solvent", "--store", c.store]) == 0
        _wait_for(lambda: len(store.trials(cid)) == 2)
        with pytest.raises(StoreError, match="not waiting for approval"):
            store.review_trials(cid, [0], approve=True)
        assert main(["approve", cid, "--store", c.store]) == 0
        th.join(120)
    finally:
        if th.is_alive():  # do not hang the test session
            store.review_trials(cid, None, approve=True)
            th.join(60)
    assert out["s"].status == "finished"
    t0, t1 = store.trials(cid)
    assert t0.status == "failed" and "too hot for this solvent" in t0.failure
    assert t1.status == "completed"
    assert {c.trial_index for c in store.commands(cid)} == {1}  # the rejected trial was never made
    kinds = [e.kind for e in store.events(cid)]
    assert "trial_rejected" in kinds and "trial_approved" in kinds
    assert "approved trial(s) [1]" in capsys.readouterr().out


def test_manual_experiment_is_added_and_learned_from(tmp_path, capsys):
    from simulators.worlds.nanoparticles import NanoparticleWorld
    from simulators.saxs.instrument import SaxsInstrument

    c = campaign(tmp_path, **{"budget.max_experiments": 2})
    store = Store(c.store)
    s = run_campaign(c, store=store)
    cid = s.campaign_id

    # a sample made and measured by hand, its curve written as a 3-column text file
    recipe = dict(temperature_C=120.0, precursor_mM=5.0, surfactant_ratio=1.0, reducing_agent="citrate", time_min=30.0)
    sample = NanoparticleWorld(seed=5).synthesize(recipe, "by-hand")
    a = SaxsInstrument(seed=1).measure(sample)["arrays"]
    path = tmp_path / "manual.dat"
    np.savetxt(path, np.column_stack([a["q_inv_angstrom"], a["intensity"], a["sigma"]]),
               header="q_inv_angstrom intensity sigma")
    params = ["--param", "temperature_C=120", "--param", "precursor_mM=5", "--param", "surfactant_ratio=1",
              "--param", "reducing_agent=citrate", "--param", "time_min=30"]

    assert main(["add", cid, *params[:-2], "--measurement", str(path), "--store", c.store]) == 1
    assert "time_min is missing" in capsys.readouterr().err
    bad = [p if not p.startswith("temperature") else "temperature_C=999" for p in params]
    assert main(["add", cid, *bad, "--measurement", str(path), "--store", c.store]) == 1
    assert "outside the search space" in capsys.readouterr().err

    assert main(["add", cid, *params, "--measurement", str(path), "--note", "made by hand", "--store", c.store]) == 0
    assert main(["add", cid, *params[:-2], "--param", "time_min=60",
                 "--descriptor", "saxs.radius_nm=7.9+-0.1", "--descriptor", "saxs.polydispersity=0.05",
                 "--descriptor", "saxs.model=sphere", "--store", c.store]) == 0
    assert "`sdl resume" in capsys.readouterr().out
    assert len(store.manual_requests(cid)) == 2

    # resuming attaches both to the strategy; manual trials do not use up the budget
    assert main(["resume", cid, "--budget", "3", "--store", c.store, "--quiet"]) == 0
    trials = store.trials(cid)
    manual = [t for t in trials if t.manual]
    assert len(manual) == 2 and all(t.status == "completed" for t in manual)
    assert sum(not t.manual for t in trials) == 3
    assert not store.manual_requests(cid)  # nothing left pending
    by_trial = {d.name: d for d in store.descriptors(cid, manual[0].index)}
    assert by_trial["saxs.model"].value_str == sample.truth["shape"]
    assert by_trial["saxs.radius_nm"].value_num == pytest.approx(sample.truth["radius_nm"], rel=0.1)
    assert store.measurements(cid, manual[0].index)  # the manual curve is stored with its trial
    typed = {d.name: d for d in store.descriptors(cid, manual[1].index)}
    assert typed["saxs.radius_nm"].value_num == 7.9 and typed["saxs.radius_nm"].analyser == "manual"


def test_manual_parameters_are_checked(tmp_path):
    from sdl.manual import check_parameters, parse_descriptor

    c = campaign(tmp_path)
    with pytest.raises(ConfigError, match="not one of"):
        check_parameters(c, {"temperature_C": 100, "precursor_mM": 5, "surfactant_ratio": 1,
                             "reducing_agent": "vinegar", "time_min": 30})
    with pytest.raises(ConfigError, match="unknown parameter"):
        check_parameters(c, {"pressure_bar": 2})
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_descriptor("saxs.radius_nm")
    d = parse_descriptor("saxs.radius_nm=8.1±0.2")
    assert (d.value, d.uncertainty) == (8.1, 0.2)
