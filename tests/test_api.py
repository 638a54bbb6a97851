"""The Python API (sdl.Campaign, sdl.run, sdl.Result): the documented example runs as written, a
campaign built in Python is the one its YAML file loads into, errors name the field, and
`import sdl` stays light."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

import sdl
from sdl import config
from sdl.errors import ConfigError, StoreError

ROOT = Path(__file__).parents[1]
DEMO = ROOT / "campaigns" / "nanoparticle_size.yaml"
DOC = ROOT / "docs" / "python_api.md"
README = ROOT / "README.md"

HEAVY = ("torch", "ax", "botorch", "gpytorch", "sasmodels", "pandas", "sqlalchemy", "sqlmodel")


# ----- the documented example -----------------------------------------------------------------


def first_python_block(text: str) -> str | None:
    m = re.search(r"^```python\n(.*?)^```", text, re.S | re.M)
    return m.group(1) if m else None


def readme_section(text: str) -> str | None:
    """README's "## From Python ..." section, up to the next level-2 heading."""
    m = re.search(r"^## From Python.*?$(.*?)(?=^## |\Z)", text, re.S | re.M)
    return m.group(1) if m else None


_RUNS: dict[str, tuple[dict, Path]] = {}  # snippet text -> (its namespace, where it ran); README = docs


def execute(code: str, where: Path, monkeypatch) -> dict:
    if code not in _RUNS:
        monkeypatch.chdir(where)  # the example's relative SQLite store lands in tmp
        ns: dict = {"__name__": "__snippet__"}
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a campaign that stopped early fails here
            exec(compile(code, "<python_api example>", "exec"), ns)
        _RUNS[code] = ns, where
    ns, ran_in = _RUNS[code]
    monkeypatch.chdir(ran_in)  # where its relative store is
    return ns


def check_example(ns: dict) -> None:
    result, campaign = ns["result"], ns["campaign"]
    assert isinstance(result, sdl.Result) and isinstance(campaign, sdl.Campaign)
    assert result.status == "finished" and result.summary is not None
    n = result.summary.n_trials
    assert 1 <= n <= campaign.budget.max_experiments
    wanted = sorted(campaign.descriptors_needed())
    assert list(result.wanted) == wanted

    df = result.trials
    assert len(df) == n and list(df["index"]) == list(range(n))
    params = [p.name for p in campaign.parameters]
    for col in ["status", "score", "target_met", "failure", *params,
                *wanted, *(f"{d}_uncertainty" for d in wanted)]:
        assert col in df.columns, col
    done = df[df["status"] == "completed"]
    assert len(done) == result.summary.n_completed >= 1
    assert done["saxs.radius_nm"].notna().all() and (done["saxs.radius_nm_uncertainty"] > 0).all()

    best = result.best
    assert best is not None and best.status == "completed"
    assert best.index == result.record["best"]["index"]  # sdl status's rule
    assert set(best.parameters) == set(params)
    radius = best.descriptors["saxs.radius_nm"]
    assert isinstance(radius.value, float) and radius.unit == "nm" and radius.uncertainty > 0
    assert set(wanted) <= set(best.descriptors)
    assert df.loc[df["index"] == best.index, "saxs.radius_nm"].item() == radius.value

    if result.target_met_at is not None:
        assert bool(df.iloc[result.target_met_at - 1]["target_met"])
        assert not df.iloc[: result.target_met_at - 1]["target_met"].fillna(False).any()
    else:
        assert not df["target_met"].fillna(False).any()

    ds = result.descriptors
    assert list(ds.columns[:6]) == ["trial", "name", "value", "uncertainty", "unit", "analyser"]
    assert set(ds["trial"]) == set(done["index"])
    # per trial and name exactly one stored value is the one the objectives were evaluated on
    assert (ds.groupby(["trial", "name"])["used"].sum() == 1).all()
    assert result.store_url == campaign.store and Path("notebook.db").exists()
    assert result.campaign == campaign.replace(**{"strategy.seed": result.campaign.strategy.seed})  # run's seed


@pytest.mark.slow
def test_docs_example_runs(tmp_path, monkeypatch):
    code = first_python_block(DOC.read_text(encoding="utf-8"))
    assert code and "run(" in code
    check_example(execute(code, tmp_path, monkeypatch))


@pytest.mark.slow
def test_readme_example_runs(tmp_path, monkeypatch):
    section = readme_section(README.read_text(encoding="utf-8"))
    assert section is not None, "README lost its '## From Python (notebooks)' section"
    code = first_python_block(section)
    assert code, "README's 'From Python' section has no ```python block"
    assert code == first_python_block(DOC.read_text(encoding="utf-8")), \
        "README's example and docs/python_api.md's differ; keep them the same"
    check_example(execute(code, tmp_path, monkeypatch))


# ----- campaigns as objects -----------------------------------------------------------------------


