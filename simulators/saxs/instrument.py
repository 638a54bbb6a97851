"""A simulated pinhole SAXS instrument on top of sasmodels.

I(q) in absolute units (cm^-1) from the sample's sasmodels model and parameters (lengths in Å,
SLDs in 1e-6 Å^-2), with polydispersity, pinhole resolution smearing (Gaussian, dq = dq_over_q*q,
one standard deviation), a flat background and Poisson counting noise.

Counting model: the detector annulus of a log-spaced q bin covers a solid angle proportional to
q*dq ~ q^2, so the expected counts in bin i are

    counts_i = I_i * flux * exposure_s * (q_i / q_max)^2

where `flux` is the count rate (s^-1) per cm^-1 of intensity in the outermost bin (it folds in the
beam flux, transmission, sample thickness and detector efficiency). The measured intensity is
counts / (flux * exposure_s * (q_i/q_max)^2) and sigma = sqrt(counts) / (same factor).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

import numpy as np

from simulators.world import stable_seed

__all__ = ["SaxsInstrument", "form_factor_curve", "load_kernel_model", "make_direct_model", "MODELS"]

MODELS = ("sphere", "core_shell_sphere", "cylinder", "ellipsoid")
_LOAD_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def _load(name: str):
    from sasmodels.core import load_model

    return load_model(name, dtype="double", platform="dll")


def load_kernel_model(name: str):
    """The compiled sasmodels kernel model `name`, loaded once per process (load_model is slow)."""
    with _LOAD_LOCK:
        return _load(name)


def make_direct_model(name: str, q: np.ndarray, dq: np.ndarray | float | None = None,
                      slit_length: np.ndarray | float | None = None, slit_width: np.ndarray | float | None = None):
    """A sasmodels DirectModel for model `name` at q (Å^-1) with optional pinhole resolution
    `dq` (Å^-1, one standard deviation; an array like q, or a scalar dq/q fraction), or slit
    resolution (USANS, Kratky cameras): `slit_length` and `slit_width` in Å^-1 (arrays like q or
    scalars; sasmodels.resolution.Slit1D). A slit with a length or width > 0 takes precedence
    over dq."""
    from sasmodels.data import Data1D
    from sasmodels.direct_model import DirectModel

    q = np.asarray(q, dtype=float)
    data = Data1D(x=q, y=np.ones_like(q), dy=np.ones_like(q))

    def broadcast(v):
        return np.zeros_like(q) if v is None else np.abs(np.broadcast_to(np.asarray(v, dtype=float), q.shape)).copy()

    dxl, dxw = broadcast(slit_length), broadcast(slit_width)
    if np.any(dxl > 0) or np.any(dxw > 0):
        data.dx = None
        data.dxl, data.dxw = dxl, dxw
    elif dq is None:
        data.dx = None
    elif np.ndim(dq) == 0:
        data.dx = float(dq) * q if float(dq) > 0 else None
    else:
        dq = np.asarray(dq, dtype=float)
        data.dx = dq if np.any(dq > 0) else None
    return DirectModel(data, load_kernel_model(name))


def form_factor_curve(model: str, q, dq=None, **params) -> np.ndarray:
    """Noise-free I(q) in cm^-1 of sasmodels `model` at q (Å^-1), with sasmodels parameters
    (lengths in Å; `scale`, `background`, SLDs, `*_pd`...). `dq`: optional resolution as in
    make_direct_model. No smearing when dq is None."""
    q = np.asarray(q, dtype=float)
    if q.ndim != 1 or q.size == 0 or np.any(~np.isfinite(q)) or np.any(q <= 0):
        raise ValueError("q must be a non-empty 1-D array of positive, finite values in Å^-1")
    dm = make_direct_model(model, q, dq)
    return np.asarray(dm(**params), dtype=float)


class SaxsInstrument:
    """A pinhole SAXS camera measuring any sample that satisfies `SasSample` (simulators.saxs)."""

    technique = "saxs"
    # settings a command may set, with the accepted range (the camera's hard limits)
    COMMAND_SETTINGS = {"q_min_inv_angstrom": (1e-4, 10.0), "q_max_inv_angstrom": (1e-4, 10.0),
                        "n_points": (10, 100_000), "dq_over_q": (0.0, 1.0), "exposure_s": (1e-3, 86_400.0)}

    def __init__(
        self,
        q_min_inv_angstrom: float = 0.005,
        q_max_inv_angstrom: float = 0.5,
        n_points: int = 200,
        dq_over_q: float = 0.05,
        exposure_s: float = 10.0,
        flux: float = 2.0e5,
        background_cm: float = 0.02,
        overhead_s: float = 30.0,
        seed: int = 0,
    ):
        if not (0 < q_min_inv_angstrom < q_max_inv_angstrom):
            raise ValueError(
                f"need 0 < q_min_inv_angstrom < q_max_inv_angstrom, got {q_min_inv_angstrom}, {q_max_inv_angstrom}"
            )
        if int(n_points) < 10:
            raise ValueError(f"n_points={n_points} too small; need at least 10")
        if dq_over_q < 0 or exposure_s <= 0 or flux <= 0 or background_cm < 0:
            raise ValueError(
                "dq_over_q >= 0, exposure_s > 0, flux > 0 and background_cm >= 0 are required; got "
                f"dq_over_q={dq_over_q}, exposure_s={exposure_s}, flux={flux}, background_cm={background_cm}"
            )
        self.q_min_inv_angstrom = float(q_min_inv_angstrom)
        self.q_max_inv_angstrom = float(q_max_inv_angstrom)
        self.n_points = int(n_points)
        self.dq_over_q = float(dq_over_q)
        self.exposure_s = float(exposure_s)
        self.flux = float(flux)
        self.background_cm = float(background_cm)
        self.overhead_s = float(overhead_s)
        self.seed = int(seed)
        self.q = np.geomspace(self.q_min_inv_angstrom, self.q_max_inv_angstrom, self.n_points)
        self.dq = self.dq_over_q * self.q
        self._local = threading.local()  # DirectModels per thread (kernels hold buffers)

    # -- public -----------------------------------------------------------------------------------
    def counting_factor(self, q: np.ndarray | None = None) -> np.ndarray:
        """Expected counts per cm^-1 of intensity at each q (flux * exposure * relative solid angle)."""
        q = self.q if q is None else np.asarray(q, dtype=float)
        return self.flux * self.exposure_s * (q / self.q_max_inv_angstrom) ** 2

    def expected_intensity(self, sample) -> np.ndarray:
        """Noise-free, resolution-smeared I(q) + background, cm^-1."""
        from simulators.saxs.dataset import converged_pd

        shape, params = _shape_and_params(sample)
        dm = self._direct_model(shape)
        # enough radii in the size average not to alias up to this camera's q_max and its smearing
        pars = converged_pd(shape, params, self.q_max_inv_angstrom * (1 + 3 * self.dq_over_q))
        pars["background"] = self.background_cm + float(params.get("background", 0.0))
        return np.asarray(dm(**pars), dtype=float)

    def measure(self, sample, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """One exposure of `sample` (a simulators.worlds.nanoparticles.Sample, or anything with `shape`
        and `model_params`). Without `rng` the noise is seeded by the instrument seed and the
        sample id. Returns {"arrays": {q_inv_angstrom, intensity, sigma, dq_inv_angstrom},
        "metadata": {...}}; intensity and sigma in cm^-1."""
        if rng is None:
            sid = getattr(sample, "sample_id", "")
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, stable_seed("saxs", sid)]))
        expected = self.expected_intensity(sample)
        factor = self.counting_factor()
        counts = rng.poisson(np.clip(expected, 0.0, None) * factor).astype(float)
        intensity = counts / factor
        sigma = np.sqrt(np.maximum(counts, 1.0)) / factor
        shape, _ = _shape_and_params(sample)
        metadata = {
            "instrument": "simulated pinhole SAXS (sasmodels)",
            "sample_id": getattr(sample, "sample_id", None),
            "q_unit": "1/angstrom",
            "intensity_unit": "1/cm",
            "exposure_s": self.exposure_s,
            "flux": self.flux,
            "dq_over_q": self.dq_over_q,
            "background_cm": self.background_cm,
            "n_points": self.n_points,
            "measure_time_s": self.measure_time_s(),
        }
        return {
            "arrays": {
                "q_inv_angstrom": self.q.copy(),
                "intensity": intensity,
                "sigma": sigma,
                "dq_inv_angstrom": self.dq.copy(),
            },
            "metadata": metadata,
        }

    def measure_time_s(self) -> float:
        """Simulated instrument time of one measurement: exposure plus handling overhead."""
        return self.exposure_s + self.overhead_s

    # -- internals --------------------------------------------------------------------------------
    def _direct_model(self, shape: str):
        cache = getattr(self._local, "models", None)
        if cache is None:
            cache = self._local.models = {}
        if shape not in cache:
            cache[shape] = make_direct_model(shape, self.q, self.dq if self.dq_over_q > 0 else None)
        return cache[shape]


def _shape_and_params(sample) -> tuple[str, dict[str, Any]]:
    try:
        return str(sample.shape), dict(sample.model_params)
    except AttributeError:
        pass
    if isinstance(sample, dict) and "shape" in sample and "model_params" in sample:
        return str(sample["shape"]), dict(sample["model_params"])
    raise TypeError("sample must satisfy simulators.saxs.SasSample: `shape` (a sasmodels model name) and "
                    "`model_params` (dict)")
