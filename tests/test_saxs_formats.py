"""SAS files in the field's formats (sdl.techniques.saxs.formats, read with sasdata's loaders): each format
loads, with its unit, resolution and skipped rows said; garbage is an AnalysisError naming the file.

tests/data/sas_formats/: ISIS_83404.TXT (RKH), 33837rear_1D_1.75_16.5_CanSAS1D.xml, ..._NXcanSAS.h5,
Anton-Paar.pdh and 1umSlitSmearSphere.ABS are sasdata's example files (BSD-3, see the README there);
sphere_r6nm_qnm_cansas.xml, sphere_r5nm_nxcansas.h5 and usans_sphere_r150nm.abs are simulated spheres
written by make_files.py there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sasdata")

from sdl.analysis import technique  # noqa: E402
from sdl.errors import AnalysisError  # noqa: E402
from sdl.measurement import Measurement  # noqa: E402
from sdl.techniques.saxs.formats import read_sas, sniff  # noqa: E402
from sdl.techniques.saxs.reader import read_saxs  # noqa: E402

DATA = Path(__file__).parent / "data" / "sas_formats"
SAXS = technique("saxs")


def _desc(result, name):
    found = [d for d in result.descriptors if d.name == name]
    assert found, f"no descriptor {name}; have {[d.name for d in result.descriptors]}"
    return found[0]


# ----- each format --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, fmt, n, q0, unit_source", [
    ("ISIS_83404.TXT", "rkh", 121, 0.009, "assumed"),
    ("33837rear_1D_1.75_16.5_CanSAS1D.xml", "cansas", 66, 0.00416, "file"),
    ("33837rear_1D_1.75_16.5_NXcanSAS.h5", "nxcansas", 66, 0.00416, "file"),
    ("Anton-Paar.pdh", "pdh", 673, 0.006604, "file"),  # the file's q is in nm⁻¹ (its XML footer says so)
    ("1umSlitSmearSphere.ABS", "abs", 150, 1e-4, "format"),
    ("sphere_r6nm_qnm_cansas.xml", "cansas", 90, 0.005, "file"),
    ("sphere_r5nm_nxcansas.h5", "nxcansas", 90, 0.005, "file"),
    ("usans_sphere_r150nm.abs", "abs", 70, 4e-5, "format"),
])
def test_each_format_loads_through_the_declaration(name, fmt, n, q0, unit_source):
    m = SAXS.read(DATA / name)
    assert m.technique == "saxs" and m.metadata["format"] == fmt
    q = m.arrays["q_inv_angstrom"]
    assert q.size == n and q[0] == pytest.approx(q0, rel=1e-6) and np.all(q > 0)
    assert m.arrays["intensity"].shape == q.shape and m.metadata["q_unit_source"] == unit_source
    assert sniff(DATA / name) == fmt


def test_rkh_says_the_unit_is_assumed_and_q_unit_gives_it():
    m = SAXS.read(DATA / "ISIS_83404.TXT")
    assert "RKH file names no q unit" in m.metadata["assumed"]
    m = SAXS.read(DATA / "ISIS_83404.TXT", q_unit="nm")
    assert m.metadata["q_unit_source"] == "option" and m.arrays["q_inv_angstrom"][0] == pytest.approx(0.0009)


def test_nm_file_is_converted_and_dq_kept():
    m = read_sas(DATA / "sphere_r6nm_qnm_cansas.xml")
    assert m.metadata["q_unit_file"] == "nm" and m.metadata["q_unit_text"] == "1/nm"
    q, dq = m.arrays["q_inv_angstrom"], m.arrays["dq_inv_angstrom"]
    assert q[0] == pytest.approx(0.005) and q[-1] == pytest.approx(0.4)  # 0.05-4 nm⁻¹ in the file
    np.testing.assert_allclose(dq, 0.05 * q, rtol=1e-3)  # Qdev (one standard deviation), converted too
    # the PDH example's q column is nm⁻¹: 0.06604 in the file, 0.006604 Å⁻¹ read
    assert read_sas(DATA / "Anton-Paar.pdh").metadata["q_unit_file"] == "nm"
    # NXcanSAS Qdev
    h5 = read_sas(DATA / "sphere_r5nm_nxcansas.h5")
    np.testing.assert_allclose(h5.arrays["dq_inv_angstrom"], 0.05 * h5.arrays["q_inv_angstrom"], rtol=1e-6)


def test_several_data_sets_analyse_the_first_and_say_so():
    m = read_sas(DATA / "sphere_r6nm_qnm_cansas.xml")
    assert m.metadata["n_datasets"] == 2 and m.metadata["datasets"] == ["sphere R=6nm", "sphere R=3nm"]
    assert any("2 data sets" in w and "'sphere R=3nm'" in w for w in m.metadata["warnings"])


def test_slit_lengths_kept():
    for name in ("1umSlitSmearSphere.ABS", "usans_sphere_r150nm.abs"):
        m = read_sas(DATA / name)
        np.testing.assert_allclose(m.arrays["slit_length_inv_angstrom"], 0.117)
        np.testing.assert_allclose(m.arrays["slit_width_inv_angstrom"], 0.0)
        assert "dq_inv_angstrom" not in m.arrays


def test_slit_resolution_is_used_by_the_fit():
    pytest.importorskip("sasmodels")
    from sdl.techniques.saxs.fit import SaxsFitAnalyser

    fit = SaxsFitAnalyser(models=("sphere",))
    m = read_sas(DATA / "usans_sphere_r150nm.abs")
    res = fit.analyse(m)
    assert res.info["resolution"].startswith("slit")
    assert _desc(res, "saxs.radius_nm").value == pytest.approx(150.0, rel=0.03)
    chi2 = _desc(res, "saxs.chi2_reduced").value
    assert chi2 < 2.0
    pinhole = Measurement(technique="saxs", metadata=m.metadata,
                          arrays={k: v for k, v in m.arrays.items() if not k.startswith("slit")})
    assert _desc(fit.analyse(pinhole), "saxs.chi2_reduced").value > 3 * chi2  # the slit matters


def test_saxs_ml_flags_a_slit_smeared_curve():
    pytest.importorskip("torch")
    from sdl.techniques.saxs.ml import SaxsMLAnalyser

    m = read_sas(DATA / "sphere_r5nm_nxcansas.h5")
    arrays = {k: v for k, v in m.arrays.items() if k != "dq_inv_angstrom"}
    arrays["slit_length_inv_angstrom"] = np.full_like(arrays["q_inv_angstrom"], 0.05)
    res = SaxsMLAnalyser().analyse(Measurement(technique="saxs", arrays=arrays, metadata=m.metadata))
    for d in res.descriptors:
        assert "slit_smearing_suspect" in d.flags and not d.trusted
    assert res.info["slit_smearing"] == "not modelled"
    assert any("saxs_fit" in w and "slit" in w for w in res.info["warnings"])


def test_a_line_collimation_pdh_is_flagged_slit_smeared_unless_said_desmeared(capsys):
    """Anton-Paar.pdh's footer gives a counter slit length of 1.558 nm⁻¹ (a SAXSess, line collimation): its curve
    counts as slit-smeared (the beam profile is not in the file), so every value of every analyser is flagged and
    the warning says how to say it was desmeared; `--desmeared yes` analyses it unflagged."""
    from sdl.cli import main
    from sdl.techniques.saxs.modelfree import SaxsModelFreeAnalyser

    m = SAXS.read(DATA / "Anton-Paar.pdh")
    assert m.metadata["intensity_unit"] == "1/um^2"  # the file's u_m^-2, as people write it (sasdata: um^2^{-1})
    assert m.metadata["line_collimation_slit_inv_angstrom"] == pytest.approx(0.1557578, rel=1e-6)
    assert any("line-collimation" in w and "--desmeared yes" in w for w in m.metadata["warnings"])
    res = SaxsModelFreeAnalyser().analyse(m)
    assert res.descriptors and all("slit_smearing_suspect" in d.flags and not d.trusted for d in res.descriptors)
    assert "line collimation" in res.info["slit_smearing"]
    said = SAXS.read(DATA / "Anton-Paar.pdh", desmeared="yes")
    assert "line_collimation_slit_inv_angstrom" not in said.metadata and not said.metadata.get("warnings")
    assert all("slit_smearing_suspect" not in d.flags for d in SaxsModelFreeAnalyser().analyse(said).descriptors)
    assert main(["analyse", "saxs", str(DATA / "Anton-Paar.pdh"), "--analyser", "saxs_modelfree", "--json",
                 "--desmeared", "yes"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert all("slit_smearing_suspect" not in d.get("flags", []) for d in rec["descriptors"].values())
    with pytest.raises(AnalysisError, match="--desmeared 'maybe' unknown"):
        read_sas(DATA / "Anton-Paar.pdh", desmeared="maybe")


def test_saxs_modelfree_flags_a_slit_smeared_curve():
    """USANS (slit lengths from the ABS file): Guinier and Porod read on the slit-smeared curve are not the
    sphere's (Rg 127 nm for a 150 nm sphere's 116, a Porod exponent of 6), so every model-free value is flagged
    and the warning points to saxs_fit."""
    from sdl.techniques.saxs.modelfree import SaxsModelFreeAnalyser

    res = SaxsModelFreeAnalyser().analyse(read_sas(DATA / "usans_sphere_r150nm.abs"))
    assert res.descriptors and all("slit_smearing_suspect" in d.flags and not d.trusted for d in res.descriptors)
    assert res.info["slit_smearing"] == "not modelled"
    assert any("saxs_fit" in w for w in res.info["warnings"])


# ----- rows that cannot be analysed ------------------------------------------------------------------

def test_zero_and_nonfinite_rows_are_skipped_and_counted(tmp_path):
    q = np.geomspace(0.005, 0.4, 40)
    rows = ["0 0 0", "-0.001 5 0.1", "nan 3 0.1", "0.0045 inf 0.1"] + [f"{a:.6g} {np.exp(-a * 20):.6g} 0.01" for a in q]
    f = tmp_path / "zeros.dat"
    f.write_text("# q (1/A) I sigma\n" + "\n".join(rows) + "\n")
    m = SAXS.read(f)
    assert m.arrays["q_inv_angstrom"].size == 40
    (w,) = m.metadata["warnings"]
    assert w.startswith("4 of 44 rows skipped") and "2 with q ≤ 0" in w and "2 with non-finite" in w


def test_sigma_not_positive(tmp_path):
    q = np.geomspace(0.005, 0.4, 40)
    sig = np.full(q.size, 0.01)
    sig[:3] = 0.0
    f = tmp_path / "few.dat"
    f.write_text("# q (1/A) I sigma\n" + "\n".join(f"{a} 1.0 {s}" for a, s in zip(q, sig)))
    m = read_saxs(f)
    assert m.arrays["q_inv_angstrom"].size == 37 and "3 of 40 rows with sigma ≤ 0 skipped" in m.metadata["warnings"][0]
    sig[:30] = -1.0
    f.write_text("# q (1/A) I sigma\n" + "\n".join(f"{a} 1.0 {s}" for a, s in zip(q, sig)))
    m = read_saxs(f)
    assert "sigma" not in m.arrays and m.arrays["q_inv_angstrom"].size == 40
    assert "sigma column is dropped" in m.metadata["warnings"][0]


def test_reader_warning_reaches_sdl_analyse(tmp_path, capsys):
    from sdl.cli import main

    src = (Path(__file__).parent / "data" / "sphere_r5nm_angstrom.dat").read_text().splitlines()
    f = tmp_path / "with_zero.dat"
    f.write_text("\n".join(src[:2] + ["0 0 0"] + src[2:]) + "\n")
    assert main(["analyse", "saxs", str(f), "--analyser", "saxs_ml"]) == 0
    out = capsys.readouterr().out
    assert "warning: 1 of" in out and "1 with q ≤ 0" in out


# ----- the CLI: --json, --format, --help, folders ------------------------------------------------------

def test_cli_json_gives_the_radius_of_a_cansas_file(capsys):
    pytest.importorskip("torch")
    from sdl.cli import main

    assert main(["analyse", "saxs", str(DATA / "sphere_r6nm_qnm_cansas.xml"), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["descriptors"]["saxs.radius_nm"]["value"] == pytest.approx(6.0, rel=0.07)
    assert rec["descriptors"]["saxs.model"]["value"] == "sphere"
    assert any("2 data sets" in w for w in rec["info"]["warnings"])


def test_format_option_forces_a_loader(tmp_path):
    rkh = tmp_path / "isis.dat"  # an RKH file with a plain-column suffix: sniffed ...
    shutil.copy(DATA / "ISIS_83404.TXT", rkh)
    assert SAXS.read(rkh).metadata["format"] == "rkh"
    with pytest.raises(AnalysisError, match=r"isis\.dat:5: non-numeric"):  # ... or forced to plain columns,
        SAXS.read(rkh, format="columns")  # which its numeric header rows are not
    xml = tmp_path / "cansas.txt"  # CanSAS XML under another suffix, sniffed or forced
    shutil.copy(DATA / "sphere_r6nm_qnm_cansas.xml", xml)
    assert SAXS.read(xml).metadata["format"] == "cansas"
    assert SAXS.read(xml, format="cansas").metadata["format"] == "cansas"
    with pytest.raises(AnalysisError, match=r"cansas\.txt is not an HDF5 file"):
        SAXS.read(xml, format="nxcansas")
    with pytest.raises(AnalysisError, match=r"isis\.dat cannot be read as CanSAS 1D XML"):
        SAXS.read(rkh, format="cansas")
    with pytest.raises(AnalysisError, match="--format 'xyz' unknown"):
        read_sas(rkh, format="xyz")


def test_cli_format_option(tmp_path, capsys):
    from sdl.cli import main

    f = tmp_path / "data.xml"
    shutil.copy(Path(__file__).parent / "data" / "sphere_r5nm_angstrom.dat", f)  # plain columns named .xml
    assert main(["analyse", "saxs", str(f), "--json"]) == 1
    assert "is not XML" in json.loads(capsys.readouterr().out)["error"]
    assert main(["analyse", "saxs", str(f), "--json", "--format", "columns", "--analyser", "saxs_fit"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["descriptors"]["saxs.radius_nm"]["value"] == pytest.approx(5.0, rel=0.05)
    g = tmp_path / "isis.xml"  # RKH text under a .xml suffix: the content decides
    shutil.copy(DATA / "ISIS_83404.TXT", g)
    assert SAXS.read(g).metadata["format"] == "rkh"


def test_help_shows_the_format_option(capsys):
    from sdl.cli import main

    with pytest.raises(SystemExit):
        main(["analyse", "saxs", "--help"])
    text = capsys.readouterr().out
    assert "--format" in text and "nxcansas" in text and "rkh" in text and "--q-unit" in text
    assert "CanSAS 1D XML" in text and ".pdh" in text and "--desmeared" in text


def test_folder_picks_up_every_suffix(tmp_path):
    for name in ("ISIS_83404.TXT", "33837rear_1D_1.75_16.5_CanSAS1D.xml", "33837rear_1D_1.75_16.5_NXcanSAS.h5",
                 "Anton-Paar.pdh", "1umSlitSmearSphere.ABS"):
        shutil.copy(DATA / name, tmp_path / name)
    (tmp_path / "notes.md").write_text("not data")
    picked = sorted(f.name for f in tmp_path.iterdir() if any(r.accepts(f) for r in SAXS.readers))
    assert len(picked) == 5 and "notes.md" not in picked


# ----- garbage ---------------------------------------------------------------------------------------

def _garbage(tmp_path: Path) -> dict[str, Path]:
    files = {
        "random.dat": np.random.default_rng(0).bytes(4000),
        "empty.xml": b"",
        "page.xml": b"<!DOCTYPE html>\n<html><head><title>Not Found</title></head><body>404</body></html>\n",
        "other.xml": b'<?xml version="1.0"?>\n<config><item>1</item></config>\n',
        "truncated.h5": (DATA / "sphere_r5nm_nxcansas.h5").read_bytes()[:3000],
        "notreally.h5": b"q I\n0.1 1\n",
        "words.csv": b"name,colour,size\napple,red,small\npear,green,large\n",
        "empty.txt": b"   \n\n",
    }
    out = {}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        out[name] = tmp_path / name
    return out


@pytest.mark.parametrize("name, what", [
    ("random.dat", "binary"), ("empty.xml", "empty"), ("page.xml", "HTML page"), ("other.xml", "no SASroot"),
    ("truncated.h5", "HDF5"), ("notreally.h5", "not an HDF5 file"), ("words.csv", "no numeric data"),
    ("empty.txt", "empty"),
])
def test_garbage_is_an_analysis_error_naming_the_file(tmp_path, name, what):
    f = _garbage(tmp_path)[name]
    with pytest.raises(AnalysisError) as e:
        SAXS.read(f)
    assert str(f) in str(e.value) and what in str(e.value), str(e.value)


def test_cli_on_a_folder_of_garbage_reports_each_file(tmp_path, capsys):
    from sdl.cli import main

    _garbage(tmp_path)
    assert main(["analyse", "saxs", str(tmp_path), "--json"]) == 1
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 8 and all("error" in r for r in records)
