"""pd_ml for a user's own chemistry: CIF folders (problems, duplicates, partial occupancies), a tiny
model trained from tests/data/pd_cif with `sdl train pd` and used end to end (identification,
refinement, unexplained peaks, --plot), the campaign option, and the file formats."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from pathlib import Path  # noqa: E402

from sdl import analysis  # noqa: E402
from sdl.errors import AnalysisError  # noqa: E402
from sdl.measurement import Measurement  # noqa: E402
from sdl.techniques.pd import train as pd_train  # noqa: E402
from sdl.techniques.pd.library import read_cif_folder  # noqa: E402
from sdl.techniques.pd.ml import PdMLAnalyser  # noqa: E402
from simulators.pd import physics as spd  # noqa: E402
from simulators.pd.cif import read_cif  # noqa: E402

DATA = Path(__file__).parent / "data"
CIFS = DATA / "pd_cif"
FORMATS = DATA / "pd_formats"


def test_cif_folder_reports_each_problem_and_trains_on_the_rest():
    lines: list[str] = []
    phases, problems, dropped = read_cif_folder(CIFS, log=lines.append)
    assert [p.label for p in phases] == ["Ce0.8Zr0.2O2_Fm-3m", "NaCl_Fm-3m", "Si_Fd-3m"]
    assert len(problems) == 2
    assert any(p.startswith("broken.cif: not a readable CIF") and "unterminated" in p for p in problems)
    assert any(p.startswith("no_symmetry.cif: no symmetry") and "P 1" in p for p in problems)
    assert dropped == ["NaCl_second_source.cif: same formula NaCl and space group Fm-3m as NaCl.cif"]
    ce = phases[0]
    assert any("partial occupancies kept" in n and "Ce1 0.8" in n for n in ce.notes)
    assert any("partial occupancies" in line for line in lines)


def test_cif_structures_match_the_forward_model():
    # the oxide CIFs written from the in-code definitions give the same reflections
    for name in ("TiO2_anatase", "Co3O4", "ZrO2_monoclinic"):
        p, _ = read_cif(Path(spd.__file__).parent / "phases" / "oxides" / f"{name}.cif")
        a, b = spd.reflections(name), spd.reflections(p)
        assert np.allclose(a.d_angstrom, b.d_angstrom) and np.allclose(a.fsq_mult, b.fsq_mult, rtol=1e-4)
        assert b.density_g_cm3 == pytest.approx(a.density_g_cm3, rel=1e-3)
    # NaCl from the H-M symbol alone (B_iso converted): 4 formula units, 2.16 g/cm³
    nacl, notes = read_cif(CIFS / "NaCl.cif")
    assert (nacl.formula, nacl.spacegroup, len(nacl.symops)) == ("NaCl", 225, 192) and not notes
    assert spd.reflections(nacl).density_g_cm3 == pytest.approx(2.165, abs=0.01)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("pd_model")
    rc = pd_train.main(["--phases", str(CIFS), "--out", str(out), "--n", "600", "--epochs", "4", "--n-val", "64",
                        "--wavelength", "1.5406", "--two-theta", "20", "85", "--max-phases", "2", "--workers", "1",
                        "--seed", "1", "--quiet"])
    assert rc == 0
    return out


def test_model_folder_is_self_contained(tiny_model):
    names = {f.name for f in tiny_model.iterdir()}
    assert {"pd_ml.pt", "pd_ml.json", "phases.json", "cif", "validation.txt"} <= names
    table = json.loads((tiny_model / "phases.json").read_text())
    assert [r["label"] for r in table["phases"]] == ["Ce0.8Zr0.2O2_Fm-3m", "NaCl_Fm-3m", "Si_Fd-3m"]
    assert {r["source_cif"] for r in table["phases"]} == {f.name for f in (tiny_model / "cif").iterdir()}
    assert len(table["skipped"]) == 2 and len(table["dropped"]) == 1
    meta = json.loads((tiny_model / "pd_ml.json").read_text())
    assert meta["wavelengths_angstrom"] == [1.5406] and meta["max_phases"] == 2
    q = spd.two_theta_to_q(np.array([20.0, 85.0]), 1.5406)
    assert meta["q_grid"][:2] == pytest.approx(list(q))
    assert "--two-theta 20.0 85.0" in meta["command"] and "validation" in meta
    # the model folder still loads after the source folder is gone
    moved = tiny_model.parent / "moved_model"
    shutil.copytree(tiny_model, moved)
    assert PdMLAnalyser(model=moved, refine=False).library == tuple(r["label"] for r in table["phases"])


def _scan(components, tt=np.arange(20.0, 85.0, 0.02), extra_peak=None, seed=0):
    y = spd.simulate(tt, components, spd.Profile(), background_coeffs=(1.0, -0.3))
    y = y / y.max() * 2e4 + 150.0
    if extra_peak is not None:
        y = y + 0.12 * 2e4 * np.exp(-0.5 * ((tt - extra_peak) / 0.06) ** 2)
    y = np.random.default_rng(seed).poisson(y).astype(float)
    return Measurement(technique="pd", arrays={"two_theta_deg": tt, "intensity": y, "sigma": np.sqrt(np.maximum(y, 1))},
                       metadata={"wavelength_angstrom": 1.5406})


def test_tiny_model_identifies_refines_and_flags_unexplained_peaks(tiny_model):
    an = analysis.get("pd", "pd_ml", model=str(tiny_model))
    nacl, si = (an.by_label[k].phase for k in ("NaCl_Fm-3m", "Si_Fd-3m"))
    r = an.analyse(_scan([spd.PhaseComponent(nacl, 0.6, 1.004, 40.0), spd.PhaseComponent(si, 0.4, 1.0, 80.0)]))
    d = {x.name: x for x in r.descriptors}
    assert d["pd.phases"].value == "NaCl_Fm-3m+Si_Fd-3m", r.info
    assert d["pd.lattice_a_angstrom.NaCl_Fm-3m"].value == pytest.approx(5.6402 * 1.004, abs=0.003)
    assert d["pd.fraction.NaCl_Fm-3m"].value == pytest.approx(0.6, abs=0.05)
    assert d["pd.unexplained_peaks"].value == 0 and "unexplained_peaks" not in d["pd.phases"].flags
    assert {f"component:{p}" for p in ("NaCl_Fm-3m", "Si_Fd-3m")} <= set(r.curves)
    # a peak no library phase has: reported with its position, flagged, phases not forced to change
    r2 = an.analyse(_scan([spd.PhaseComponent(nacl, 1.0, 1.0, 40.0)], extra_peak=36.8, seed=1))
    d2 = {x.name: x for x in r2.descriptors}
    assert d2["pd.phases"].value == "NaCl_Fm-3m"
    assert d2["pd.unexplained_peaks"].value >= 1 and "unexplained_peaks" in d2["pd.phases"].flags
    assert min(abs(p["two_theta_deg"] - 36.8) for p in r2.info["unexplained_peaks"]) < 0.1
    assert np.any(np.abs(r2.curves["marker:unexplained peaks"] - 36.8) < 0.1)


def test_kalpha2_doublet_is_fitted_when_the_scan_has_one(tiny_model, tmp_path):
    an = PdMLAnalyser(model=tiny_model)
    nacl = an.by_label["NaCl_Fm-3m"].phase
    tt = np.arange(20.0, 85.0, 0.02)
    prof = spd.Profile(kalpha2_angstrom=spd.KALPHA2[1.5406], kalpha2_ratio=0.5)
    y = spd.simulate(tt, [spd.PhaseComponent(nacl, 1.0, 1.0, 80.0)], prof, background_coeffs=(1.0,))
    y = np.random.default_rng(2).poisson(y / y.max() * 3e4 + 100).astype(float)
    p = tmp_path / "doublet.xy"
    np.savetxt(p, np.column_stack([tt, y]), header="wavelength = 1.5406\n2theta I")
    read = analysis.technique("pd").read
    with_k2 = an.analyse(read(p, kalpha2_ratio=0.5))
    without = an.analyse(read(p))
    assert with_k2.info["rwp"] < 0.6 * without.info["rwp"]
    d = {x.name: x for x in with_k2.descriptors}
    assert d["pd.phases"].value == "NaCl_Fm-3m" and d["pd.unexplained_peaks"].value == 0
    bad = tmp_path / "synchrotron.xy"
    np.savetxt(bad, np.column_stack([np.arange(1, 9, 0.01), np.ones(800)]), header="wavelength = 0.1665\n2theta I")
    with pytest.raises(AnalysisError, match="usual anode"):
        read(bad, kalpha2_ratio=0.5)


def test_cli_analyse_with_model_and_plot(tiny_model, tmp_path, capsys):
    from sdl.cli import main

    rc = main(["analyse", "pd", str(FORMATS / "nacl_cu.xrdml"), "--model", str(tiny_model), "--plot", str(tmp_path),
               "--json"])
    assert rc == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert rec["descriptors"]["pd.phases"]["value"] == "NaCl_Fm-3m"
    assert rec["info"]["model"] == str(tiny_model)
    png = tmp_path / "nacl_cu.png"
    assert png.exists() and png.stat().st_size > 20_000
    # a model folder that is not one: one line naming the option's value
    assert main(["analyse", "pd", str(FORMATS / "nacl_cu.xrdml"), "--model", str(tmp_path)]) == 1
    assert "not a pd_ml model folder" in capsys.readouterr().err


def test_campaign_analysis_entry_with_model_option(tiny_model):
    from sdl.analysis.chain import chain_entries
    from sdl.config import load_campaign
    from sdl.preflight import analysis_problems

    c = load_campaign("campaigns/oxide_phase_purity.yaml",
                      **{"analysis": {"pd": [{"name": "pd_ml", "model": str(tiny_model)}]}})
    assert chain_entries(c, "pd") == [("pd_ml", {"model": str(tiny_model)})]
    assert not [p for p in analysis_problems(c) if p.startswith("analysis.")]
    bad = load_campaign("campaigns/oxide_phase_purity.yaml", **{"analysis": {"pd": [{"name": "pd_ml", "modle": "x"}]}})
    assert any("analysis.pd[0].modle" in p and "'model'" in p for p in analysis_problems(bad))


# ----- formats ------------------------------------------------------------------------------------------

def test_readers_of_the_field_formats():
    pd = analysis.technique("pd")
    x = pd.read(FORMATS / "nacl_cu.xrdml")
    assert x.metadata["wavelength_angstrom"] == pytest.approx(1.540598)
    assert x.arrays["two_theta_deg"][[0, -1]] == pytest.approx([25.0, 80.0])
    assert "kalpha2_ratio" not in x.metadata  # intended="K-Alpha 1": a Kα1 monochromator
    g = pd.read(FORMATS / "nacl_cu.gsa")  # STD; the wavelength from the title line
    assert g.metadata["wavelength_angstrom"] == pytest.approx(1.5406)
    assert np.allclose(g.arrays["two_theta_deg"], x.arrays["two_theta_deg"]) and np.allclose(g.arrays["intensity"], x.arrays["intensity"])
    f = pd.read(FORMATS / "nacl_cu.fxye")  # no wavelength in the file: 2θ only, until the option gives one
    assert "q_inv_angstrom" not in f.arrays and np.allclose(f.arrays["intensity"], x.arrays["intensity"])
    with pytest.raises(AnalysisError, match="--wavelength-angstrom"):
        PdMLAnalyser(refine=False).analyse(f)
    f2 = pd.read(FORMATS / "nacl_cu.fxye", wavelength_angstrom=1.5406)
    assert np.allclose(f2.arrays["q_inv_angstrom"], spd.two_theta_to_q(x.arrays["two_theta_deg"], 1.5406))
    c = pd.read(FORMATS / "nacl_q.chi")  # Fit2D/pyFAI, Q in 1/Å
    assert np.allclose(c.arrays["q_inv_angstrom"], f2.arrays["q_inv_angstrom"], rtol=1e-5)
    c2 = pd.read(FORMATS / "nacl_q.chi", wavelength_angstrom=1.5406)
    assert np.allclose(c2.arrays["two_theta_deg"], x.arrays["two_theta_deg"], atol=1e-4)
    with pytest.raises(AnalysisError, match=r"Bruker \.brml .*export the scan as \.xy"):
        pd.read(FORMATS / "scan.brml")


def test_bruker_raw_and_gsas_raw_told_apart(tmp_path):
    b = tmp_path / "scan.raw"
    b.write_bytes(b"RAW1.01\x00\x00\x00" + bytes(100))
    with pytest.raises(AnalysisError, match="Bruker .raw"):
        analysis.technique("pd").read(b)
    g = tmp_path / "gsas.raw"
    shutil.copyfile(FORMATS / "nacl_cu.gsa", g)
    assert analysis.technique("pd").read(g).arrays["intensity"].size == 1101
