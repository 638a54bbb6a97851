"""The PDF forward model against textbook results and against debyecalculator's direct Debye sum."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulators.pdf import physics as P

PT = P.ELEMENTS["Pt"]
A_PT = PT.a  # 3.9242 Å
RHO_PT = 4.0 / A_PT ** 3  # atoms / Å³


def _peaks(r, g, lo, hi):
    """Positions of local maxima of g in (lo, hi), refined by a parabola through three points."""
    out = []
    for i in range(1, r.size - 1):
        if lo < r[i] < hi and g[i] > g[i - 1] and g[i] >= g[i + 1]:
            a, b, c = g[i - 1], g[i], g[i + 1]
            out.append(r[i] + 0.5 * (a - c) / (a - 2 * b + c) * (r[1] - r[0]))
    return np.array(out)


def test_fast_path_matches_debyecalculator():
    """The table path (pair histogram → FFT → Q-space artefacts → sine transform) gives
    debyecalculator's G(r) of the same cluster, at twice its amplitude (it sums i < j only)."""
    for motif, shape in (("icosahedral", {"shells": 4}), ("decahedral", {"p": 3, "q": 2, "r": 1})):
        atoms = P.build_cluster(motif, "Pt", **shape)
        kw = dict(qmin=0.8, qmax=24.0, qdamp=0.035, adp=0.006)
        fast = P.gr(atoms, **kw)
        direct = P.debye_gr(atoms, **kw)
        assert np.corrcoef(fast, direct)[0, 1] > 0.999
        assert np.dot(fast, direct) / np.dot(direct, direct) == pytest.approx(2.0, rel=2e-3)
    # the base-table path (bond length 1, scaled by the element) equals the Atoms path
    table = P.base_table("icosahedral", shells=4)
    g_table = P.gr(table, element="Pt", expansion=1.01, **kw)
    g_atoms = P.gr(P.build_cluster("icosahedral", "Pt", shells=4, expansion=1.01), **kw)
    assert np.max(np.abs(g_table - g_atoms)) < 2e-3 * np.max(np.abs(g_atoms))


def test_bulk_fcc_baseline_slope_peak_sequence_and_coordination():
    """Periodic fcc Pt: G(r) = −4πρ0 r below the first peak; peaks at a/√2, a, a√(3/2), a√2;
    the first peak of R(r) = r G(r) + 4πρ0 r² holds 12 neighbours."""
    r = np.arange(0.02, 8.0, 0.01)
    g = P.gr(P.bulk_table("fcc"), r, element="Pt", qmin=0.0, qmax=40.0, qdamp=0.0, adp=0.004)
    low = (r > 0.3) & (r < 2.0)
    slope = np.sum(g[low] * r[low]) / np.sum(r[low] ** 2)
    assert slope == pytest.approx(-4 * math.pi * RHO_PT, rel=0.02)
    peaks = _peaks(r, g, 2.0, 6.0)
    expected = A_PT * np.array([1 / math.sqrt(2), 1.0, math.sqrt(1.5), math.sqrt(2)])
    assert peaks.size == 4
    np.testing.assert_allclose(peaks, expected, atol=0.01)
    R = r * g + 4 * math.pi * RHO_PT * r ** 2
    first = (r > 2.3) & (r < 3.3)
    assert np.sum(R[first]) * 0.01 == pytest.approx(12.0, rel=0.02)


def test_adp_sets_peak_width_and_expansion_moves_peaks():
    """A pair's Debye–Waller factor exp(−Q²U) gives a Gaussian peak of variance 2U in r; lattice
    expansion scales every distance."""
    r = np.arange(1.5, 4.0, 0.005)
    for u in (0.004, 0.012):
        g = P.gr(P.bulk_table("fcc"), r, element="Pt", qmin=0.0, qmax=40.0, qdamp=0.0, adp=u)
        R = r * g + 4 * math.pi * RHO_PT * r ** 2
        m = (r > 2.3) & (r < 3.3)
        w = R[m] / R[m].sum()
        mean = np.sum(w * r[m])
        var = np.sum(w * (r[m] - mean) ** 2)
        assert var == pytest.approx(2 * u, rel=0.05)
    g0 = P.gr(P.bulk_table("fcc"), r, element="Pt", qmin=0.0, qmax=30.0, qdamp=0.0, adp=0.005)
    g1 = P.gr(P.bulk_table("fcc"), r, element="Pt", qmin=0.0, qmax=30.0, qdamp=0.0, adp=0.005, expansion=1.02)
    p0, p1 = _peaks(r, g0, 2.5, 3.1)[0], _peaks(r, g1, 2.5, 3.2)[0]
    assert p1 / p0 == pytest.approx(1.02, abs=1e-3)


