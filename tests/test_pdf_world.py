"""The nanocluster world (simulators.worlds.nanoclusters) and the total-scattering instrument
(simulators.pdf.instrument)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulators.pdf import PdfSample
from simulators.pdf import physics as P
from simulators.pdf.instrument import PdfInstrument
from simulators.worlds import nanoclusters as nc

P0 = {"metal": "Pt", "temperature_C": 120.0, "reducer_strength": 0.5, "ligand_ratio": 1.0, "time_min": 60.0}


def test_world_is_deterministic_hides_truth_and_is_measured_like_a_gr_file():
    a = nc.NanoclusterWorld(seed=3).synthesize(P0, "s-001")
    b = nc.NanoclusterWorld(seed=3).synthesize(P0, "s-001")
    c = nc.NanoclusterWorld(seed=3).synthesize(P0, "s-002")
    assert a.truth == b.truth and a.truth != c.truth
    assert "truth" not in a.to_dict() and "components" not in a.to_dict()
    assert isinstance(a, PdfSample)  # the world offers PDF by satisfying the Protocol
    inst = PdfInstrument()
    m1, m2 = inst.measure(a), inst.measure(b)
    assert set(m1["arrays"]) == {"r_angstrom", "G_per_angstrom2"}
    np.testing.assert_array_equal(m1["arrays"]["G_per_angstrom2"], m2["arrays"]["G_per_angstrom2"])
    np.testing.assert_array_equal(m1["arrays"]["r_angstrom"], P.R_GRID)
    md = m1["metadata"]
    assert (md["qmin_inv_angstrom"], md["qmax_inv_angstrom"], md["qdamp_inv_angstrom"]) == (0.8, 24.0, 0.03)
    assert md["wavelength_angstrom"] == 0.1665 and md["composition"] == "Pt"
    # the measurement is the sample's G(r) plus noise: close to the noise-free one, first peak at the bond length
    clean = inst.expected_gr(a)
    g = m1["arrays"]["G_per_angstrom2"]
    assert np.corrcoef(g, clean)[0, 1] > 0.95
    r = P.R_GRID
    win = (r > 2.3) & (r < 3.2)
    assert abs(r[win][np.argmax(g[win])] - a.truth["nn_distance_angstrom"]) < 0.1
    # a longer exposure is less noisy
    long = PdfInstrument(exposure_s=1200.0).measure(a)["arrays"]["G_per_angstrom2"]
    assert np.std(long - clean) < np.std(g - clean)
    assert inst.measure_time_s() > 60 and nc.NanoclusterWorld(0).synthesis_time_s(P0) == 60 * 60 + nc.HANDLING_S


@pytest.mark.parametrize("bad", [
    {**P0, "metal": "Fe"}, {**P0, "temperature_C": 400.0}, {**P0, "reducer_strength": 1.5},
    {**P0, "ligand_ratio": 0.0}, {**P0, "time_min": "60"}, {k: v for k, v in P0.items() if k != "metal"},
    {**P0, "pressure_bar": 1.0},
])
def test_world_rejects_bad_parameters(bad):
    with pytest.raises(ValueError):
        nc.NanoclusterWorld(0).synthesize(bad, "x")


def test_motif_follows_the_size_crossover_and_kinetics():
    """Small clusters are icosahedral, intermediate decahedral, large fcc/octahedral; fast cold
    reduction traps five-fold twinned motifs to larger sizes; disorder falls and bond length
    grows towards the bulk with size."""
    w = nc.NanoclusterWorld(0)
    small = w.expected({**P0, "reducer_strength": 0.9, "ligand_ratio": 10.0, "time_min": 5.0, "temperature_C": 80.0})
    mid = w.expected(P0)
    large = w.expected({**P0, "temperature_C": 230.0, "reducer_strength": 0.1, "ligand_ratio": 0.3, "time_min": 600.0})
    assert small["n_atoms"] < mid["n_atoms"] < large["n_atoms"]
    assert small["motif"] == "icosahedral" and mid["motif"] == "decahedral" and large["motif"] == "fcc"
    assert small["adp_angstrom2"] > large["adp_angstrom2"] and small["expansion"] < large["expansion"] < 1.0
    faceted = w.expected({**P0, "temperature_C": 190.0, "reducer_strength": 0.05, "ligand_ratio": 3.0, "time_min": 600.0})
    assert faceted["f_octahedral"] > faceted["f_fcc"]
    # at the same size, kinetic trapping (strong reducer, low temperature) keeps more five-fold twinned clusters
    rng = np.random.default_rng(0)
    T, s = rng.uniform(20, 250, 20_000), rng.uniform(0, 1, 20_000)
    L, t = np.exp(rng.uniform(math.log(0.2), math.log(20), 20_000)), np.exp(rng.uniform(0, math.log(600), 20_000))
    r = nc.response(np.zeros(20_000, int), T, s, L, t)
    same_size = (r["n_atoms"] > 700) & (r["n_atoms"] < 1000) & (r["f_amorphous"] < 0.01) & (r["f_bulk_fcc"] < 0.01)
    fivefold = r["f_icosahedral"] + r["f_decahedral"]
    kinetic = 1.2 * (s - 0.5) - (T - 120) / 120
    assert same_size.sum() > 50 and np.corrcoef(kinetic[same_size], fivefold[same_size])[0, 1] > 0.5
    # gold's ico->deca crossover is at smaller sizes than palladium's
    assert nc.N_ICO_DECA["Au"] < nc.N_ICO_DECA["Pd"]


def test_failures_aggregation_and_other_structures():
    w = nc.NanoclusterWorld(0)
    with pytest.raises(nc.SynthesisFailed, match="reduced"):
        w.synthesize({**P0, "temperature_C": 20.0, "reducer_strength": 0.0, "time_min": 1.0}, "cold")
    with pytest.raises(nc.SynthesisFailed, match="ligand"):
        w.synthesize({**P0, "ligand_ratio": 0.05}, "bare")
    with pytest.raises(KeyError, match="bare"):
        w.sample("bare")
    partly = w.synthesize({**P0, "ligand_ratio": 0.09}, "partly")
    assert partly.truth["motif_fractions"].get("bulk_fcc", 0) > 0.5 and partly.truth["motif"] == "other"
    assert any(c.motif == "bulk_fcc" for c in partly.components)
    glassy = w.expected({**P0, "temperature_C": 22.0, "reducer_strength": 1.0, "time_min": 30.0})
    assert glassy["motif"] == "amorphous"


def test_target_is_a_small_reachable_region():
    f = nc.target_fraction(n=40_000)
    assert 0.005 < f < 0.1
    w = nc.NanoclusterWorld(0)
    hit = {"metal": "Pt", "temperature_C": 100.0, "reducer_strength": 0.5, "ligand_ratio": 3.0, "time_min": 60.0}
    e = w.expected(hit)
    assert e["meets_target"] and e["f_decahedral"] >= 0.7 and 2.0 <= e["diameter_nm"] <= 2.5
    s = w.synthesize(hit, "t-1")
    assert s.truth["motif"] == "decahedral" and 1.8 < s.truth["diameter_nm"] < 2.7
    assert not w.expected({**hit, "metal": "Au"})["meets_target"]


def test_lab_factory_and_entry_point():
    from importlib.metadata import entry_points

    from drivers.labs import COLLOID_ROBOT_LIMITS, nanoclusters

    assert any(ep.name == "nanoclusters" and ep.value == "drivers.labs:nanoclusters"
               for ep in entry_points(group="sdl.labs"))
    robot, pdf = nanoclusters("t", "mqtt://127.0.0.1:1", seed=0)
    assert (robot.instrument, pdf.instrument, pdf.technique) == ("robot", "pdf", "pdf")
    assert set(pdf.settings) == set(PdfInstrument.COMMAND_SETTINGS)
    lo, hi, _ = COLLOID_ROBOT_LIMITS["temperature_C"]
    assert lo <= nc.PARAMETER_SPACE["temperature_C"]["bounds"][0] and hi >= nc.PARAMETER_SPACE["temperature_C"]["bounds"][1]
    assert math.isclose(robot.safety_limits()["temperature_C"].max, hi)


def test_lab_synthesizes_and_measures_over_mqtt(embedded_broker, lab_id):
    """The nanoclusters lab on a broker: the robot makes a batch, the beamline returns its G(r) as a
    pdf Measurement; the robot refuses a recipe outside its hard limits."""
    import queue

    from drivers.labs import nanoclusters
    from sdl.measurement import Measurement
    from sdl.protocol import Envelope, command, topic
    from sdl.transport import MqttClient

    drivers = [d.start() for d in nanoclusters(lab_id, embedded_broker.url, seed=0)]
    replies: queue.Queue = queue.Queue()
    client = MqttClient(embedded_broker.url).connect()
    try:
        client.subscribe(topic(lab_id, "+", "reply"), lambda t, p: replies.put(Envelope.from_bytes(p)))

        def ask(instrument, env):
            client.publish(topic(lab_id, instrument, "cmd"), env.to_bytes(), wait=True)
            while True:
                r = replies.get(timeout=30)
                if r.correlation_id == env.correlation_id and r.kind in ("result", "error"):
                    return r

        r = ask("robot", command("synthesize", correlation_id="s1", sample_id="pt-1", params=P0))
        assert r.kind == "result", r.body
        r = ask("pdf", command("measure", correlation_id="m1", sample_id="pt-1",
                               params={"qmax_inv_angstrom": 20.0, "exposure_s": 30}))
        assert r.kind == "result", r.body
        m = Measurement.from_wire(r.body["measurement"])
        rr, g = m.require("r_angstrom", "G_per_angstrom2")
        assert m.technique == "pdf" and rr.size == P.R_GRID.size and np.all(np.isfinite(g))
        assert m.metadata["qmax_inv_angstrom"] == 20.0 and m.metadata["sample_id"] == "pt-1"
        hot = ask("robot", command("synthesize", correlation_id="s2", sample_id="pt-2",
                                   params={**P0, "temperature_C": 300.0}))
        assert hot.kind == "error" and "temperature_C" in hot.body["message"]
    finally:
        client.close()
        for d in drivers:
            d.stop()
