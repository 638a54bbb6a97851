"""Model-free SAXS descriptors (sdl.techniques.saxs.modelfree) against textbook results: the Guinier
Rg of a sphere (√(3/5) R) and of a Gaussian coil, Porod exponents 4 (sphere) and 2 (coil), the
invariant Q* = 2π² φ(1−φ) Δρ², Porod's specific surface S/V = 3φ/R of spheres; flags when the
Guinier region is not measured; the descriptors reach users through saxs_ml and saxs_modelfree."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sdl.measurement import Measurement
from sdl.techniques.saxs.modelfree import SaxsModelFreeAnalyser, modelfree_descriptors
from simulators.saxs.instrument import form_factor_curve

ROOT = Path(__file__).resolve().parents[1]
Q = np.geomspace(0.002, 0.5, 300)


def _measured(I0: np.ndarray, q: np.ndarray = Q, rel: float = 0.01, seed: int = 0, **meta) -> Measurement:
    """I0 with Gaussian noise of `rel` relative sigma (plus a small floor), as a Measurement."""
    rng = np.random.default_rng(seed)
    sigma = rel * I0 + 1e-6 * I0.max()
    return Measurement(technique="saxs", arrays={"q_inv_angstrom": q, "intensity": I0 + rng.normal(0, sigma),
                                                 "sigma": sigma}, metadata=meta)


def _sphere(R: float, pd: float = 0.0, q: np.ndarray = Q, phi: float = 0.01, drho: float = 1.0) -> np.ndarray:
    return form_factor_curve("sphere", q, radius=R, sld=1.0 + drho, sld_solvent=1.0, scale=phi, background=0.0,
                             radius_pd=pd, radius_pd_n=35, radius_pd_type="schulz")


def _by_name(m: Measurement):
    descs, info = modelfree_descriptors(m)
    return {d.name: d for d in descs}, info


@pytest.mark.parametrize("R", [30.0, 50.0, 80.0])
def test_guinier_rg_of_a_sphere_is_sqrt_three_fifths_r(R):
    d, info = _by_name(_measured(_sphere(R)))
    rg = d["saxs.rg_nm"]
    assert rg.trusted and rg.unit == "nm" and rg.uncertainty > 0
    assert rg.value == pytest.approx(math.sqrt(3 / 5) * R / 10, rel=0.02)
    g = info["saxs.rg_nm"]
    assert g["qRg_max"] <= 1.3 + 1e-9 and g["qRg_min"] <= 1.0 and g["n_points"] >= 10
    assert g["q_min"] < g["q_max"] <= 1.3 / (rg.value * 10) * 1.0001


def test_porod_exponent_of_spheres_is_four():
    for R, pd in ((50.0, 0.1), (100.0, 0.1), (80.0, 0.2)):
        d, info = _by_name(_measured(_sphere(R, pd)))
        n = d["saxs.porod_exponent"]
        assert n.value == pytest.approx(4.0, abs=0.2), (R, pd, n.value, info["saxs.porod_exponent"])
        assert info["saxs.porod_exponent"]["q_min"] >= 4.0 / (d["saxs.rg_nm"].value * 10) * 0.999


def test_gaussian_coil_gives_exponent_two_and_its_rg():
    rg = 60.0
    d, _ = _by_name(_measured(form_factor_curve("mono_gauss_coil", Q, rg=rg, i_zero=1.0, background=0.0)))
    assert d["saxs.rg_nm"].value == pytest.approx(rg / 10, rel=0.05)
    assert d["saxs.porod_exponent"].value == pytest.approx(2.0, abs=0.15)
    # q² I does not vanish: the invariant needs an assumed q⁻⁴ tail, and says so
    assert "low_confidence" in d["saxs.invariant"].flags


def test_invariant_of_spheres_is_two_pi_squared_phi_contrast_squared():
    phi, drho = 0.01, 2.0  # sasmodels: I = scale V Δρ² P(q) 1e-4 cm⁻¹ (Δρ in 1e-6 Å⁻²): Q* = 2π² φ Δρ² 1e-4
    expected = 2 * math.pi**2 * phi * (1 - phi) * drho**2 * 1e-4  # (1−φ) = 0.99: sasmodels is the dilute limit
    for R, pd in ((50.0, 0.1), (40.0, 0.0), (100.0, 0.15)):
        d, info = _by_name(_measured(_sphere(R, pd, phi=phi, drho=drho), intensity_unit="1/cm"))
        inv = d["saxs.invariant"]
        assert inv.value == pytest.approx(expected, rel=0.10), (R, pd, info["saxs.invariant"])
        assert inv.unit == "cm⁻¹ Å⁻³" and inv.uncertainty > 0
        assert info["saxs.invariant"]["low_q_extrapolation"] == "guinier"


def test_invariant_of_the_example_files():
    """tests/data: silver in water, Δρ = 68.1e-6 Å⁻², φ = 5e-5, flat background 0.02 cm⁻¹ (subtracted
    by the power-law fit), pinhole smearing."""
    from sdl.techniques.saxs.reader import read_saxs

    expected = 2 * math.pi**2 * 5e-5 * (1 - 5e-5) * 68.1**2 * 1e-4
    for f in sorted((ROOT / "tests" / "data").glob("*.dat")):
        d, info = _by_name(read_saxs(f))
        assert d["saxs.invariant"].value == pytest.approx(expected, rel=0.10), f.name
        assert info["saxs.porod_exponent"]["background"] == pytest.approx(0.02, rel=0.1)


def test_specific_surface_only_on_absolute_scale_with_a_volume_fraction():
    phi, R = 0.01, 100.0
    m = _measured(_sphere(R, 0.1, phi=phi), intensity_unit="1/cm", volume_fraction=phi)
    d, info = _by_name(m)
    # Schulz-distributed spheres: S/V = 3 φ <R²>/<R³>; 1 Å⁻¹ = 1e4 m²/cm³
    z = 1 / 0.1**2 - 1
    r2, r3 = R**2 * (z + 2) / (z + 1), R**3 * (z + 2) * (z + 3) / (z + 1) ** 2
    ss = d["saxs.specific_surface_m2_per_cm3"]
    assert ss.unit == "m²/cm³" and ss.value == pytest.approx(3 * phi * r2 / r3 * 1e4, rel=0.10)
    # with the contrast instead: S/V = K_P / (2π Δρ²)
    d2, _ = _by_name(_measured(_sphere(R, 0.1, phi=phi), intensity_unit="1/cm", sld_contrast=1.0))
    assert d2["saxs.specific_surface_m2_per_cm3"].value == pytest.approx(ss.value, rel=0.10)
    for meta in ({"volume_fraction": phi}, {"intensity_unit": "1/cm"}, {}):  # no made-up numbers
        d3, info3 = _by_name(_measured(_sphere(R, 0.1, phi=phi), **meta))
        assert "saxs.specific_surface_m2_per_cm3" not in d3
        assert info3["saxs.specific_surface_m2_per_cm3"]["produced"] is False


def test_coil_without_a_guinier_region_gets_rg_from_the_debye_function():
    """A Gaussian coil (sasmodels mono_gauss_coil, Rg 80 Å) measured from q = 0.02 Å⁻¹ (q_min·Rg = 1.6: no Guinier
    window of 10 points): Rg comes from the Debye function, within 3 %; a sphere in the same window misfits the
    Debye function and stays fit_failed."""
    q = np.geomspace(0.02, 0.4, 120)
    d, info = _by_name(_measured(form_factor_curve("mono_gauss_coil", q, rg=80.0, i_zero=1.0, background=0.0), q=q))
    rg = d["saxs.rg_nm"]
    assert rg.trusted and rg.value == pytest.approx(8.0, rel=0.03), (rg, info["saxs.rg_nm"])
    assert info["saxs.rg_nm"]["fit"].startswith("Debye") and "no Guinier region" in info["saxs.rg_nm"]["note"]
    q = np.geomspace(0.05, 0.5, 200)
    d, info = _by_name(_measured(_sphere(200.0, 0.1, q=q), q=q))
    assert "fit_failed" in d["saxs.rg_nm"].flags


def test_a_curve_that_barely_decays_gives_a_low_confidence_rg():
    """A 3 Å sphere measured to q = 0.3 Å⁻¹ (the curve ends at q·Rg ≈ 0.7: inside the Guinier regime throughout, like
    a flat background run): its Rg rests on a small slope and is low_confidence, with a note."""
    q = np.geomspace(0.01, 0.3, 150)
    d, info = _by_name(_measured(_sphere(3.0, q=q), q=q, rel=0.05))
    assert "low_confidence" in d["saxs.rg_nm"].flags and "barely decays" in info["saxs.rg_nm"]["note"]


def test_no_guinier_region_is_flagged_not_reported():
    q = np.geomspace(0.05, 0.5, 200)  # a 20 nm sphere: q_min·Rg ≈ 7.7
    d, info = _by_name(_measured(_sphere(200.0, 0.1, q=q), q=q))
    rg = d["saxs.rg_nm"]
    assert "fit_failed" in rg.flags and not rg.trusted
    assert "no Guinier region" in info["saxs.rg_nm"]["note"] and info["saxs.rg_nm"]["q_min"] is None
    assert "low_confidence" in d["saxs.invariant"].flags  # no Guinier extrapolation to q = 0
    # each flag's reason, where a person reads it
    assert any(w.startswith("saxs.rg_nm: no Guinier region") for w in info["warnings"])
    assert any(w.startswith("saxs.invariant: ") for w in info["warnings"])


def test_a_correlation_peak_is_not_a_guinier_region():
    """Concentrated spheres (hard-sphere S(q), volume fraction 0.3): I falls toward low q, so a decaying
    window past the peak must not be reported as Rg."""
    from sasmodels.core import load_model
    from sasmodels.direct_model import call_kernel

    kernel = load_model("sphere@hardsphere", dtype="double").make_kernel([Q])
    I0 = call_kernel(kernel, {"radius": 50.0, "radius_effective": 50.0, "volfraction": 0.3, "sld": 2.0,
                              "sld_solvent": 1.0, "scale": 0.3, "background": 0.0, "radius_pd": 0.05, "radius_pd_n": 15})
    d, info = _by_name(_measured(np.asarray(I0, float)))
    rg = d["saxs.rg_nm"]
    assert "fit_failed" in rg.flags and not rg.trusted, (rg, info["saxs.rg_nm"])
    assert "correlation peak" in info["saxs.rg_nm"]["note"]


def test_without_sigma():
    I0 = _sphere(50.0)
    m = Measurement(technique="saxs", arrays={"q_inv_angstrom": Q, "intensity": I0 * (1 + 0.01 * np.random.default_rng(3).normal(size=Q.size))})
    d, _ = _by_name(m)
    assert d["saxs.rg_nm"].value == pytest.approx(math.sqrt(3 / 5) * 5.0, rel=0.02)


def test_the_analysers_report_them_without_the_ml_flags():
    from sdl import analysis

    t = analysis.technique("saxs")
    assert list(t.analysers)[-1] == "saxs_modelfree"
    coil = _measured(form_factor_curve("mono_gauss_coil", Q, rg=60.0, i_zero=1.0, background=0.02))
    ml = analysis.get("saxs", "saxs_ml").analyse(coil)
    by = {d.name: d for d in ml.descriptors}
    ml_flags = set(by["saxs.model"].flags)
    for name in ("saxs.rg_nm", "saxs.porod_exponent", "saxs.invariant"):
        assert name in by and name in ml.info and t.descriptor(name) is not None
        assert "ood" not in by[name].flags and by[name].analyser == "saxs_ml"
    for name in ("saxs.rg_nm", "saxs.porod_exponent"):  # the invariant has its own low_confidence (q⁻⁴ tail assumed)
        assert not ml_flags & set(by[name].flags) and by[name].trusted
    assert by["saxs.rg_nm"].value == pytest.approx(6.0, rel=0.05)
    mf = SaxsModelFreeAnalyser().analyse(coil)
    assert [d.name for d in mf.descriptors] == ["saxs.rg_nm", "saxs.porod_exponent", "saxs.invariant"]
    assert mf.analyser == "saxs_modelfree" and "fit" in mf.curves
