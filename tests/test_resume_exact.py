"""Resume is exact under Bayesian optimisation: a campaign killed (SIGKILL) during a command, during
an analysis and during a generation, and resumed after each, makes the same trials, to the last
bit of every parameter and outcome, as the same campaign run without interruption.

The start design (a centre point and one Sobol point) is followed by three model-based trials;
each kill falls on one of those, so every resume proposes from a strategy restored from the store.
On SQLite and on PostgreSQL (own schema; with CI=true a missing server fails the test).

Each run is a child forked from multiprocessing's fork server, a fresh interpreter that has
imported Ax, BoTorch, the loop and the analysers once (about 10 s saved per run) and never computed
with torch (forked from a process whose torch thread pool ran, as the test process's may have in
earlier tests, a child hangs in its first parallel torch operation). The kill hooks are installed
in the child only:
  command     a subscriber kills the process once the robot acknowledged trial 2's synthesis
  analysis    the loop's analysis of trial 3 kills the process after the analysers ran
  generation  the strategy kills the process once it has proposed trial 4, before anything is stored
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
DEMO = ROOT / "campaigns" / "nanoparticle_size.yaml"
N_TRIALS = 5  # 0: centre point, 1: Sobol, 2-4: Bayesian
MODEL_TRIALS = {2, 3, 4}
KILLS = [("command", 2), ("analysis", 3), ("generation", 4)]  # run, then one resume per kill, then the last resume
CHILD_TIMEOUT_S = 240


def _campaign(store: str) -> dict:
    d = yaml.safe_load(DEMO.read_text())
    d["store"] = store
    d["lab"].update(id=f"resume-exact-{uuid.uuid4().hex[:8]}", time_scale=1e-4)  # a synthesis: ~0.05-1.5 s
    d["analysis"] = {"saxs": ["saxs_fit"]}  # deterministic least squares, and quicker than the ML chain here
    d["strategy"].update(kind="bayesian", initial_trials=2, max_in_flight=1, seed=3)
    d["budget"].update(max_experiments=N_TRIALS, stop_on_target=False)
    return d


# ----- children ---------------------------------------------------------------------------------------


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill(point: str | None, index: int | None) -> list:
    """Hooks for the child: returns the subscribers to pass to the run."""
    if point == "command":
        from sdl.runner.events import Acked

        def on_event(e) -> None:
            if isinstance(e, Acked) and e.trial_index == index and e.step == "synthesis":
                _die()  # the robot is making the sample; the command is stored as sent, not done

        return [on_event]
    if point == "analysis":
        import sdl.runner.loop as loop

        analyse = loop.analyse_measurements

        def analyse_then_die(campaign, measurements):
            out = analyse(campaign, measurements)
            if any(m.metadata.get("source", "").startswith(f"trial {index} ") for m in measurements.values()):
                _die()  # analysed, not yet told or stored
            return out

        loop.analyse_measurements = analyse_then_die
    if point == "generation":
        from sdl.strategy.ax_strategy import AxStrategy

        ask = AxStrategy.ask

        def ask_then_die(self, n):
            out = ask(self, n)
            if any(i == index for i, _ in out):
                _die()  # proposed, not yet stored
            return out

        AxStrategy.ask = ask_then_die
    return []


def _child(mode: str, campaign: dict | None, campaign_id: str | None, store: str, point: str | None,
           index: int | None) -> None:
    import sdl

    subscribers = _install_kill(point, index)
    if mode == "run":
        sdl.run(sdl.load_campaign(campaign), subscribers=subscribers)
    else:
        sdl.resume(campaign_id, store=store, subscribers=subscribers)


def _in_child(mode: str, *, campaign: dict | None = None, campaign_id: str | None = None, store: str,
              kill: tuple[str, int] | None = None) -> int:
    """Run (or resume) in a forked child; its exit code (-SIGKILL when a hook killed it)."""
    point, index = kill or (None, None)
    proc = multiprocessing.get_context("forkserver").Process(
        target=_child, args=(mode, campaign, campaign_id, store, point, index))
    proc.start()
    proc.join(CHILD_TIMEOUT_S)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        pytest.fail(f"{mode} (kill at {kill}) did not end within {CHILD_TIMEOUT_S} s")
    return proc.exitcode


# ----- what is compared ---------------------------------------------------------------------------


def _trials(store_url: str) -> tuple[str, list[dict]]:
    from sdl.store import Store

    store = Store(store_url)
    cid = store.find_campaign("nanoparticle_size").id
    rows = [dict(index=t.index, sample=t.sample_id.split("-")[-1], status=t.status, parameters=t.parameters,
                 objectives=json.loads(t.objectives_json) if t.objectives_json else None, score=t.score,
                 target_met=t.target_met, failure=t.failure) for t in store.trials(cid)]
    proposals = {e.trial_index: e.message for e in store.events(cid) if e.kind == "proposal"}
    for r in rows:
        r["proposal"] = proposals.get(r["index"])  # the model's expected improvement, 3 digits
    return cid, rows


# imported by the fork server before it forks the first run (a module that fails to import is skipped
# there, and imported by each child instead: slower, not wrong)
PRELOAD = ["ax.api.client", "botorch", "drivers.labs", "sdl", "sdl.runner.loop", "sdl.strategy.acquisition",
           "sdl.strategy.ax_strategy", "sdl.techniques.saxs.fit", __name__]


@pytest.fixture(scope="module")
def fork_server():
    """Start the fork server with the imports every run needs (once per test session)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, fork_server) -> list[dict]:
    url = f"sqlite:///{tmp_path_factory.mktemp('reference')}/sdl.db"
    assert _in_child("run", campaign=_campaign(url), store=url) == 0
    _, rows = _trials(url)
    assert [r["index"] for r in rows] == list(range(N_TRIALS))
    assert {r["index"] for r in rows if r["proposal"]} == MODEL_TRIALS, "the kills must fall on model-based trials"
    # the kill during analysis needs trial 3 measured (trial 1's synthesis fails: an infeasible recipe
    # the model is told about as the worst outcome seen)
    assert all(r["status"] == "completed" for r in rows if r["index"] in MODEL_TRIALS), rows
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def test_bayesian_campaign_killed_three_times_makes_the_trials_of_an_uninterrupted_run(
        backend, uninterrupted, tmp_path, request):
    from sdl.store import Store

    url = f"sqlite:///{tmp_path}/sdl.db" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    store = Store(url)
    cid = None
    for k, (point, index) in enumerate(KILLS):
        if k == 0:
            code = _in_child("run", campaign=_campaign(url), store=url, kill=(point, index))
            cid = store.find_campaign("nanoparticle_size").id
        else:
            code = _in_child("resume", campaign_id=cid, store=url, kill=(point, index))
        assert code == -signal.SIGKILL, f"the run meant to die during {point} of trial {index} ended with {code}"
        trials = {t.index: t for t in store.trials(cid)}
        commands = {c.step: c for c in store.commands(cid, index)}
        if point == "command":  # the synthesis was sent, its result never arrived
            assert trials[index].status == "running" and commands["synthesis"].status != "done"
        elif point == "analysis":  # measured, never told
            assert trials[index].status not in ("completed", "failed")
            assert set(commands) == {"synthesis", "saxs"} and all(c.status == "done" for c in commands.values())
        else:  # the proposal died with the process
            assert index not in trials and all(t.status in ("completed", "failed") for t in trials.values())
        assert store.find_campaign(cid).status == "running"  # killed: nothing could mark it stopped
    assert _in_child("resume", campaign_id=cid, store=url) == 0
    assert store.find_campaign(cid).status == "finished"
    assert sum(e.kind == "trial_resumed" for e in store.events(cid)) == 2  # the command and the analysis

    _, resumed = _trials(url)
    assert len(resumed) == len(uninterrupted)
    for got, want in zip(resumed, uninterrupted):
        assert got["parameters"] == want["parameters"], f"trial {got['index']}: parameters differ"
        assert got == want, f"trial {got['index']} differs"
    # each synthesis was done once per trial in the record (a re-sent command keeps its id)
    synth = [c for c in store.commands(cid) if c.step == "synthesis"]
    assert sorted(c.trial_index for c in synth) == list(range(N_TRIALS))


