"""The toy technique's physics: the sample contract and the simulated spectrometer."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ToySample(Protocol):
    """What the toy spectrometer needs from a sample: where its emission peak is, how wide (FWHM)
    and how strong (counts per second at the maximum). A world offers `toy` by making such samples."""

    sample_id: str
    peak_eV: float
    width_eV: float
    brightness_cps: float


class ToyInstrument:
    """A spectrometer measuring I(E) of any `ToySample`: Gaussian peak + sloping background, Poisson noise."""

    technique = "toy"
    COMMAND_SETTINGS = {"e_min_eV": (0.1, 20.0), "e_max_eV": (0.1, 20.0), "n_points": (20, 20_000),
                        "exposure_s": (0.01, 3600.0)}

    def __init__(self, e_min_eV: float = 1.0, e_max_eV: float = 5.0, n_points: int = 400, exposure_s: float = 2.0,
                 background_cps: float = 20.0, overhead_s: float = 5.0, seed: int = 0):
        if not 0 < e_min_eV < e_max_eV:
            raise ValueError(f"need 0 < e_min_eV < e_max_eV, got {e_min_eV}, {e_max_eV}")
        self.energy = np.linspace(float(e_min_eV), float(e_max_eV), int(n_points))
        self.exposure_s, self.background_cps, self.overhead_s = float(exposure_s), float(background_cps), float(overhead_s)
        self.seed = int(seed)

    def expected_counts(self, sample: ToySample) -> np.ndarray:
        s = float(sample.width_eV) / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        rate = (sample.brightness_cps * np.exp(-0.5 * ((self.energy - sample.peak_eV) / s) ** 2)
                + self.background_cps * (1.0 + 0.1 * (self.energy - self.energy[0])))
        return rate * self.exposure_s

    def measure(self, sample: ToySample, rng: np.random.Generator | None = None) -> dict[str, Any]:
        if not isinstance(sample, ToySample):
            raise TypeError("sample must satisfy sdl_toy.simulator.ToySample (peak_eV, width_eV, brightness_cps)")
        rng = rng or np.random.default_rng(self.seed)
        counts = rng.poisson(self.expected_counts(sample)).astype(float)
        return {"arrays": {"energy_eV": self.energy.copy(), "intensity": counts,
                           "sigma": np.sqrt(np.maximum(counts, 1.0))},
                "metadata": {"instrument": "simulated toy spectrometer", "exposure_s": self.exposure_s,
                             "measure_time_s": self.measure_time_s()}}

    def measure_time_s(self) -> float:
        return self.exposure_s + self.overhead_s
