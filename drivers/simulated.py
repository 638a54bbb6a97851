"""Simulated instruments: a synthesis robot and a measuring instrument around any simulated world.

A world (simulators/) makes samples (`synthesize(params, sample_id)`, `synthesis_time_s(params)`,
`sample(sample_id)`); an instrument class measures them (`measure(sample) -> {"arrays", "metadata"}`,
`measure_time_s()`, constructor keywords = its settings, plus `seed`). Robot and instrument share
the world: the "physical" sample moves from one to the other. Noise is seeded by the world seed
and the sample id, so the same campaign seed gives the same data, re-sent commands included. If
an instrument is asked about a sample the world does not hold (the lab process restarted while
the sample sat in the rack), the world rebuilds it deterministically from the recipe in the
command's sample record.
"""

from __future__ import annotations

import inspect
from typing import Any

from drivers.base import ActionFailed, Driver, Handler
from sdl.errors import ProtocolError
from sdl.measurement import Measurement
from sdl.protocol import CommandBody


class SynthesisRobot(Driver):
    """Action `synthesize`: params are the recipe; the result names the sample made."""

    def __init__(self, world: Any, failure: type[Exception], lab: str, broker_url: str, *,
                 instrument: str = "robot", time_scale: float = 0.0):
        super().__init__(instrument, lab, broker_url, time_scale=time_scale)
        self.world, self.failure = world, failure

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
        except self.failure as exc:
            reason = getattr(exc, "reason", str(exc))
            raise ActionFailed("synthesis_failed", f"synthesis of {cmd.sample_id} failed: {reason}") from None
        return {"sample_id": sample.sample_id, "sample": sample.to_dict(), "duration_s": duration}


class SimulatedInstrument(Driver):
    """Action `measure`: params are instrument settings (the instrument class's keywords);
    the result carries the Measurement of `technique`."""

    def __init__(self, instrument: str, technique: str, world: Any, instrument_cls: type, lab: str,
                 broker_url: str, *, seed: int = 0, time_scale: float = 0.0):
        super().__init__(instrument, lab, broker_url, time_scale=time_scale)
        self.technique, self.world, self.instrument_cls, self.seed = technique, world, instrument_cls, seed
        sig = inspect.signature(instrument_cls.__init__)
        self.settings = {n: p.default for n, p in sig.parameters.items() if n not in ("self", "seed")
                         and p.default is not inspect.Parameter.empty}

    def actions(self) -> dict[str, Handler]:
        return {"measure": self.measure}

    def measure(self, cmd: CommandBody) -> dict[str, Any]:
        unknown = set(cmd.params) - set(self.settings)
        if unknown:
            raise ProtocolError(f"unknown {self.instrument} setting(s) {sorted(unknown)}; accepted: {sorted(self.settings)}")
        try:
            settings = {k: _like(self.settings[k], v) for k, v in cmd.params.items()}
            instrument = self.instrument_cls(seed=self.seed, **settings)
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"bad {self.instrument} settings {cmd.params}: {exc}") from None
        sample = self._sample(cmd)
        duration = self.simulate_time(instrument.measure_time_s())
        data = instrument.measure(sample)
        m = Measurement(technique=self.technique, arrays=data["arrays"],
                        metadata={**data["metadata"], "sample_id": sample.sample_id})
        return {"measurement": m.to_wire(), "duration_s": duration}

    def _sample(self, cmd: CommandBody):
        if not cmd.sample_id:
            raise ProtocolError("measure needs the sample_id of the sample to measure")
        try:
            return self.world.sample(cmd.sample_id)
        except KeyError:
            recipe = (cmd.sample or {}).get("params")
            if not recipe:
                raise ActionFailed("unknown_sample", f"no sample {cmd.sample_id!r} at the {self.instrument}") from None
            try:
                return self.world.synthesize(recipe, cmd.sample_id)
            except Exception as exc:  # the world's own failure type, or a bad recipe
                raise ActionFailed("unknown_sample", f"sample {cmd.sample_id!r} cannot be found: {exc}") from None


def _like(default: Any, value: Any) -> Any:
    """`value` converted to the type of the setting's default (JSON has no tuples or int/float split)."""
    if isinstance(default, bool) or default is None:
        return value
    if isinstance(default, tuple):
        return tuple(float(v) for v in value)
    return type(default)(value)
