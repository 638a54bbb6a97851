"""The CLI as a user runs it: run, status (text and --json), report, export, analyse, schema; the
hints it prints, its errors, and a run that fails before its first trial."""

import csv
import json
import re
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
    store = ["--store", "sqlite:///runs.db"]  # not the default: every hint must carry it
    assert main(["run", str(f), "--seed", "1", *store]) == 0
    out = capsys.readouterr().out
    assert "trial   0" in out and "finished: budget of 3 experiments used" in out
    assert "score (lower is better) = |saxs.radius_nm - 8| / 0.5" in out  # the legend, once
    assert "score=" not in out and "-> score " in out
    assert re.search(r"^  target (met at experiment [1-3] \(trial [0-2]\)|not met in 3 experiments)$", out, re.M)
    assert re.search(r"^  best: (trial [0-2] \(score|no trial met every constraint; closest: trial [0-2])", out, re.M)
    assert re.search(r"^    objective +saxs\.radius_nm = [0-9.]+ ± [0-9.]+ nm, target 8 ± 0\.5 nm +(met|not met)$", out, re.M)
    assert re.search(r"^    constraint +saxs\.polydispersity = [0-9.]+ <= 0\.1 +(ok|violated)$", out, re.M)
    assert re.search(r"^    made with +temperature_C = [0-9.]+ degC$", out, re.M)
    cid = re.search(r"^campaign (\S+):", out, re.M).group(1)
    assert f"see `sdl status {cid} --store sqlite:///runs.db`, `sdl report {cid} --store sqlite:///runs.db`" in out

    assert main(["status", *store]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"campaign {cid} (finished: budget of 3 experiments used)")
    assert "best:" in text and "made with" in text and "score=" not in text

    assert main(["status", "--json", *store]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["campaign"]["status"] == "finished" and len(rec["trials"]) == 3
    assert rec["trials"][0]["parameters"] and "saxs.radius_nm" in rec["wanted"]
    completed = [t for t in rec["trials"] if t["status"] == "completed"]
    assert all("saxs.radius_nm" in t["descriptors"] for t in completed)
    assert rec["outcome"]["headline"] in text and rec["outcome"]["experiments"] == 3
    assert rec["best"] is None or rec["best"]["index"] == rec["outcome"]["best_trial"]

    assert main(["report", "--out", "r.png", *store]) == 0
    png = tmp_path / "r.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    assert main(["export", "--out", "ex", *store]) == 0
    rows = list(csv.DictReader(open(tmp_path / "ex" / "trials.csv")))
    assert [r["trial"] for r in rows] == ["0", "1", "2"] and "temperature_C [degC]" in rows[0]
    assert "saxs.radius_nm [nm]" in rows[0] and "saxs.model" in rows[0]
    assert (tmp_path / "ex" / "descriptors.csv").exists() and (tmp_path / "ex" / "events.csv").exists()
    dats = sorted((tmp_path / "ex" / "measurements").glob("*.dat"))
    assert len(dats) == len(completed) + sum(1 for t in rec["trials"] if t["status"] == "failed" and
                                             "analysis failed" in (t["failure"] or ""))
    if dats:
        from sdl.techniques.saxs.reader import read_saxs

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
    assert "unknown technique 'xyz'; known: ['pd', 'pdf', 'saxs']" in capsys.readouterr().err


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


# ----- stored campaigns, read back ------------------------------------------------------------------


def test_status_says_the_outcome_in_words(tmp_path, capsys):
    from tests.test_outcome import MET, stored_campaign

    store, cid = stored_campaign(tmp_path, MET)
    assert main(["status", "--store", store.url]) == 0
    out = capsys.readouterr().out
    lines = [" ".join(line.split()) for line in out.splitlines()]
    # stored as running, but no orchestrator holds it (tests/test_store_safety.py has the live case)
    assert f"campaign {cid} (stopped: no orchestrator; `sdl resume {cid} --store {store.url}` continues it)" in lines
    assert "trials: 3 completed, 1 failed" in lines
    assert "2 failed robot jammed" in lines
    assert ("1 completed radius_nm=7.94±0.05 polydispersity=0.140±0.004 model=sphere(0.55) score 1.52; "
            "violated: polydispersity 0.140 > 0.1") in lines
    assert any(line.startswith("3 completed radius_nm=8.150±0.020 [saxs_fit; saxs_ml: 8.10±0.05[ood]]")
               and line.endswith("score 0.3; target met") for line in lines)
    assert "target met at experiment 4 (trial 3)" in lines
    assert "constraint saxs.polydispersity = 0.071 <= 0.1 ok" in lines
    assert "saxs.model = sphere (p = 0.97) by saxs_fit; saxs_ml gave rod (p = 0.55) [ood]" in lines
    assert "score=" not in out and "model=rod" not in out.split("target met at")[1]


def test_per_trial_line_says_which_analyser_gave_which(tmp_path, capsys):
    from sdl.runner.console import ConsoleReporter
    from tests.test_outcome import MET, nanoparticle_campaign, stored_campaign

    store, cid = stored_campaign(tmp_path, MET)
    rep = ConsoleReporter()
    rep.campaign = nanoparticle_campaign(store.url)
    rep.trial_finished(store.trials(cid)[3], None, MET[3])
    out = capsys.readouterr().out
    assert "model=sphere(0.97) [saxs_fit; saxs_ml: rod(0.55)[ood]]" in out
    assert "-> score 0.3; target met" in out and "score=" not in out
    assert out.startswith("trial   3 temperature_C=80.51 precursor_mM=5.123 surfactant_ratio=1 "
                          "reducing_agent=citrate time_min=30\n")


def test_end_of_run_hint_names_the_store_only_when_not_the_default(capsys):
    from sdl.runner import Summary
    from sdl.runner.console import ConsoleReporter

    def hint(url):
        ConsoleReporter().finished(Summary("c-1", "finished", "budget used", 0, 0, 0, None, None, {}, store_url=url))
        return capsys.readouterr().out.splitlines()[-1].strip()

    assert hint("sqlite:///sdl.db") == "see `sdl status c-1`, `sdl report c-1`"
    assert hint("sqlite:///my runs.db") == "see `sdl status c-1 --store 'sqlite:///my runs.db'`, " \
                                           "`sdl report c-1 --store 'sqlite:///my runs.db'`"


def test_cli_default_store_is_the_store_default():
    from sdl import cli, store

    assert cli.DEFAULT_STORE == store.DEFAULT_STORE == "sqlite:///sdl.db"


def test_run_that_fails_before_its_first_trial(tmp_path, capsys, monkeypatch, embedded_broker, lab_id):
    """No driver answers: the campaign is stored as failed with the reason, and the commands
    without a campaign argument pass over it to the latest campaign with trials."""
    from sdl.runner import loop
    from tests.test_outcome import MET, stored_campaign

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loop, "STATUS_WAIT_S", 0.3)
    store, earlier = stored_campaign(tmp_path, MET)
    url = store.url
    assert main(["run", str(ROOT / "campaigns" / "nanoparticle_size.yaml"), "--external-lab", "--broker",
                 embedded_broker.url, "--lab-id", lab_id, "--store", url, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no driver online for instrument(s) ['robot', 'saxs']" in err
    # the world the campaign file names, although --external-lab cleared it for the run
    assert f"`sdl drivers start --lab nanoparticles --id {lab_id} --broker {embedded_broker.url}`" in err
    assert "WORLD" not in err
    ghost = store.campaigns()[0]
    assert ghost.id != earlier and ghost.status == "failed" and "no driver online" in ghost.stop_reason
    assert [e.kind for e in store.events(ghost.id)][-1] == "campaign_failed"
    assert not store.trials(ghost.id)

    assert main(["status", "--store", url]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"campaign {earlier} ") and f"newer without any: {ghost.id} (failed: no driver" in err
    assert main(["status", "--json", "--store", url]) == 0
    assert json.loads(capsys.readouterr().out)["campaign"]["id"] == earlier
    assert main(["status", ghost.id, "--store", url]) == 0  # asked for by id: shown, with its reason
    assert "(failed: no driver online" in capsys.readouterr().out

    assert main(["report", ghost.id, "--store", url, "--out", "g.png"]) == 1
    assert f"campaign {ghost.id} has no trials (failed: no driver online" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()
    assert main(["export", "--store", url, "--out", "ex"]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "ex" / "trials.csv")))) == 4  # the earlier campaign's
    assert json.loads((tmp_path / "ex" / "campaign.json").read_text())["id"] == earlier


