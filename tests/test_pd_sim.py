"""Powder-diffraction simulator and the oxide-synthesis world: physics checks and determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulators.pd.instrument import PdInstrument  # noqa: E402
from simulators.worlds import oxides as ox
from simulators.pd import physics as spd

CU = 1.5406


def _fwhm(x, y):
    i = int(np.argmax(y))
    half = y[i] / 2
    left = i
    while left > 0 and y[left] > half:
        left -= 1
    right = i
    while right < y.size - 1 and y[right] > half:
        right += 1
    # linear interpolation at both crossings
    xl = np.interp(half, [y[left], y[left + 1]], [x[left], x[left + 1]])
    xr = np.interp(half, [y[right], y[right - 1]], [x[right], x[right - 1]])
    return xr - xl, x[i]


def test_library_has_polymorph_families_and_sane_structures():
    lib = set(spd.PHASES)
    assert len(lib) >= 10
    assert {"TiO2_anatase", "TiO2_rutile", "TiO2_brookite", "ZrO2_monoclinic", "ZrO2_tetragonal",
            "CeO2", "NiO", "PdO"} <= lib
    # densities from the structures match handbook values (g/cm³) within 2 %
    handbook = {"TiO2_anatase": 3.89, "TiO2_rutile": 4.25, "TiO2_brookite": 4.12, "ZrO2_monoclinic": 5.82,
                "CeO2": 7.22, "NiO": 6.81, "ZnO": 5.61, "Al2O3_corundum": 3.99, "Fe2O3_hematite": 5.26,
                "Co3O4": 6.07, "PdO": 8.3}
    for name, rho in handbook.items():
        assert spd.reflections(name).density_g_cm3 == pytest.approx(rho, rel=0.02), name


def test_ceo2_111_bragg_position_cu_ka():
    a = spd.PHASES["CeO2"].a
    d111 = a / math.sqrt(3)
    tt_expected = math.degrees(2 * math.asin(CU / (2 * d111)))  # 28.55°
    ref = spd.reflections("CeO2")
    assert np.min(np.abs(ref.d_angstrom - d111)) < 1e-6
    x = np.arange(26.0, 31.0, 0.001)
    y = spd.simulate(x, [spd.PhaseComponent("CeO2", size_nm=200)], spd.Profile(caglioti_uvw_deg2=(0, 0, 1e-4)))
    assert x[np.argmax(y)] == pytest.approx(tt_expected, abs=0.002)
    # isotropic lattice scaling (Vegard) moves the peak where Bragg's law says
    y2 = spd.simulate(x, [spd.PhaseComponent("CeO2", lattice_scale=0.98, size_nm=200)],
                      spd.Profile(caglioti_uvw_deg2=(0, 0, 1e-4)))
    assert x[np.argmax(y2)] == pytest.approx(math.degrees(2 * math.asin(CU / (2 * 0.98 * d111))), abs=0.002)


@pytest.mark.parametrize("size_nm", [8.0, 30.0, 80.0])
def test_scherrer_fwhm_within_5_percent(size_nm):
    x = np.arange(20.0, 37.0, 0.0005)
    prof = spd.Profile(caglioti_uvw_deg2=(0.0, 0.0, 0.0))
    y = spd.simulate(x, [spd.PhaseComponent("CeO2", size_nm=size_nm)], prof)
    sel = (x > 24) & (x < 31)  # only the (111) peak
    fw, peak = _fwhm(x[sel], y[sel])
    theta = math.radians(peak / 2)
    expected = math.degrees(0.9 * CU / (size_nm * 10 * math.cos(theta)))
    assert fw == pytest.approx(expected, rel=0.05)


def test_microstrain_and_instrument_broaden():
    x = np.arange(50.0, 62.0, 0.001)
    base = spd.simulate(x, [spd.PhaseComponent("CeO2", size_nm=100)], spd.Profile(caglioti_uvw_deg2=(0, 0, 1e-4)))
    strained = spd.simulate(x, [spd.PhaseComponent("CeO2", size_nm=100, strain=3e-3)],
                            spd.Profile(caglioti_uvw_deg2=(0, 0, 1e-4)))
    sel = (x > 55) & (x < 57.5)  # (311)
    assert _fwhm(x[sel], strained[sel])[0] > 1.5 * _fwhm(x[sel], base[sel])[0]


def test_relative_intensities_match_dans_diffraction_powder():
    """Our reflection groups reproduce Dans_Diffraction's own powder pattern (its 1/Q² powder
    average) for anatase within 1 % for the ten strongest lines."""
    xtl = spd.build_crystal("TiO2_anatase")
    xtl.Scatter.setup_scatter(scattering_type="xray", wavelength_a=CU, min_twotheta=10, max_twotheta=80, output=False)
    _, _, refl = xtl.Scatter.powder(units="tth", peak_width=0.0, powder_average=True, min_overlap=0.02)
    refl = refl[np.argsort(-refl[:, 4])][:10]
    r = spd.reflections("TiO2_anatase")
    q = 2 * np.pi / r.d_angstrom
    ours = r.fsq_mult / (q + 0.001) ** 2
    tt = np.degrees(2 * np.arcsin(CU / (2 * r.d_angstrom)))
    j0 = int(np.argmin(np.abs(tt - refl[0, 3])))
    for h, k, l, x, inten in refl:
        j = int(np.argmin(np.abs(tt - x)))
        assert abs(tt[j] - x) < 0.01
        assert ours[j] / ours[j0] == pytest.approx(inten / refl[0, 4], rel=0.01, abs=1e-3)


def test_ceo2_intensities_close_to_reference_card():
    """Lorentz-polarisation-corrected CeO2 intensities vs the ICDD 34-394 card (111:200:220:311 =
    100:29:51:44), within 15 % relative."""
    prof = spd.Profile(caglioti_uvw_deg2=(0, 0, 1e-4))
    pos, area, _, _ = spd.peak_list(spd.PhaseComponent("CeO2"), prof, (20, 60))
    area = area / area.max()
    card = {28.55: 1.00, 33.08: 0.29, 47.48: 0.51, 56.34: 0.44}
    for tt, rel in card.items():
        j = int(np.argmin(np.abs(pos - tt)))
        assert abs(pos[j] - tt) < 0.05
        assert area[j] == pytest.approx(rel, rel=0.15)


def test_q_and_two_theta_are_consistent_across_wavelengths():
    tt = np.linspace(5, 120, 50)
    assert np.allclose(spd.q_to_two_theta(spd.two_theta_to_q(tt, CU), CU), tt)
    d111 = spd.PHASES["CeO2"].a / math.sqrt(3)
    for lam in (CU, spd.WAVELENGTH_SYNCHROTRON):
        q = np.linspace(1.9, 2.2, 3001)
        x = spd.q_to_two_theta(q, lam)
        y = spd.simulate(x, [spd.PhaseComponent("CeO2", size_nm=200)],
                         spd.Profile(wavelength_angstrom=lam, caglioti_uvw_deg2=(0, 0, 1e-6)))
        assert q[np.argmax(y)] == pytest.approx(2 * np.pi / d111, abs=0.001)


def test_sample_displacement_shift_follows_cos_theta():
    x = np.arange(26.0, 31.0, 0.0005)
    s_mm, R = 0.2, 240.0
    base = spd.simulate(x, [spd.PhaseComponent("CeO2", size_nm=200)], spd.Profile(caglioti_uvw_deg2=(0, 0, 1e-4)))
    disp = spd.simulate(x, [spd.PhaseComponent("CeO2", size_nm=200)],
                        spd.Profile(caglioti_uvw_deg2=(0, 0, 1e-4), displacement_mm=s_mm, radius_mm=R))
    theta = math.radians(x[np.argmax(base)] / 2)
    expected = -math.degrees(2 * s_mm * math.cos(theta) / R)
    assert x[np.argmax(disp)] - x[np.argmax(base)] == pytest.approx(expected, abs=0.002)


def test_march_dollase_changes_texture_axis_reflections():
    r = spd.reflections("ZnO")
    f = r.march_dollase(0.7)  # platelets: (00l) enhanced
    i002 = int(np.argmin(np.abs(r.d_angstrom - spd.PHASES["ZnO"].cell[2] / 2)))
    i100 = int(np.argmin(np.abs(r.d_angstrom - spd.PHASES["ZnO"].a * math.sqrt(3) / 2)))
    assert f[i002] > 1.5 and f[i100] < 1.0
    assert np.allclose(r.march_dollase(1.0), 1.0)


# ----- the world ------------------------------------------------------------------------------------

P0 = {"zr_fraction": 0.7, "calcination_temperature_C": 760.0, "calcination_time_h": 3.0, "atmosphere": "air"}


def test_world_is_deterministic_and_hides_truth():
    a = ox.OxideWorld(seed=3).synthesize(P0, "s-001")
    b = ox.OxideWorld(seed=3).synthesize(P0, "s-001")
    c = ox.OxideWorld(seed=3).synthesize(P0, "s-002")
    assert a.truth == b.truth
    assert a.truth != c.truth
    assert "truth" not in a.to_dict() and "phases" not in a.to_dict()
    from simulators.pd import PdSample

    assert isinstance(a, PdSample)  # the oxide world offers powder diffraction by satisfying the Protocol
    inst = PdInstrument()
    m1, m2 = inst.measure(a), inst.measure(b)
    assert np.array_equal(m1["arrays"]["intensity"], m2["arrays"]["intensity"])
    assert set(m1["arrays"]) == {"two_theta_deg", "intensity", "sigma"}
    assert m1["metadata"]["wavelength_angstrom"] == 1.5406
    assert m1["arrays"]["two_theta_deg"][0] == 10.0 and m1["arrays"]["two_theta_deg"][-1] == pytest.approx(80.0)
    assert inst.measure_time_s() > 0 and ox.OxideWorld(0).synthesis_time_s(P0) > 3 * 3600


@pytest.mark.parametrize(
    "bad",
    [
        {**P0, "zr_fraction": 1.2},
        {**P0, "calcination_temperature_C": 1500.0},
        {**P0, "calcination_time_h": 0.1},
        {**P0, "atmosphere": "oxygen"},
        {**P0, "zr_fraction": "0.5"},
        {k: v for k, v in P0.items() if k != "atmosphere"},
        {**P0, "pressure_bar": 1.0},
    ],
)
def test_world_rejects_bad_parameters(bad):
    with pytest.raises(ValueError):
        ox.OxideWorld(0).synthesize(bad, "x")


def test_world_phase_regions_and_failures():
    w = ox.OxideWorld(0)
    assert w.expected({**P0, "zr_fraction": 0.2, "calcination_temperature_C": 600.0})["w_CeO2"] > 0.95
    assert w.expected({**P0, "zr_fraction": 1.0, "calcination_temperature_C": 1000.0})["w_ZrO2_monoclinic"] > 0.95
    assert w.expected({**P0, "zr_fraction": 1.0, "calcination_temperature_C": 400.0})["w_ZrO2_tetragonal"] > 0.95
    hot_h2 = w.expected({"zr_fraction": 0.1, "calcination_temperature_C": 1020.0, "calcination_time_h": 5.0,
                         "atmosphere": "hydrogen"})
    assert hot_h2["w_Ce2O3_hexagonal"] > 0.1  # a phase outside the analyser library
    hot_air = w.expected({"zr_fraction": 0.1, "calcination_temperature_C": 1020.0, "calcination_time_h": 5.0,
                          "atmosphere": "air"})
    assert hot_air["w_Ce2O3_hexagonal"] < 1e-3
    # crystallites grow with temperature and time
    s1 = w.expected({**P0, "calcination_temperature_C": 600.0})["size_nm"]
    s2 = w.expected({**P0, "calcination_temperature_C": 900.0})["size_nm"]
    s3 = w.expected({**P0, "calcination_temperature_C": 900.0, "calcination_time_h": 20.0})["size_nm"]
    assert s1 < s2 < s3
    with pytest.raises(ox.SynthesisFailed, match="amorphous"):
        w.synthesize({**P0, "calcination_temperature_C": 300.0, "calcination_time_h": 0.5}, "cold")
    with pytest.raises(ox.SynthesisFailed, match="sintered"):
        w.synthesize({"zr_fraction": 0.2, "calcination_temperature_C": 1080.0, "calcination_time_h": 2.0,
                      "atmosphere": "hydrogen"}, "hot")
    with pytest.raises(KeyError):
        w.sample("never-made")


def test_target_is_reachable_but_rare():
    f = ox.target_fraction(n=100_000)
    assert 0.003 < f < 0.03
    # a recipe inside the target window exists
    w = ox.OxideWorld(0)
    hits = [
        (x, T) for x in np.linspace(0.55, 0.9, 8) for T in np.linspace(650, 900, 11)
        if w.expected({"zr_fraction": float(x), "calcination_temperature_C": float(T), "calcination_time_h": 3.0,
                       "atmosphere": "air"})["meets_target"]
    ]
    assert hits


def test_synchrotron_instrument_covers_same_q_range():
    s = ox.OxideWorld(1).synthesize(P0, "sync-1")
    lab = PdInstrument().measure(s)
    syn = PdInstrument.synchrotron().measure(s)
    q_lab = spd.two_theta_to_q(lab["arrays"]["two_theta_deg"], 1.5406)
    q_syn = spd.two_theta_to_q(syn["arrays"]["two_theta_deg"], spd.WAVELENGTH_SYNCHROTRON)
    assert q_syn.min() < q_lab.min() + 0.1 and q_syn.max() > q_lab.max()
    # strongest line at the same Q
    assert q_lab[np.argmax(lab["arrays"]["intensity"])] == pytest.approx(q_syn[np.argmax(syn["arrays"]["intensity"])], abs=0.02)
    with pytest.raises(ValueError):
        PdInstrument(two_theta_min=80, two_theta_max=10)
