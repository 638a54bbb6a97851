"""Reading pair distribution functions: PDFgetX3 `.gr` files, plain r/G columns, and total-scattering
I(Q) (`.xye`, `.chi`, `.iq`; or S(Q) `.sq`, F(Q) `.fq`) from which sdl computes G(r) itself.

G(r) from I(Q) (`g_from_iq`, `g_from_fq`): what sdl does, and how it differs from PDFgetX3.

1. The self-scattering (and any smooth residual background) is estimated as one baseline
   b(Q) = ⟨f²⟩(Q)·(a + cQ): ⟨f²⟩ from the Waasmaier–Kirfel form factors of the composition (the
   header's `composition`, or --composition), else that of the common metal (GUESS_ELEMENTS) whose
   baseline fits best; a and c by least squares over [Qmin, Qmax], so b follows the high-Q
   asymptote I(Q) → N⟨f²⟩ and the mean of the oscillations below.
2. S(Q) − 1 = (I − b)/b (for one element ⟨f²⟩ = ⟨f⟩²; for alloys the Laue term ⟨f²⟩ − ⟨f⟩² is
   folded into the baseline), F(Q) = Q[S(Q) − 1].
3. G(r) = (2/π) ∫_{Qmin}^{Qmax} F(Q) sin(Qr) dQ (trapezoid on the measured Q points), r from
   0.5 to 30 Å in 0.01 Å steps, no window (termination ripples are what the analyser was trained on).

PDFgetX3 instead divides by ⟨f⟩² and removes a polynomial of degree ~Qmax·rpoly/π from F(Q) ("ad
hoc corrections"); a baseline that flexible also eats the small-angle rise of a nanocluster and the
first peaks (tried: correlation with the exact G(r) of a 147-atom Pt icosahedron fell from 0.995 with
the linear factor to 0.95–0.97 with degree 4–8). Both leave the absolute
scale of G(r) approximate (sdl: b also absorbs Compton scattering and a flat background, so
amplitudes can differ by tens of per cent at low Q); peak positions, widths and relative heights —
what pdf_ml and its refinement use (the refinement fits a scale) — agree. No absorption,
polarisation or multiple-scattering correction is made: give background-subtracted I(Q) from a
reduction program (pyFAI) for best results.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from sdl.errors import AnalysisError
from sdl.measurement import Measurement, read_columns

RECIPROCAL_SUFFIXES = (".xye", ".chi", ".iq", ".sq", ".fq")
R_OUT = np.arange(0.5, 30.0 + 1e-9, 0.01)  # Å: the r grid of a G(r) sdl computes from I(Q)
GUESS_ELEMENTS = ("Au", "Pt", "Pd", "Ag", "Cu", "Ni", "Co", "Fe")  # form-factor shapes tried without a composition
_KV = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*[=:]\s*(.*?)\s*$")
_TT = re.compile(r"2\s*-?\s*th(eta)?|2θ|tth|two_theta", re.I)
_Q_NM = re.compile(r"q[^a-z]{0,3}\(?\s*(1\s*/\s*nm|nm\s*\^?\s*-\s*1|nm⁻¹)|q_nm|q_inv_nm", re.I)
_Q_A = re.compile(r"(^|[^a-z])q([^a-z]|$)|q_inv_angstrom|1\s*/\s*(a|å)|å⁻¹", re.I)
_R = re.compile(r"(^|[^a-z])r([^a-z]|$)|r_angstrom|r\(", re.I)
_HOW_X = "pass --x-unit (r, q, q_nm or 2theta)"


def _header_values(header: list[str]) -> dict[str, str]:
    """`key = value` (or `key: value`) header lines, lower-case keys (PDFgetX3's configuration block)."""
    out: dict[str, str] = {}
    for line in header:
        m = _KV.match(line.lstrip("#!% "))
        if m and m.group(2):
            out.setdefault(m.group(1).lower(), m.group(2))
    return out


def _number(values: dict[str, str], *keys: str) -> float | None:
    for k in keys:
        if k in values:
            try:
                return float(values[k].split()[0])
            except (ValueError, IndexError):
                return None
    return None


def _skip_nonfinite(path: Path, data: np.ndarray, what: str) -> tuple[np.ndarray, list[str]]:
    bad = ~np.all(np.isfinite(data), axis=1)
    if not bad.any():
        return data, []
    return data[~bad], [f"{int(bad.sum())} of {data.shape[0]} rows of {path.name} skipped: non-finite {what} (NaN/inf)"]


def read_pdf(path: str | Path, x_unit: str | None = None, qmin: float | None = None, qmax: float | None = None,
             wavelength_angstrom: float | None = None, composition: str | None = None) -> Measurement:
    """A pdf Measurement (arrays `r_angstrom`, `G_per_angstrom2`) from a file.

    `.gr` and plain columns: r (Å), G(r) (Å⁻²); a PDFgetX3 header's qmin, qmax, qdamp, wavelength and
    composition go into metadata (`qmin_inv_angstrom`, ...). `.xye`/`.chi`/`.iq` (I(Q)), `.sq` (S(Q)),
    `.fq` (F(Q)): x is Q in Å⁻¹ (nm⁻¹ if the header or --x-unit q_nm says so) or 2θ in degrees (header
    label or --x-unit 2theta, then the wavelength must come from the header or --wavelength-angstrom);
    G(r) is computed by `g_from_iq`/`g_from_fq` over [qmin, qmax] (options, else the header, else the
    data's range). Non-finite rows are skipped with a counted warning in metadata['warnings']."""
    p = Path(path)
    if x_unit is not None and x_unit not in ("r", "q", "q_nm", "2theta"):
        raise AnalysisError(f"--x-unit {x_unit!r} not understood; use r, q, q_nm or 2theta")
    try:
        data, header = read_columns(p)
    except AnalysisError as exc:
        raise AnalysisError(f"{p}: not a PDF or I(Q) file ({exc}); expected columns r G(r) (a .gr) "
                            "or Q/2θ I(Q) (.xye/.chi)") from None
    values = _header_values(header)
    meta: dict[str, Any] = {"source": str(p), "header": header[:12]}
    labels = " ".join(h for h in header if not _KV.match(h.lstrip("#!% ")) or h.startswith("L "))
    col_line = next((h for h in reversed(header) if h.startswith("L ")), labels)  # PDFgetX3's `#L r G` line
    suffix = p.suffix.lower()
    unit = x_unit
    if unit is None:
        if suffix == ".gr":
            unit = "r"
        elif _TT.search(col_line):
            unit = "2theta"
        elif _Q_NM.search(col_line):
            unit = "q_nm"
        elif suffix in RECIPROCAL_SUFFIXES or _Q_A.search(col_line):
            unit = "q"
            if not _Q_A.search(col_line):
                meta["assumed"] = f"x column is Q in Å⁻¹ (the header names no unit; otherwise {_HOW_X})"
        elif _R.search(col_line) or suffix in (".dat", ".txt", ".csv", ".xy"):
            unit = "r"
            if not _R.search(col_line):
                meta["assumed"] = f"columns are r (Å) and G(r) (the header names none; otherwise {_HOW_X})"
        else:
            raise AnalysisError(f"{p}: cannot tell whether the first column is r, Q or 2θ; {_HOW_X}")
    for key, name in (("qmin", "qmin_inv_angstrom"), ("qmax", "qmax_inv_angstrom"), ("qdamp", "qdamp_inv_angstrom"),
                      ("qbroad", "qbroad_inv_angstrom"), ("wavelength", "wavelength_angstrom")):
        v = _number(values, key)
        if v is not None and math.isfinite(v):
            meta[name] = v
    if "composition" in values:
        meta["composition"] = values["composition"]
    data, warnings = _skip_nonfinite(p, data, "values")
    if data.shape[0] < 20:
        raise AnalysisError(f"{p}: {data.shape[0]} usable rows; a PDF or I(Q) needs at least 20")
    x, y = data[:, 0], data[:, 1]
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if unit == "r":
        if x[0] < 0 or x[-1] > 500 or x[-1] - x[0] < 3:
            raise AnalysisError(f"{p}: first column runs {x[0]:g}–{x[-1]:g}; expected r in Å (e.g. 0–30); {_HOW_X}")
        meta["g_source"] = "file"
        meta["warnings"] = warnings
        return Measurement(technique="pdf", arrays={"r_angstrom": x, "G_per_angstrom2": y}, metadata=meta)
    # reciprocal space
    lam = wavelength_angstrom if wavelength_angstrom is not None else meta.get("wavelength_angstrom")
    if unit == "2theta":
        if lam is None:
            raise AnalysisError(f"{p}: x is 2θ but no wavelength is known; pass --wavelength-angstrom or add a "
                                "header line `wavelength = 0.1665`")
        if not 0.01 < lam < 5:
            raise AnalysisError(f"{p}: wavelength {lam} Å is outside 0.01–5 Å")
        q = 4 * np.pi * np.sin(np.radians(x) / 2) / lam
        meta["wavelength_angstrom"] = float(lam)
    else:
        q = x / (10.0 if unit == "q_nm" else 1.0)
    if q[-1] < 5:
        raise AnalysisError(f"{p}: Q reaches only {q[-1]:.2f} Å⁻¹; a PDF needs total scattering to Q ≥ 5 Å⁻¹ "
                            f"(is the x unit right? {_HOW_X})")
    lo = qmin if qmin is not None else meta.get("qmin_inv_angstrom", float(q[q > 0][0]) if np.any(q > 0) else 0.0)
    hi = qmax if qmax is not None else meta.get("qmax_inv_angstrom", float(q[-1]))
    if not (0 <= lo < hi):
        raise AnalysisError(f"{p}: --qmin {lo} must be below --qmax {hi} (Å⁻¹)")
    sel = (q >= lo) & (q <= hi)
    if sel.sum() < 50:
        raise AnalysisError(f"{p}: {int(sel.sum())} points between qmin {lo} and qmax {hi} Å⁻¹; need at least 50")
    comp = composition or meta.get("composition")
    if composition:
        meta["composition"] = composition
    if suffix == ".fq":
        G = g_from_fq(q[sel], y[sel], R_OUT)
        how = "F(Q) transformed"
    elif suffix == ".sq":
        G = g_from_fq(q[sel], q[sel] * (y[sel] - 1.0), R_OUT)
        how = "F(Q) = Q[S(Q) - 1] transformed"
    else:
        G = g_from_iq(q[sel], y[sel], R_OUT, comp)
        ff = "⟨f²⟩ of " + comp if comp and mean_f2(q[:2], comp) is not None else "⟨f²⟩ of the best-fitting common metal (no composition given)"
        how = f"I(Q) -> S(Q) with the self-scattering baseline {ff} × (a + cQ) -> F(Q) -> G(r)"
    meta.update(g_source="sdl_fourier_transform", g_method=how, qmin_inv_angstrom=float(lo),
                qmax_inv_angstrom=float(hi), q_unit_file=unit, warnings=warnings)
    return Measurement(technique="pdf", arrays={"r_angstrom": R_OUT.copy(), "G_per_angstrom2": G}, metadata=meta)


def g_from_fq(q: np.ndarray, fq: np.ndarray, r: np.ndarray) -> np.ndarray:
    """G(r) = (2/π) ∫ F(Q) sin(Qr) dQ (Å⁻²) by the trapezoid rule on the given Q points (Å⁻¹)."""
    q = np.asarray(q, float)
    fq = np.asarray(fq, float)
    w = np.zeros_like(q)
    dq = np.diff(q)
    w[:-1] += dq / 2
    w[1:] += dq / 2
    return (2.0 / np.pi) * (np.sin(np.outer(r, q)) @ (fq * w))


def mean_f2(q: np.ndarray, composition: str) -> np.ndarray | None:
    """⟨f²⟩(Q) of a composition such as 'Pt', 'Au144S60' or 'Pd0.5Pt0.5' from the Waasmaier–Kirfel
    X-ray form factors (simulators.pdf.physics.form_factor, debyecalculator's table); None if an
    element is unknown or none is named."""
    from simulators.pdf.physics import form_factor

    parts = re.findall(r"([A-Z][a-z]?)([0-9]*\.?[0-9]*)", composition or "")
    if not parts:
        return None
    q = np.asarray(q, float)
    tot, acc = 0.0, np.zeros_like(q)
    for el, n in parts:
        try:
            f = form_factor(el, q)
        except ValueError:
            return None
        w = float(n) if n else 1.0
        acc += w * f ** 2
        tot += w
    return acc / tot


def fq_from_iq(q: np.ndarray, intensity: np.ndarray, composition: str | None = None) -> np.ndarray:
    """F(Q) = Q[I/b − 1], b = ⟨f²⟩(Q)·(a + cQ) the self-scattering baseline (module doc): ⟨f²⟩ of the
    composition when known, else that of the GUESS_ELEMENTS metal whose baseline fits I(Q) best (the
    fall-offs of metals differ little); a and c by least squares."""
    q = np.asarray(q, float)
    y = np.asarray(intensity, float)
    shapes = [mean_f2(q, composition)] if composition else []
    if not shapes or shapes[0] is None:
        shapes = [mean_f2(q, el) for el in GUESS_ELEMENTS]
    V = np.c_[np.ones_like(q), q]
    best = None
    for shape in shapes:
        coef, *_ = np.linalg.lstsq(V, y / shape, rcond=None)
        b = (V @ coef) * shape
        cost = float(np.sum((y / b - 1.0) ** 2)) if np.all(b > 0) else float("inf")
        if best is None or cost < best[0]:
            best = (cost, b)
    b = best[1]
    if np.any(b <= 1e-3 * float(np.abs(b).max())):
        raise AnalysisError("I(Q) has no positive smooth baseline (self-scattering); is it background-subtracted "
                            "total scattering with the right sign?")
    return q * (y / b - 1.0)


def g_from_iq(q: np.ndarray, intensity: np.ndarray, r: np.ndarray, composition: str | None = None) -> np.ndarray:
    """G(r) (Å⁻²) from background-subtracted I(Q) (module doc)."""
    return g_from_fq(q, fq_from_iq(q, intensity, composition), r)


def write_gr(path: str | Path, r: np.ndarray, G: np.ndarray, **header: Any) -> Path:
    """A PDFgetX3-style `.gr` file: `key = value` header lines, `#### start data`, `#L r G` and the columns."""
    p = Path(path)
    lines = ["[DEFAULT]", "", "version = sdl", ""] + [f"{k} = {v}" for k, v in header.items()]
    lines += ["", "#### start data", "#S 1", "#L r($\\AA$)  G($\\AA^{-2}$)"]
    lines += [f"{a:.4f} {b:.6g}" for a, b in zip(r, G)]
    p.write_text("\n".join(lines) + "\n")
    return p
