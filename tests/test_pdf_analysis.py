"""The pdf technique: readers (PDFgetX3 .gr, plain r/G columns, I(Q) in 2θ -> G(r)), the garbage-file
error, the Debye-equation forward model against debyecalculator, pdf_ml on a simulated G(r) (motif and
refined expansion), NMF demixing of a growth series, and `sdl analyse pdf --json`.

tests/data/pdf_pt309_icosahedral.gr and pdf_pt309_iq_2theta.xye: ase `Icosahedron("Pt", 5)` (309 atoms),
positions × 1.01 (1 % expansion over bulk Pt, nn 2.803 Å), U_iso 0.006 Å² (biso = 8π²U), debyecalculator
(qmin 0.8, qmax 24, qdamp 0.03, r 0.5–30 Å step 0.02) G(r) plus Gaussian noise of 1 % of max |G|
(numpy default_rng(12)), written by `sdl.techniques.pdf.reader.write_gr` with a PDFgetX3 header; the
.xye is its I(Q) as Poisson counts (peak 2e5) against 2θ for λ = 0.1665 Å (every 4th point, one NaN row).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sdl.errors import AnalysisError
from sdl.techniques.pdf.reader import read_pdf

DATA = __import__("pathlib").Path(__file__).parent / "data"
GR = DATA / "pdf_pt309_icosahedral.gr"
XYE = DATA / "pdf_pt309_iq_2theta.xye"
TRUE_NN = 2.775 * 1.01


def test_pdfgetx3_gr_header_and_data():
    m = read_pdf(GR)
    assert m.technique == "pdf"
    r, g = m.require("r_angstrom", "G_per_angstrom2")
    assert r[0] == pytest.approx(0.5) and r[-1] == pytest.approx(29.98) and r.size == 1475
    md = m.metadata
    assert (md["qmin_inv_angstrom"], md["qmax_inv_angstrom"], md["qdamp_inv_angstrom"]) == (0.8, 24.0, 0.03)
    assert md["composition"] == "Pt" and md["wavelength_angstrom"] == 0.1665 and md["g_source"] == "file"
    assert abs(r[np.argmax(g)] / TRUE_NN - 1) < 0.05  # the highest peak: nearest neighbours (icosahedral spread ±5 %)


def test_plain_columns_and_nonfinite_rows(tmp_path):
    r = np.arange(0.5, 20, 0.01)
    g = np.sin(2 * r) * np.exp(-r / 8)
    g[10] = np.nan
    f = tmp_path / "plain.dat"
    np.savetxt(f, np.c_[r, g], header="r G")
    m = read_pdf(f)
    assert m.arrays["r_angstrom"].size == r.size - 1
    assert m.metadata["warnings"] == [f"1 of {r.size} rows of plain.dat skipped: non-finite values (NaN/inf)"]


def test_iq_in_two_theta_is_transformed_like_the_pdf():
    ref = read_pdf(GR)
    with pytest.raises(AnalysisError, match="x is 2θ but no wavelength"):
        read_pdf(_without_wavelength(XYE))
    m = read_pdf(XYE, composition="Pt")
    assert m.metadata["g_source"] == "sdl_fourier_transform" and "⟨f²⟩ of Pt" in m.metadata["g_method"]
    assert m.metadata["warnings"] and "1 of 581 rows" in m.metadata["warnings"][0]
    assert m.metadata["qmax_inv_angstrom"] == pytest.approx(24.0, abs=0.1)
    g = np.interp(ref.arrays["r_angstrom"], m.arrays["r_angstrom"], m.arrays["G_per_angstrom2"])
    assert np.corrcoef(g, ref.arrays["G_per_angstrom2"])[0, 1] > 0.95
    guessed = read_pdf(XYE)  # no composition: the best-fitting common metal's form factor
    g2 = np.interp(ref.arrays["r_angstrom"], guessed.arrays["r_angstrom"], guessed.arrays["G_per_angstrom2"])
    assert np.corrcoef(g2, ref.arrays["G_per_angstrom2"])[0, 1] > 0.9


def _without_wavelength(path):
    import tempfile
    from pathlib import Path

    text = "\n".join(l for l in Path(path).read_text().splitlines() if "wavelength" not in l)
    out = Path(tempfile.mkdtemp()) / "no_wavelength.xye"
    out.write_text(text)
    return out


def test_garbage_file_is_one_line_error(tmp_path):
    f = tmp_path / "junk.gr"
    f.write_text("this is not\na pdf file at all\n")
    with pytest.raises(AnalysisError) as e:
        read_pdf(f)
    msg = str(e.value)
    assert "junk.gr" in msg and "expected columns r G(r)" in msg and "\n" not in msg
    short = tmp_path / "q_only_to_3.xye"
    np.savetxt(short, np.c_[np.linspace(0.1, 3, 100), np.ones(100)], header="q I")
    with pytest.raises(AnalysisError, match="Q reaches only 3.00"):
        read_pdf(short)


def test_debye_forward_model_matches_debyecalculator():
    import torch
    from ase.cluster import Octahedron
    from debyecalculator import DebyeCalculator

    from sdl.techniques.pdf.ml import DebyeGr

    torch.set_num_threads(1)
    at = Octahedron("Pt", 6)
    u = 0.007
    dc = DebyeCalculator(qmin=0.8, qmax=22.0, qstep=0.02, qdamp=0.04, rmin=1.0, rmax=25.0, rstep=0.05,
                         biso=8 * np.pi ** 2 * u, device="cpu")
    r, g_ref = (np.asarray(a, float) for a in dc.gr(at))
    g = DebyeGr(at.positions, r, 0.8, 22.0, 0.04)(1.0, u)
    assert np.corrcoef(g, g_ref)[0, 1] > 0.999


def test_nmf_demixes_a_growth_series():
    from sdl.techniques.pdf import demix as pdf_demix

    s = pdf_demix.make_series(15, seed=1, n_atoms=250)
    comps, w, info = pdf_demix.demix(s["G"], 3, r=s["r"])
    keep = info["r_angstrom"]
    truth = s["components"][:, s["r"] >= 1.5]
    idx, corr = pdf_demix.match_components(comps, truth)
    assert keep[0] >= 1.5 and corr.min() > 0.97
    assert np.abs(w[:, idx] - s["fractions"]).max() < 0.12
    auto = pdf_demix.demix(s["G"], None, r=s["r"])[2]
    assert auto["n_components"] == 3
    with pytest.raises(AnalysisError, match="non-finite"):
        pdf_demix.demix(np.full((3, 100), np.nan))