def test_external_lab_without_a_broker_fails_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(ROOT / "campaigns" / "nanoparticle_size.yaml"), "--external-lab"]) == 1
    err = capsys.readouterr().err
    assert "--external-lab" in err and "--broker mqtt://" in err
    assert not (tmp_path / "sdl.db").exists()  # nothing stored, no ghost campaign


def test_option_errors_name_the_option_typed(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = str(ROOT / "campaigns" / "nanoparticle_size.yaml")
    assert main(["run", f, "--budget", "0", "--in-flight", "0", "--lab-id", "a/b"]) == 1
    err = capsys.readouterr().err
    assert "--budget 0: " in err and "--in-flight 0: " in err and "--lab-id a/b: must be letters" in err
    assert "max_experiments" not in err and "max_in_flight" not in err and "lab.id" not in err
    assert "invalid campaign" not in err  # the file is fine

    from tests.test_outcome import MET, stored_campaign

    store, cid = stored_campaign(tmp_path, MET)
    assert main(["resume", cid, "--store", store.url, "--budget", "0"]) == 1
    err = capsys.readouterr().err
    assert f"invalid value given for campaign {cid}" in err and "--budget 0: " in err and "max_experiments" not in err


def test_schema_is_the_campaign_json_schema(tmp_path, capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"name", "parameters", "workflow", "objectives"} <= set(schema["required"])
    assert "parameters" in schema["properties"] and "FloatParameter" in schema["$defs"]
    assert "unit" in schema["$defs"]["FloatParameter"]["properties"]
    assert schema["additionalProperties"] is False  # unknown keys are errors, as in `sdl validate`
    assert main(["schema", "--out", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text()) == schema


def test_analyse_plot_writes_one_png_per_file(tmp_path, capsys):
    """`sdl analyse TECHNIQUE PATH --plot DIR`: one non-empty PNG per file, for saxs and for pd."""
    import numpy as np

    from simulators.pd.instrument import PdInstrument
    from simulators.worlds.oxides import OxideWorld

    data = ROOT / "tests" / "data"
    files = sorted(data.glob("*.dat"))
    out = tmp_path / "plots"
    assert main(["analyse", "saxs", str(data), "--plot", str(out)]) == 0
    text = capsys.readouterr().out
    for f in files:
        png = out / f"{f.stem}.png"
        assert f"wrote {png}" in text and png.stat().st_size > 10_000
    pd_dir = tmp_path / "pd"
    pd_dir.mkdir()
    world, inst = OxideWorld(seed=1), PdInstrument(seed=1)
    d = inst.measure(world.synthesize({"zr_fraction": 0.6, "calcination_temperature_C": 800.0, "calcination_time_h": 4.0,
                                       "atmosphere": "air"}, "t-1"), np.random.default_rng(1))
    a = d["arrays"]
    np.savetxt(pd_dir / "oxide.xy", np.column_stack([a["two_theta_deg"], a["intensity"], a["sigma"]]),
               header="wavelength = 1.5406 A\n2theta intensity sigma")
    assert main(["analyse", "pd", str(pd_dir), "--plot", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert f"wrote {out / 'oxide.png'}" in captured.err  # --json keeps stdout to the JSON records
    assert (out / "oxide.png").stat().st_size > 10_000
    assert len(list(out.glob("*.png"))) == len(files) + 1
