"""Simulated instruments of the nanoparticle lab: a synthesis robot and a SAXS camera.

Both share one `NanoparticleWorld` (the "physical" samples move from robot to camera). A
measurement's noise is seeded by the world seed and the sample id, so the same campaign seed
gives the same data, re-sent commands included. If the camera is asked about a sample the world
does not hold (the lab process restarted while the sample sat in the rack), the world rebuilds
it deterministically from the recipe in the command's sample record.
"""

from __future__ import annotations

from typing import Any

from drivers.base import ActionFailed, Driver, Handler
from sdl.errors import ProtocolError
from sdl.measurement import Measurement
from sdl.protocol import CommandBody
from simulators.nanoparticles import NanoparticleWorld, SynthesisFailed
from simulators.saxs import SaxsInstrument

SAXS_SETTINGS = {"q_min_inv_angstrom": float, "q_max_inv_angstrom": float, "n_points": int, "exposure_s": float,
                 "dq_over_q": float}


class SynthesisRobot(Driver):
    """Action `synthesize`: params are the recipe; the result names the sample made."""

    def __init__(self, world: NanoparticleWorld, lab: str, broker_url: str, *, time_scale: float = 0.0):
        super().__init__("robot", lab, broker_url, time_scale=time_scale)
        self.world = world

    def actions(self) -> dict[str, Handler]:
        return {"synthesize": self.synthesize}

    def synthesize(self, cmd: CommandBody) -> dict[str, Any]:
        if not cmd.sample_id:
            raise ProtocolError("synthesize needs a sample_id (the label for the vial)")
        try:
            duration = self.simulate_time(self.world.synthesis_time_s(cmd.params))
            sample = self.world.synthesize(cmd.params, cmd.sample_id)
        except ValueError as exc:
            raise ProtocolError(f"bad recipe: {exc}") from None
        except SynthesisFailed as exc:
            raise ActionFailed("synthesis_failed", f"synthesis of {cmd.sample_id} failed: {exc.reason}") from None
        return {"sample_id": sample.sample_id, "sample": sample.to_dict(), "duration_s": duration}


class SaxsDriver(Driver):
    """Action `measure`: params are instrument settings; the result carries the Measurement."""

    def __init__(self, world: NanoparticleWorld, lab: str, broker_url: str, *, seed: int = 0, time_scale: float = 0.0):
        super().__init__("saxs", lab, broker_url, time_scale=time_scale)
        self.world, self.seed = world, seed

    def actions(self) -> dict[str, Handler]:
        return {"measure": self.measure}

    def measure(self, cmd: CommandBody) -> dict[str, Any]:
        unknown = set(cmd.params) - set(SAXS_SETTINGS)
        if unknown:
            raise ProtocolError(f"unknown SAXS setting(s) {sorted(unknown)}; accepted: {sorted(SAXS_SETTINGS)}")
        try:
            settings = {k: SAXS_SETTINGS[k](v) for k, v in cmd.params.items()}
            instrument = SaxsInstrument(seed=self.seed, **settings)
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"bad SAXS settings {cmd.params}: {exc}") from None
        sample = self._sample(cmd)
        duration = self.simulate_time(instrument.measure_time_s())
        data = instrument.measure(sample)
        m = Measurement(technique="saxs", arrays=data["arrays"], metadata={**data["metadata"], "sample_id": sample.sample_id})
        return {"measurement": m.to_wire(), "duration_s": duration}

    def _sample(self, cmd: CommandBody):
        if not cmd.sample_id:
            raise ProtocolError("measure needs the sample_id of the sample to measure")
        try:
            return self.world.sample(cmd.sample_id)
        except KeyError:
            recipe = (cmd.sample or {}).get("params")
            if not recipe:
                raise ActionFailed("unknown_sample", f"no sample {cmd.sample_id!r} in the SAXS sample changer") from None
            try:
                return self.world.synthesize(recipe, cmd.sample_id)
            except (SynthesisFailed, ValueError) as exc:
                raise ActionFailed("unknown_sample", f"sample {cmd.sample_id!r} cannot be found: {exc}") from None
