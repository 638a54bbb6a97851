"""A technique is a folder: a third party's technique (tests/toy_technique/sdl_toy) plugs into sdl
without editing the framework.

`sdl_toy` brings its declaration, reader (with an option), analyser, simulated instrument, sample
contract, world and lab factory. It is registered exactly as an installed distribution would be:
the test writes a `sdl_toy-0.1.dist-info/` (METADATA, entry_points.txt with `[sdl.techniques]` and
`[sdl.labs]`) into a temporary folder and puts that folder and tests/toy_technique on the PYTHONPATH
of `sdl` subprocesses, where importlib.metadata finds the entry points. Nothing under sdl/,
drivers/, simulators/ or pyproject.toml names it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "toy_technique"
FRAMEWORK = ("sdl", "drivers", "simulators")
ENTRY_POINTS = """\
[sdl.techniques]
toy = sdl_toy:TECHNIQUE

[sdl.labs]
toy_lab = sdl_toy.lab:toy_lab
"""


def _env(*paths: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.pop("PYTHONSAFEPATH", None)
    return env


@pytest.fixture(scope="module")
def toy_env(tmp_path_factory) -> dict[str, str]:
    """The environment of an `sdl` process that sees sdl_toy as an installed distribution."""
    site = tmp_path_factory.mktemp("site")
    dist = site / "sdl_toy-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sdl-toy\nVersion: 0.1\n"
                                   "Summary: a toy technique for sdl (tests/toy_technique)\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS, encoding="utf-8")
    (dist / "top_level.txt").write_text("sdl_toy\n", encoding="utf-8")
    return _env(site, TOY)


def sdl(env: dict[str, str], *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdl.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _explain(p: subprocess.CompletedProcess) -> str:
    return f"rc={p.returncode}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}"


def _spectrum(peak_eV: float, *, seed: int = 0, brightness: float = 500.0, n: int = 300):
    """A toy spectrum: Gaussian peak (FWHM 0.2 eV) on a sloping background, Poisson counts."""
    rng = np.random.default_rng(seed)
    e = np.linspace(1.0, 5.0, n)
    expected = brightness * np.exp(-0.5 * ((e - peak_eV) / (0.2 / 2.3548)) ** 2) + 40.0 + 4.0 * e
    counts = rng.poisson(expected).astype(float)
    return e, counts, np.sqrt(np.maximum(counts, 1.0))


def _write_toy(path: Path, e, y, sigma=None, header: str = "# toy") -> Path:
    cols = [e, y] + ([sigma] if sigma is not None else [])
    path.write_text(header + "\n" + "\n".join(" ".join(f"{v:.8g}" for v in row) for row in zip(*cols)) + "\n",
                    encoding="utf-8")
    return path


# ----- the framework was not edited for the toy -------------------------------------------------------


def test_framework_does_not_name_the_toy_technique():
    word = re.compile(r"\btoy\b|sdl_toy|toy_lab|sdl-toy", re.I)
    hits = []
    for pkg in FRAMEWORK:
        for f in sorted((ROOT / pkg).rglob("*")):
            if not f.is_file() or "__pycache__" in f.parts or f.suffix in (".pt", ".npz", ".pyc"):
                continue
            try:
                text = f.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            hits += [f"{f.relative_to(ROOT)}:{i}: {line.strip()}" for i, line in enumerate(text.splitlines(), 1)
                     if word.search(line)]
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    hits += [f"pyproject.toml: {line}" for line in pyproject.splitlines() if word.search(line)]
    assert not hits, "the framework names the toy technique (it must be found by entry point only):\n" + "\n".join(hits)


# ----- the package itself (in this process; no registry involved) -------------------------------------


def test_toy_world_instrument_and_analyser(monkeypatch):
    monkeypatch.syspath_prepend(str(TOY))
    from sdl.measurement import Measurement
    from sdl_toy import TECHNIQUE
    from sdl_toy.analyser import ToyPeakAnalyser
    from sdl_toy.simulator import ToyInstrument, ToySample
    from sdl_toy.world import ToyWorld, peak_eV
    from simulators.world import SynthesisFailed, World

    from sdl.analysis.technique import Technique, load

    assert isinstance(TECHNIQUE, Technique) and TECHNIQUE.name == "toy"
    assert load(TECHNIQUE.analysers["toy_fit"]) is ToyPeakAnalyser
    assert ToyPeakAnalyser.technique == "toy" and ToyPeakAnalyser.name in TECHNIQUE.analysers
    assert [o.flag for o in TECHNIQUE.options] == ["--energy-offset-ev"]

    world = ToyWorld(seed=0)
    assert isinstance(world, World)
    s = world.synthesize({"dopant_pct": 3.0, "anneal_C": 500.0}, "s1")
    assert isinstance(s, ToySample) and world.sample("s1") is s
    assert abs(s.peak_eV - peak_eV(3.0, 500.0)) < 0.03
    with pytest.raises(SynthesisFailed, match="segregated"):
        world.synthesize({"dopant_pct": 9.5, "anneal_C": 880.0}, "s2")
    with pytest.raises(ValueError, match="out of range"):
        world.synthesize({"dopant_pct": 11.0, "anneal_C": 500.0}, "s3")

    # SimulatedInstrument reads the settings' defaults from the constructor: each needs one
    import inspect

    params = inspect.signature(ToyInstrument.__init__).parameters
    assert ToyInstrument.technique == "toy"
    assert all(params[n].default is not inspect.Parameter.empty for n in ToyInstrument.COMMAND_SETTINGS)

    data = ToyInstrument().measure(s, np.random.default_rng(1))
    result = ToyPeakAnalyser().analyse(Measurement(technique="toy", **data))
    d = {x.name: x for x in result.descriptors}
    assert set(d) == {spec.name for spec in TECHNIQUE.descriptors}
    assert all(TECHNIQUE.descriptor(n) is not None for n in d)
    assert abs(d["toy.peak_position_eV"].value - s.peak_eV) < 0.01 and d["toy.peak_position_eV"].trusted
    assert abs(d["toy.peak_width_eV"].value - s.width_eV) < 0.02
    assert set(result.curves) >= {"energy_eV", "intensity", "fit"}

    e, _, _ = _spectrum(3.0)
    flat = Measurement(technique="toy", arrays={"energy_eV": e, "intensity": np.random.default_rng(2).poisson(50.0, e.size).astype(float)})
    out = ToyPeakAnalyser().analyse(flat).descriptors
    assert [x.name for x in out] == ["toy.peak_position_eV"] and out[0].flags == ["ood"] and not out[0].trusted


# ----- registered by entry point, used through the sdl CLI ---------------------------------------------


def test_toy_is_found_only_through_its_entry_points(toy_env, tmp_path):
    p = sdl(toy_env, "analyse", "--help", cwd=tmp_path)
    assert p.returncode == 0, _explain(p)
    assert re.search(r"^\s+toy\s+toy emission spectroscopy", p.stdout, re.M), p.stdout
    assert re.search(r"^\s+saxs\s", p.stdout, re.M) and re.search(r"^\s+pd\s", p.stdout, re.M)

    # the package alone on the path registers nothing: the dist-info's entry points do
    bare = sdl(_env(TOY), "analyse", "--help", cwd=tmp_path)
    assert bare.returncode == 0 and "saxs" in bare.stdout and not re.search(r"^\s+toy\s", bare.stdout, re.M), bare.stdout

    labs = sdl(toy_env, "drivers", "list", cwd=tmp_path)
    assert labs.returncode == 0 and "toy_lab  (sdl_toy.lab:toy_lab)" in labs.stdout, _explain(labs)


def test_analyse_toy_help_shows_the_declared_option(toy_env, tmp_path):
    p = sdl(toy_env, "analyse", "toy", "--help", cwd=tmp_path)
    assert p.returncode == 0, _explain(p)
    assert p.stdout.startswith("usage: sdl analyse toy")
    assert "--energy-offset-ev eV" in p.stdout and "calibration offset" in p.stdout
    assert "--analyser {toy_fit}" in p.stdout and "(.toy)" in p.stdout


def test_analyse_toy_files(toy_env, tmp_path):
    folder = tmp_path / "spectra"
    folder.mkdir()
    _write_toy(folder / "a_peak.toy", *_spectrum(2.70, seed=3))
    e, _, _ = _spectrum(2.70)
    _write_toy(folder / "b_flat.toy", e, np.random.default_rng(4).poisson(60.0, e.size).astype(float))
    _write_toy(folder / "c_not_toy.toy", *_spectrum(2.70, seed=5), header="# something else")
    (folder / "ignored.dat").write_text("1 2\n3 4\n", encoding="utf-8")

    p = sdl(toy_env, "analyse", "toy", str(folder), "--json", cwd=tmp_path)
    assert p.returncode == 0, _explain(p)  # 1 only when every file fails
    records = {Path(r["file"]).name: r for r in map(json.loads, p.stdout.splitlines())}
    assert sorted(records) == ["a_peak.toy", "b_flat.toy", "c_not_toy.toy"]

    peak = records["a_peak.toy"]
    assert peak["analyser"] == "toy_fit", peak
    pos, width = peak["descriptors"]["toy.peak_position_eV"], peak["descriptors"]["toy.peak_width_eV"]
    assert abs(pos["value"] - 2.70) < 0.01 and pos["unit"] == "eV" and 0 < pos["uncertainty"] < 0.01, pos
    assert not pos.get("flags")
    assert abs(width["value"] - 0.2) < 0.02 and width["unit"] == "eV", width
    assert set(peak["descriptors"]) == {"toy.peak_position_eV", "toy.peak_width_eV", "toy.peak_height",
                                        "toy.chi2_reduced"}

    assert records["b_flat.toy"]["descriptors"]["toy.peak_position_eV"]["flags"] == ["ood"]
    assert "not a toy spectrum" in records["c_not_toy.toy"]["error"]

    # the declared reader option reaches the reader
    p = sdl(toy_env, "analyse", "toy", str(folder / "a_peak.toy"), "--json", "--energy-offset-ev", "0.25",
            cwd=tmp_path)
    assert p.returncode == 0, _explain(p)
    shifted = json.loads(p.stdout)["descriptors"]["toy.peak_position_eV"]["value"]
    assert abs(shifted - (pos["value"] + 0.25)) < 1e-6, (shifted, pos["value"])


CAMPAIGN = {
    "name": "toy_peak",
    "description": "a toy phosphor whose emission peak sits at 2.5 eV",
    "lab": {"world": "toy_lab", "seed": 0},
    "parameters": [{"name": "dopant_pct", "type": "float", "bounds": [0, 10], "unit": "%"},
                   {"name": "anneal_C", "type": "float", "bounds": [300, 900], "unit": "degC"}],
    "workflow": [{"name": "synthesis", "instrument": "robot", "action": "synthesize", "timeout_s": 60},
                 {"name": "spectrum", "instrument": "spectrometer", "action": "measure", "technique": "toy",
                  "timeout_s": 60, "settings": {"e_min_eV": 1.0, "e_max_eV": 5.0, "n_points": 300, "exposure_s": 2.0}}],
    "analysis": {"toy": ["toy_fit"]},
    "objectives": [{"descriptor": "toy.peak_position_eV", "goal": "target", "value": 2.5, "tolerance": 0.05}],
    "constraints": [{"descriptor": "toy.peak_width_eV", "op": "<=", "bound": 0.5}],
    "strategy": {"kind": "sobol", "seed": 0, "initial_trials": 2},
    "budget": {"max_experiments": 20, "stop_on_target": False},
}


@pytest.fixture(scope="module")
def toy_campaign(toy_env, tmp_path_factory):
    """`sdl run` of a toy campaign (its own lab id, SQLite store in tmp): (run, store option, cwd)."""
    cwd = tmp_path_factory.mktemp("campaign")
    c = json.loads(json.dumps(CAMPAIGN))
    c["lab"]["id"] = f"toy-{uuid.uuid4().hex[:10]}"
    f = cwd / "toy.yaml"
    f.write_text(yaml.safe_dump(c, sort_keys=False), encoding="utf-8")
    store = ["--store", f"sqlite:///{cwd / 'toy.db'}"]
    run = sdl(toy_env, "run", str(f), "--budget", "4", *store, cwd=cwd, timeout=180)
    return run, store, cwd


def test_toy_campaign_runs_in_its_simulated_lab(toy_env, toy_campaign, monkeypatch):
    run, store, cwd = toy_campaign
    assert run.returncode == 0, _explain(run)
    assert "finished: budget of 4 experiments used" in run.stdout, _explain(run)
    assert re.search(r"objective +toy\.peak_position_eV = [0-9.]+ ± [0-9.]+ eV, target 2\.5 ± 0\.05 eV", run.stdout), run.stdout

    p = sdl(toy_env, "status", "--json", *store, cwd=cwd)
    assert p.returncode == 0, _explain(p)
    rec = json.loads(p.stdout)
    assert rec["campaign"]["name"] == "toy_peak" and rec["campaign"]["status"] == "finished", rec["campaign"]
    assert rec["wanted"] == ["toy.peak_position_eV", "toy.peak_width_eV"]
    assert len(rec["trials"]) == 4
    completed = [t for t in rec["trials"] if t["status"] == "completed"]
    assert len(completed) >= 3, [(t["index"], t["status"], t["failure"]) for t in rec["trials"]]

    monkeypatch.syspath_prepend(str(TOY))
    from sdl_toy.world import fails, peak_eV

    for t in rec["trials"]:
        params = t["parameters"]
        assert set(params) == {"dopant_pct", "anneal_C"}
        if t["status"] != "completed":
            assert fails(**params) and "segregated" in (t["failure"] or ""), t
            continue
        d = t["descriptors"]
        assert set(d) == {"toy.peak_position_eV", "toy.peak_width_eV", "toy.peak_height", "toy.chi2_reduced"}, d
        assert all(x["analyser"] == "toy_fit" and not x["flags"] for x in d.values()), d
        pos = d["toy.peak_position_eV"]
        assert pos["unit"] == "eV" and pos["uncertainty"] > 0
        # what the analyser saw is the hidden world's peak (batch scatter 5 meV)
        assert abs(pos["value"] - peak_eV(**params)) < 0.03, (params, pos)
        assert t["score"] is not None


def test_toy_report_plots_with_the_declared_curve_axes(toy_env, toy_campaign):
    run, store, cwd = toy_campaign
    if run.returncode != 0:
        pytest.skip("the toy campaign did not run (see test_toy_campaign_runs_in_its_simulated_lab)")
    p = sdl(toy_env, "report", "--out", "toy.png", *store, cwd=cwd)
    assert p.returncode == 0, _explain(p)
    png = cwd / "toy.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


# ----- `sdl drivers start` serves a lab known only by its sdl.labs entry point (sdl.runner.lab) ----------


def test_drivers_start_serves_a_third_party_lab(toy_env, tmp_path, mosquitto_url, lab_id):
    import threading

    from sdl.protocol import topic
    from sdl.transport import MqttClient

    states: dict[str, str] = {}
    seen = threading.Event()

    def on_status(t: str, payload: bytes) -> None:
        if payload:
            states[t.split("/")[-2]] = json.loads(payload).get("body", {}).get("state")
            if states.get("robot") == "online" and states.get("spectrometer") == "online":
                seen.set()

    client = MqttClient(mosquitto_url, client_id=f"toy-test-{uuid.uuid4().hex[:6]}").connect()
    client.subscribe(topic(lab_id, "+", "status"), on_status)
    proc = subprocess.Popen([sys.executable, "-m", "sdl.cli", "drivers", "start", "--lab", "toy_lab", "--id", lab_id,
                             "--broker", mosquitto_url], cwd=tmp_path, env=toy_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not seen.is_set() and proc.poll() is None and time.monotonic() < deadline:
            seen.wait(0.2)
        if not seen.is_set():
            if proc.poll() is None:
                proc.kill()
            out, err = proc.communicate(timeout=10)
            pytest.fail(f"`sdl drivers start --lab toy_lab` did not bring robot and spectrometer online "
                        f"(states {states}); rc={proc.returncode}\n{out[-2000:]}\n{err[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for instrument in ("robot", "spectrometer"):  # leave no retained status behind
            client.publish(topic(lab_id, instrument, "status"), b"", retain=True, wait=True)
        client.close()
