"""The CLI as a user runs it: run, status --json, report, export, analyse."""

import csv
import json
from pathlib import Path

import yaml

from sdl.cli import main

ROOT = Path(__file__).parents[1]


def test_run_status_report_export(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = yaml.safe_load((ROOT / "campaigns" / "nanoparticle_size.yaml").read_text())
    d["strategy"].update(kind="sobol", initial_trials=2)
    d["budget"].update(max_experiments=3, stop_on_target=False)
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(d))
    assert main(["run", str(f), "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "trial   0" in out and "finished: budget of 3 experiments used" in out

    assert main(["status", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["campaign"]["status"] == "finished" and len(rec["trials"]) == 3
    assert rec["trials"][0]["parameters"] and "saxs.radius_nm" in rec["wanted"]
    completed = [t for t in rec["trials"] if t["status"] == "completed"]
    assert all("saxs.radius_nm" in t["descriptors"] for t in completed)

    assert main(["report", "--out", "r.png"]) == 0
    png = tmp_path / "r.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    assert main(["export", "--out", "ex"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "ex" / "trials.csv")))
    assert [r["trial"] for r in rows] == ["0", "1", "2"] and "temperature_C" in rows[0]
    assert (tmp_path / "ex" / "descriptors.csv").exists() and (tmp_path / "ex" / "events.csv").exists()
    dats = sorted((tmp_path / "ex" / "measurements").glob("*.dat"))
    assert len(dats) == len(completed) + sum(1 for t in rec["trials"] if t["status"] == "failed" and
                                             "analysis failed" in (t["failure"] or ""))
    if dats:
        from sdl.measurement import read_saxs

        m = read_saxs(dats[0])
        assert len(m.arrays["q_inv_angstrom"]) == 200


def test_resume_finished_campaign_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = yaml.safe_load((ROOT / "campaigns" / "nanoparticle_size.yaml").read_text())
    d["strategy"].update(kind="sobol", initial_trials=1)
    d["budget"].update(max_experiments=2, stop_on_target=False)
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(d))
    assert main(["run", str(f), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["resume", str(f)]) == 0
    assert "already finished" in capsys.readouterr().out


def test_unknown_campaign_and_technique_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["status", "nope"]) == 1
    assert "no campaign" in capsys.readouterr().err
    assert main(["analyse", "xyz", str(tmp_path)]) == 1
    assert "no file reader for technique 'xyz'" in capsys.readouterr().err


def test_analyse_saxs_files_json(tmp_path, capsys):
    data = ROOT / "tests" / "data"
    files = sorted(data.glob("*.dat"))
    assert files, "example SAXS files missing"
    assert main(["analyse", "saxs", str(data), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(records) == len(files)
    for r in records:
        assert "error" in r or {"saxs.model", "saxs.radius_nm"} <= set(r["descriptors"])
    good = [r for r in records if "error" not in r]
    assert good and good[0]["descriptors"]["saxs.radius_nm"]["unit"] == "nm"
