"""The simulated total-scattering instrument: a rapid-acquisition PDF beamline measuring any sample
that satisfies `PdfSample` (simulators.pdf), reduced to G(r) the way PDFgetX3 does."""

from __future__ import annotations

from typing import Any

import numpy as np

from simulators.pdf import physics as _pdf
from simulators.world import stable_seed


class PdfInstrument:
    """A simulated RA-PDF set-up: 0.1665 Å (74.5 keV) X-rays on an area detector, the colloid in a
    glass capillary with its solvent measured separately and subtracted.

    Artefacts (simulators.pdf.physics.Acquisition): counting noise on I(Q) from the exposure
    (`count_rate` counts/s per Q point of the sample's self-scattering at Q → 0), Compton
    scattering, the solvent and capillary background (`background_level` × the sample's
    self-scattering) subtracted with a random relative error (sd `background_error_sd`), a
    normalisation error (sd `normalisation_error_sd`), PDFgetX3's ad-hoc correction (`rpoly`),
    Qmin/Qmax truncation and the instrument's Q resolution `qdamp`. Output: G(r) on R_GRID (Å⁻²)
    with the PDFgetX3 header's numbers as metadata."""

    technique = "pdf"
    # settings a command may set, with the accepted range (the beamline's hard limits)
    COMMAND_SETTINGS = {"qmin_inv_angstrom": (0.1, 5.0), "qmax_inv_angstrom": (5.0, _pdf.Q_LIMIT),
                        "exposure_s": (0.1, 3600.0)}

    def __init__(
        self,
        qmin_inv_angstrom: float = 0.8,
        qmax_inv_angstrom: float = 24.0,
        exposure_s: float = 60.0,
        qdamp_inv_angstrom: float = 0.03,
        wavelength_angstrom: float = 0.1665,
        count_rate: float = 2000.0,
        background: str = "water",
        background_level: float = 1.5,
        background_error_sd: float = 0.01,
        normalisation_error_sd: float = 0.01,
        rpoly_angstrom: float = 0.9,
        overhead_s: float = 60.0,
        seed: int = 0,
    ):
        if not (0.0 <= qmin_inv_angstrom < qmax_inv_angstrom - 2.0):
            raise ValueError(f"need 0 <= qmin_inv_angstrom < qmax_inv_angstrom - 2, got {qmin_inv_angstrom}, "
                             f"{qmax_inv_angstrom} Å⁻¹")
        if not (qmax_inv_angstrom <= _pdf.Q_LIMIT):
            raise ValueError(f"qmax_inv_angstrom={qmax_inv_angstrom} above the model's {_pdf.Q_LIMIT} Å⁻¹")
        if exposure_s <= 0 or count_rate <= 0 or qdamp_inv_angstrom < 0 or background_level < 0:
            raise ValueError("exposure_s > 0, count_rate > 0, qdamp_inv_angstrom >= 0 and background_level >= 0 "
                             f"are required; got {exposure_s}, {count_rate}, {qdamp_inv_angstrom}, {background_level}")
        _pdf.background_shape(background, np.array([1.0]))  # names the known shapes if unknown
        self.qmin_inv_angstrom = float(qmin_inv_angstrom)
        self.qmax_inv_angstrom = float(qmax_inv_angstrom)
        self.exposure_s = float(exposure_s)
        self.qdamp_inv_angstrom = float(qdamp_inv_angstrom)
        self.wavelength_angstrom = float(wavelength_angstrom)
        self.count_rate = float(count_rate)
        self.background = background
        self.background_level = float(background_level)
        self.background_error_sd = float(background_error_sd)
        self.normalisation_error_sd = float(normalisation_error_sd)
        self.rpoly_angstrom = float(rpoly_angstrom)
        self.overhead_s = float(overhead_s)
        self.seed = int(seed)

    def acquisition(self, rng: np.random.Generator | None = None) -> _pdf.Acquisition:
        """The measurement's Acquisition; with `rng` the subtraction errors are drawn, else zero."""
        g = rng.standard_normal(2) if rng is not None else np.zeros(2)
        return _pdf.Acquisition(
            qmin=self.qmin_inv_angstrom, qmax=self.qmax_inv_angstrom, qdamp=self.qdamp_inv_angstrom,
            counts=self.count_rate * self.exposure_s if rng is not None else None, background=self.background,
            background_level=self.background_level, background_error=float(self.background_error_sd * g[0]),
            rpoly=self.rpoly_angstrom, normalisation_error=float(self.normalisation_error_sd * g[1]),
            wavelength=self.wavelength_angstrom)

    def expected_gr(self, sample) -> np.ndarray:
        """Noise-free G(r) (Å⁻²) on R_GRID, with exact background subtraction."""
        comps, shell = _components_and_shell(sample)
        return _pdf.gr(comps, _pdf.R_GRID, acquisition=self.acquisition(None), shell=shell)

    def measure(self, sample, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """One exposure of `sample` (anything with `components` and `shell`, see PdfSample). Without
        `rng` the noise is seeded by the instrument seed and the sample id. Returns {"arrays":
        {r_angstrom, G_per_angstrom2}, "metadata": {qmin/qmax/qdamp_inv_angstrom,
        wavelength_angstrom, composition, rpoly_angstrom, ...}}, as the PDF reader gives a .gr file."""
        if rng is None:
            sid = getattr(sample, "sample_id", "")
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, stable_seed("pdf", sid)]))
        comps, shell = _components_and_shell(sample)
        g = _pdf.gr(comps, _pdf.R_GRID, acquisition=self.acquisition(rng), shell=shell, rng=rng)
        metal = max(comps, key=lambda c: c.fraction).element
        metadata = {
            "instrument": "simulated RA-PDF beamline (Debye equation, PDFgetX3-like reduction)",
            "sample_id": getattr(sample, "sample_id", None),
            "qmin_inv_angstrom": self.qmin_inv_angstrom,
            "qmax_inv_angstrom": self.qmax_inv_angstrom,
            "qdamp_inv_angstrom": self.qdamp_inv_angstrom,
            "wavelength_angstrom": self.wavelength_angstrom,
            "rpoly_angstrom": self.rpoly_angstrom,
            "composition": metal,
            "exposure_s": self.exposure_s,
            "g_source": "simulated",
            "measure_time_s": self.measure_time_s(),
        }
        return {"arrays": {"r_angstrom": _pdf.R_GRID.copy(), "G_per_angstrom2": g}, "metadata": metadata}

    def measure_time_s(self) -> float:
        """Simulated instrument time: exposure plus the sample change."""
        return self.exposure_s + self.overhead_s


def _components_and_shell(sample) -> tuple[list[_pdf.ClusterComponent], _pdf.Shell | None]:
    try:
        comps = list(sample.components)
    except AttributeError:
        raise TypeError("sample must satisfy simulators.pdf.PdfSample: `components` (ClusterComponents) and "
                        "`shell`") from None
    if not comps or not all(isinstance(c, _pdf.ClusterComponent) for c in comps):
        raise TypeError("sample.components must be a non-empty list of simulators.pdf.physics.ClusterComponent")
    return comps, getattr(sample, "shell", None)
