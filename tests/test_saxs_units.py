"""The q unit of SAXS files: how read_saxs finds it, and the flag when a file that names none looks like
nm⁻¹ read as Å⁻¹ (tests/data/sphere_r8nm_nm.dat without its header: an 8 nm sphere that reads as ~1 nm)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sdl.analysis.base import choose
from sdl.errors import AnalysisError
from sdl.measurement import Measurement
from sdl.techniques.saxs.reader import check_sas_q_range, q_unit_from_header, read_saxs

DATA = Path(__file__).parent / "data"


def _without_header(tmp_path: Path, name: str) -> Path:
    """A copy of tests/data/NAME with its comment lines (which name the q unit) removed."""
    out = tmp_path / f"noheader_{name}"
    out.write_text("".join(line for line in (DATA / name).read_text().splitlines(True) if not line.startswith("#")))
    return out


def _desc(result, name):
    found = [d for d in result.descriptors if d.name == name]
    assert found, f"no descriptor {name}; have {[d.name for d in result.descriptors]}"
    return found[0]


# ----- reader (no analyser needed) -------------------------------------------------------------------

@pytest.mark.parametrize("header, unit", [
    (["q (1/nm)  I (1/cm)  sigma"], "nm"),
    (["q (1/A)  I (1/cm)  sigma"], "angstrom"),
    (["Q [nm^-1] I"], "nm"),
    (["q(A^-1) I"], "angstrom"),
    (["q_unit: nm"], "nm"),
    (["q_unit = angstrom"], "angstrom"),
    (["q unit: 1/nm"], "nm"),
    (["technique=saxs q_unit=1/angstrom", "q_inv_angstrom intensity sigma"], "angstrom"),  # sdl export
    (["wavelength 1.5406 angstrom"], None),  # names the wavelength's unit, not q's
    (["simulated pinhole SAXS"], None),
])
def test_q_unit_from_header(header, unit):
    assert q_unit_from_header(header) == unit


def test_unreadable_q_unit_line_is_an_error(tmp_path):
    f = tmp_path / "x.dat"
    f.write_text("# q_unit: furlong\n" + "\n".join(f"{q} 1.0" for q in np.linspace(0.01, 0.3, 30)))
    with pytest.raises(AnalysisError, match="# q_unit: nm"):
        read_saxs(f)


def test_bad_q_unit_option_names_the_flag():
    with pytest.raises(AnalysisError, match="--q-unit nm"):
        read_saxs(DATA / "sphere_r8nm_nm.dat", q_unit="furlong")


def test_reader_records_where_the_unit_came_from(tmp_path):
    bare = _without_header(tmp_path, "sphere_r8nm_nm.dat")
    m = read_saxs(bare)
    assert m.metadata["q_unit_source"] == "assumed" and m.metadata["q_unit_file"] == "angstrom"
    assert "--q-unit nm" in m.metadata["assumed"] and "# q_unit: nm" in m.metadata["assumed"]
    assert m.arrays["q_inv_angstrom"][0] == pytest.approx(0.05)
    m = read_saxs(bare, q_unit="nm")
    assert m.metadata["q_unit_source"] == "option" and m.arrays["q_inv_angstrom"][0] == pytest.approx(0.005)
    m = read_saxs(DATA / "sphere_r8nm_nm.dat")
    assert m.metadata["q_unit_source"] == "header" and m.metadata["q_unit_file"] == "nm"
    keyed = tmp_path / "keyed.dat"
    keyed.write_text("# q_unit: nm\n" + bare.read_text())
    m = read_saxs(keyed)
    assert m.metadata["q_unit_source"] == "header" and m.arrays["q_inv_angstrom"][0] == pytest.approx(0.005)


def test_range_check(tmp_path):
    bare = _without_header(tmp_path, "sphere_r8nm_nm.dat")
    c = check_sas_q_range(read_saxs(bare))
    assert c is not None and c.suspect and c.nm_plausible
    assert c.flags == ["q_unit_suspect", "low_confidence"]
    assert (c.q_min, c.q_max) == pytest.approx((0.05, 5.0))
    # the unit given (either way), or a file in Å⁻¹ without a header: nothing suspect
    assert check_sas_q_range(read_saxs(bare, q_unit="nm")) is None
    assert check_sas_q_range(read_saxs(DATA / "sphere_r8nm_nm.dat")) is None
    assert check_sas_q_range(read_saxs(DATA / "sphere_r5nm_angstrom.dat")) is None
    assert check_sas_q_range(read_saxs(_without_header(tmp_path, "sphere_r5nm_angstrom.dat"))) is None
    # the unit given as Å⁻¹ for the nm⁻¹ numbers: trusted, but the range is flagged (informative)
    c = check_sas_q_range(read_saxs(bare, q_unit="angstrom"))
    assert c is not None and not c.suspect and c.flags == ["q_range_implausible", "low_confidence"]


def test_simulated_instrument_is_not_flagged():
    from simulators.saxs.instrument import SaxsInstrument

    class _S:
        sample_id, shape = "s", "sphere"
        model_params = dict(scale=5e-5, background=0.0, sld=77.6, sld_solvent=9.47, radius=80.0, radius_pd=0.1,
                            radius_pd_type="schulz", radius_pd_n=15, radius_pd_nsigma=3.0)

    out = SaxsInstrument(seed=0).measure(_S(), np.random.default_rng(0))
    assert check_sas_q_range(Measurement(technique="saxs", arrays=out["arrays"], metadata=out["metadata"])) is None


# ----- analysers ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saxs_ml():
    torch = pytest.importorskip("torch")
    pytest.importorskip("sasmodels")
    from sdl.techniques.saxs.ml import SaxsMLAnalyser

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield SaxsMLAnalyser()
    torch.set_num_threads(n)


def test_nm_file_without_header_is_flagged_by_saxs_ml(saxs_ml, tmp_path):
    res = saxs_ml.analyse(read_saxs(_without_header(tmp_path, "sphere_r8nm_nm.dat")))
    r = _desc(res, "saxs.radius_nm")
    assert r.value < 3.0  # the Å⁻¹ reading (~1.1 nm) is what is reported ...
    for d in res.descriptors:  # ... but nothing of it is trusted
        assert "q_unit_suspect" in d.flags and "low_confidence" in d.flags and not d.trusted, d
    (w,) = res.info["warnings"]
    assert "q unit not given" in w and "`--q-unit nm`" in w and "`# q_unit: nm`" in w
    assert "nm⁻¹ read as Å⁻¹" in w and "radius would be 8" in w
    assert res.info["q_unit_check"]["as_nm"]["saxs.radius_nm"] == pytest.approx(8.0, rel=0.05)


def test_nm_file_with_unit_given_is_not_flagged(saxs_ml, tmp_path):
    res = saxs_ml.analyse(read_saxs(_without_header(tmp_path, "sphere_r8nm_nm.dat"), q_unit="nm"))
    r = _desc(res, "saxs.radius_nm")
    assert r.value == pytest.approx(8.0, rel=0.05)
    assert r.trusted and "q_unit_suspect" not in r.flags and "low_confidence" not in r.flags
    assert "warnings" not in res.info and "q_unit_check" not in res.info


@pytest.mark.parametrize("strip", [False, True])
def test_angstrom_file_is_not_flagged(saxs_ml, tmp_path, strip):
    f = _without_header(tmp_path, "sphere_r5nm_angstrom.dat") if strip else DATA / "sphere_r5nm_angstrom.dat"
    res = saxs_ml.analyse(read_saxs(f))
    r = _desc(res, "saxs.radius_nm")
    assert r.value == pytest.approx(5.0, rel=0.05) and r.trusted
    assert not any(f in d.flags for d in res.descriptors for f in ("q_unit_suspect", "q_range_implausible"))
    assert "warnings" not in res.info


def test_wrong_unit_outside_the_window_names_the_flag(saxs_ml, tmp_path):
    f = tmp_path / "waxs.dat"
    q = np.linspace(5.0, 40.0, 100)
    f.write_text("\n".join(f"{a:.6g} {b:.6g}" for a, b in zip(q, np.exp(-q / 10))))
    with pytest.raises(AnalysisError, match="0.002-0.9") as e:
        saxs_ml.analyse(read_saxs(f))
    assert "`--q-unit nm`" in str(e.value) and "`# q_unit: nm`" in str(e.value) and "q_unit=" not in str(e.value)


def test_saxs_fit_flags_too_so_the_chain_does_not_trust_it(saxs_ml, tmp_path):
    pytest.importorskip("sasmodels")
    from sdl.techniques.saxs.fit import SaxsFitAnalyser

    m = read_saxs(_without_header(tmp_path, "sphere_r8nm_nm.dat"))
    fit = SaxsFitAnalyser().analyse(m)
    r = _desc(fit, "saxs.radius_nm")
    assert "q_unit_suspect" in r.flags and not r.trusted
    assert fit.info["q_unit_check"]["as_nm"]["saxs.radius_nm"] == pytest.approx(8.0, rel=0.05)
    assert "`--q-unit nm`" in fit.info["warnings"][0]
    chosen = choose(saxs_ml.analyse(m).descriptors + fit.descriptors)
    assert not chosen["saxs.radius_nm"].trusted


def test_cli_json_carries_the_warning(saxs_ml, tmp_path, capsys):
    from sdl.cli import main

    bare = _without_header(tmp_path, "sphere_r8nm_nm.dat")
    assert main(["analyse", "saxs", str(bare), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert "q_unit_suspect" in rec["descriptors"]["saxs.radius_nm"]["flags"]
    assert any("`--q-unit nm`" in w for w in rec["info"]["warnings"])
    assert main(["analyse", "saxs", str(bare), "--json", "--q-unit", "nm"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["descriptors"]["saxs.radius_nm"]["value"] == pytest.approx(8.0, rel=0.05)
    assert "warnings" not in rec["info"]


def test_export_of_a_read_file_reads_back_in_angstrom(tmp_path):
    from sdl.measurement import write_columns

    for unit in (None, "nm"):  # the 'assumed' note and q_unit_file=nm must not make it read as nm⁻¹
        m = read_saxs(_without_header(tmp_path, "sphere_r8nm_nm.dat"), q_unit=unit)
        out = write_columns(tmp_path / "export.dat", m)
        back = read_saxs(out)
        assert back.metadata["q_unit_source"] == "header" and back.metadata["q_unit_file"] == "angstrom"
        np.testing.assert_allclose(back.arrays["q_inv_angstrom"], m.arrays["q_inv_angstrom"], rtol=1e-9)