def test_cluster_first_peak_coordination_against_ase_neighbour_count():
    """With the whole Q range (small-angle part included) G(r) = R(r)/r, so the first-peak area of
    r·G(r) is the mean coordination number counted by ase's neighbour list; clusters have fewer
    neighbours than the bulk's 12, and the first peak's centroid is the mean bond length."""
    r = np.arange(0.5, 12.0, 0.01)
    for motif, shape in (("icosahedral", {"shells": 2}), ("octahedral", {"length": 7, "cutoff": 2}),
                         ("fcc", {"radius": 3.2, "centre": (0.25, 0.1, 0.0)})):
        atoms = P.build_cluster(motif, "Pt", **shape)
        cn = P.coordination_numbers(atoms).mean()
        g = P.gr(atoms, r, qmin=0.0, qmax=40.0, qdamp=0.0, adp=0.003)
        first = (r > 2.3) & (r < 3.15)
        assert np.sum(r[first] * g[first]) * 0.01 == pytest.approx(cn, rel=0.03)
        assert cn < 12.0
        centroid = np.sum(r[first] ** 2 * g[first]) / np.sum(r[first] * g[first])
        assert centroid == pytest.approx(P.pair_table(atoms.positions).nn_mean, abs=0.01)
    assert len(P.build_cluster("fcc", "Pt", 400)) == pytest.approx(400, rel=0.1)


def test_termination_ripples_have_period_two_pi_over_qmax():
    """A single pair distance d transformed up to Qmax rings as sin(Qmax(r−d))/(r−d): zero crossings
    π/Qmax apart."""
    from ase import Atoms

    dimer = Atoms("Pt2", positions=[[0, 0, 0], [0, 0, 2.5]])
    r = np.arange(3.2, 7.0, 0.002)
    for qmax in (12.0, 18.0):
        g = P.gr(dimer, r, qmin=0.0, qmax=qmax, qdamp=0.0, adp=0.0)
        s = np.sign(g)
        idx = np.flatnonzero(s[1:] != s[:-1])
        zeros = r[idx] - g[idx] * (r[idx + 1] - r[idx]) / (g[idx + 1] - g[idx])
        assert np.mean(np.diff(zeros)) == pytest.approx(math.pi / qmax, rel=0.02)


def test_ligand_shell_adds_metal_ligand_peak_and_artefacts_stay_finite():
    """A thiolate shell puts an Au–S peak at its bond length; a fully artefacted measurement
    (noise, background, ad-hoc correction, Lorch) gives a finite G(r) that still correlates with
    the clean one."""
    comp = P.ClusterComponent("icosahedral", "Au", n_atoms=55, adp_angstrom2=0.006)
    r = P.R_GRID
    bare = P.gr(comp, r, qmin=0.5, qmax=30.0, qdamp=0.02)
    shelled = P.gr(comp, r, qmin=0.5, qmax=30.0, qdamp=0.02,
                   shell=P.Shell("S", coverage=0.8, bonds=2.0, bond_angstrom=2.35))
    diff = shelled - bare * (np.max(shelled) / np.max(bare))
    assert abs(r[np.argmax(diff[r < 2.7])] - 2.35) < 0.1
    acq = P.Acquisition(qmin=0.9, qmax=22.0, qdamp=0.04, counts=2e5, background="water", background_level=2.0,
                        background_error=0.02, rpoly=0.9, normalisation_error=0.01, lorch=True)
    noisy = P.gr(comp, r, acquisition=acq, rng=np.random.default_rng(1))
    clean = P.gr(comp, r, qmin=0.9, qmax=22.0, qdamp=0.04)
    assert np.all(np.isfinite(noisy))
    assert np.corrcoef(noisy, clean)[0, 1] > 0.8


def test_structure_function_tends_to_one_and_intensity_to_self_scattering():
    """S(Q) → 1 and I(Q) per atom → f(Q)² once the Debye–Waller factor has damped the pair terms."""
    atoms = P.build_cluster("icosahedral", "Au", shells=3)
    q = P.Q_GRID
    s = P.sq(atoms, q, adp=0.02)
    i = P.iq(atoms, q, adp=0.02)
    hi = q > 25
    np.testing.assert_allclose(s[hi], 1.0, atol=1e-3)
    np.testing.assert_allclose(i[hi], P.form_factor("Au", q[hi]) ** 2, rtol=1e-3)
    assert s[0] == pytest.approx(len(atoms), rel=1e-3)  # forward scattering: all N atoms in phase


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown motif"):
        P.base_positions("cubeoctahedral", radius=3)
    with pytest.raises(ValueError, match="unknown element"):
        P.build_cluster("fcc", "Xx", 50)
    with pytest.raises(ValueError, match="qmin"):
        P.gr(P.build_cluster("icosahedral", "Pt", 13), qmin=5.0, qmax=3.0)


