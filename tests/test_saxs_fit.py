"""The least-squares SAXS analyser on simulated curves and on example files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sdl.analysis import get
from sdl.techniques.saxs.fit import SaxsFitAnalyser, guinier
from sdl.errors import AnalysisError
from sdl.measurement import Measurement
from sdl.techniques.saxs.reader import read_saxs
from simulators.worlds.nanoparticles import NanoparticleWorld, Sample
from simulators.saxs.instrument import SaxsInstrument, form_factor_curve

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def analyser() -> SaxsFitAnalyser:
    return SaxsFitAnalyser()


def measured(sample: Sample, seed: int = 0, **instrument) -> Measurement:
    out = SaxsInstrument(seed=seed, **instrument).measure(sample, np.random.default_rng(seed))
    return Measurement(technique="saxs", arrays=out["arrays"], metadata=out["metadata"])


def sphere(radius_nm: float, pd: float) -> Sample:
    mp = dict(scale=5e-5, background=0.0, sld=77.6, sld_solvent=9.47, radius=radius_nm * 10,
              radius_pd=pd, radius_pd_type="schulz", radius_pd_n=35, radius_pd_nsigma=3.0)
    return Sample("sph", {}, "sphere", mp, {"radius_nm": radius_nm, "polydispersity": pd})


def by_name(result):
    return {d.name: d for d in result.descriptors}


def test_recovers_sphere_radius_and_model(analyser):
    res = analyser.analyse(measured(sphere(8.0, 0.08)))
    d = by_name(res)
    assert d["saxs.model"].value == "sphere"
    assert d["saxs.radius_nm"].value == pytest.approx(8.0, rel=0.05)
    assert d["saxs.radius_nm"].unit == "nm" and 0 < d["saxs.radius_nm"].uncertainty < 0.5
    assert d["saxs.polydispersity"].value == pytest.approx(0.08, abs=0.03)
    assert d["saxs.rg_nm"].value > 0 and d["saxs.chi2_reduced"].value < 5
    assert all(x.analyser == "saxs_fit" for x in res.descriptors)
    assert not any("fit_failed" in x.flags for x in res.descriptors)
    probs = d["saxs.model"].probabilities
    assert set(probs) == {"sphere", "core_shell_sphere", "cylinder", "ellipsoid"}
    assert sum(probs.values()) == pytest.approx(1.0)
    assert res.info["method"] == "guinier+least_squares" and res.info["criterion"] == "BIC"
    assert [r["model"] for r in res.info["ranking"]][0] == "sphere"
    assert set(res.curves) == {"q_inv_angstrom", "intensity", "fit"}
    assert res.curves["fit"].shape == res.curves["intensity"].shape


def test_picks_cylinder_for_rods_from_the_world(analyser):
    world = NanoparticleWorld(seed=0)
    rod = world.synthesize(dict(temperature_C=60.0, precursor_mM=5.0, surfactant_ratio=6.0,
                                reducing_agent="ascorbic_acid", time_min=60.0), "rod")
    assert rod.shape == "cylinder"
    d = by_name(analyser.analyse(measured(rod)))
    assert d["saxs.model"].value == "cylinder"
    assert d["saxs.radius_nm"].value == pytest.approx(rod.truth["radius_nm"], rel=0.05)
    assert d["saxs.length_nm"].value == pytest.approx(rod.truth["length_nm"], rel=0.10)


def test_core_shell_radius_is_total_radius(analyser):
    world = NanoparticleWorld(seed=0)
    cs = world.synthesize(dict(temperature_C=60.0, precursor_mM=30.0, surfactant_ratio=0.5,
                               reducing_agent="borohydride", time_min=30.0), "cs")
    d = by_name(analyser.analyse(measured(cs)))
    assert d["saxs.model"].value == "core_shell_sphere"
    assert d["saxs.radius_nm"].value == pytest.approx(cs.truth["radius_nm"], rel=0.05)


def test_works_without_sigma(analyser):
    m = measured(sphere(5.0, 0.1))
    arrays = {k: v for k, v in m.arrays.items() if k != "sigma"}
    d = by_name(analyser.analyse(Measurement(technique="saxs", arrays=arrays, metadata=m.metadata)))
    assert d["saxs.model"].value == "sphere"
    assert d["saxs.radius_nm"].value == pytest.approx(5.0, rel=0.05)


def test_guinier_on_clean_sphere():
    R = 60.0
    q = np.geomspace(0.002, 0.1, 120)
    i = form_factor_curve("sphere", q, scale=1.0, background=0.0, sld=1.0, sld_solvent=0.0, radius=R)
    g = guinier(q, i)
    assert g.ok and g.rg == pytest.approx(math.sqrt(0.6) * R, rel=0.02)
    assert g.q_rg_max <= 1.3 + 1e-9


def test_nan_input_is_an_analysis_error(analyser):
    m = measured(sphere(8.0, 0.08))
    m.arrays["intensity"][10] = np.nan
    with pytest.raises(AnalysisError, match="NaN"):
        analyser.analyse(m)


def test_too_few_points_is_an_analysis_error(analyser):
    q = np.geomspace(0.01, 0.3, 10)
    m = Measurement(technique="saxs", arrays={"q_inv_angstrom": q, "intensity": np.ones_like(q)}, metadata={"source": "tiny.dat"})
    with pytest.raises(AnalysisError, match=r"at least 20 points.*tiny\.dat"):
        analyser.analyse(m)


def test_non_positive_intensity_is_an_analysis_error(analyser):
    q = np.geomspace(0.01, 0.3, 50)
    m = Measurement(technique="saxs", arrays={"q_inv_angstrom": q, "intensity": -np.ones_like(q)}, metadata={"source": "neg.dat"})
    with pytest.raises(AnalysisError, match=r"non-positive everywhere"):
        analyser.analyse(m)


def test_flat_noise_is_flagged(analyser):
    rng = np.random.default_rng(0)
    q = np.geomspace(0.005, 0.5, 100)
    i = 1.0 + rng.normal(0, 0.3, q.size) * np.sin(40 * np.log(q))
    sig = np.full_like(q, 0.001)
    res = analyser.analyse(Measurement(technique="saxs", arrays={"q_inv_angstrom": q, "intensity": np.abs(i), "sigma": sig}))
    d = by_name(res)
    assert "fit_failed" in d["saxs.model"].flags
    assert not d["saxs.model"].trusted


def test_registry_finds_the_analyser():
    a = get("saxs", "saxs_fit")
    assert isinstance(a, SaxsFitAnalyser) and a.name == "saxs_fit" and a.technique == "saxs"


@pytest.mark.parametrize(
    "name, model, radius_nm",
    [
        ("sphere_r8nm_nm.dat", "sphere", 8.0),
        ("rod_r3nm_l30nm_nm.dat", "cylinder", 3.0),
        ("sphere_r5nm_angstrom.dat", "sphere", 5.0),
    ],
)
def test_example_files(analyser, name, model, radius_nm):
    m = read_saxs(DATA / name)
    q = m.arrays["q_inv_angstrom"]
    assert q[0] == pytest.approx(0.005)  # both units end up in 1/Å
    assert "assumed" not in m.metadata
    res = analyser.analyse(m)
    d = by_name(res)
    assert d["saxs.model"].value == model
    assert d["saxs.radius_nm"].value == pytest.approx(radius_nm, rel=0.05)
    assert res.info["source"].endswith(name)
