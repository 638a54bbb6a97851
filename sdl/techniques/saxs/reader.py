"""Reading SAS curves from plain column files, and checking that a curve's q range is a
small-angle one (nm⁻¹ read as Å⁻¹ is the commonest mistake with such files)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from sdl.errors import AnalysisError
from sdl.measurement import Measurement, read_columns

# column labels that name the q unit ("q (1/nm)", "q [A^-1]", "q_inv_angstrom"); nm is tried first. A bare
# "angstrom" is not one: headers name the wavelength in Å ("wavelength 1.54 angstrom") whatever q's unit.
_Q_UNIT_PATTERNS = [
    (re.compile(r"(1\s*/\s*nm|nm\s*\^?\s*\(?-\s*1|nm⁻¹|inv(erse)?[_\s]?nm)", re.I), "nm"),
    (re.compile(r"(1\s*/\s*(a|å|ang|angstrom)(?![a-z.])|(?<![a-z])(a|å|ang|angstrom)\s*\^?\s*\(?-\s*1|å⁻¹|a⁻¹"
                r"|inv(erse)?[_\s]?(angstrom|å)|per\s+angstrom)", re.I), "angstrom"),
]
# an explicit header line "q_unit: nm" / "q_unit = angstrom" (also "q unit", "q-unit"); it wins over column labels
_Q_UNIT_KEY = re.compile(r"(?<![a-z0-9_])q[ _-]?units?\s*[:=]\s*(\S+(?:\s*/\s*\S+)?)", re.I)
HOW_TO_GIVE_Q_UNIT = "pass `--q-unit nm` or `--q-unit angstrom` (sdl analyse) or add a header line `# q_unit: nm` (or `angstrom`)"


def q_unit_name(text: str) -> str | None:
    """'nm' or 'angstrom' for a unit as people write it ('nm', '1/nm', 'nm^-1', 'A', 'Å⁻¹', '1/angstrom',
    'inv_angstrom', ...), else None."""
    t = re.sub(r"[\s()\[\]{}\"']", "", text).lower()
    if re.fullmatch(r"(1/|inv_?|inverse)?nm(\^?-1|⁻¹|\*\*-1)?", t):
        return "nm"
    if re.fullmatch(r"(1/|inv_?|inverse|per)?(a|å|ang|angstroms?|ångström|angström)(\^?-1|⁻¹|\*\*-1)?", t):
        return "angstrom"
    return None


def q_unit_from_header(header: list[str]) -> str | None:
    """'nm' or 'angstrom' if the header names the q unit, else None.

    A line "q_unit: nm" (or "q_unit = angstrom", "q unit: 1/nm") decides; else a column label such as
    "q (1/nm)", "q [A^-1]", "q_inv_angstrom". An unreadable q_unit line is an AnalysisError."""
    for line in header:
        m = _Q_UNIT_KEY.search(line)
        if m:
            unit = q_unit_name(m.group(1))
            if unit is None:
                raise AnalysisError(f"header line {line.strip()[:60]!r}: q unit {m.group(1)!r} not understood; "
                                    "write `# q_unit: nm` or `# q_unit: angstrom`")
            return unit
    text = " ".join(header)
    for label, unit in (("q_inv_angstrom", "angstrom"), ("q_inv_nm", "nm")):  # sdl's own column names
        if re.search(rf"(?<![a-z_]){label}(?![a-z_])", text, re.I):
            return unit
    for pattern, unit in _Q_UNIT_PATTERNS:
        if pattern.search(text):
            return unit
    return None


def read_saxs(path: str | Path, q_unit: str | None = None) -> Measurement:
    """A SAS curve from plain columns q, I[, sigma[, dq]]. q (and dq) are converted to Å⁻¹. (The field's
    formats, and the sniffing of a file's format: `sdl.techniques.saxs.formats.read_sas`.)

    The q unit comes from `q_unit` ('angstrom' or 'nm'; `sdl analyse --q-unit`), else from the header
    (`q_unit_from_header`), else Å⁻¹ is assumed. metadata records `q_unit_file` (the unit the column was
    read in) and `q_unit_source` ("option", "header" or "assumed"; an assumed unit also sets
    metadata['assumed']). The SAXS analysers flag a curve whose assumed unit gives an implausible q range
    (`check_sas_q_range`). Rows with q ≤ 0 or non-finite values are skipped, with a warning that counts
    them in metadata['warnings'] (`clean_rows`).
    """
    if q_unit is not None and q_unit_name(q_unit) is None:
        raise AnalysisError(f"q unit {q_unit!r} not understood; {HOW_TO_GIVE_Q_UNIT}")
    data, header = read_columns(path)
    meta: dict[str, Any] = {"source": str(path), "header": header[:20]}
    if q_unit is not None:
        unit, source = q_unit_name(q_unit), "option"
    else:
        unit, source = q_unit_from_header(header), "header"
    if unit is None:
        unit, source = "angstrom", "assumed"
        meta["assumed"] = ("q unit Å⁻¹ (the header names none; for nm⁻¹ pass `--q-unit nm` (sdl analyse) "
                           "or add a header line `# q_unit: nm`)")
    meta["q_unit_file"] = unit
    meta["q_unit_source"] = source
    q = data[:, 0] / (10.0 if unit == "nm" else 1.0)
    arrays = {"q_inv_angstrom": q, "intensity": data[:, 1]}
    if data.shape[1] >= 3:
        arrays["sigma"] = data[:, 2]
    if data.shape[1] >= 4:
        arrays["dq_inv_angstrom"] = data[:, 3] / (10.0 if unit == "nm" else 1.0)
    try:
        arrays, warnings = clean_rows(arrays)
    except AnalysisError as exc:
        raise AnalysisError(f"{path}: {exc}") from None
    if warnings:
        meta["warnings"] = warnings
    return Measurement(technique="saxs", arrays=arrays, metadata=meta)


# ----- rows that cannot be analysed --------------------------------------------------------------

def clean_rows(arrays: dict[str, np.ndarray], zero_q_dropped: int = 0) -> tuple[dict[str, np.ndarray], list[str]]:
    """Arrays without the rows that cannot be analysed, and the warnings that count them.

    Skipped: q ≤ 0 (with `zero_q_dropped`, rows with q = 0 a loader already dropped), non-finite q, I,
    sigma or resolution. sigma ≤ 0 (counting statistics never give zero): where fewer than half the
    rows have it, those rows are skipped; else the sigma column is dropped (the analysers then weigh
    by a relative error), all zero meaning the file gives none."""
    out = {k: np.asarray(v, dtype=float) for k, v in arrays.items()}
    q, y = out["q_inv_angstrom"], out["intensity"]
    n = q.size + zero_q_dropped
    warnings: list[str] = []
    nonfinite = ~np.isfinite(q) | ~np.isfinite(y)
    for k in ("sigma", "dq_inv_angstrom", "slit_length_inv_angstrom", "slit_width_inv_angstrom"):
        if k in out:
            nonfinite |= ~np.isfinite(out[k])
    nonpos = np.isfinite(q) & (q <= 0) & ~nonfinite
    bad = nonfinite | nonpos
    n_nonpos = int(nonpos.sum()) + zero_q_dropped
    if n_nonpos or nonfinite.any():
        parts = ([f"{n_nonpos} with q ≤ 0"] if n_nonpos else []) + \
                ([f"{int(nonfinite.sum())} with non-finite q, I, sigma or dq (NaN/inf)"] if nonfinite.any() else [])
        warnings.append(f"{n_nonpos + int(nonfinite.sum())} of {n} rows skipped: {', '.join(parts)}")
    if bad.any():
        out = {k: v[~bad] for k, v in out.items()}
    if "sigma" in out:
        s = out["sigma"]
        nonpos_s = s <= 0
        if s.size and np.all(s == 0):
            del out["sigma"]  # no uncertainties in the file (loaders fill zeros)
            warnings.append("sigma is 0 in every row (the file gives no uncertainties): sigma ignored, the "
                            "analysers weigh by a relative error")
        elif nonpos_s.any() and nonpos_s.sum() < 0.5 * s.size:
            keep = ~nonpos_s
            warnings.append(f"{int(nonpos_s.sum())} of {s.size} rows with sigma ≤ 0 skipped (an uncertainty of "
                            "zero or less would weigh them without limit)")
            out = {k: v[keep] for k, v in out.items()}
        elif nonpos_s.any():
            del out["sigma"]
            warnings.append(f"sigma ≤ 0 in {int(nonpos_s.sum())} of {s.size} rows: the sigma column is dropped "
                            "(rows kept); the analysers weigh by a relative error")
    if out["q_inv_angstrom"].size == 0:
        raise AnalysisError("no rows left with q > 0 and finite q, I" + (f" ({'; '.join(warnings)})" if warnings else ""))
    return out, warnings


# ----- is the q range a small-angle one? -------------------------------------------------------------

# Å⁻¹. Beyond SAS_Q_WIDE the curve is wide-angle (d = 2π/q < 4.2 Å, interatomic distances): no particle
# form factor describes it. Pinhole SAXS/SANS cameras start at 0.001-0.02 Å⁻¹; a curve starting at
# SAS_Q_MIN_HIGH or above sees nothing larger than d = 2π/q_min ≈ 126 Å. Below SAS_Q_MIN_LOW (d ≈ 63 µm)
# no USAXS/USANS camera reaches.
SAS_Q_WIDE = 1.5
SAS_Q_MIN_HIGH = 0.05
SAS_Q_MIN_LOW = 1e-5
UNIT_TEXT = {"angstrom": "Å⁻¹", "nm": "nm⁻¹"}
_SOURCE_TEXT = {"option": "from `--q-unit`", "header": "from the file header", "array": "q_inv_angstrom array",
                "check": "as nm⁻¹", "assumed": "(assumed: the header names none)",
                "file": "from the file", "format": "(the file format's unit)"}


def _implausible(lo: float, hi: float) -> list[str]:
    """Why a q range lo-hi (Å⁻¹) is not a SAXS/SANS camera's; [] if it is plausible."""
    why = []
    if hi > SAS_Q_WIDE:
        why.append(f"q_max {hi:.3g} Å⁻¹ is wide-angle (d = 2π/q = {2 * np.pi / hi:.2g} Å; small-angle scattering "
                   "ends near 1 Å⁻¹)")
    if lo >= SAS_Q_MIN_HIGH:
        why.append(f"q_min {lo:.3g} Å⁻¹ is high for a SAXS/SANS camera (usually 0.001-0.02 Å⁻¹)")
    if lo < SAS_Q_MIN_LOW:
        why.append(f"q_min {lo:.3g} Å⁻¹ is below any USAXS/USANS camera")
    return why


class SasQCheck:
    """What `check_sas_q_range` found: the q range as read, why it is implausible, and the flags.

    `suspect` (flag `q_unit_suspect`, untrusted): the file gave no q unit, Å⁻¹ was assumed and the range
    read so is implausible; `nm_plausible` says whether the same numbers read as nm⁻¹ are a usual
    SAXS/SANS range (then the analysers re-analyse that reading to say what it would give). Otherwise
    (unit given, or a driver's array) the flag is `q_range_implausible` (informative). Both add
    `low_confidence`.
    """

    def __init__(self, unit: str, source: str, q_min: float, q_max: float, reasons: list[str]) -> None:
        self.unit, self.source, self.q_min, self.q_max, self.reasons = unit, source, q_min, q_max, reasons
        self.suspect = source == "assumed"
        self.nm_plausible = self.suspect and not _implausible(q_min / 10, q_max / 10)

    @property
    def flags(self) -> list[str]:
        return ["q_unit_suspect" if self.suspect else "q_range_implausible", "low_confidence"]

    def as_nm(self, m: Measurement) -> Measurement:
        """The same measurement with its q column read as nm⁻¹ (q and dq divided by 10)."""
        arrays = dict(m.arrays)
        for k in ("q_inv_angstrom", "dq_inv_angstrom"):
            if k in arrays:
                arrays[k] = np.asarray(arrays[k], dtype=float) / 10.0
        meta = {k: v for k, v in m.metadata.items() if k != "assumed"}
        meta.update(q_unit_file="nm", q_unit_source="check")
        return Measurement(technique=m.technique, arrays=arrays, metadata=meta)

    def warning(self, alt: Any = None, alt_error: str | None = None) -> str:
        """The message for result.info["warnings"]; `alt` is the analysis of the nm⁻¹ reading."""
        rng = f"{self.q_min:.3g}-{self.q_max:.3g} Å⁻¹"
        why = "; ".join(self.reasons)
        if self.suspect and self.nm_plausible:
            if alt is not None:
                sizes = [f"{d.name.removeprefix('saxs.').removesuffix('_nm')} would be {d.value:.3g} nm"
                         for d in alt.descriptors if d.unit == "nm" and isinstance(d.value, float)]
                model = next((d.value for d in alt.descriptors if d.name == "saxs.model"), None)
                said = ", ".join(sizes) or f"model {model}"
                if model is not None and sizes:
                    said = f"{model}, " + said
                untrusted = sorted({f for d in alt.descriptors for f in d.flags if f in ("ood", "fit_failed")})
                if untrusted:
                    said += f"; that reading is flagged {'/'.join(untrusted)} too"
            else:
                said = f"read as nm⁻¹ the analysis fails too: {alt_error}" if alt_error else "q would be 10x smaller"
            return (f"q unit not given; the curve looks like nm⁻¹ read as Å⁻¹ ({said}): rerun with `--q-unit nm` "
                    "(sdl analyse) or put the header line `# q_unit: nm` in the file (`--q-unit angstrom` / "
                    f"`# q_unit: angstrom` if q really is Å⁻¹). As Å⁻¹, q = {rng}: {why}; as nm⁻¹, q = "
                    f"{self.q_min / 10:.3g}-{self.q_max / 10:.3g} Å⁻¹, a usual SAXS/SANS range. The values "
                    "reported are the Å⁻¹ reading's.")
        if self.suspect:
            return (f"q unit not given (Å⁻¹ assumed, q = {rng}) and the q range is implausible for SAXS/SANS read "
                    f"as Å⁻¹ or as nm⁻¹: {why}; check the unit of the q column and give it: {HOW_TO_GIVE_Q_UNIT}; "
                    "the values reported are flagged q_unit_suspect.")
        given = (f"q unit {UNIT_TEXT.get(self.unit, self.unit)} {_SOURCE_TEXT.get(self.source, self.source)}"
                 if self.source != "array" else "q from the measurement's q_inv_angstrom array")
        return (f"q range {rng} ({given}) is implausible for SAXS/SANS: {why}; the analysers fit particle form "
                "factors, which do not describe wide-angle data: check the q unit or cut the curve to the "
                "small-angle range. The values reported are flagged q_range_implausible.")

    def apply(self, result: Any, alt: Any = None, alt_error: str | None = None) -> None:
        """Add the flags to every descriptor of `result` (an AnalysisResult), the warning to
        result.info["warnings"] and the details to result.info["q_unit_check"]."""
        for d in result.descriptors:
            d.flags.extend(f for f in self.flags if f not in d.flags)
        result.info.setdefault("warnings", []).append(self.warning(alt, alt_error))
        details: dict[str, Any] = {"q_unit_file": self.unit, "q_unit_source": self.source,
                                   "q_range_inv_angstrom": [self.q_min, self.q_max], "reasons": list(self.reasons),
                                   "flags": self.flags}
        if self.suspect:
            details["nm_reading_plausible"] = self.nm_plausible
        if alt is not None:
            details["as_nm"] = {d.name: d.value for d in alt.descriptors}
            details["as_nm_flags"] = sorted({f for d in alt.descriptors for f in d.flags})
        if alt_error:
            details["as_nm_error"] = alt_error
        result.info["q_unit_check"] = details


def check_sas_q_range(m: Measurement) -> SasQCheck | None:
    """None if the q range of a SAS measurement is a plausible small-angle one, else what is wrong.

    Plausible: SAS_Q_MIN_LOW <= q_min < SAS_Q_MIN_HIGH and q_max <= SAS_Q_WIDE (Å⁻¹, positive finite q).
    The numbers alone cannot tell nm⁻¹ from Å⁻¹ (a curve of size R at q looks exactly like one of R/10
    at 10 q); what can is that the Å⁻¹ reading of a nm⁻¹ file reaches wide angles or starts too high.
    So an assumed unit with an implausible range is flagged `q_unit_suspect` (untrusted), never
    converted silently.
    """
    q = np.asarray(m.arrays.get("q_inv_angstrom", []), dtype=float)
    q = q[np.isfinite(q) & (q > 0)]
    if q.size == 0:
        return None
    lo, hi = float(q.min()), float(q.max())
    reasons = _implausible(lo, hi)
    if not reasons:
        return None
    source = str(m.metadata.get("q_unit_source") or "array")
    unit = str(m.metadata.get("q_unit_file") or "angstrom")
    return SasQCheck(unit, source, lo, hi, reasons)


def analysed_with_q_check(analyse: Any, m: Measurement, models_slit: bool = False) -> Any:
    """`analyse(m)` (an analyser's AnalysisResult) with check_sas_q_range applied: an implausible q
    range flags every descriptor, and where the nm⁻¹ reading is plausible it is analysed too, to
    say in the warning what it would give; a line-collimation curve is flagged (`flag_line_collimation`), and
    so is a slit-smeared one unless the analyser `models_slit` (`flag_unmodelled_slit`). Every SAXS analyser
    runs its curves through this."""
    check = check_sas_q_range(m)
    result = analyse(m)
    flag_line_collimation(result, m)
    reader_warnings = [str(w) for w in m.metadata.get("warnings") or []]
    if reader_warnings:  # what the reader skipped or assumed reaches `sdl analyse` and the store
        result.info["warnings"] = reader_warnings + list(result.info.get("warnings", []))
    if check is not None:
        alt = alt_error = None
        if check.nm_plausible:
            try:
                alt = analyse(check.as_nm(m))
            except AnalysisError as exc:
                alt_error = str(exc)
        check.apply(result, alt, alt_error)
    if not models_slit:
        flag_unmodelled_slit(result, m)
    return result


def q_unit_hint(m: Measurement, too_high: bool) -> str:
    """What to do when q lies outside an analyser's window: too_high means q is above it (nm⁻¹ read
    as Å⁻¹?), else below (Å⁻¹ read as nm⁻¹, or another unit?)."""
    source = m.metadata.get("q_unit_source")
    unit = m.metadata.get("q_unit_file") or "angstrom"
    if source is None:  # a driver's array: the name says Å⁻¹
        return ("is the q_inv_angstrom array in nm⁻¹ (10x too large)?" if too_high else
                "is the q_inv_angstrom array in another unit?") + " It must be in Å⁻¹"
    if too_high and unit == "angstrom":
        return "is q in nm⁻¹? pass `--q-unit nm` (sdl analyse) or add a header line `# q_unit: nm`"
    if not too_high and unit == "nm":
        return ("q was read as nm⁻¹ " + _SOURCE_TEXT.get(str(source), "") +
                "; is it in Å⁻¹? pass `--q-unit angstrom` (sdl analyse) or add a header line `# q_unit: angstrom`")
    return (f"q was read as {UNIT_TEXT.get(unit, unit)} {_SOURCE_TEXT.get(str(source), '')}; if that is right the "
            "curve lies outside this analyser's window (try `--analyser saxs_fit`), else convert the q column "
            "(sdl reads Å⁻¹ and nm⁻¹)")




def _flag_slit(result: Any) -> None:
    for d in result.descriptors:
        d.flags.extend(f for f in ("slit_smearing_suspect", "low_confidence") if f not in d.flags)


def flag_line_collimation(result: Any, m: Measurement) -> None:
    """A curve from a line-collimation camera not said to be desmeared (metadata
    `line_collimation_slit_inv_angstrom`, set by the PDH reader): slit-smeared by a beam profile no analyser
    is given, so every descriptor is flagged `slit_smearing_suspect` and `low_confidence`; info says why."""
    slit = m.metadata.get("line_collimation_slit_inv_angstrom")
    if not slit:
        return
    _flag_slit(result)
    result.info["slit_smearing"] = (f"line collimation (counter slit length {float(slit):.3g} Å⁻¹), not desmeared as far "
                                    "as the file says: not modelled (`--desmeared yes` if it was desmeared)")


def flag_unmodelled_slit(result: Any, m: Measurement) -> None:
    """For an analyser that does not model slit smearing (saxs_ml, saxs_modelfree): a slit-smeared curve (a
    `slit_length_inv_angstrom` or `slit_width_inv_angstrom` array with a length > 0, e.g. USANS) flags
    every descriptor `slit_smearing_suspect` (untrusted: the chain goes on to saxs_fit, which models
    it) and `low_confidence`, and says so in result.info."""
    slit = [np.asarray(m.arrays[k], dtype=float) for k in ("slit_length_inv_angstrom", "slit_width_inv_angstrom")
            if k in m.arrays]
    if not any(np.any(np.abs(s[np.isfinite(s)]) > 0) for s in slit):
        return
    _flag_slit(result)
    result.info["slit_smearing"] = "not modelled"
    result.info.setdefault("warnings", []).append(
        f"the curve is slit-smeared (slit length up to {max(float(np.nanmax(np.abs(s))) for s in slit):.3g} Å⁻¹); "
        f"{result.analyser} does not model slit smearing, so its values are flagged slit_smearing_suspect: use "
        "`--analyser saxs_fit`, which fits with the slit resolution")
