"""`sdl validate` and the start of a run check a campaign against what is installed (sdl.preflight):
techniques, analysers, the descriptors objectives and constraints read, and the simulated lab's
declared limits; errors in the words of the YAML, and a run that cannot work stores nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from sdl.cli import main
from sdl.config import load_campaign
from sdl.errors import ConfigError
from sdl.preflight import check, problems

ROOT = Path(__file__).parents[1]
CAMPAIGNS = sorted((ROOT / "campaigns").glob("*.yaml"))


def _demo(name: str = "nanoparticle_size.yaml") -> dict:
    return yaml.safe_load((ROOT / "campaigns" / name).read_text())


def _validate(tmp_path, d: dict, capsys) -> tuple[int, str]:
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(d, sort_keys=False))
    rc = main(["validate", str(f)])
    out, err = capsys.readouterr()
    return rc, out + err


@pytest.mark.parametrize("path", CAMPAIGNS, ids=[p.stem for p in CAMPAIGNS])
def test_shipped_campaigns_validate(path, capsys):
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "descriptors: every objective and constraint reads one its technique declares" in out
    assert "inside the limits the simulated lab" in out
    assert problems(load_campaign(path)) == []


def test_misspelt_objective_descriptor(tmp_path, capsys):
    d = _demo()
    d["objectives"][0]["descriptor"] = "saxs.radius_mn"
    rc, text = _validate(tmp_path, d, capsys)
    assert rc == 1
    assert ("objectives[0].descriptor: 'saxs.radius_mn' is not produced by analysers saxs_ml, saxs_fit of technique "
            "saxs; did you mean 'saxs.radius_nm'? (known: saxs.model, saxs.radius_nm,") in text
    assert "c.yaml: campaign cannot run" in text and "valid campaign" not in text


def test_misspelt_constraint_descriptor_with_a_pattern(tmp_path, capsys):
    d = _demo("oxide_pareto.yaml")
    d["constraints"] = [{"descriptor": "pd.fracton.ZrO2_tetragonal", "op": ">=", "bound": 0.5}]
    rc, text = _validate(tmp_path, d, capsys)
    assert rc == 1
    assert ("constraints[0].descriptor: 'pd.fracton.ZrO2_tetragonal' is not produced by analysers pd_ml of technique "
            "pd; did you mean 'pd.fraction.ZrO2_tetragonal'?") in text
    assert "pd.fraction.<phase>" in text  # the declared pattern among the known ones


def test_unknown_analyser(tmp_path, capsys):
    d = _demo()
    d["analysis"]["saxs"] = ["saxs_ml", "saxs_fitt"]
    rc, text = _validate(tmp_path, d, capsys)
    assert rc == 1
    assert ("analysis.saxs[1]: unknown analyser 'saxs_fitt' of technique saxs; did you mean 'saxs_fit'? "
            "(known: saxs_ml, saxs_fit, saxs_modelfree)") in text


def test_unknown_technique_with_a_matching_analysis_key(tmp_path, capsys):
    d = _demo()
    d["workflow"][1]["technique"] = "saxz"
    d["analysis"] = {"saxz": ["saxs_ml"]}
    d["objectives"] = [{"descriptor": "saxz.radius_nm", "goal": "target", "value": 8.0, "tolerance": 0.5}]
    d["constraints"] = []
    d["lab"]["world"] = None  # the technique alone
    rc, text = _validate(tmp_path, d, capsys)
    assert rc == 1
    assert "workflow[1](saxs).technique: unknown technique 'saxz'; did you mean 'saxs'? (known: pd, pdf, saxs" in text
    assert "sdl.techniques" in text
    assert "drivers run elsewhere" not in text  # nothing printed as valid


def test_a_class_descriptor_is_no_objective_and_a_number_no_class(tmp_path, capsys):
    d = _demo()
    d["objectives"] = [{"descriptor": "saxs.model", "goal": "maximize"}]
    d["constraints"] = [{"descriptor": "saxs.polydispersity", "equals": "low"},
                        {"descriptor": "saxs.model", "op": "<=", "bound": 1}]
    rc, text = _validate(tmp_path, d, capsys)
    assert rc == 1
    assert "objectives[0].descriptor: 'saxs.model' is a class (categorical) descriptor; an objective needs a number" in text
    assert "constraints[0].descriptor: 'saxs.polydispersity' is a number; `equals` compares classes" in text
    assert "constraints[1].descriptor: 'saxs.model' is a class (categorical) descriptor; `op`/`bound` compare" in text


def test_bounds_and_settings_outside_the_simulated_labs_limits(tmp_path, capsys):
    d = _demo()
    d["parameters"][0]["bounds"] = [20, 250]  # the robot's world accepts 20-200 degC
    d["parameters"][3]["values"].append("nitric_acid")
    d["workflow"][1]["settings"]["exposure_s"] = 1e6  # the camera accepts up to 86400 s
    d["workflow"][1]["settings"]["n_pionts"] = 100
    d["workflow"][0]["action"] = "synthesise"
    rc, text = _validate(tmp_path, d, capsys)
    assert rc == 1
    assert ("parameters[0](temperature_C).bounds: [20, 250] reach outside 20 to 200 °C, the limits instrument "
            "'robot' of lab 'nanoparticles' declares") in text
    assert "parameters[3](reducing_agent).values: 'nitric_acid' not accepted by instrument 'robot'" in text
    assert ("workflow[1](saxs).settings.exposure_s: 1e+06 is outside 0.001 to 86400, the limits instrument 'saxs' "
            "of lab 'nanoparticles' declares") in text
    assert "workflow[1](saxs).settings.n_pionts: instrument 'saxs' of lab 'nanoparticles' takes no setting " \
           "'n_pionts'; did you mean 'n_points'?" in text
    assert "workflow[0](synthesis).action: instrument 'robot' of lab 'nanoparticles' has no action 'synthesise'" in text


def test_missing_recipe_parameter_unknown_instrument_and_lab(tmp_path, capsys):
    d = _demo("oxide_pareto.yaml")
    d["parameters"] = [p for p in d["parameters"] if p["name"] != "calcination_time_h"]
    d["workflow"][1]["instrument"] = ["xrd", "xrd2"]
    rc, text = _validate(tmp_path, d, capsys)
    assert rc == 1
    assert ("workflow[0](calcination): instrument 'robot' of lab 'oxides' needs 'calcination_time_h' as well; "
            "add it as a parameter") in text
    assert "workflow[1](xrd).instrument: lab 'oxides' has no instrument 'xrd2'" in text
    d = _demo("oxide_pareto.yaml")
    d["lab"]["world"] = "oxide"
    rc, text = _validate(tmp_path, d, capsys)
    assert rc == 1 and "lab.world: 'oxide' is not a known simulated lab; did you mean 'oxides'?" in text


def test_drivers_elsewhere_are_not_checked_and_it_says_so(tmp_path, capsys):
    d = _demo()
    d["lab"]["world"] = None
    d["parameters"][0]["bounds"] = [20, 250]
    rc, text = _validate(tmp_path, d, capsys)
    assert rc == 0, text
    assert "their limits are not checked here" in text


def test_sdl_run_of_a_campaign_that_cannot_work_stores_nothing(tmp_path, capsys, monkeypatch):
    from sdl.store import Store

    monkeypatch.chdir(tmp_path)
    d = _demo()
    d["objectives"][0]["descriptor"] = "saxs.radius_mn"
    d["store"] = f"sqlite:///{tmp_path}/runs.db"
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(d, sort_keys=False))
    t = time.monotonic()
    assert main(["run", str(f), "--quiet"]) == 1
    assert time.monotonic() - t < 30  # no lab started, no strategy built
    err = capsys.readouterr().err
    assert "campaign 'nanoparticle_size': campaign cannot run" in err
    assert "objectives[0].descriptor: 'saxs.radius_mn' is not produced" in err
    assert Store(d["store"]).campaigns() == []


def test_the_python_api_checks_too(tmp_path):
    import sdl

    c = sdl.Campaign.from_yaml(ROOT / "campaigns" / "nanoparticle_size.yaml", store=f"sqlite:///{tmp_path}/a.db",
                               analysis={"saxs": ["saxs_nn"]})
    with pytest.raises(ConfigError, match=r"analysis.saxs\[0\]: unknown analyser 'saxs_nn'"):
        sdl.run(c)
    from sdl.store import Store

    assert Store(c.store).campaigns() == []


def test_check_lists_every_problem_at_once():
    d = _demo()
    d["objectives"][0]["descriptor"] = "saxs.radius_mn"
    d["analysis"]["saxs"] = ["saxs_nn"]
    with pytest.raises(ConfigError) as e:
        check(load_campaign(d), origin="x.yaml")
    lines = str(e.value).splitlines()
    assert lines[0] == "x.yaml: campaign cannot run" and len(lines) == 3
