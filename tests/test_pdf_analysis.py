"""The pdf technique: readers (PDFgetX3 .gr, plain r/G columns, I(Q) in 2θ -> G(r)), the garbage-file
error, the Debye-equation forward model against debyecalculator, pdf_ml on a simulated G(r) (motif and
refined expansion), NMF demixing of a growth series, and `sdl analyse pdf --json`.

tests/data/pdf/pt309_icosahedral.gr and pt309_iq_2theta.xye: ase `Icosahedron("Pt", 5)` (309 atoms),
positions × 1.01 (1 % expansion over bulk Pt, nn 2.803 Å), U_iso 0.006 Å² (biso = 8π²U), debyecalculator
(qmin 0.8, qmax 24, qdamp 0.03, r 0.5–30 Å step 0.02) G(r) plus Gaussian noise of 1 % of max |G|
(numpy default_rng(12)), written by `sdl.techniques.pdf.reader.write_gr` with a PDFgetX3 header; the
.xye is its I(Q) as Poisson counts (peak 2e5) against 2θ for λ = 0.1665 Å (every 4th point, one NaN row).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sdl.errors import AnalysisError
from sdl.techniques.pdf.reader import read_pdf

DATA = Path(__file__).parent / "data" / "pdf"  # not tests/data itself: `sdl analyse saxs tests/data` reads every .gr/.xye there
GR = DATA / "pt309_icosahedral.gr"
XYE = DATA / "pt309_iq_2theta.xye"
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
    err = np.abs(w[:, idx] - s["fractions"])
    assert err.mean() < 0.1 and err.max() < 0.25  # NMF's rotational ambiguity: mid-series samples are the worst
    auto = pdf_demix.demix(s["G"], None, r=s["r"])[2]
    assert auto["n_components"] == 3
    with pytest.raises(AnalysisError, match="non-finite"):
        pdf_demix.demix(np.full((3, 100), np.nan))


@pytest.fixture(scope="module")
def analyser():
    from sdl import analysis

    return analysis.get("pdf", "pdf_ml")


def test_analyser_gets_the_motif_and_refines_the_expansion(analyser):
    res = analyser.analyse(read_pdf(GR))
    d = {x.name: x for x in res.descriptors}
    assert d["pdf.motif"].value == "icosahedral" and d["pdf.motif"].probabilities["icosahedral"] > 0.8
    assert res.info["method"] == "cnn+debye_refinement" and res.info["element"] == "Pt"
    # truth: bond length 1.01 × ase's Pt (a = 3.92 Å) = 1.0089 × sdl's bulk Pt nn (a = 3.9242 Å)
    assert d["pdf.expansion"].value == pytest.approx(1.0089, abs=0.002)
    assert abs(d["pdf.n_atoms"].value / 309 - 1) < 0.2 and d["pdf.rw"].value < 0.15
    assert min(res.info["refined"], key=lambda c: c["rw"])["n_atoms"] == 309  # the library cluster refined best
    assert d["pdf.adp_angstrom2"].value == pytest.approx(0.006, abs=0.001)
    assert not d["pdf.motif"].flags and not d["pdf.ood_score"].flags
    arb = res.info["arbitration"]["motifs"]
    assert "icosahedral" in arb and "motif_changed_by_refinement" not in res.info
    assert res.curves["fit"].shape == res.curves["r_angstrom"].shape
    from sdl import analysis

    t = analysis.technique("pdf")
    assert all(t.descriptor(x.name) is not None and (t.descriptor(x.name).kind == "class") == isinstance(x.value, str)
               for x in res.descriptors)


def test_representation_carries_qdamp_when_known():
    from sdl.techniques.pdf.ml import QDAMP_SCALE, R_GRID, represent, represent_grid

    r = np.arange(0.5, 20.0, 0.01)
    g = np.sin(3 * r) * np.exp(-r / 6)
    x = represent(r, g, 0.03)
    covered = x[1] > 0
    assert x.shape == (3, R_GRID.size) and np.allclose(x[2][covered], 0.03 / QDAMP_SCALE) and not x[2][~covered].any()
    assert not represent(r, g)[2].any()  # not known: 0, as for a quarter of the training curves
    xb = represent_grid(np.stack([np.interp(R_GRID, r, g)] * 2), np.array([0.02, 0.04]))
    assert np.allclose(xb[:, 2, 0], [0.4, 0.8]) and not represent_grid(xb[:, 0])[:, 2].any()


def test_arbitration_reweighs_by_fit_quality_within_the_candidates():
    """ml.arbitrate: equal fits keep the CNN's probabilities, a clearly worse fit loses its share, the
    temper (0 = trust the CNN alone) scales that per motif pair, other classes keep theirs."""
    from sdl.techniques.pdf.ml import arbitrate, effective_points

    p = {"fcc": 0.55, "octahedral": 0.40, "hcp": 0.0, "other": 0.05}
    same, _ = arbitrate(p, {"fcc": 1.0, "octahedral": 1.0}, n_eff=100)
    assert same["fcc"] == pytest.approx(0.55) and same["octahedral"] == pytest.approx(0.40)
    worse, stats = arbitrate(p, {"fcc": 1.2, "octahedral": 1.0}, n_eff=100)  # χ² differs by ~19
    assert worse["octahedral"] > 0.99 * 0.95 and worse["other"] == 0.05
    assert stats["fcc"]["chi2"] == pytest.approx(97 * 1.2) and stats["octahedral"]["chi2"] == pytest.approx(97)
    assert sum(worse.values()) == pytest.approx(1.0)
    trusted_less, _ = arbitrate(p, {"fcc": 1.2, "octahedral": 1.0}, n_eff=100, temper={"fcc|octahedral": 0.05})
    assert 0.4 < trusted_less["octahedral"] < worse["octahedral"]
    cnn_only, _ = arbitrate(p, {"fcc": 1.2, "octahedral": 1.0}, n_eff=100, temper={"*": 0.0})
    assert cnn_only["fcc"] == pytest.approx(0.55)
    # independent points: white noise keeps its points (up to the Nyquist cap), a smooth misfit has few
    rng = np.random.default_rng(0)
    assert effective_points(rng.normal(size=500), 300.0) == 300.0
    smooth = np.convolve(rng.normal(size=600), np.ones(40) / 40, mode="valid")[:500]
    assert effective_points(smooth, 300.0) < 40


def test_refinement_arbitrates_between_the_candidate_motifs():
    """The Pt309 icosahedron refined as icosahedral and decahedral: the icosahedron fits far better,
    so it wins even when the CNN's prior favours the decahedron; equal priors and temper 0 keep the
    prior."""
    from sdl.techniques.pdf.ml import refine

    m = read_pdf(GR)
    r, g = m.require("r_angstrom", "G_per_angstrom2")
    kw = dict(metadata=m.metadata, motifs=["decahedral", "icosahedral"], element="Pt", n_atoms=309,
              nn_distance=TRUE_NN * 1.02, adp=0.006)
    ref = refine(r, g, p={"decahedral": 0.7, "icosahedral": 0.3}, temper=1.0, **kw)
    arb = ref["arbitration"]["motifs"]
    assert ref["best"]["motif"] == "icosahedral" and ref["probabilities"]["icosahedral"] > 0.99
    assert arb["icosahedral"]["rw"] < 0.5 * arb["decahedral"]["rw"]
    assert {c["motif"] for c in ref["tried"]} == {"decahedral", "icosahedral"}
    kept = refine(r, g, p={"decahedral": 0.7, "icosahedral": 0.3}, temper=0.0, **kw)
    assert kept["best"]["motif"] == "decahedral" and kept["probabilities"]["decahedral"] == pytest.approx(0.7)


def test_motifs_the_g_of_r_cannot_tell_apart_are_flagged(analyser):
    """A 38-atom truncated octahedron is also the fcc sphere cut around an octahedral hole: the
    network calls it fcc at p > 0.9, but the runner-up's (octahedral) refined fit is as good, so the
    answer is flagged low_confidence with both motifs named; a 147-atom cuboctahedron, whose fcc
    rivals fit clearly worse, is not. The runner-up motif is refined however improbable."""
    from simulators.pdf import physics
    from sdl.measurement import Measurement
    from sdl.techniques.pdf.ml import DebyeGr, refine_candidates

    assert refine_candidates(["fcc", "octahedral", "hcp", "other"], np.array([0.985, 0.01, 0.001, 0.004])) == \
        ["fcc", "octahedral"]
    r = np.arange(0.5, 30.0, 0.02)
    md = {"qmin_inv_angstrom": 0.8, "qmax_inv_angstrom": 25.0, "qdamp_inv_angstrom": 0.03, "element": "Pt"}
    out = {}
    for n in (38, 147):
        g = DebyeGr(np.asarray(physics.build_cluster("octahedral", "Pt", n).positions) * 1.005, r, 0.8, 25.0, 0.03)(1.0, 0.005)
        g = g + np.random.default_rng(1).normal(0, 0.01 * np.abs(g).max(), r.size)
        out[n] = analyser.analyse(Measurement(technique="pdf", arrays={"r_angstrom": r, "G_per_angstrom2": g}, metadata=md))
    res = out[38]
    motif = {x.name: x for x in res.descriptors}["pdf.motif"]
    assert set(res.info["ambiguous_motifs"]) == {"fcc", "octahedral"} and motif.value in {"fcc", "octahedral"}
    assert "low_confidence" in motif.flags and res.info["arbitration"]["closest"]["ambiguous"]
    clear = out[147]
    motif = {x.name: x for x in clear.descriptors}["pdf.motif"]
    assert motif.value == "octahedral" and not motif.flags and "ambiguous_motifs" not in clear.info
    assert clear.info["arbitration"]["closest"]["delta_chi2"] > 10


def test_faulted_hcp_is_refined_as_the_faulted_hcp_it_is(monkeypatch):
    """The training pool's hcp class holds faulted stacks (one fault, or 5-40 % of the layers
    faulted), so the refinement's hcp candidates must too: a 104-atom Pt hcp cluster with one
    stacking fault, cut around an off-lattice centre, is fitted better by an fcc cut than by any
    ideal hcp stack (the library without its stacking variants, ml.STACKINGS empty, points to fcc),
    and with them by a faulted hcp stack, clearly better than by fcc (twinned and faulted fcc
    included)."""
    from simulators.pdf import physics
    from sdl.techniques.pdf import ml

    r = np.arange(0.5, 30.0, 0.02)
    md = {"qmin_inv_angstrom": 0.8, "qmax_inv_angstrom": 25.0, "qdamp_inv_angstrom": 0.03}
    atoms = physics.build_cluster("hcp", "Pt", 104, stacking="hcp_fault", where=0.62, centre=[0.52, 0.29, 0.05])
    g = ml.DebyeGr(np.asarray(atoms.positions) * 1.005, r, 0.8, 25.0, 0.03)(1.0, 0.005)
    g = g + np.random.default_rng(1).normal(0, 0.01 * np.abs(g).max(), r.size)
    kw = dict(metadata=md, motifs=["hcp", "fcc"], element="Pt", n_atoms=len(atoms), nn_distance=2.775 * 1.005,
              adp=0.005, p=None, temper=0.0)

    def dchi2(ref):  # > 0: hcp fits better
        m = ref["arbitration"]["motifs"]
        return m["fcc"]["chi2"] - m["hcp"]["chi2"]

    ref = ml.refine(r, g, **kw)
    best_hcp = min((c for c in ref["tried"] if c["motif"] == "hcp"), key=lambda c: c["rw"])
    assert dchi2(ref) > 10 and best_hcp["stacking"] in ("hcp_fault", "random")
    assert {c.get("stacking") for c in ref["tried"] if c["motif"] == "fcc"} >= {None, "twin", "fault", "random"}
    monkeypatch.setattr(ml, "STACKINGS", {})
    ideal = ml.refine(r, g, **kw)
    assert dchi2(ideal) < 0 and not any("stacking" in c for c in ideal["tried"])
    assert best_hcp["rw"] < 0.7 * ideal["arbitration"]["motifs"]["hcp"]["rw"]


def test_analyser_flags_what_it_does_not_know(analyser):
    from sdl.measurement import Measurement

    r = np.arange(0.5, 30, 0.01)
    rng = np.random.default_rng(3)
    noise = Measurement(technique="pdf", arrays={"r_angstrom": r, "G_per_angstrom2": rng.normal(0, 1, r.size)})
    res = analyser.analyse(noise)
    flags = {f for x in res.descriptors for f in x.flags}
    assert flags & {"ood", "low_confidence"}
    with pytest.raises(AnalysisError, match="pdf_ml analyses technique 'pdf'"):
        analyser.analyse(Measurement(technique="saxs", arrays={"r_angstrom": r, "G_per_angstrom2": r}))


def test_cli_analyse_json_one_record_per_file(tmp_path, capsys):
    import shutil

    from sdl.cli import main

    shutil.copy(GR, tmp_path / GR.name)
    (tmp_path / "junk.gr").write_text("not a pdf\n")
    assert main(["analyse", "pdf", str(tmp_path), "--json"]) == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    assert [Path(x["file"]).name for x in lines] == ["junk.gr", GR.name]
    assert "expected columns r G(r)" in lines[0]["error"]
    assert lines[1]["descriptors"]["pdf.motif"]["value"] == "icosahedral"
    assert {"pdf.n_atoms", "pdf.expansion", "pdf.rw", "pdf.ood_score"} <= set(lines[1]["descriptors"])


def test_train_on_candidate_structures(tmp_path, capsys):
    """`sdl train pdf --candidates DIR`: one class per structure file, weights the analyser loads."""
    from ase.cluster import Decahedron, Icosahedron
    from ase.io import write

    from sdl.cli import main
    from sdl.measurement import Measurement
    from sdl.techniques.pdf.ml import PdfMLAnalyser

    cands = tmp_path / "cands"
    cands.mkdir()
    write(cands / "au55_ico.xyz", Icosahedron("Au", 3))
    write(cands / "au49_deca.xyz", Decahedron("Au", 3, 2, 0))
    (cands / "notes.txt").write_text("not a structure\n")
    out = tmp_path / "w"
    assert main(["train", "pdf", "--candidates", str(cands), "--n-per-class", "20", "--epochs", "1",
                 "--out", str(out), "--quiet"]) == 0
    assert "skipped 1 file(s)" in capsys.readouterr().err
    an = PdfMLAnalyser(out)
    assert an.model.classes == ["au49_deca", "au55_ico"]
    meta = json.loads((out / "pdf_ml.json").read_text())
    assert "--candidates" in meta["command"] and "val_accuracy" in meta["metrics"]
    r = np.arange(1.0, 30.0, 0.05)
    res = an.analyse(Measurement(technique="pdf", arrays={"r_angstrom": r, "G_per_angstrom2": np.sin(3 * r) / r},
                                 metadata={"composition": "Au"}))
    assert res.info["method"] == "cnn" and res.descriptors[0].value in an.model.classes


def test_shipped_weights_come_from_the_documented_command():
    """The shipped weights' recorded command is the one sdl.techniques.pdf.train's docstring and
    docs/analysers.md give (reproducible from that command), with the arbitration calibrated."""
    import re

    from sdl.techniques.pdf import train as pdf_train
    from sdl.techniques.pdf.ml import WEIGHTS_DIR

    meta = json.loads((WEIGHTS_DIR / "pdf_ml.json").read_text())
    doc_cmds = re.findall(r"sdl train pdf (--n-per-class \d+ --seed \d+ --epochs \d+ --threads \d+)", pdf_train.__doc__)
    assert doc_cmds and meta["command"] == "sdl train pdf " + doc_cmds[0]
    md = (Path(__file__).resolve().parents[1] / "docs" / "analysers.md").read_text()
    assert "nice -n 10 " + meta["command"] in md
    assert meta["library"] and meta["arbitration"]["n_curves"] > 200
    assert set(meta["classes"]) == {"sc", "bcc", "fcc", "hcp", "icosahedral", "decahedral", "octahedral", "other"}


def test_cluster_motif_campaign_validates_and_dry_runs(tmp_path, embedded_broker, lab_id, capsys):
    import yaml

    from sdl.cli import main
    from sdl.config import load_campaign
    from sdl.runner import run_campaign
    from sdl.store import Store

    path = Path(__file__).parents[1] / "campaigns" / "cluster_motif.yaml"
    assert main(["validate", str(path)]) == 0
    assert "valid campaign 'cluster_motif'" in capsys.readouterr().out
    d = yaml.safe_load(path.read_text())
    d.update(store=f"sqlite:///{tmp_path}/sdl.db", broker=embedded_broker.url)
    d["lab"]["id"] = lab_id
    d["strategy"].update(kind="sobol", initial_trials=2)
    d["budget"].update(max_experiments=2, stop_on_target=False)
    c = load_campaign(d)
    store = Store(c.store)
    s = run_campaign(c, store=store)
    assert s.n_trials == 2
    completed = [t for t in store.trials(s.campaign_id) if t.status == "completed"]
    assert completed
    for t in completed:
        names = {x.name for x in store.descriptors(s.campaign_id, t.index)}
        assert {"pdf.motif", "pdf.diameter_nm", "pdf.n_atoms", "pdf.ood_score"} <= names
