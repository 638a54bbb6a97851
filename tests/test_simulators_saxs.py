"""Textbook checks of the SAXS simulator and behaviour of the simulated nanoparticle world."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import argrelmin

from simulators.worlds.nanoparticles import (
    PARAMETER_SPACE,
    REDUCING_AGENTS,
    NanoparticleWorld,
    Sample,
    SynthesisFailed,
    target_fraction,
    validate_params,
)
from simulators.saxs.instrument import SaxsInstrument, form_factor_curve

SLD, SLD_SOLVENT = 77.6, 9.47
CITRATE_SPHERES = dict(temperature_C=95.0, precursor_mM=5.0, surfactant_ratio=0.8, reducing_agent="citrate", time_min=20.0)


def sphere_sample(radius_A: float = 80.0, pd: float = 0.0, scale: float = 5e-5, sid: str = "s") -> Sample:
    mp = dict(scale=scale, background=0.0, sld=SLD, sld_solvent=SLD_SOLVENT, radius=radius_A)
    if pd:
        mp.update(radius_pd=pd, radius_pd_type="schulz", radius_pd_n=35, radius_pd_nsigma=3.0)
    return Sample(sid, {}, "sphere", mp, {"radius_nm": radius_A / 10, "polydispersity": pd})


# ----- form factor physics ------------------------------------------------------------------------------

def test_sphere_minima_at_textbook_qR():
    R = 50.0
    q = np.linspace(0.02, 0.18, 20001)
    intensity = form_factor_curve("sphere", q, scale=1.0, background=0.0, sld=SLD, sld_solvent=SLD_SOLVENT, radius=R)
    minima = q[argrelmin(intensity)[0]] * R
    assert minima.size >= 2
    assert minima[0] == pytest.approx(4.4934, rel=1e-3)
    assert minima[1] == pytest.approx(7.7253, rel=1e-3)


def test_guinier_radius_of_gyration_of_monodisperse_sphere():
    R = 50.0
    rg_true = math.sqrt(3.0 / 5.0) * R
    q = np.linspace(0.001, 1.0 / rg_true, 60)
    intensity = form_factor_curve("sphere", q, scale=1.0, background=0.0, sld=SLD, sld_solvent=SLD_SOLVENT, radius=R)
    slope, _ = np.polyfit(q**2, np.log(intensity), 1)
    rg = math.sqrt(-3.0 * slope)
    assert rg == pytest.approx(rg_true, rel=0.02)


def test_porod_q_minus_four_at_high_q():
    q = np.geomspace(0.2, 1.0, 200)
    intensity = form_factor_curve(
        "sphere", q, scale=1.0, background=0.0, sld=SLD, sld_solvent=SLD_SOLVENT, radius=100.0,
        radius_pd=0.15, radius_pd_type="schulz", radius_pd_n=35,
    )
    slope, _ = np.polyfit(np.log(q), np.log(intensity), 1)
    assert slope == pytest.approx(-4.0, abs=0.15)


def test_forward_scattering_equals_scale_contrast_squared_volume():
    R, scale = 60.0, 2e-4
    volume = 4.0 / 3.0 * math.pi * R**3
    expected = scale * (SLD - SLD_SOLVENT) ** 2 * volume * 1e-4  # sasmodels: SLD in 1e-6/Å², I in 1/cm
    i0 = form_factor_curve("sphere", np.array([1e-5, 2e-5]), scale=scale, background=0.0, sld=SLD, sld_solvent=SLD_SOLVENT, radius=R)[0]
    assert i0 == pytest.approx(expected, rel=0.01)


def test_resolution_smearing_fills_in_the_minima():
    R = 50.0
    q = np.linspace(0.05, 0.2, 3001)
    pars = dict(scale=1.0, background=0.0, sld=SLD, sld_solvent=SLD_SOLVENT, radius=R)
    sharp = form_factor_curve("sphere", q, **pars)
    smeared = form_factor_curve("sphere", q, dq=0.05, **pars)
    i = int(np.argmin(np.abs(q * R - 4.4934)))
    depth_sharp = sharp[i] / sharp[np.argmax(q * R > 5.76)]  # minimum over the next maximum (qR ≈ 5.76)
    depth_smeared = smeared[i] / smeared[np.argmax(q * R > 5.76)]
    assert depth_sharp < 1e-3
    assert depth_smeared > 30 * depth_sharp
    # smearing conserves the curve away from sharp features
    far = q * R < 3.0
    np.testing.assert_allclose(smeared[far], sharp[far], rtol=0.05)


@pytest.mark.parametrize(
    "model, pars, fixed_n_error",
    [
        ("sphere", dict(radius=600.0, sld=1.0, sld_solvent=0.0, polydispersity=0.2), 0.1),
        ("cylinder", dict(radius=150.0, length=2000.0, sld=1.0, sld_solvent=0.0, polydispersity=0.25), 0.1),
    ],
)
def test_size_distribution_quadrature_converged_at_high_q(model, pars, fixed_n_error):
    """Too few radii in sasmodels' size average alias into dips and spikes once q·ΔR passes ~3 (what the
    fixed 9-15 points did to large polydisperse particles); pd_points keeps the curve near converged."""
    from sasmodels.core import load_model
    from sasmodels.direct_model import call_kernel
    from sasmodels.resolution import Pinhole1D

    from simulators.saxs import dataset as D

    q = np.geomspace(0.005, 0.5, 200)
    res = Pinhole1D(q, 0.03 * q)
    got = res.apply(D.form_factor(model, res.q_calc, pars, dtype="double"))
    kernel = load_model(model, dtype="double").make_kernel([res.q_calc])
    p = D.PD_PARAM[model]

    def with_n(n):
        full = {k: v for k, v in pars.items() if k != "polydispersity"}
        full.update({p + "_pd": pars["polydispersity"], p + "_pd_n": n, p + "_pd_type": "schulz", p + "_pd_nsigma": 3.0,
                     "scale": 1.0, "background": 0.0})
        return res.apply(call_kernel(kernel, full))

    converged = with_n(600)
    assert np.max(np.abs(got / converged - 1)) < 0.03
    assert np.max(np.abs(with_n(D.PD_N[model]) / converged - 1)) > fixed_n_error  # the test sees the aliasing
    # a disc averages its polydisperse radius out: the floor is enough, and cheap
    disc = {"radius": 1500.0, "length": 60.0, "radius_pd": 0.2}
    assert D.pd_points("cylinder", disc, 0.3) == D.PD_N["cylinder"]


# ----- the instrument ------------------------------------------------------------------------------------

def test_measurement_arrays_units_and_log_spaced_q():
    inst = SaxsInstrument()
    out = inst.measure(sphere_sample(), np.random.default_rng(0))
    a = out["arrays"]
    assert set(a) >= {"q_inv_angstrom", "intensity", "sigma"}
    q = a["q_inv_angstrom"]
    assert q.size == 200 and q[0] == pytest.approx(0.005) and q[-1] == pytest.approx(0.5)
    np.testing.assert_allclose(np.diff(np.log(q)), np.log(q[1] / q[0]))
    assert np.all(a["sigma"] > 0) and np.all(np.isfinite(a["intensity"]))
    assert out["metadata"]["dq_over_q"] == 0.05 and out["metadata"]["q_unit"] == "1/angstrom"
    assert inst.measure_time_s() >= inst.exposure_s


def test_counting_noise_statistics():
    inst = SaxsInstrument(n_points=60, exposure_s=1.0, flux=5e4)
    sample = sphere_sample(radius_A=60.0, pd=0.1)
    expected = inst.expected_intensity(sample)
    factor = inst.counting_factor()
    rng = np.random.default_rng(42)
    runs = [inst.measure(sample, rng)["arrays"] for _ in range(300)]
    intensity = np.array([r["intensity"] for r in runs])
    sigma = np.array([r["sigma"] for r in runs])
    # Poisson: Var(I) = E(I) / (flux * exposure * solid angle)
    ratio = intensity.var(axis=0, ddof=1) / (expected / factor)
    assert np.median(ratio) == pytest.approx(1.0, abs=0.1)
    assert np.all((ratio > 0.6) & (ratio < 1.5))
    # the reported sigma is the counting error of each measurement
    np.testing.assert_allclose(np.median(sigma**2 / (intensity / factor), axis=0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(intensity.mean(axis=0), expected, rtol=0.05)
    # longer exposure, smaller relative error
    long = SaxsInstrument(n_points=60, exposure_s=100.0, flux=5e4).measure(sample, rng)["arrays"]
    assert np.median(long["sigma"] / long["intensity"]) < 0.2 * np.median(sigma[0] / intensity[0])


def test_measure_is_deterministic_per_instrument_seed_and_sample():
    world = NanoparticleWorld(seed=3)
    sample = world.synthesize(CITRATE_SPHERES, "A1")
    a = SaxsInstrument(seed=1).measure(sample)["arrays"]["intensity"]
    b = SaxsInstrument(seed=1).measure(sample)["arrays"]["intensity"]
    c = SaxsInstrument(seed=2).measure(sample)["arrays"]["intensity"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ----- the world -----------------------------------------------------------------------------------------

def test_world_is_deterministic_per_seed_and_sample_id():
    p = CITRATE_SPHERES
    s1 = NanoparticleWorld(seed=7).synthesize(p, "S-001")
    s2 = NanoparticleWorld(seed=7).synthesize(p, "S-001")
    s3 = NanoparticleWorld(seed=7).synthesize(p, "S-002")
    s4 = NanoparticleWorld(seed=8).synthesize(p, "S-001")
    assert s1.model_params == s2.model_params and s1.truth == s2.truth
    assert s1.model_params != s3.model_params  # batch-to-batch noise
    assert s1.model_params != s4.model_params
    # noise is small: same recipe, similar particles
    assert s3.truth["radius_nm"] == pytest.approx(s1.truth["radius_nm"], rel=0.15)


def test_nanoparticle_samples_satisfy_the_saxs_sample_contract():
    from simulators.saxs import SasSample

    sample = NanoparticleWorld(seed=7).synthesize(CITRATE_SPHERES, "S-001")
    assert isinstance(sample, SasSample)  # the world offers SAXS by satisfying the Protocol
    assert SaxsInstrument.technique == "saxs" and "exposure_s" in SaxsInstrument.COMMAND_SETTINGS


def test_all_regimes_reachable():
    world = NanoparticleWorld(seed=0)
    recipes = {
        "sphere": CITRATE_SPHERES,
        "core_shell_sphere": dict(temperature_C=60.0, precursor_mM=30.0, surfactant_ratio=0.5, reducing_agent="borohydride", time_min=30.0),
        "cylinder": dict(temperature_C=60.0, precursor_mM=5.0, surfactant_ratio=6.0, reducing_agent="ascorbic_acid", time_min=60.0),
        "ellipsoid": dict(temperature_C=60.0, precursor_mM=5.0, surfactant_ratio=1.5, reducing_agent="ascorbic_acid", time_min=60.0),
    }
    for i, (shape, recipe) in enumerate(recipes.items()):
        s = world.synthesize(recipe, f"r{i}")
        assert s.shape == shape
        assert s.truth["radius_nm"] > 0 and 0 < s.truth["polydispersity"] < 0.6
        assert world.sample(f"r{i}") is s
        if shape == "cylinder":
            assert s.truth["length_nm"] > 2 * s.truth["radius_nm"]
            assert s.model_params["length"] == pytest.approx(10 * s.truth["length_nm"])
        if shape == "core_shell_sphere":
            assert s.truth["radius_nm"] == pytest.approx(s.truth["core_radius_nm"] + s.truth["shell_nm"])


def test_responses_follow_the_chemistry():
    world = NanoparticleWorld()
    base = dict(CITRATE_SPHERES)
    r = lambda **kw: world.expected({**base, **kw})  # noqa: E731
    # faster reducer -> more nuclei -> smaller particles
    assert r(reducing_agent="borohydride", precursor_mM=2.0)["radius_nm"] < r(precursor_mM=2.0)["radius_nm"]
    # coarsening with time, growth with precursor supply
    assert r(time_min=200.0)["radius_nm"] > r(time_min=5.0)["radius_nm"]
    assert r(precursor_mM=40.0)["radius_nm"] > r(precursor_mM=1.0)["radius_nm"]
    # Ostwald ripening broadens; the burst window narrows
    assert r(time_min=200.0)["polydispersity"] > r(time_min=5.0)["polydispersity"]
    assert r(temperature_C=95.0)["polydispersity"] < r(temperature_C=170.0)["polydispersity"]


def test_sample_to_dict_hides_the_truth():
    world = NanoparticleWorld()
    s = world.synthesize(CITRATE_SPHERES, "hidden")
    d = s.to_dict()
    assert d["sample_id"] == "hidden" and d["params"] == CITRATE_SPHERES and d["made"] is True
    assert "truth" not in d and "model_params" not in d and "shape" not in d
    assert world.synthesis_time_s(CITRATE_SPHERES) == pytest.approx(20 * 60 + 300)


def test_failures_raise_synthesis_failed_with_reason():
    world = NanoparticleWorld()
    with pytest.raises(SynthesisFailed, match="no particles") as exc:
        world.synthesize(dict(CITRATE_SPHERES, temperature_C=20.0, precursor_mM=0.6), "dilute")
    assert "precursor" in exc.value.reason
    with pytest.raises(SynthesisFailed, match="citrate"):
        world.synthesize(dict(CITRATE_SPHERES, temperature_C=190.0), "hot")
    with pytest.raises(KeyError, match="dilute"):
        world.sample("dilute")  # failed syntheses leave no sample


@pytest.mark.parametrize(
    "change, words",
    [
        ({"temperature_C": 250.0}, ["temperature_C", "20.0", "200.0"]),
        ({"precursor_mM": 0.1}, ["precursor_mM", "0.5", "50.0"]),
        ({"surfactant_ratio": "lots"}, ["surfactant_ratio"]),
        ({"time_min": float("nan")}, ["time_min", "240"]),
        ({"reducing_agent": "hydrazine"}, ["reducing_agent", "citrate", "borohydride", "ascorbic_acid"]),
        ({"pressure_bar": 1.0}, ["pressure_bar", "temperature_C"]),
    ],
)
def test_bad_params_rejected_naming_the_parameter(change, words):
    with pytest.raises(ValueError) as exc:
        NanoparticleWorld().synthesize({**CITRATE_SPHERES, **change}, "bad")
    for w in words:
        assert w in str(exc.value)


def test_missing_param_rejected():
    p = dict(CITRATE_SPHERES)
    del p["time_min"]
    with pytest.raises(ValueError, match="time_min"):
        validate_params(p)


def test_unknown_sample_id_gives_clear_key_error():
    with pytest.raises(KeyError, match="never synthesised"):
        NanoparticleWorld().sample("nope")


def test_parameter_space_is_documented():
    assert set(PARAMETER_SPACE) == {"temperature_C", "precursor_mM", "surfactant_ratio", "reducing_agent", "time_min"}
    assert PARAMETER_SPACE["precursor_mM"]["log_scale"] and not PARAMETER_SPACE["temperature_C"]["log_scale"]
    assert tuple(PARAMETER_SPACE["reducing_agent"]["values"]) == REDUCING_AGENTS
    for spec in PARAMETER_SPACE.values():
        assert "unit" in spec and "type" in spec


def test_default_target_is_reachable_but_rare():
    fraction = target_fraction(n=200_000, seed=0)
    assert 0.003 <= fraction <= 0.03
    assert target_fraction(n=200_000, seed=1) == pytest.approx(fraction, rel=0.15)
