"""Simulated drivers: a synthesis robot and a measuring instrument around any simulated world.

A world (simulators/) makes samples (`synthesize(params, sample_id)`, raising
`simulators.world.SynthesisFailed` when the recipe makes nothing; `synthesis_time_s(params)`,
`sample(sample_id)`); an instrument class (simulators/<technique>/instrument.py) measures them
(`measure(sample, rng) -> {"arrays", "metadata"}`, `measure_time_s()`, constructor keywords = its
settings, plus `seed`; class attributes `technique` and `COMMAND_SETTINGS`). Robot and
instrument share the world: the "physical" sample moves from one to the other.

Noise is reproducible: each measurement draws from `SeedSequence([seed, hash(technique,
sample_id, k)])`, where k counts the distinct commands that measured this sample before (0 for
the first). The same campaign seed therefore gives the same data, a re-sent command (same
`correlation_id`) gets the same data even if it is executed again, and measuring a sample twice
gives two independent noise draws, as on a real instrument. (The correlation id itself is not
hashed: it contains the campaign id, which differs between two runs of the same campaign.)

If an instrument is asked about a sample the world does not hold (the lab process restarted while
the sample sat in the rack), the world rebuilds it deterministically from the recipe in the
command's sample record.

Safety limits: a robot's are its own (`limits=`, the hardware's envelope: what the hot plate or
furnace can do), not the world's chemistry; an instrument's are its class's COMMAND_SETTINGS. Both
are published with the status and enforced before a command is queued (drivers.base.Driver.check).
"""

from __future__ import annotations

import inspect
import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from drivers.base import ActionFailed, Driver, Handler
from sdl.errors import ProtocolError
from sdl.measurement import Measurement
from sdl.protocol import CommandBody, Limit, limits_from
from simulators.world import SynthesisFailed, stable_seed


class SynthesisRobot(Driver):
    """Action `synthesize`: params are the recipe; the result names the sample made. `limits`:
    the robot's hard safety limits, {param: (lo, hi[, unit])}, refused whatever the campaign asks."""

    def __init__(self, world: Any, lab: str, broker_url: str, *, instrument: str = "robot", time_scale: float = 0.0,
                 limits: dict[str, Any] | None = None):
        super().__init__(instrument, lab, broker_url, time_scale=time_scale)
        self.world = world
        self._limits = limits_from(limits)

    def actions(self) -> dict[str, Handler]:
        return {"synthesize": self.synthesize}

    def safety_limits(self) -> dict[str, Limit]:
        return dict(self._limits)

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


