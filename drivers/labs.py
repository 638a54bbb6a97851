"""Simulated labs: a factory per world (entry-point group `sdl.labs`) and `run_lab` to serve one
as its own process (`sdl drivers start --lab NAME`)."""

from __future__ import annotations

import signal
import threading

from drivers.base import Driver


def nanoparticles(lab: str, broker_url: str, *, seed: int = 0, time_scale: float = 0.0) -> list[Driver]:
    """A synthesis robot and a SAXS camera (`saxs`) sharing one simulated nanoparticle world."""
    from drivers.simulated import SimulatedInstrument, SynthesisRobot
    from simulators.nanoparticles import NanoparticleWorld, SynthesisFailed
    from simulators.saxs import SaxsInstrument

    world = NanoparticleWorld(seed=seed)
    return [SynthesisRobot(world, SynthesisFailed, lab, broker_url, time_scale=time_scale),
            SimulatedInstrument("saxs", "saxs", world, SaxsInstrument, lab, broker_url, seed=seed,
                                time_scale=time_scale)]


FACTORIES = {"nanoparticles": nanoparticles}


def run_lab(name: str, lab: str, broker_url: str, *, seed: int = 0, time_scale: float = 0.0) -> None:
    """Start a simulated lab's drivers and serve until SIGINT/SIGTERM, then stop them cleanly."""
    drivers = FACTORIES[name](lab, broker_url, seed=seed, time_scale=time_scale)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    for d in drivers:
        d.start()
    try:
        stop.wait()
    finally:
        for d in drivers:
            d.stop()
