"""Campaign configs: the examples load; wrong files give errors naming the field and what is accepted."""

from pathlib import Path

import pytest
import yaml

from sdl.cli import main
from sdl.config import load_campaign
from sdl.errors import ConfigError

CAMPAIGNS = sorted(Path(__file__).parents[1].joinpath("campaigns").glob("*.yaml"))
DEMO = Path(__file__).parents[1] / "campaigns" / "nanoparticle_size.yaml"


@pytest.mark.parametrize("path", CAMPAIGNS, ids=lambda p: p.name)
def test_example_campaigns_load(path):
    c = load_campaign(path)
    assert c.objectives and c.workflow


def _demo() -> dict:
    return yaml.safe_load(DEMO.read_text())


def _error(data) -> str:
    with pytest.raises(ConfigError) as exc:
        load_campaign(data)
    return str(exc.value)


def test_unknown_parameter_field_names_path_and_accepted_fields():
    d = _demo()
    d["parameters"][0]["bonds"] = [1, 2]
    msg = _error(d)
    assert "parameters[0](temperature_C).bonds: unknown field 'bonds'" in msg
    assert "bounds" in msg and "log_scale" in msg


def test_unknown_top_level_field():
    d = _demo()
    d["objective"] = d.pop("objectives")
    msg = _error(d)
    assert "unknown field 'objective'" in msg and "objectives" in msg


def test_bad_bounds_and_log_scale():
    d = _demo()
    d["parameters"][0]["bounds"] = [200, 20]
    d["parameters"][1]["bounds"] = [0, 50]
    msg = _error(d)
    assert "parameters[0](temperature_C)" in msg and "low < high" in msg
    assert "parameters[1](precursor_mM)" in msg and "log_scale needs positive bounds" in msg


def test_wrong_parameter_type_lists_accepted_tags():
    d = _demo()
    d["parameters"][2]["type"] = "floaty"
    msg = _error(d)
    assert "parameters[2](surfactant_ratio)" in msg and "'float', 'int', 'choice', 'fixed'" in msg


def test_target_needs_value_and_tolerance():
    d = _demo()
    del d["objectives"][0]["tolerance"]
    assert "needs `value` and `tolerance`" in _error(d)


def test_descriptor_of_unmeasured_technique():
    d = _demo()
    d["objectives"][0]["descriptor"] = "pd.phase_purity"
    msg = _error(d)
    assert "pd.phase_purity" in msg and "saxs" in msg


def test_constraint_kinds_exclusive():
    d = _demo()
    d["constraints"][0]["equals"] = "sphere"
    assert "either `op` and `bound`" in _error(d)


def test_parameter_constraint_names_unknown_parameter():
    d = _demo()
    d["parameter_constraints"] = ["temperature_C + pressure_bar <= 10"]
    assert "'pressure_bar'" in _error(d)


def test_overrides_apply(tmp_path):
    c = load_campaign(DEMO, **{"budget.max_experiments": 12, "strategy.seed": 4, "store": None})
    assert c.budget.max_experiments == 12 and c.strategy.seed == 4 and c.store == "sqlite:///sdl.db"


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert "not valid YAML" in _error(bad)
    assert "cannot read campaign file" in _error(tmp_path / "nope.yaml")


def test_validate_cli(tmp_path, capsys):
    assert main(["validate", str(DEMO)]) == 0
    out = capsys.readouterr().out
    assert "valid campaign 'nanoparticle_size'" in out and "next experiment: log noisy expected improvement" in out
    assert main(["validate", str(DEMO.parent / "nanoparticle_map.yaml")]) == 0
    assert "integrated posterior variance" in capsys.readouterr().out
    d = _demo()
    d["parameters"][0]["unknown"] = 1
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(d))
    assert main(["validate", str(f)]) == 1
    assert "unknown field 'unknown'" in capsys.readouterr().err