# ----- dataset ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_pool():
    """A few small structures per class instead of the ~370-structure pools (built in ~40 s)."""
    from simulators.pdf import dataset as D

    shapes = [("sc", "sc", {"radius": 2.2}), ("sc", "sc", {"radius": 2.8, "centre": [0.5, 0.5, 0.5]}),
              ("bcc", "bcc", {"radius": 2.2}), ("bcc", "bcc", {"radius": 2.6, "centre": [0.5, 0.0, 0.0]}),
              ("fcc", "fcc", {"radius": 2.4}), ("fcc", "fcc_twin", {"radius": 2.6, "stacking": "twin"}),
              ("hcp", "hcp", {"radius": 2.4}), ("hcp", "hcp_hcp_fault", {"radius": 2.6, "stacking": "hcp_fault"}),
              ("icosahedral", "icosahedral", {"shells": 2}), ("icosahedral", "icosahedral", {"shells": 3}),
              ("decahedral", "decahedral", {"p": 2, "q": 2, "r": 1}), ("decahedral", "decahedral", {"p": 3, "q": 2, "r": 1}),
              ("octahedral", "octahedral", {"length": 4, "cutoff": 1}), ("octahedral", "octahedral", {"length": 5, "cutoff": 1}),
              ("other", "amorphous", {"n_atoms": 30, "seed": 1})]
    entries = [D.Entry(label, kind, P.base_table(kind.split("_")[0] if label == "other" else label, **shape))
               for label, kind, shape in shapes]
    entries.append(D.Entry("other", "bulk_fcc", P.bulk_table("fcc")))
    return tuple(entries)


def test_dataset_classes_labels_and_reproducibility(small_pool, monkeypatch):
    from simulators.pdf import dataset as D

    monkeypatch.setattr(D, "_pool", lambda recipe, progress=False: small_pool)
    d = D.simulate(6, seed=3)
    n = 6 * len(D.CLASSES)
    assert d["G"].shape == (n, P.R_GRID.size) and d["G"].dtype == np.float32
    assert np.all(np.isfinite(d["G"]))
    assert sorted(set(d["motif"])) == sorted(D.CLASSES) and d["motif"].count("fcc") == 6
    assert set(d["element"]) <= set(D.TRAIN["elements"])
    assert np.all((d["expansion"] >= 0.97) & (d["expansion"] <= 1.03))
    assert np.all((d["qmax"] >= 1.0) & (d["qmax"] <= 28.0)) and np.all(d["in_range"])
    sized = d["n_atoms"] > 0
    assert np.all(np.isfinite(d["diameter_nm"][sized])) and np.all(d["diameter_nm"][sized] > 0.4)
    assert np.all(np.isnan(d["diameter_nm"][~sized]))
    # the first G(r) peak sits at the labelled nearest-neighbour distance (motif clusters)
    r = d["r"]
    for i, m in enumerate(d["motif"]):
        if m in ("fcc", "icosahedral", "octahedral"):
            win = (r > 0.8 * d["nn_distance_angstrom"][i]) & (r < 1.2 * d["nn_distance_angstrom"][i])
            assert abs(r[win][np.argmax(d["G"][i][win])] - d["nn_distance_angstrom"][i]) < 0.12
    again = D.simulate(6, seed=3)
    np.testing.assert_array_equal(again["G"], d["G"])
    assert again["motif"] == d["motif"]
    other = D.simulate(6, seed=4)
    assert not np.array_equal(other["G"], d["G"])


def test_heldout_recipe_is_its_own_and_flags_out_of_range(small_pool, monkeypatch):
    from simulators.pdf import dataset as D

    monkeypatch.setattr(D, "_pool", lambda recipe, progress=False: small_pool)
    d = D.simulate(10, seed=0, recipe="heldout")
    assert np.all(np.isfinite(d["G"]))
    assert set(d["element"]) <= set(D.HELDOUT_ELEMENTS)
    assert not set(d["element"]) & set(D.TRAIN["elements"])
    assert d["in_range"].dtype == bool and not np.all(d["in_range"])
    out = ~d["in_range"]
    wide = ((d["qmax"] > 28) | (d["qmax"] < 18) | (d["qdamp"] < 0.02) | (d["qdamp"] > 0.05) | (d["qmin"] < 0.5)
            | (d["qmin"] > 1.0) | (d["expansion"] < 0.97) | (d["expansion"] > 1.03) | (d["adp_angstrom2"] < 0.002)
            | (d["adp_angstrom2"] > 0.015))
    assert np.all(wide[~out] == False)  # noqa: E712  (in range means inside every training range)
    with pytest.raises(ValueError, match="recipe"):
        D.simulate(1, 0, recipe="test")


