"""A toy world: doped phosphors whose emission peak moves with the dopant and the anneal.

Hidden response: peak_eV = 3.4 - 0.12 * dopant_pct + 0.0008 * (anneal_C - 600) (+ 5 meV batch
scatter); heavy doping annealed hot segregates and makes nothing (SynthesisFailed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from simulators.world import SynthesisFailed, World, check_params, stable_seed

PARAMETER_SPACE: dict[str, dict[str, Any]] = {
    "dopant_pct": {"type": "float", "bounds": (0.0, 10.0), "log_scale": False, "unit": "%"},
    "anneal_C": {"type": "float", "bounds": (300.0, 900.0), "log_scale": False, "unit": "°C"},
}
BATCH_SCATTER_EV = 0.005


def peak_eV(dopant_pct: float, anneal_C: float) -> float:
    """The noise-free peak position (for tests; the loop only sees measurements)."""
    return 3.4 - 0.12 * dopant_pct + 0.0008 * (anneal_C - 600.0)


def fails(dopant_pct: float, anneal_C: float) -> bool:
    return dopant_pct > 9.0 and anneal_C > 850.0


@dataclass
class ToyPhosphor:
    sample_id: str
    params: dict[str, Any]
    peak_eV: float
    width_eV: float
    brightness_cps: float

    def to_dict(self) -> dict[str, Any]:
        return {"sample_id": self.sample_id, "params": dict(self.params), "made": True}


class ToyWorld(World):
    def synthesis_time_s(self, params: dict[str, Any]) -> float:
        check_params(params, PARAMETER_SPACE)
        return 600.0

    def synthesize(self, params: dict[str, Any], sample_id: str) -> ToyPhosphor:
        p = check_params(params, PARAMETER_SPACE)
        if fails(p["dopant_pct"], p["anneal_C"]):
            raise SynthesisFailed("dopant segregated: above 9 % dopant annealed above 850 °C the phosphor falls apart", sample_id)
        g = np.random.default_rng(np.random.SeedSequence([self.seed, stable_seed("toy", sample_id)])).standard_normal(2)
        return self._keep(ToyPhosphor(
            sample_id=sample_id, params=p,
            peak_eV=peak_eV(p["dopant_pct"], p["anneal_C"]) + BATCH_SCATTER_EV * float(g[0]),
            width_eV=0.15 + 0.01 * p["dopant_pct"],
            brightness_cps=400.0 * float(np.exp(0.1 * g[1])),
        ))
