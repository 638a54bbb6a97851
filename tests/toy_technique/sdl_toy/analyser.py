"""`toy_fit`: one Gaussian on a linear background, least squares (scipy.optimize.curve_fit)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.optimize import curve_fit

from sdl.analysis.base import AnalysisResult, Descriptor
from sdl.measurement import Measurement

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def peak_model(x, amplitude, centre, sigma, b0, b1):
    return amplitude * np.exp(-0.5 * ((x - centre) / sigma) ** 2) + b0 + b1 * x


class ToyPeakAnalyser:
    name: ClassVar[str] = "toy_fit"
    technique: ClassVar[str] = "toy"

    min_snr = 5.0  # peak height over the noise below which there is no peak (ood)
    max_chi2_reduced = 10.0

    def analyse(self, measurement: Measurement) -> AnalysisResult:
        x, y = measurement.require("energy_eV", "intensity")
        order = np.argsort(x)
        x, y = x[order], y[order]
        sigma = (np.asarray(measurement.arrays["sigma"], dtype=float)[order] if "sigma" in measurement.arrays
                 else np.sqrt(np.maximum(y, 1.0)))
        sigma = np.where(sigma > 0, sigma, np.median(sigma[sigma > 0]) if np.any(sigma > 0) else 1.0)
        curves = {"energy_eV": x, "intensity": y}

        # background from the outer 15 % at each end; the peak is the largest excess over it
        n_edge = max(3, len(x) * 15 // 100)
        edge = np.r_[:n_edge, len(x) - n_edge:len(x)]
        b1, b0 = np.polyfit(x[edge], y[edge], 1)
        excess = y - (b0 + b1 * x)
        smooth = np.convolve(excess, np.ones(5) / 5, mode="same")
        i = int(np.argmax(smooth))
        noise = float(np.median(sigma))
        snr = smooth[i] / noise
        info = {"method": "gaussian + linear background, least squares", "snr": float(snr)}
        if snr < self.min_snr or i < 3 or i > len(x) - 4:
            info["failure"] = f"no peak: largest excess {snr:.1f} x the noise at {x[i]:.3g} eV"
            return AnalysisResult(analyser=self.name, info=info, curves=curves, descriptors=[
                Descriptor(name="toy.peak_position_eV", value=float(x[i]), unit="eV", flags=["ood"],
                           analyser=self.name)])

        half = smooth[i] / 2
        above = np.nonzero(smooth > half)[0]
        width0 = max(float(x[above[-1]] - x[above[0]]) / FWHM_PER_SIGMA, 2 * float(np.median(np.diff(x))))
        p0 = [float(smooth[i]), float(x[i]), width0, float(b0), float(b1)]
        span = float(x[-1] - x[0])
        lo = [0.0, float(x[0]), 1e-3 * span, -np.inf, -np.inf]
        hi = [np.inf, float(x[-1]), span, np.inf, np.inf]
        try:
            p, cov = curve_fit(peak_model, x, y, p0=p0, sigma=sigma, absolute_sigma=True, bounds=(lo, hi))
        except (RuntimeError, ValueError) as exc:
            info["failure"] = f"fit did not converge: {exc}"
            return AnalysisResult(analyser=self.name, info=info, curves=curves, descriptors=[
                Descriptor(name="toy.peak_position_eV", value=float(x[i]), unit="eV", flags=["fit_failed"],
                           analyser=self.name)])
        fit = peak_model(x, *p)
        chi2 = float(np.sum(((y - fit) / sigma) ** 2) / max(len(x) - len(p), 1))
        err = np.sqrt(np.clip(np.diag(cov), 0, None)) * np.sqrt(max(chi2, 1.0))
        flags = ["fit_failed"] if chi2 > self.max_chi2_reduced else []
        curves["fit"] = fit
        info.update(chi2_reduced=chi2, parameters=dict(zip(("amplitude", "centre", "sigma", "b0", "b1"),
                                                             map(float, p))))
        return AnalysisResult(analyser=self.name, info=info, curves=curves, descriptors=[
            Descriptor(name="toy.peak_position_eV", value=float(p[1]), uncertainty=float(err[1]), unit="eV",
                       flags=list(flags), analyser=self.name),
            Descriptor(name="toy.peak_width_eV", value=float(p[2] * FWHM_PER_SIGMA),
                       uncertainty=float(err[2] * FWHM_PER_SIGMA), unit="eV", flags=list(flags), analyser=self.name),
            Descriptor(name="toy.peak_height", value=float(p[0]), uncertainty=float(err[0]), unit="counts",
                       flags=list(flags), analyser=self.name),
            Descriptor(name="toy.chi2_reduced", value=chi2, flags=list(flags), analyser=self.name),
        ])