def test_in_range_means_inside_the_training_structures():
    """Held-out structures count as in range only inside the training pool's structural ranges:
    hcp c/a, elongation, surface trim per motif, stacking kinds (dataset.TRAIN_SHAPES)."""
    from simulators.pdf import dataset as D

    def entry(label, motif, **shape):
        t = P.PairTable(table=np.zeros((1, 2), np.float32), pairs=[("X", "X")], counts={"X": 10}, n_atoms=100,
                        d_max=5.0, nn_mean=1.0, cn_mean=8.0, n_surface=50, motif=motif, shape=shape)
        return D.Entry(label, motif, t)

    assert D._shape_in_range(entry("hcp", "hcp", radius=3.0, c_over_a=1.856))  # Zn-like: trained since c/a 1.57-1.90
    assert not D._shape_in_range(entry("hcp", "hcp", radius=3.0, c_over_a=1.95))
    assert not D._shape_in_range(entry("hcp", "hcp", radius=3.0, c_over_a=1.50))
    assert not D._shape_in_range(entry("fcc", "fcc", radius=3.0, elongation=1.5))
    assert D._shape_in_range(entry("fcc", "fcc", radius=3.0, elongation=1.2, stacking="twin"))
    assert not D._shape_in_range(entry("icosahedral", "icosahedral", shells=4, trim=0.75, seed=1))
    assert D._shape_in_range(entry("decahedral", "decahedral", p=3, q=3, r=1, trim=0.25, seed=1))
    assert not D._shape_in_range(entry("hcp", "hcp", radius=3.0, stacking="twin"))


def test_training_pool_spans_real_hcp_and_faulted_stacks():
    """The training pool's hcp spans c/a 1.57-1.90 (Ru ... Cd) with up to 40 % faulted layers, its fcc
    includes twins and random faults, and random stacking reproduces fcc and hcp at the limits."""
    from simulators.pdf import dataset as D

    specs = D._train_structures()
    hcp = [s for lab, kind, m, s in specs if lab == "hcp"]
    ca = [s.get("c_over_a", math.sqrt(8 / 3)) for s in hcp]
    assert min(ca) < 1.6 and max(ca) > 1.85 and all(1.57 <= c <= 1.90 for c in ca)
    hexa = [s["hexagonality"] for s in hcp if s.get("stacking") == "random"]
    assert hexa and min(hexa) < 0.65 and max(hexa) <= 0.95
    fcc_kinds = {kind for lab, kind, m, s in specs if lab == "fcc"}
    assert {"fcc", "fcc_twin", "fcc_fault", "fcc_faults"} <= fcc_kinds
    rng = np.random.default_rng(0)
    assert P._stacking("random", 9, rng, hexagonality=1.0) == P._stacking("hcp", 9, None)
    assert P._stacking("random", 9, rng, hexagonality=0.0) == P._stacking("fcc", 9, None)
    pos = P.base_positions("hcp", radius=3.0, c_over_a=1.86, stacking="random", hexagonality=0.7, stack_seed=2)
    cn = P.coordination_numbers(pos, cutoff_factor=1.15)
    assert cn.max() == 12  # interior atoms: 6 in-plane at 1.0, 6 out-of-plane at 1.105 bond lengths


def test_training_pool_cut_spheres_cover_every_size_band():
    """fcc and hcp sphere cuts fill every size band of 13-1500 atoms (with 50 random sizes the fcc class
    had none of 155-290 atoms, where the octahedral ladder has 15 shapes: the CNN read such spheres as
    octahedra), and octahedra are trimmed by fractions across the trained range, not by one value."""
    from simulators.pdf import dataset as D

    specs = D._train_structures()
    edges = np.exp(np.linspace(math.log(13), math.log(1500), D.N_SIZE_BANDS + 1))
    for lattice in ("fcc", "hcp"):
        n_nominal = np.array([4 / 3 * math.pi * s["radius"] ** 3 * math.sqrt(2.0) * s.get("elongation", 1.0)
                              * (math.sqrt(8 / 3) / s.get("c_over_a", math.sqrt(8 / 3)))
                              for lab, kind, m, s in specs if lab == lattice])
        per_band = np.histogram(n_nominal, bins=edges)[0]
        assert per_band.min() >= (10 if lattice == "fcc" else 5), (lattice, per_band)
    trims = {s["trim"] for lab, kind, m, s in specs if kind == "octahedral_trim"}
    assert min(trims) < 0.2 and max(trims) <= D.TRAIN_SHAPES["trim"]["octahedral"] and len(trims) > 10
