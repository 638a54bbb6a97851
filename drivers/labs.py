"""Simulated labs: a factory per world (entry-point group `sdl.labs`) and `run_lab` to serve one
as its own process (`sdl drivers start --lab NAME`)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Callable

from drivers.base import Driver

log = logging.getLogger("sdl.drivers")


def nanoparticles(lab: str, broker_url: str, *, seed: int = 0, time_scale: float = 0.0) -> list[Driver]:
    """A synthesis robot (`robot`) and a SAXS camera (`saxs`) sharing one simulated nanoparticle world."""
    from drivers.simulated import SimulatedInstrument, SynthesisRobot
    from simulators.saxs.instrument import SaxsInstrument
    from simulators.worlds.nanoparticles import NanoparticleWorld

    world = NanoparticleWorld(seed=seed)
    return [SynthesisRobot(world, lab, broker_url, time_scale=time_scale),
            SimulatedInstrument("saxs", SaxsInstrument, world, lab, broker_url, seed=seed, time_scale=time_scale)]


def oxides(lab: str, broker_url: str, *, seed: int = 0, time_scale: float = 0.0) -> list[Driver]:
    """A furnace robot (`robot`: co-precipitation and calcination) and a powder diffractometer
    (`xrd`) sharing one simulated Ce1-xZrxO2 world."""
    from drivers.simulated import SimulatedInstrument, SynthesisRobot
    from simulators.pd.instrument import PdInstrument
    from simulators.worlds.oxides import OxideWorld

    world = OxideWorld(seed=seed)
    return [SynthesisRobot(world, lab, broker_url, time_scale=time_scale),
            SimulatedInstrument("xrd", PdInstrument, world, lab, broker_url, seed=seed, time_scale=time_scale)]


def nanoparticles_two_saxs(lab: str, broker_url: str, *, seed: int = 0, time_scale: float = 0.0) -> list[Driver]:
    """The nanoparticle world with one synthesis robot (`robot`) and two SAXS cameras of different
    speeds: `saxs` (beamline, nominal time) and `saxs_lab` (lab source, 2.5x the instrument time for
    the same data). Made for pipelining: while one sample is measured the next is made."""
    from drivers.simulated import SimulatedInstrument, SynthesisRobot
    from simulators.saxs.instrument import SaxsInstrument
    from simulators.worlds.nanoparticles import NanoparticleWorld

    world = NanoparticleWorld(seed=seed)
    return [SynthesisRobot(world, lab, broker_url, time_scale=time_scale),
            SimulatedInstrument("saxs", SaxsInstrument, world, lab, broker_url, seed=seed, time_scale=time_scale),
            SimulatedInstrument("saxs_lab", SaxsInstrument, world, lab, broker_url, seed=seed + 1,
                                time_scale=time_scale, time_factor=2.5)]


FACTORIES: dict[str, Callable[..., list[Driver]]] = {"nanoparticles": nanoparticles, "oxides": oxides,
                                                     "nanoparticles_two_saxs": nanoparticles_two_saxs}


def run_lab(name: str, lab: str, broker_url: str, *, seed: int = 0, time_scale: float = 0.0,
            stop: threading.Event | None = None) -> None:
    """Start a simulated lab's drivers and serve until SIGINT/SIGTERM (or `stop` is set), then stop
    them cleanly: each publishes its retained "offline" status and disconnects."""
    from sdl.errors import ConfigError

    if name not in FACTORIES:
        raise ConfigError(f"unknown simulated lab {name!r}; known: {sorted(FACTORIES)}")
    drivers = FACTORIES[name](lab, broker_url, seed=seed, time_scale=time_scale)
    stop = stop or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    started: list[Driver] = []
    try:
        for d in drivers:
            d.start()
            started.append(d)
        log.info("lab %r serving %s on %s", lab, [d.instrument for d in drivers], broker_url)
        while not stop.wait(0.5):  # a timed wait lets the signal handler run promptly
            pass
    finally:
        for d in reversed(started):
            d.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
