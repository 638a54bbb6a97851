"""Structure factors and the hollow core in saxs_ml's refinement (`refine`), on curves simulated with
sasmodels' own product models (sphere@hardsphere, sphere@hayter_msa), independent of the decoupled
S(q) the refinement multiplies in."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sasmodels")

from sdl.techniques.saxs.ml import refine  # noqa: E402

R, PD = 50.0, 0.05  # Å, Schulz relative width
SPHERE = {"radius": R, "sld": 1.0, "sld_solvent": 0.0, "radius_pd": PD, "radius_pd_n": 15, "radius_pd_type": "schulz"}
ML_START = {"radius": 44.0, "polydispersity": 0.08}  # an ML estimate 12 % off


def _simulate(model: str, pars: dict, seed: int, counts: float = 1e5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q Å⁻¹, I, sigma) of a sasmodels model on 0.005-0.4 Å⁻¹ (300 points), flat background, Poisson
    counts with `counts` at the peak."""
    from sasmodels.core import load_model
    from sasmodels.direct_model import call_kernel

    q = np.linspace(0.005, 0.4, 300)
    kernel = load_model(model, dtype="double").make_kernel([q])
    I = np.asarray(call_kernel(kernel, dict(pars, scale=1.0, background=0.0)), float)
    kernel.release()
    I = I / I.max() + 1e-3
    c = np.random.default_rng(seed).poisson(I * counts).astype(float)
    return q, c / counts, np.sqrt(np.maximum(c, 1.0)) / counts


def test_hard_sphere_structure_factor_found_radius_and_volume_fraction():
    q, I, s = _simulate("sphere@hardsphere", dict(SPHERE, radius_effective=R, volfraction=0.3), seed=1)
    r = refine("sphere", q, I, s, None, ML_START)
    assert r["structure_factor"] == "hard_sphere", r["structure"]
    assert abs(r["values"]["radius"] / R - 1) < 0.05, r["values"]
    assert abs(r["volfraction"] - 0.3) < 0.05 and 0 < r["volfraction_uncertainty"] < 0.05
    p = r["structure_probabilities"]
    assert set(p) == {"none", "hard_sphere", "charged"} and abs(sum(p.values()) - 1) < 1e-9 and p["hard_sphere"] > 0.9
    # the fit is the chosen model's: the plain sphere misses the correlation hole by far
    assert r["chi2_red"] < 2.0 < r["structure"]["none"]["chi2_red"] and np.all(np.isfinite(r["fit"]))
    assert r["structure"]["none"]["delta_bic"] >= 10


@pytest.mark.parametrize("seed", [2, 3])
def test_dilute_sphere_has_no_structure_factor(seed):
    q, I, s = _simulate("sphere", SPHERE, seed=seed)
    r = refine("sphere", q, I, s, None, ML_START)
    assert r["structure_factor"] == "none", r["structure"]
    assert r["volfraction"] is None and r["volfraction_uncertainty"] is None
    assert abs(r["values"]["radius"] / R - 1) < 0.05


def test_charged_spheres_are_not_read_as_dilute():
    # salt 5 mM where the refinement fixes 1 mM: the peak is still there, the charge absorbs the difference
    q, I, s = _simulate("sphere@hayter_msa", dict(SPHERE, radius_effective=R, volfraction=0.05, charge=40.0,
                                                  temperature=298.0, concentration_salt=5e-3, dielectconst=78.0), seed=4)
    r = refine("sphere", q, I, s, None, ML_START)
    assert r["structure_factor"] == "charged", r["structure"]
    assert abs(r["values"]["radius"] / R - 1) < 0.05 and abs(r["volfraction"] - 0.05) < 0.03
    assert r["charge"] > 1.0


@pytest.mark.parametrize("core", [0.0, -0.5])  # hollow (vesicle, cage: core = solvent) and an opposite-contrast core
def test_core_shell_core_contrast(core):
    # (a core 3x the shell's hides the shell: its contrast is then poorly determined, ±0.2 here)
    pars = {"radius": 70.0, "thickness": 20.0, "sld_core": core, "sld_shell": 1.0, "sld_solvent": 0.0,
            "radius_pd": PD, "radius_pd_n": 15, "radius_pd_type": "schulz"}
    q, I, s = _simulate("core_shell_sphere", pars, seed=5)
    r = refine("core_shell_sphere", q, I, s, None, {"radius": 62.0, "shell": 24.0, "polydispersity": 0.08})
    assert abs(r["sld_core"] - core) < 0.05, r["sld_core"]
    assert 0 < r["sld_core_uncertainty"] < 0.05
    assert abs(r["values"]["radius"] / 70.0 - 1) < 0.05 and r["structure_factor"] == "none"


def test_no_structure_factor_for_other_classes():
    q, I, s = _simulate("sphere", SPHERE, seed=6)
    r = refine("sphere", q, I, s, None, ML_START, structure=False)
    assert r["structure_factor"] is None and r["structure_probabilities"] is None and r["structure"] is None
