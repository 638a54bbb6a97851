"""Reading powder patterns from the field's plain column files (.xy, .xye, .dat, .chi, ...)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from sdl.errors import AnalysisError
from sdl.measurement import Measurement, read_columns

_WL_RE = re.compile(r"(wavelength|lambda|λ|wl)[^0-9]{0,20}([0-9]*\.?[0-9]+)\s*(nm|å|a|angstrom)?", re.I)
_Q_RE = re.compile(r"(^|[^a-z])(q|q_inv_angstrom)([^a-z]|$)|1\s*/\s*(å|a|nm)|å⁻¹|nm⁻¹", re.I)
_TT_RE = re.compile(r"2\s*-?\s*theta|2θ|tth|two_theta", re.I)


def read_pd(path: str | Path, wavelength_angstrom: float | None = None, x_unit: str | None = None,
            q_unit: str | None = None) -> Measurement:
    """A powder pattern from columns x, I[, sigma]. x is 2θ (degrees) or Q (Å⁻¹, or nm⁻¹ if the
    header says so), from `x_unit` ('2theta', 'q', 'q_nm'), else the header, else 2θ is assumed.
    The wavelength comes from the argument, else a header line such as 'wavelength = 1.5406'
    (Å; nm is converted). Both axes are returned when the wavelength is known. `q_unit`
    ('angstrom' or 'nm', as `sdl analyse --q-unit` passes it) means the x column is Q in that unit."""
    if q_unit is not None and x_unit is None:
        if q_unit not in ("angstrom", "nm"):
            raise AnalysisError(f"q_unit {q_unit!r} not understood; use 'angstrom' or 'nm'")
        x_unit = "q" if q_unit == "angstrom" else "q_nm"
    data, header = read_columns(path)
    text = " ".join(header)
    meta: dict[str, Any] = {"source": str(path), "header": header[:20]}
    lam = wavelength_angstrom
    if lam is None:
        m = _WL_RE.search(text)
        if m:
            lam = float(m.group(2)) * (10.0 if (m.group(3) or "").lower() == "nm" else 1.0)
    unit = (x_unit or "").lower() or None
    if unit is None:
        if _TT_RE.search(text):
            unit = "2theta"
        elif _Q_RE.search(text):
            unit = "q_nm" if re.search(r"nm\s*\^?-?1|1\s*/\s*nm|nm⁻¹", text, re.I) else "q"
        else:
            unit = "2theta"
            meta["assumed"] = ("x column is 2θ in degrees (the header names no unit; if it is Q, pass "
                              "`--q-unit angstrom` or `--q-unit nm` (sdl analyse) or add a header line such as "
                              "`# q (1/A) I` or `# q (1/nm) I`)")
    if unit not in ("2theta", "q", "q_nm"):
        raise AnalysisError(f"x_unit {unit!r} not understood; use '2theta', 'q' (Å⁻¹) or 'q_nm' (nm⁻¹)")
    x = data[:, 0]
    arrays: dict[str, np.ndarray] = {"intensity": data[:, 1]}
    if data.shape[1] >= 3:
        arrays["sigma"] = data[:, 2]
    if lam is not None:
        meta["wavelength_angstrom"] = float(lam)
    if unit == "2theta":
        arrays["two_theta_deg"] = x
        if lam is not None:
            arrays["q_inv_angstrom"] = 4 * np.pi * np.sin(np.radians(x) / 2) / lam
    else:
        q = x / (10.0 if unit == "q_nm" else 1.0)
        arrays["q_inv_angstrom"] = q
        if lam is not None:
            s = q * lam / (4 * np.pi)
            if np.all(np.abs(s) <= 1):
                arrays["two_theta_deg"] = np.degrees(2 * np.arcsin(s))
    return Measurement(technique="pd", arrays=arrays, metadata=meta)
