"""Simulated labs: a factory per world, each named by an entry point of the group `sdl.labs` (pyproject.toml).

sdl finds them only through those entry points: `sdl run` starts the campaign's `lab.world` in its
own process and `sdl drivers start --lab NAME` serves one as a process of its own (sdl.runner.lab).
"""

from __future__ import annotations

from drivers.base import Driver

# The robots' hard safety limits (their hardware's envelope), published with their status and
# enforced whatever a campaign asks; the worlds' PARAMETER_SPACE is the chemistry, not the hardware.
HOTPLATE_ROBOT_LIMITS = {"temperature_C": (20.0, 200.0, "degC"), "time_min": (1.0, 240.0, "min"),
                         "precursor_mM": (0.5, 50.0, "mM"), "surfactant_ratio": (0.1, 10.0, "mol/mol")}
FURNACE_ROBOT_LIMITS = {"calcination_temperature_C": (300.0, 1100.0, "degC"), "calcination_time_h": (0.5, 24.0, "h"),
                        "zr_fraction": (0.0, 1.0, "mol/mol")}
COLLOID_ROBOT_LIMITS = {"temperature_C": (20.0, 260.0, "degC"), "time_min": (1.0, 720.0, "min"),
                        "reducer_strength": (0.0, 1.0, "a.u."), "ligand_ratio": (0.02, 50.0, "mol/mol")}


def nanoparticles(lab: str, broker_url: str, *, seed: int = 0, time_scale: float = 0.0) -> list[Driver]:
    """A synthesis robot (`robot`) and a SAXS camera (`saxs`) sharing one simulated nanoparticle world."""
    from drivers.simulated import SimulatedInstrument, SynthesisRobot
    from simulators.saxs.instrument import SaxsInstrument
    from simulators.worlds.nanoparticles import NanoparticleWorld

    world = NanoparticleWorld(seed=seed)
    return [SynthesisRobot(world, lab, broker_url, time_scale=time_scale, limits=HOTPLATE_ROBOT_LIMITS),
            SimulatedInstrument("saxs", SaxsInstrument, world, lab, broker_url, seed=seed, time_scale=time_scale)]


def oxides(lab: str, broker_url: str, *, seed: int = 0, time_scale: float = 0.0) -> list[Driver]:
    """A furnace robot (`robot`: co-precipitation and calcination) and a powder diffractometer
    (`xrd`) sharing one simulated Ce1-xZrxO2 world."""
    from drivers.simulated import SimulatedInstrument, SynthesisRobot
    from simulators.pd.instrument import PdInstrument
    from simulators.worlds.oxides import OxideWorld

    world = OxideWorld(seed=seed)
    return [SynthesisRobot(world, lab, broker_url, time_scale=time_scale, limits=FURNACE_ROBOT_LIMITS),
            SimulatedInstrument("xrd", PdInstrument, world, lab, broker_url, seed=seed, time_scale=time_scale)]


def nanoparticles_two_saxs(lab: str, broker_url: str, *, seed: int = 0, time_scale: float = 0.0) -> list[Driver]:
    """The nanoparticle world with one synthesis robot (`robot`) and two SAXS cameras of different
    speeds: `saxs` (beamline, nominal time) and `saxs_lab` (lab source, 2.5x the instrument time for
    the same data). Made for pipelining: while one sample is measured the next is made."""
    from drivers.simulated import SimulatedInstrument, SynthesisRobot
    from simulators.saxs.instrument import SaxsInstrument
    from simulators.worlds.nanoparticles import NanoparticleWorld

    world = NanoparticleWorld(seed=seed)
    return [SynthesisRobot(world, lab, broker_url, time_scale=time_scale, limits=HOTPLATE_ROBOT_LIMITS),
            SimulatedInstrument("saxs", SaxsInstrument, world, lab, broker_url, seed=seed, time_scale=time_scale),
            SimulatedInstrument("saxs_lab", SaxsInstrument, world, lab, broker_url, seed=seed + 1,
                                time_scale=time_scale, time_factor=2.5)]


def nanoclusters(lab: str, broker_url: str, *, seed: int = 0, time_scale: float = 0.0) -> list[Driver]:
    """A colloid synthesis robot (`robot`: metal salt, reducer and ligand in a heated flask) and a
    total-scattering beamline (`pdf`) sharing one simulated metal-nanocluster world."""
    from drivers.simulated import SimulatedInstrument, SynthesisRobot
    from simulators.pdf.instrument import PdfInstrument
    from simulators.worlds.nanoclusters import NanoclusterWorld

    world = NanoclusterWorld(seed=seed)
    return [SynthesisRobot(world, lab, broker_url, time_scale=time_scale, limits=COLLOID_ROBOT_LIMITS),
            SimulatedInstrument("pdf", PdfInstrument, world, lab, broker_url, seed=seed, time_scale=time_scale)]
