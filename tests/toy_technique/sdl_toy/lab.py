"""The toy lab (entry-point group `sdl.labs`: `toy_lab = sdl_toy.lab:toy_lab`): a synthesis robot
and a toy spectrometer sharing one ToyWorld, built from sdl's generic simulated drivers."""

from __future__ import annotations


def toy_lab(lab: str, broker_url: str, *, seed: int = 0, time_scale: float = 0.0) -> list:
    from drivers.simulated import SimulatedInstrument, SynthesisRobot
    from sdl_toy.simulator import ToyInstrument
    from sdl_toy.world import ToyWorld

    world = ToyWorld(seed=seed)
    return [SynthesisRobot(world, lab, broker_url, time_scale=time_scale),
            SimulatedInstrument("spectrometer", ToyInstrument, world, lab, broker_url, seed=seed,
                                time_scale=time_scale)]