# ----- the snapshot itself --------------------------------------------------------------------------


def _small_campaign(tmp_path, noise: str):
    from sdl.config import load_campaign

    return load_campaign({
        "name": "exact", "store": f"sqlite:///{tmp_path}/x.db", "lab": {"world": None},
        "parameters": [{"name": "x", "type": "float", "bounds": [0.0, 1.0]},
                       {"name": "kind", "type": "choice", "values": ["a", "b"]}],
        "workflow": [{"name": "m", "instrument": "sim", "action": "measure", "technique": "sim"}],
        "objectives": [{"descriptor": "sim.f", "goal": "minimize"}],
        "strategy": {"kind": "bayesian", "initial_trials": 2, "noise": noise, "seed": 0},
    })


def _observations(s) -> list[str]:
    return [repr(vars(r)) for r in s.client._experiment.data._data_rows]  # repr: NaN equals NaN


def _reject(name: str):
    raise ValueError(f"{name} in the snapshot: not strict JSON")


@pytest.mark.parametrize("noise", ["measured", "inferred"])
def test_the_snapshot_keeps_every_observation_to_the_last_bit(tmp_path, noise):
    """The cause of inexact resumes: Ax's JSON snapshot writes the data as a pandas table rounded
    to 10 decimal places. sdl's snapshot carries them at full precision (and stays strict JSON
    with the NaN SEMs of inferred noise)."""
    from sdl.strategy.ax_strategy import AxStrategy

    s = AxStrategy(_small_campaign(tmp_path, noise))
    values = [1 / 3, 2 / 7 + 1e-13, 3.14159265358979e-5, 12345.678901234567]
    for k, v in enumerate(values):
        s.attach({"x": k / 4, "kind": "ab"[k % 2]}, {"sim_f": (v, v / 997)})
    s.fail(s.attach({"x": 0.9, "kind": "a"}, {}), "lab fault")
    snapshot = s.snapshot()
    json.loads(snapshot, parse_constant=_reject)
    restored = AxStrategy(s.campaign, snapshot)
    assert _observations(restored) == _observations(s)
    assert [t.status for t in restored.client._experiment.trials.values()] == \
        [t.status for t in s.client._experiment.trials.values()]

    # a snapshot of the earlier format (Ax's alone) still restores, with Ax's rounded numbers
    old = AxStrategy(s.campaign, json.dumps(s.client._to_json_snapshot()))
    means = [r.mean for r in old.client._experiment.data._data_rows]
    assert means == pytest.approx(values, rel=0, abs=1e-10) and means != values
