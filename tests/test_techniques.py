"""The built-in technique declarations: found by entry point, complete, and true to what the
analysers really produce; `sdl analyse/train <t> --help` are generated from them."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from sdl import analysis
from sdl.analysis.technique import Technique, load
from sdl.cli import main


def test_builtins_are_registered_through_the_entry_point():
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="sdl.techniques")}
    assert eps["saxs"] == "sdl.techniques.saxs:TECHNIQUE" and eps["pd"] == "sdl.techniques.pd:TECHNIQUE"
    assert {"saxs", "pd"} <= set(analysis.techniques())
    with pytest.raises(Exception, match="unknown technique 'nope'; known: .*pd.*saxs"):
        analysis.technique("nope")


@pytest.mark.parametrize("name", ["saxs", "pd"])
def test_declaration_parts_load(name):
    t = analysis.technique(name)
    assert isinstance(t, Technique) and t.name == name and t.title
    for analyser_name, path in t.analysers.items():
        cls = load(path)
        assert cls.name == analyser_name and cls.technique == name
    for r in t.readers:
        assert callable(load(r.function))
    for trainer in t.trainers.values():
        module = importlib.import_module(trainer.module)
        assert callable(module.add_arguments) and callable(module.run)
    assert t.curves and all(d.name.startswith(name + ".") for d in t.descriptors)


def _simulated(name: str):
    """A measurement of the technique from its simulated instrument and world."""
    from sdl.measurement import Measurement

    if name == "saxs":
        from simulators.saxs.instrument import SaxsInstrument
        from simulators.worlds.nanoparticles import NanoparticleWorld

        world, inst = NanoparticleWorld(seed=1), SaxsInstrument(seed=1)
        params = {"temperature_C": 90.0, "precursor_mM": 5.0, "surfactant_ratio": 2.0, "time_min": 30.0,
                  "reducing_agent": "citrate"}
    else:
        from simulators.pd.instrument import PdInstrument
        from simulators.worlds.oxides import OxideWorld

        world, inst = OxideWorld(seed=1), PdInstrument(seed=1)
        params = {"zr_fraction": 0.6, "calcination_temperature_C": 800.0, "calcination_time_h": 4.0, "atmosphere": "air"}
    data = inst.measure(world.synthesize(params, "t-1"), np.random.default_rng(1))
    return Measurement(technique=name, arrays=data["arrays"], metadata=data["metadata"])


@pytest.mark.parametrize("name", ["saxs", "pd"])
def test_every_descriptor_an_analyser_makes_is_declared(name):
    t = analysis.technique(name)
    m = _simulated(name)
    for analyser_name in t.analysers:
        result = analysis.get(name, analyser_name).analyse(m)
        undeclared = [d.name for d in result.descriptors if t.descriptor(d.name) is None]
        assert not undeclared, f"{analyser_name} makes descriptors {name} does not declare: {undeclared}"
        for d in result.descriptors:
            assert (t.descriptor(d.name).kind == "class") == isinstance(d.value, str), d.name


def test_analyse_help_comes_from_the_declarations(capsys):
    with pytest.raises(SystemExit) as e:
        main(["analyse", "pd", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--wavelength-angstrom" in text and "--x-unit" in text and "--q-unit" not in text
    with pytest.raises(SystemExit):
        main(["analyse", "saxs", "--help"])
    text = capsys.readouterr().out
    assert "--q-unit" in text and "--wavelength-angstrom" not in text and "saxs_fit" in text
    assert main(["analyse", "--help"]) == 0
    listing = capsys.readouterr().out
    assert "saxs" in listing and "pd" in listing
    with pytest.raises(SystemExit):
        main(["train", "pd", "--help"])
    assert "--epochs" in capsys.readouterr().out


def test_pd_wavelength_option_reaches_the_reader(tmp_path, capsys):
    from simulators.pd import physics as spd

    m = _simulated("pd")
    q = spd.two_theta_to_q(m.arrays["two_theta_deg"], 1.5406)
    f = tmp_path / "pattern_q.xy"  # Q column, no header: the user says what it is
    np.savetxt(f, np.column_stack([q, m.arrays["intensity"]]))
    assert main(["analyse", "pd", str(f), "--json", "--x-unit", "q", "--wavelength-angstrom", "1.5406"]) == 0
    import json

    rec = json.loads(capsys.readouterr().out)
    assert "pd.phases" in rec["descriptors"], rec
    with pytest.raises(SystemExit):  # an option of another technique is refused, naming it
        main(["analyse", "pd", str(f), "--q-unit", "nm"])
    assert "--q-unit" in capsys.readouterr().err