def test_campaign_built_in_python_equals_the_yaml_file():
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    built = sdl.Campaign(**data)
    loaded = config.load_campaign(DEMO)
    assert built == loaded and loaded == built  # the model the YAML loads into
    assert isinstance(built, config.Campaign)
    assert built.model_dump_json() == loaded.model_dump_json()  # what the store records
    assert sdl.Campaign.from_yaml(DEMO) == built == sdl.load_campaign(DEMO) == sdl.load_campaign(data)

    five = sdl.Campaign.from_yaml(DEMO, budget={"max_experiments": 5}, **{"strategy.seed": 3})
    assert five == config.load_campaign(DEMO, **{"budget.max_experiments": 5, "strategy.seed": 3})
    assert five.budget.stop_on_target is True  # a dict merges into the field
    assert built.replace(budget={"max_experiments": 5}, strategy={"seed": 3}) == five
    assert built.replace(lab={"world": None}).lab.world is None  # None replaces
    assert built.budget.max_experiments == 40  # replace copies


def _lines(exc: pytest.ExceptionInfo) -> list[str]:
    """The error's field lines, without the first line (which says where the campaign came from)."""
    return str(exc.value).splitlines()[1:]


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["parameters"][0].update(bonds=[1, 2]),
     "parameters[0](temperature_C).bonds: unknown field 'bonds'; accepted fields here: name, type, bounds"),
    (lambda d: d["budget"].update(max_experiments=0), "budget.max_experiments: Input should be greater than or equal to 1"),
    (lambda d: d["objectives"][0].pop("tolerance"), "objectives[0]: goal 'target' needs `value` and `tolerance`"),
    (lambda d: d.update(colour="red"), "colour: unknown field 'colour'"),
])
def test_wrong_field_raises_config_error_naming_it_as_yaml_does(change, expected):
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    change(data)
    with pytest.raises(ConfigError) as from_python:
        sdl.Campaign(**data)
    with pytest.raises(ConfigError) as from_yaml:
        config.load_campaign(data)
    assert _lines(from_python) == _lines(from_yaml)
    assert any(expected in line for line in _lines(from_python)), str(from_python.value)


def test_overrides_and_run_options_raise_config_error():
    c = sdl.Campaign.from_yaml(DEMO)
    with pytest.raises(ConfigError, match=r"budget\.max_experiment: unknown field"):
        c.replace(budget={"max_experiment": 3})
    with pytest.raises(ConfigError, match=r"(?s)with overrides strategy.*strategy\.kind: Input should be"):
        sdl.Campaign.from_yaml(DEMO, strategy={"kind": "random"})
    with pytest.raises(ConfigError, match=r"cannot read campaign file"):
        sdl.Campaign.from_yaml(ROOT / "campaigns" / "missing.yaml")
    with pytest.raises(ConfigError, match=r"budget\.max_experiment: unknown field"):
        sdl.run(c, budget={"max_experiment": 3})  # before anything starts
    with pytest.raises(ConfigError, match=r"cannot read campaign file"):
        sdl.run(ROOT / "campaigns" / "missing.yaml")
    with pytest.raises(ConfigError, match="budget: give the maximum number"):
        sdl.run(c, budget="5")
    with pytest.raises(ConfigError, match="seed: a resumed campaign keeps its seed"):
        sdl.run(c, resume=True, seed=2)
    with pytest.raises(ConfigError, match="subscribers: each is a callable taking one event"):
        sdl.run(c, subscribers=["print"])


def test_import_sdl_is_light():
    """`import sdl` and the public names load pydantic at most: no Ax, torch, sasmodels, pandas."""
    code = ("import sys, sdl; sdl.Campaign, sdl.run, sdl.resume, sdl.Result, sdl.ConfigError; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-c", "import sys, sdl; print('pydantic' in sys.modules)"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"  # the API itself is imported on first use


# ----- resume -------------------------------------------------------------------------------------


def test_resume_continues_the_stored_campaign(tmp_path):
    store = f"sqlite:///{tmp_path}/api.db"
    c = sdl.Campaign.from_yaml(DEMO, store=store, strategy={"kind": "sobol", "initial_trials": 2},
                               budget={"max_experiments": 2, "stop_on_target": False})
    first = sdl.run(c, seed=4)
    assert first.status == "finished" and len(first.trials) == 2
    assert first.campaign.strategy.seed == 4 and first.store_url == store

    again = sdl.run(c, resume=True)  # finished, no larger budget: returned as stored, nothing run
    assert again.campaign_id == first.campaign_id and again.summary is None and len(again.trials) == 2

    seen: list = []
    more = sdl.resume(first.campaign_id, store=store, budget=3, subscribers=[seen.append])
    assert more.campaign_id == first.campaign_id and more.summary is not None
    kinds = [type(e).__name__ for e in seen]  # a user's subscriber hears the resumed run's events
    assert kinds[0] == "CampaignStarted" and seen[0].done == 2 and kinds[-1] == "Finished"
    assert [e.trial.index for e in seen if type(e).__name__ == "Told"] == [2]
    assert seen[-1].summary is more.summary
    assert list(more.trials["index"]) == [0, 1, 2]
    assert more.trials.iloc[:2]["sample_id"].tolist() == first.trials["sample_id"].tolist()  # not repeated
    assert more.campaign.strategy.seed == 4  # the stored configuration

    loaded = sdl.Result.load(first.campaign_id, store=store)
    assert loaded.trials.equals(more.trials) and loaded.best == more.best
    with pytest.raises(ConfigError, match="is named"):
        sdl.run(c.replace(name="other"), resume=first.campaign_id)
    with pytest.raises(StoreError):
        sdl.resume("no_such_campaign", store=store)
