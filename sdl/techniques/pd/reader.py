"""Reading powder patterns in the formats diffractometers and integration programs write.

* `.xy`, `.xye`, `.dat`, `.txt`, `.csv`: columns x, I[, sigma]; x is 2θ (degrees) or Q (header label
  or `x_unit`); the wavelength from a header line such as `# wavelength = 1.5406`.
* `.chi` (Fit2D, pyFAI): four header lines (title, x label: "2-Theta Angle (Degrees)" or
  "Q (Angstroms-1)" / "q_nm^-1", intensity label, number of points), then x, I[, sigma].
* `.xrdml` (PANalytical XML): 2θ start/end (or a list of positions) and counts/intensities of the
  first scan; the wavelength from `usedWavelength/kAlpha1` (Kα2 and its ratio kept in metadata);
  σ = √counts (from counts per step when the file gives intensities in counts/s).
* GSAS `.gsa`, `.gss`, `.fxye` and GSAS text `.raw`: the first `BANK` of constant-wavelength data
  (bin type CONST: start and step in centidegrees; formats STD, ESD, ALT, FXYE); the wavelength
  from a title or comment line that states it (GSAS-II writes `Instrument parameter file` lines
  and often a wavelength comment), else `wavelength_angstrom`.
* Bruker `.brml` and binary `.raw`: no maintained Python reader exists on the package index
  (xylib has no current wheels), so these get an error that says to export the scan as .xy.

The wavelength comes from the file where it is stored, else the `wavelength_angstrom` option
(`--wavelength-angstrom`); a 2θ pattern without either is read, but the analyser refuses it with a
message naming the option (2θ cannot become Q without λ; no Cu Kα guess).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from sdl.errors import AnalysisError
from sdl.measurement import Measurement, read_columns

__all__ = ["read_pd", "read_chi", "read_xrdml", "read_gsas", "read_bruker"]

_WL_RE = re.compile(r"(wavelength|lambda|λ|wl|lam1?)[^0-9\n]{0,20}([0-9]*\.?[0-9]+)\s*(nm|å|a|angstrom)?", re.I)
_Q_RE = re.compile(r"(^|[^a-z])(q|q_inv_angstrom)([^a-z]|$)|1\s*/\s*(å|a|nm)|å⁻¹|nm⁻¹|angstroms?\s*-\s*1|nm\s*\^?\s*-\s*1", re.I)
_TT_RE = re.compile(r"2\s*-?\s*theta|2θ|tth|two_theta", re.I)
_Q_NM_RE = re.compile(r"nm\s*\^?\s*-\s*1|1\s*/\s*nm|nm⁻¹", re.I)


def _wavelength_from(text: str) -> float | None:
    m = _WL_RE.search(text)
    if not m:
        return None
    lam = float(m.group(2)) * (10.0 if (m.group(3) or "").lower() == "nm" else 1.0)
    return lam if 0.01 < lam < 5.0 else None


def _measurement(x: np.ndarray, y: np.ndarray, sigma: np.ndarray | None, unit: str, lam: float | None,
                 meta: dict[str, Any], kalpha2_ratio: float | None = None) -> Measurement:
    """A pd Measurement with 2θ and/or Q arrays (both when the wavelength is known); with
    `kalpha2_ratio` the scan has a Kα1/Kα2 doublet (the Kα2 wavelength from the anode's table)."""
    if kalpha2_ratio:
        from simulators.pd.physics import KALPHA2

        if not (0 < kalpha2_ratio <= 1):
            raise AnalysisError(f"--kalpha2-ratio {kalpha2_ratio}: expected a ratio in (0, 1], usually 0.5")
        k1 = next((k for k in KALPHA2 if lam is not None and abs(k - lam) < 2e-3), None)
        if k1 is None:
            raise AnalysisError(f"--kalpha2-ratio needs the Kα1 wavelength of a usual anode (Cu 1.5406, Co 1.7890, "
                                f"Mo 0.7093, Fe 1.9360, Cr 2.2897, Ag 0.5594 Å); the wavelength is {lam}")
        meta["kalpha2_angstrom"], meta["kalpha2_ratio"] = KALPHA2[k1], float(kalpha2_ratio)
    arrays: dict[str, np.ndarray] = {"intensity": np.asarray(y, float)}
    if sigma is not None:
        arrays["sigma"] = np.asarray(sigma, float)
    if lam is not None:
        meta["wavelength_angstrom"] = float(lam)
    x = np.asarray(x, float)
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


def _unit_option(x_unit: str | None, q_unit: str | None) -> str | None:
    if q_unit is not None and x_unit is None:
        if q_unit not in ("angstrom", "nm"):
            raise AnalysisError(f"q_unit {q_unit!r} not understood; use 'angstrom' or 'nm'")
        x_unit = "q" if q_unit == "angstrom" else "q_nm"
    unit = (x_unit or "").lower() or None
    if unit is not None and unit not in ("2theta", "q", "q_nm"):
        raise AnalysisError(f"x_unit {unit!r} not understood; use '2theta', 'q' (Å⁻¹) or 'q_nm' (nm⁻¹)")
    return unit


def _unit_from_label(text: str) -> str | None:
    if _TT_RE.search(text):
        return "2theta"
    if _Q_RE.search(text):
        return "q_nm" if _Q_NM_RE.search(text) else "q"
    return None


def read_pd(path: str | Path, wavelength_angstrom: float | None = None, x_unit: str | None = None,
            q_unit: str | None = None, kalpha2_ratio: float | None = None) -> Measurement:
    """A powder pattern in any format this module reads (chosen by suffix; plain columns otherwise).
    Columns: x, I[, sigma]. x is 2θ (degrees) or Q (Å⁻¹, or nm⁻¹ if the header says so), from
    `x_unit` ('2theta', 'q', 'q_nm'), else the header, else 2θ is assumed. The wavelength comes
    from a header line such as 'wavelength = 1.5406' (Å; nm is converted), else the argument.
    `q_unit` ('angstrom' or 'nm', as `sdl analyse --q-unit` passes it) means the x column is Q.
    `kalpha2_ratio`: the scan holds a Kα1/Kα2 doublet of this intensity ratio (.xrdml says so itself)."""
    suffix = Path(path).suffix.lower()
    special = {".chi": read_chi, ".xrdml": read_xrdml, ".gsa": read_gsas, ".gss": read_gsas, ".fxye": read_gsas,
               ".brml": read_bruker}
    if suffix == ".raw":
        head = Path(path).read_bytes()[:4]
        if head[:3] == b"RAW" or b"\x00" in head:
            return read_bruker(path)
        m = read_gsas(path, wavelength_angstrom)
    elif suffix in special:
        fn = special[suffix]
        if fn is read_bruker:
            return fn(path)
        m = fn(path, wavelength_angstrom, x_unit, q_unit) if fn is read_chi else fn(path, wavelength_angstrom)
    else:
        m = None
    if m is not None:
        if kalpha2_ratio and "kalpha2_ratio" not in m.metadata:
            _measurement(np.zeros(1), np.zeros(1), None, "2theta", m.metadata.get("wavelength_angstrom"), m.metadata,
                         kalpha2_ratio)
        return m
    unit = _unit_option(x_unit, q_unit)
    data, header = read_columns(path)
    text = " ".join(header)
    meta: dict[str, Any] = {"source": str(path), "header": header[:20], "format": "columns"}
    lam = _wavelength_from(text) or wavelength_angstrom
    if unit is None:
        unit = _unit_from_label(text)
        if unit is None:
            unit = "2theta"
            meta["assumed"] = ("x column is 2θ in degrees (the header names no unit; if it is Q, pass "
                              "`--q-unit angstrom` or `--q-unit nm` (sdl analyse) or add a header line such as "
                              "`# q (1/A) I` or `# q (1/nm) I`)")
    return _measurement(data[:, 0], data[:, 1], data[:, 2] if data.shape[1] >= 3 else None, unit, lam, meta,
                        kalpha2_ratio)


def read_chi(path: str | Path, wavelength_angstrom: float | None = None, x_unit: str | None = None,
             q_unit: str | None = None) -> Measurement:
    """A Fit2D/pyFAI .chi file: title, x label, y label, number of points, then columns."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise AnalysisError(f"cannot read {p}: {exc.strerror}") from None
    header = [ln.strip().lstrip("#").strip() for ln in lines[:4]]
    rows = []
    for lineno, ln in enumerate(lines[4:], 5):
        s = ln.strip()
        if not s or s[0] in "#!%":
            continue
        try:
            rows.append([float(v) for v in s.split()])
        except ValueError:
            raise AnalysisError(f"{p}:{lineno}: non-numeric value in a .chi data row: {s[:60]!r}") from None
    if len(rows) < 2 or min(len(r) for r in rows) < 2:
        raise AnalysisError(f"{p}: a .chi file needs 4 header lines then rows of x and intensity")
    width = min(len(r) for r in rows)
    data = np.array([r[:width] for r in rows], float)
    meta: dict[str, Any] = {"source": str(p), "header": header, "format": "chi"}
    unit = _unit_option(x_unit, q_unit) or _unit_from_label(header[1] if len(header) > 1 else "")
    if unit is None:
        raise AnalysisError(f"{p}: the .chi x label {header[1] if len(header) > 1 else ''!r} names neither 2θ nor Q; "
                            "pass --x-unit 2theta, q or q_nm")
    lam = _wavelength_from(" ".join(header)) or wavelength_angstrom
    return _measurement(data[:, 0], data[:, 1], data[:, 2] if width >= 3 else None, unit, lam, meta)


def read_xrdml(path: str | Path, wavelength_angstrom: float | None = None) -> Measurement:
    """A PANalytical .xrdml scan (the first one in the file)."""
    import xml.etree.ElementTree as ET

    p = Path(path)
    try:
        root = ET.parse(p).getroot()
    except (ET.ParseError, OSError) as exc:
        raise AnalysisError(f"{p}: not a readable .xrdml (XML) file: {exc}") from None

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    def find(node, name):
        return next((e for e in node.iter() if local(e.tag) == name), None)

    meta: dict[str, Any] = {"source": str(p), "format": "xrdml"}
    lam = None
    wl = find(root, "usedWavelength")
    if wl is not None:
        k1 = find(wl, "kAlpha1")
        if k1 is not None and k1.text:
            lam = float(k1.text) * (10.0 if (k1.get("unit") or "").lower().startswith("nm") else 1.0)
            meta["radiation"] = wl.get("intended") or "K-Alpha 1"
        k2, ratio = find(wl, "kAlpha2"), find(wl, "ratioKAlpha2KAlpha1")
        # "K-Alpha 1": a Kα1 monochromator took Kα2 out; "K-Alpha": the doublet is in the scan
        if (wl.get("intended") or "").strip().lower() == "k-alpha" and k2 is not None and k2.text \
                and ratio is not None and ratio.text:
            meta["kalpha2_angstrom"] = float(k2.text)
            meta["kalpha2_ratio"] = float(ratio.text)
    if lam is None:
        lam = wavelength_angstrom
    dp = find(root, "dataPoints")
    if dp is None:
        raise AnalysisError(f"{p}: no <dataPoints> in this .xrdml file")
    y_node = next((e for e in dp if local(e.tag) in ("counts", "intensities")), None)
    if y_node is None or not (y_node.text or "").strip():
        raise AnalysisError(f"{p}: no <counts> or <intensities> in the first scan")
    y = np.array(y_node.text.split(), float)
    pos = next((e for e in dp if local(e.tag) == "positions" and (e.get("axis") or "").lower() == "2theta"), None)
    if pos is None:
        raise AnalysisError(f"{p}: no 2Theta <positions> in the first scan (only 2θ scans are read)")
    lst = find(pos, "listPositions")
    if lst is not None and lst.text:
        x = np.array(lst.text.split(), float)
    else:
        start, end = find(pos, "startPosition"), find(pos, "endPosition")
        if start is None or end is None:
            raise AnalysisError(f"{p}: the 2Theta positions have neither start/end nor a list")
        x = np.linspace(float(start.text), float(end.text), y.size)
    if x.size != y.size:
        raise AnalysisError(f"{p}: {x.size} 2θ positions but {y.size} intensities")
    t = find(dp, "commonCountingTime")
    t_s = float(t.text) if t is not None and t.text else None
    meta["counting_time_s"] = t_s
    unit = (y_node.get("unit") or "counts").lower()
    if t_s and ("/s" in unit or "cps" in unit):  # counts per second: σ from the counts, in the same unit
        sigma = np.sqrt(np.maximum(y * t_s, 1.0)) / t_s
    else:
        sigma = np.sqrt(np.maximum(y, 1.0))
    return _measurement(x, y, sigma, "2theta", lam, meta)


def read_gsas(path: str | Path, wavelength_angstrom: float | None = None) -> Measurement:
    """The first constant-wavelength BANK of a GSAS powder file (.gsa/.gss/.fxye/.raw)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise AnalysisError(f"cannot read {p}: {exc.strerror}") from None
    bank_i = next((i for i, ln in enumerate(lines) if ln.strip().upper().startswith("BANK")), None)
    if bank_i is None:
        raise AnalysisError(f"{p}: no BANK line: not a GSAS powder data file")
    head = lines[:bank_i]
    meta: dict[str, Any] = {"source": str(p), "format": "gsas", "header": [h.strip() for h in head[:10]]}
    f = lines[bank_i].split()
    try:
        nchan = int(f[2])
        bintyp = f[4].upper()
    except (IndexError, ValueError):
        raise AnalysisError(f"{p}: BANK line {lines[bank_i].strip()!r} is not 'BANK n nchan nrec bintyp ...'") from None
    if bintyp not in ("CONST", "CONS"):
        raise AnalysisError(f"{p}: BANK bin type {bintyp} (time-of-flight or log binning) is not a constant-"
                            "wavelength 2θ scan; only CONST banks are read")
    fmt = f[-1].upper() if f[-1].upper() in ("STD", "ESD", "ALT", "FXYE") else "STD"
    try:
        start, step = float(f[5]) / 100.0, float(f[6]) / 100.0  # centidegrees
    except (IndexError, ValueError):
        raise AnalysisError(f"{p}: BANK line lacks the CONST start and step (centidegrees)") from None
    body = []
    for ln in lines[bank_i + 1:]:
        if ln.strip().upper().startswith("BANK"):
            break
        if ln.strip() and not ln.lstrip().startswith("#"):
            body.append(ln.rstrip("\n"))
    try:
        if fmt == "FXYE":
            vals = np.array([[float(v) for v in ln.split()[:3]] for ln in body], float)
            x, y, sig = vals[:, 0] / 100.0, vals[:, 1], vals[:, 2]
        elif fmt == "ESD":
            nums = np.array([float(ln[i:i + 8]) for ln in body for i in range(0, min(len(ln), 80), 8) if ln[i:i + 8].strip()])
            y, sig = nums[0::2], nums[1::2]
            x = start + step * np.arange(y.size)
        elif fmt == "ALT":
            raise AnalysisError(f"{p}: GSAS ALT format (x, I, σ triplets with variable steps) is not read; "
                                "export the pattern as FXYE or .xy")
        else:  # STD: 10 fields of (I2 counters, F6 intensity)
            y_l, nc_l = [], []
            for ln in body:
                for i in range(0, min(len(ln), 80), 8):
                    field = ln[i:i + 8]
                    if not field.strip():
                        continue
                    nc = field[:2].strip()
                    y_l.append(float(field[2:]))
                    nc_l.append(int(nc) if nc else 1)
            y, nc = np.array(y_l), np.maximum(np.array(nc_l), 1)
            sig = np.sqrt(np.maximum(y, 1.0) / nc)
            x = start + step * np.arange(y.size)
    except ValueError as exc:
        raise AnalysisError(f"{p}: GSAS {fmt} data not understood ({exc})") from None
    if y.size != nchan:
        meta["note"] = f"BANK line says {nchan} channels, {y.size} read"
    lam = _wavelength_from(" ".join(head)) or wavelength_angstrom
    return _measurement(x, y, sig, "2theta", lam, meta)


def read_bruker(path: str | Path, wavelength_angstrom: float | None = None) -> Measurement:
    """Bruker .brml/.raw: not read (no maintained reader); the error says how to export."""
    raise AnalysisError(f"{Path(path).name}: Bruker {Path(path).suffix.lower()} files are not read (no maintained Python "
                        "reader is installable); export the scan as .xy or .xye from DIFFRAC.EVA (or convert with "
                        "PowDLL) and analyse that, giving --wavelength-angstrom if the export has no wavelength line")
