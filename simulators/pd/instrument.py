"""The simulated powder diffractometer: measures any sample that satisfies `PdSample`
(simulators.pd), with the artefacts of a real scan."""

from __future__ import annotations

from typing import Any

import numpy as np

from simulators.pd import physics as _pd
from simulators.world import stable_seed


class PdInstrument:
    """A simulated powder diffractometer. Default: Bragg–Brentano with Cu Kα1 (1.5406 Å),
    10–80° 2θ in 0.02° steps; `PdInstrument.synchrotron()` gives a 0.1665 Å transmission set-up.

    Artefacts: Caglioti instrument profile, Chebyshev background (air scatter, fluorescence),
    Poisson counting noise, sample displacement (random, sd `displacement_sd_mm`) and zero shift."""

    technique = "pd"
    # settings a command may set, with the accepted range (the diffractometer's hard limits)
    COMMAND_SETTINGS = {"wavelength_angstrom": (0.05, 3.0), "two_theta_min": (0.1, 170.0),
                        "two_theta_max": (0.1, 170.0), "step": (1e-4, 5.0), "time_per_step_s": (1e-4, 3600.0),
                        "counts_max": (1.0, 1e9)}

    def __init__(
        self,
        wavelength_angstrom: float = _pd.WAVELENGTH_CU_KA1,
        two_theta_min: float = 10.0,
        two_theta_max: float = 80.0,
        step: float = 0.02,
        caglioti_uvw_deg2: tuple[float, float, float] = (0.004, -0.002, 0.003),
        counts_max: float = 20_000.0,
        background_fraction: float = 0.04,
        displacement_sd_mm: float = 0.03,
        zero_shift_deg: float = 0.0,
        radius_mm: float = 240.0,
        polarisation: str = "unpolarised",
        time_per_step_s: float = 0.25,
        overhead_s: float = 60.0,
        seed: int = 0,
    ):
        if not (0.05 <= wavelength_angstrom <= 3.0):
            raise ValueError(f"wavelength_angstrom={wavelength_angstrom} outside 0.05–3.0 Å")
        if not (0 < two_theta_min < two_theta_max < 170):
            raise ValueError(f"need 0 < two_theta_min < two_theta_max < 170 deg, got {two_theta_min}, {two_theta_max}")
        if not (0 < step < (two_theta_max - two_theta_min) / 10):
            raise ValueError(f"step={step} deg must be positive and give at least 10 points")
        if counts_max <= 0 or background_fraction < 0 or displacement_sd_mm < 0:
            raise ValueError("counts_max > 0, background_fraction >= 0 and displacement_sd_mm >= 0 are required")
        if polarisation not in ("unpolarised", "synchrotron"):
            raise ValueError(f"polarisation={polarisation!r}; use 'unpolarised' or 'synchrotron'")
        self.wavelength_angstrom = float(wavelength_angstrom)
        self.two_theta_min = float(two_theta_min)
        self.two_theta_max = float(two_theta_max)
        self.step = float(step)
        self.caglioti_uvw_deg2 = tuple(float(v) for v in caglioti_uvw_deg2)
        self.counts_max = float(counts_max)
        self.background_fraction = float(background_fraction)
        self.displacement_sd_mm = float(displacement_sd_mm)
        self.zero_shift_deg = float(zero_shift_deg)
        self.radius_mm = float(radius_mm)
        self.polarisation = polarisation
        self.time_per_step_s = float(time_per_step_s)
        self.overhead_s = float(overhead_s)
        self.seed = int(seed)
        n = int(round((self.two_theta_max - self.two_theta_min) / self.step)) + 1
        self.two_theta = self.two_theta_min + self.step * np.arange(n)

    @classmethod
    def synchrotron(cls, **kw) -> "PdInstrument":
        """A high-energy (0.1665 Å) transmission powder beamline, 1–8.5° 2θ in 0.004° steps."""
        base = dict(wavelength_angstrom=_pd.WAVELENGTH_SYNCHROTRON, two_theta_min=1.0, two_theta_max=8.5, step=0.004,
                    caglioti_uvw_deg2=(0.0, 0.0, 4e-5), counts_max=100_000.0, background_fraction=0.03,
                    displacement_sd_mm=0.0, polarisation="synchrotron", time_per_step_s=0.005, overhead_s=20.0)
        base.update(kw)
        return cls(**base)

    def profile(self, displacement_mm: float = 0.0) -> _pd.Profile:
        return _pd.Profile(wavelength_angstrom=self.wavelength_angstrom, caglioti_uvw_deg2=self.caglioti_uvw_deg2,
                           zero_shift_deg=self.zero_shift_deg, displacement_mm=displacement_mm,
                           radius_mm=self.radius_mm, polarisation=self.polarisation)

    def expected_intensity(self, sample, displacement_mm: float = 0.0, background_coeffs=None) -> np.ndarray:
        comps = sample.components
        prof = self.profile(displacement_mm)
        peaks = _pd.simulate(self.two_theta, comps, prof)
        if background_coeffs is None:
            background_coeffs = (1.0, -0.45, 0.15)
        bkg = _pd.chebyshev_background(self.two_theta, background_coeffs)
        return peaks + self.background_fraction * float(peaks.max()) * bkg / max(float(bkg.max()), 1e-12)

    def measure(self, sample, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """One scan of `sample` (a simulators.worlds.oxides.Sample, or anything with `components`).
        Without `rng` the noise is seeded by the instrument seed and the sample id."""
        if rng is None:
            sid = getattr(sample, "sample_id", "")
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, stable_seed("pd", sid)]))
        disp = float(rng.normal(0.0, self.displacement_sd_mm)) if self.displacement_sd_mm > 0 else 0.0
        expected = self.expected_intensity(sample, disp)
        intensity, sigma = _pd.add_poisson_noise(expected, self.counts_max, rng)
        metadata = {
            "instrument": "simulated powder diffractometer",
            "sample_id": getattr(sample, "sample_id", None),
            "wavelength_angstrom": self.wavelength_angstrom,
            "radiation": "Cu Ka1" if abs(self.wavelength_angstrom - 1.5406) < 1e-3 else "synchrotron",
            "caglioti_uvw_deg2": list(self.caglioti_uvw_deg2),
            "polarisation": self.polarisation,
            "goniometer_radius_mm": self.radius_mm,
            "intensity_unit": "counts (scaled)",
            "measure_time_s": self.measure_time_s(),
        }
        return {"arrays": {"two_theta_deg": self.two_theta.copy(), "intensity": intensity, "sigma": sigma},
                "metadata": metadata}

    def measure_time_s(self) -> float:
        """Simulated instrument time: scan steps × time per step + sample change overhead."""
        return self.two_theta.size * self.time_per_step_s + self.overhead_s