class SimulatedInstrument(Driver):
    """Action `measure` on any simulated instrument class (simulators/<technique>/): params are the
    settings the class declares in `COMMAND_SETTINGS` (name -> accepted (lo, hi)); the result
    carries the Measurement of the class's `technique`. `time_factor` > 1 makes a slower copy of
    the instrument (e.g. a lab source: same data, longer to collect)."""

    def __init__(self, instrument: str, instrument_cls: type, world: Any, lab: str, broker_url: str, *,
                 seed: int = 0, time_scale: float = 0.0, time_factor: float = 1.0):
        super().__init__(instrument, lab, broker_url, time_scale=time_scale)
        if time_factor <= 0:
            raise ValueError(f"time_factor must be > 0, got {time_factor}")
        self.technique, self.world, self.instrument_cls, self.seed = instrument_cls.technique, world, instrument_cls, seed
        self.time_factor = time_factor  # instrument time per nominal time (e.g. a weaker source: > 1)
        sig = inspect.signature(instrument_cls.__init__)
        defaults = {n: p.default for n, p in sig.parameters.items() if n not in ("self", "seed")
                    and p.default is not inspect.Parameter.empty}
        self.limits: dict[str, tuple[float, float]] = dict(getattr(instrument_cls, "COMMAND_SETTINGS", {}))
        self.settings = {n: defaults[n] for n in self.limits} if self.limits else defaults
        self._instruments: OrderedDict[tuple, Any] = OrderedDict()  # settings -> instrument (kernels are slow to build)
        self._draws: dict[str, int] = {}  # sample_id -> distinct measurement commands so far
        self._draw_of: OrderedDict[str, int] = OrderedDict()  # correlation_id -> its k
        self._lock = threading.Lock()

    def actions(self) -> dict[str, Handler]:
        return {"measure": self.measure}

    def safety_limits(self) -> dict[str, Limit]:
        return {name: Limit(min=lo, max=hi) for name, (lo, hi) in self.limits.items()}

    def check(self, cmd: CommandBody) -> None:
        numbers = {k: v for k, v in cmd.params.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        super().check(cmd.model_copy(update={"params": numbers}))  # ranges, the limit named in the reply
        self._settings(cmd.params)  # names and types, in the instrument's own words

    def measure(self, cmd: CommandBody) -> dict[str, Any]:
        instrument = self._instrument(self._settings(cmd.params))
        sample = self._sample(cmd)
        duration = self.simulate_time(instrument.measure_time_s() * self.time_factor)
        data = instrument.measure(sample, self._rng(cmd.sample_id))
        m = Measurement(technique=self.technique, arrays=data["arrays"],
                        metadata={**data["metadata"], "sample_id": sample.sample_id})
        return {"measurement": m.to_wire(), "duration_s": duration}

    # ----- helpers ----------------------------------------------------------------------------
    def _settings(self, params: dict[str, Any]) -> dict[str, Any]:
        unknown = set(params) - set(self.settings)
        if unknown:
            raise ProtocolError(f"unknown {self.instrument} setting(s) {sorted(unknown)}; accepted: {sorted(self.settings)}")
        out = {}
        for name, value in params.items():
            default = self.settings[name]
            try:
                v = _like(default, value)
            except (TypeError, ValueError):
                raise ProtocolError(f"{self.instrument} setting {name}={value!r} is not a "
                                    f"{type(default).__name__} (default {default!r})") from None
            if isinstance(v, float) and not math.isfinite(v):
                raise ProtocolError(f"{self.instrument} setting {name}={value!r} must be a finite number")
            if isinstance(default, int) and not isinstance(default, bool) and not isinstance(v, int):
                raise ProtocolError(f"{self.instrument} setting {name}={value!r} must be a whole number")
            if name in self.limits:
                lo, hi = self.limits[name]
                if not lo <= v <= hi:
                    raise ProtocolError(f"{self.instrument} setting {name}={value!r} out of range; accepted {lo:g} to {hi:g}")
            out[name] = v
        return out

    def _instrument(self, settings: dict[str, Any]):
        key = tuple(sorted(settings.items()))
        inst = self._instruments.get(key)
        if inst is None:
            try:
                inst = self.instrument_cls(seed=self.seed, **settings)
            except (TypeError, ValueError) as exc:
                raise ProtocolError(f"bad {self.instrument} settings {settings}: {exc}") from None
            self._instruments[key] = inst
            while len(self._instruments) > 16:
                self._instruments.popitem(last=False)
        return inst

    def _rng(self, sample_id: str) -> np.random.Generator:
        cid = self.current.correlation_id if self.current is not None else None
        with self._lock:
            k = self._draw_of.get(cid) if cid else None
            if k is None:
                k = self._draws.get(sample_id, 0)
                self._draws[sample_id] = k + 1
                if cid:
                    self._draw_of[cid] = k
                    while len(self._draw_of) > 100_000:
                        self._draw_of.popitem(last=False)
        return np.random.default_rng(np.random.SeedSequence([self.seed, stable_seed(self.technique, sample_id, k)]))

    def _sample(self, cmd: CommandBody):
        if not cmd.sample_id:
            raise ProtocolError("measure needs the sample_id of the sample to measure")
        try:
            return self.world.sample(cmd.sample_id)
        except KeyError:
            recipe = (cmd.sample or {}).get("params")
            if not recipe:
                raise ActionFailed("unknown_sample", f"no sample {cmd.sample_id!r} at the {self.instrument}: it was "
                                   "never synthesised in this lab, or its synthesis failed") from None
            try:
                return self.world.synthesize(recipe, cmd.sample_id)
            except Exception as exc:  # the world's own failure type, or a bad recipe
                raise ActionFailed("unknown_sample", f"sample {cmd.sample_id!r} cannot be found: {exc}") from None


def _like(default: Any, value: Any) -> Any:
    """`value` converted to the type of the setting's default (JSON has no tuples or int/float split)."""
    if default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TypeError(value)
        return value
    if isinstance(value, (bool, dict, list)) and not isinstance(default, tuple):
        raise TypeError(value)
    if isinstance(default, tuple):
        return tuple(float(v) for v in value)
    if isinstance(default, int) and isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(value)
        return value if value != int(value) else int(value)  # 200.0 is fine, 200.5 is reported
    return type(default)(value)
