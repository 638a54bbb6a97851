"""SAS files in the field's formats, read with SasView's loaders (`sasdata`): CanSAS 1D XML, NXcanSAS
HDF5, ISIS RKH/COLETTE text, Anton Paar PDH, NIST ABS, and plain columns (`reader.read_saxs`).

`read_sas(path, format="auto")` sniffs the content (an HDF5 signature, an XML root, the RKH Fortran
format line, the ABS column line, the PDH XML footer), then the suffix, and hands the file to the
loader of that format; `format` forces one. Every loader's result becomes a
`Measurement(technique="saxs")` with q in Å⁻¹ (converted from the unit the file names, with
sasdata's unit converter; where the file names none, what was assumed is said in
metadata['assumed'] or metadata['warnings']), the resolution the file carries (pinhole dQ,
slit length/width) and the rows that cannot be analysed (q ≤ 0, non-finite values) skipped with a
counted warning in metadata['warnings'] (the SAXS analysers copy it to result.info['warnings']).

sasdata is imported inside the functions, so reading the technique's declaration stays cheap.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from sdl.errors import AnalysisError
from sdl.measurement import Measurement
from sdl.techniques.saxs.reader import HOW_TO_GIVE_Q_UNIT, clean_rows, q_unit_name, read_saxs

FORMATS = ("auto", "columns", "cansas", "nxcansas", "rkh", "pdh", "abs")
FORMAT_NAMES = {
    "columns": "plain columns (q, I[, sigma[, dq]])",
    "cansas": "CanSAS 1D XML",
    "nxcansas": "NXcanSAS HDF5",
    "rkh": "ISIS RKH/COLETTE text",
    "pdh": "Anton Paar PDH",
    "abs": "NIST ABS",
}
EXPECTED = ("plain columns q I [sigma [dq]], CanSAS 1D XML, NXcanSAS HDF5, ISIS RKH text, Anton Paar PDH "
            "or NIST ABS")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx")
_RKH_FORMAT_LINE = re.compile(r"^\s*\d+\s*\(\s*\d*\s*[FEGDI]\d+(\.\d+)?\s*(,\s*\d*\s*[FEGDI]\d+(\.\d+)?\s*)*\)\s*$", re.I)
_PDH_X_UNIT = re.compile(r"<column\s+key=\"X\"\s*>.*?<value\s+key=\"unit\"\s*>([^<]*)</value>", re.S | re.I)
# the detector window length of a line-collimation (Kratky-type) camera, in the PDH's XML footer
_PDH_SLIT = re.compile(r"<parameter\s+key=\"CounterSlitLength\"[^>]*>.*?<value\s+key=\"value\"\s*>([^<]*)</value>"
                       r".*?<value\s+key=\"unit\"\s*>([^<]*)</value>", re.S | re.I)


# ----- which format? ---------------------------------------------------------------------------------

def _head(path: Path, n: int = 65536) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except IsADirectoryError:
        raise AnalysisError(f"{path} is a folder, not a data file") from None
    except OSError as exc:
        raise AnalysisError(f"cannot read {path}: {exc.strerror}") from None


def _is_binary(head: bytes) -> bool:
    if b"\x00" in head:
        return True
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a multi-byte character cut at the end of the sample
            try:
                text = head.decode("cp1252")
            except UnicodeDecodeError:
                return True
        else:
            text = head[: exc.start].decode("utf-8")
    control = sum(1 for c in text if ord(c) < 32 and c not in "\t\r\n\f\v")
    return control > 0.01 * max(len(text), 1)


def sniff(path: str | Path, expected: str | None = None) -> str:
    """The format of `path` ('columns', 'cansas', 'nxcansas', 'rkh', 'pdh' or 'abs'), from its content
    first and its suffix second; an AnalysisError naming the file for what no loader takes (empty,
    binary, HTML, XML that is not CanSAS, HDF5 signature missing in a .h5 file)."""
    p = Path(path)
    head = _head(p)
    what = FORMAT_NAMES.get(expected or "", f"a SAS data file ({EXPECTED})")
    suffix = p.suffix.lower()
    if not head.strip():
        raise AnalysisError(f"{p} is empty; expected {what}")
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "nxcansas"
    if suffix in _HDF5_SUFFIXES or expected == "nxcansas":
        import h5py

        if h5py.is_hdf5(str(p)):  # a signature after a user block
            return "nxcansas"
        raise AnalysisError(f"{p} is not an HDF5 file (no HDF5 signature); expected {FORMAT_NAMES['nxcansas']}")
    if _is_binary(head):
        raise AnalysisError(f"{p} is a binary file, not text, XML or HDF5; expected {what}")
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    start = text.lstrip()[:2000].lower()
    if start.startswith("<"):
        if "<sasroot" in start or "<sasentry" in start or "cansas" in start:
            return "cansas"
        if "<html" in start or "<!doctype html" in start:
            raise AnalysisError(f"{p} is an HTML page (a web page saved by mistake?), not {FORMAT_NAMES['cansas']} "
                                "(root element SASroot with SASentry/SASdata)")
        raise AnalysisError(f"{p} is XML but not {FORMAT_NAMES['cansas']}: no SASroot/SASentry element")
    lines = text.splitlines()
    if suffix == ".pdh" or "<fileinfo" in text.lower():
        return "pdh"
    if suffix in (".abs", ".cor") or any(s.startswith(("The 6 columns", "EMP LEVEL")) for s in lines[:200]):
        return "abs"
    if any(_RKH_FORMAT_LINE.match(s) for s in lines[:12]):
        return "rkh"
    if suffix == ".xml":
        raise AnalysisError(f"{p} is not XML; expected {FORMAT_NAMES['cansas']}")
    return "columns"


# ----- sasdata ---------------------------------------------------------------------------------------

_SASDATA_READERS = {
    "cansas": "sasdata.dataloader.readers.cansas_reader",
    "nxcansas": "sasdata.dataloader.readers.cansas_reader_HDF5",
    "rkh": "sasdata.dataloader.readers.ascii_reader",
    "pdh": "sasdata.dataloader.readers.anton_paar_saxs_reader",
    "abs": "sasdata.dataloader.readers.abs_reader",
}


@contextmanager
def _quiet_sasdata() -> Iterator[None]:
    log = logging.getLogger("sasdata")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _sasdata_load(path: Path, kind: str, module_name: str | None = None) -> tuple[list[Any], dict[Any, str], int]:
    """sasdata's loader of `kind` on `path`: its data sets, the q unit each had in the file (sasdata's
    own unit conversion is switched off: sdl converts, and says what it did) and the number of q = 0
    rows the loader dropped (rows of q = I = dI = 0 are not told from the loader's padding, so not
    counted). An ABS file without the NIST column line (e.g. ANSTO's) is read as columns, as SasView does."""
    import importlib

    if kind == "abs" and module_name is None:
        try:
            return _sasdata_load(path, kind, _SASDATA_READERS[kind])
        except AnalysisError:
            return _sasdata_load(path, kind, _SASDATA_READERS["rkh"])
    module = importlib.import_module(module_name or _SASDATA_READERS[kind])
    reader = module.Reader()
    reader.allow_all = True  # the format was chosen (sniffed or forced); do not let the suffix veto it
    units: dict[int, str] = {}
    zero_q = [0]

    def record_units(*args: Any, **kwargs: Any) -> None:
        for d in reader.output:
            units[id(d)] = str(getattr(d, "_xunit", "") or "")

    def count_zero_q(_orig=reader.remove_empty_q_values) -> None:
        ds = reader.current_dataset
        x = getattr(ds, "x", None)
        if x is not None and getattr(x, "ndim", 0) == 1:
            # loaders pre-allocate rows of zeros (q = I = dI = 0) and trim them here: count only real rows
            x = np.asarray(x)
            row = np.zeros(x.shape, dtype=bool)
            for name in ("y", "dy"):
                v = getattr(ds, name, None)
                if v is not None and np.shape(v) == x.shape:
                    v = np.asarray(v)
                    if v.dtype == object:  # a loader's placeholder entries are None
                        v = np.array([0.0 if e is None else e for e in v], dtype=float)
                    row |= v != 0
            zero_q[0] += int(np.count_nonzero((x == 0) & row))
        _orig()

    q_units_in_file: list[str] = []
    if hasattr(reader, "_unit_conversion"):  # the CanSAS XML reader converts each value as it parses it
        def unit_conversion(node: Any, tagname: str, value: Any, _orig=reader._unit_conversion) -> Any:
            if tagname == "Q" and node.attrib.get("unit") and len(q_units_in_file) < 1:
                q_units_in_file.append(str(node.attrib["unit"]).split("|")[-1])
            return _orig(node, tagname, value)

        reader._unit_conversion = unit_conversion
    reader.convert_data_units = record_units
    reader.remove_empty_q_values = count_zero_q
    with _quiet_sasdata():
        try:
            out = list(reader.read(str(path)) or [])
        except Exception as exc:  # sasdata's loaders raise many kinds; each means "not this format"
            out = list(getattr(reader, "output", None) or [])
            if not out or kind != "pdh":  # sasdata 0.11's PDH reader fails on the XML footer after the data
                raise AnalysisError(_load_failure(path, kind, exc)) from None
    if q_units_in_file:
        units["file"] = q_units_in_file[0]
    return out, units, zero_q[0]


def _load_failure(path: Path, kind: str, exc: Exception) -> str:
    why = str(exc).strip().splitlines()
    why_text = why[0][:200] if why else type(exc).__name__
    if kind == "nxcansas":
        import h5py

        try:
            with h5py.File(path, "r"):
                pass
        except Exception as h5:  # truncated, damaged
            return f"{path} is a damaged or truncated HDF5 file ({str(h5)[:160]}); expected {FORMAT_NAMES[kind]}"
    return f"{path} cannot be read as {FORMAT_NAMES[kind]} ({type(exc).__name__}: {why_text})"


def _unit_factor(unit: str) -> float | None:
    """The factor taking q in `unit` to Å⁻¹ (sasdata's unit converter), None if it is not a q unit."""
    if not unit or not unit.strip():
        return None
    from sasdata.data_util.nxsunit import Converter

    try:
        f = float(Converter(unit.strip())(1.0, units="1/A"))
    except Exception:  # KeyError: unknown unit; ValueError: not an inverse length
        return None
    return f if np.isfinite(f) and f > 0 else None


def plain_unit(unit: str) -> str:
    """sasdata's rendering of a unit (LaTeX-like: "cm^{-1}", "um^2^{-1}") as people write it ("1/cm", "1/um^2")."""
    u = unit.strip()
    m = re.fullmatch(r"(.+?)\^\{-1\}", u)
    if m:
        u = "1/" + m.group(1)
    return re.sub(r"\^\{(-?\d+)\}", r"^\1", u)


def _title(d: Any, i: int) -> str:
    run = getattr(d, "run", None) or []
    name = str(getattr(d, "title", "") or "").strip() or (str(run[0]) if run else "")
    return name or f"data set {i + 1}"


# ----- the readers -----------------------------------------------------------------------------------

def read_sas(path: str | Path, format: str | None = "auto", q_unit: str | None = None,
             expected: str | None = None, desmeared: str | None = None) -> Measurement:
    """The SAS curve in `path`, in any format of FORMATS ('auto' sniffs; `expected` is the format the
    suffix promised, for the error messages). q in Å⁻¹; `q_unit` ('angstrom' or 'nm') overrides the
    file's unit (and is the unit of files that name none: plain columns, RKH); `desmeared` "yes": a
    line-collimation file's curve was desmeared (`_line_collimation`)."""
    p = Path(path)
    fmt = (format or "auto").lower()
    if fmt not in FORMATS:
        raise AnalysisError(f"--format {format!r} unknown; choose one of {', '.join(FORMATS)}")
    if q_unit is not None and q_unit_name(q_unit) is None:
        raise AnalysisError(f"q unit {q_unit!r} not understood; {HOW_TO_GIVE_Q_UNIT}")
    if desmeared not in (None, "yes", "no"):
        raise AnalysisError(f"--desmeared {desmeared!r} unknown; choose yes or no")
    if not p.exists():
        raise AnalysisError(f"no such file: {p}")
    kind = sniff(p, expected) if fmt == "auto" else fmt
    if kind == "nxcansas" and fmt != "auto":
        sniff(p, "nxcansas")  # an HDF5 file at all?
    if kind == "columns":
        m = read_saxs(p, q_unit=q_unit)
        m.metadata.setdefault("format", "columns")
        return m
    return _read_with_sasdata(p, kind, q_unit, forced=fmt != "auto", desmeared=desmeared)


def _read_with_sasdata(p: Path, kind: str, q_unit: str | None, forced: bool, desmeared: str | None = None) -> Measurement:
    try:
        import sasdata  # noqa: F401
    except ImportError:
        raise AnalysisError(f"{p}: reading {FORMAT_NAMES[kind]} needs the sasdata package (pip install sasdata)") from None
    data, units, zero_q = _sasdata_load(p, kind)
    from sasdata.dataloader.data_info import Data1D

    one_d = [d for d in data if isinstance(d, Data1D) and getattr(d, "x", None) is not None and np.size(d.x)]
    if not one_d:
        what = "only 2-D data (I(qx, qy)); sdl analyses 1-D I(q)" if data else "no I(q) data"
        raise AnalysisError(f"{p}: the {FORMAT_NAMES[kind]} file holds {what}"
                            + ("" if data or forced else f"; expected {FORMAT_NAMES[kind]} with I(q)"))
    d = one_d[0]
    warnings: list[str] = []
    meta: dict[str, Any] = {"source": str(p), "format": kind, "format_name": FORMAT_NAMES[kind],
                            "loader": f"sasdata {_sasdata_version()}", "title": _title(d, 0),
                            "n_datasets": len(one_d)}
    if len(one_d) > 1:
        meta["datasets"] = [_title(o, i) for i, o in enumerate(one_d)]
        others = ", ".join(map(repr, meta["datasets"][1:4])) + (f" and {len(one_d) - 4} more (all named in the metadata's "
                                                                 "'datasets')" if len(one_d) > 4 else "")
        warnings.append(f"the file holds {len(one_d)} data sets; analysed the first ({_title(d, 0)!r}), not {others}")
    if len(data) > len(one_d):
        warnings.append(f"{len(data) - len(one_d)} 2-D data set(s) in the file ignored")
    run = [str(r) for r in (getattr(d, "run", None) or [])]
    if run:
        meta["run"] = run
    for attr, key in (("wavelength", "wavelength"), ("radiation", "radiation"), ("name", "source_name")):
        v = getattr(getattr(d, "source", None), attr, None)
        if isinstance(v, (int, float, str)) and v not in ("", None):
            meta[key] = v if not isinstance(v, float) or np.isfinite(v) else None
    sample = getattr(getattr(d, "sample", None), "name", None)
    if sample:
        meta["sample"] = str(sample)
    if getattr(d, "_yunit", None):
        meta["intensity_unit"] = plain_unit(str(d._yunit))

    # -- q unit ----------------------------------------------------------------------------------------
    raw_unit = units.get(id(d), "")
    file_unit, source = raw_unit, "file"
    if kind == "pdh":
        footer = p.read_text(encoding="utf-8", errors="replace")
        _line_collimation(footer, desmeared, meta, warnings)
        m = _PDH_X_UNIT.search(footer)
        if m and m.group(1).strip():
            file_unit = m.group(1).strip().replace("_", "")
        else:
            source = "format"
            if q_unit is None:
                warnings.append("the PDH file's XML footer names no q unit; read as nm⁻¹ (Anton Paar's default); if "
                                "q is in Å⁻¹ pass `--q-unit angstrom` (sdl analyse)")
    elif kind == "abs":
        file_unit, source = "1/A", "format"  # NIST ABS columns are Q (1/A), fixed by the format
    elif kind == "rkh":
        file_unit, source = "", "assumed"  # an RKH 1-D file names no unit for its first column
    factor = _unit_factor(file_unit)
    if q_unit is not None:
        opt = q_unit_name(q_unit)
        opt_factor = 0.1 if opt == "nm" else 1.0
        named = units.get("file") or file_unit
        named_factor = _unit_factor(named) if source == "file" else None
        if named_factor is not None and abs(named_factor - opt_factor) > 1e-9:
            warnings.append(f"`--q-unit {q_unit}` overrides the file's q unit {named!r}")
        meta["q_unit_file"], meta["q_unit_source"] = opt, "option"
        factor = opt_factor
        if units.get("file") and units["file"] != raw_unit:  # the loader converted while parsing (CanSAS XML)
            factor = opt_factor / (_unit_factor(units["file"]) or 1.0)
    elif factor is None:
        factor = 1.0
        meta["q_unit_file"], meta["q_unit_source"] = "angstrom", "assumed"
        what = ("an RKH file names no q unit" if kind == "rkh" else
                "the file names no q unit" if not file_unit else f"the file's q unit {file_unit!r} is not understood")
        meta["assumed"] = (f"q unit Å⁻¹ ({what}; for nm⁻¹ pass `--q-unit nm` (sdl analyse))")
        if kind != "rkh":
            warnings.append(f"{what}: q read as Å⁻¹; pass `--q-unit nm` or `--q-unit angstrom` (sdl analyse) to say")
    else:
        named = units.get("file") or file_unit
        meta["q_unit_file"] = q_unit_name(named) or named
        meta["q_unit_source"] = source
    meta["q_unit_text"] = units.get("file") or file_unit or None  # as the file writes it
    meta["q_unit_factor"] = factor

    # -- arrays ----------------------------------------------------------------------------------------
    def col(name: str) -> np.ndarray | None:
        v = getattr(d, name, None)
        if v is None:
            return None
        v = np.asarray(v, dtype=float).ravel()
        return v if v.size == np.size(d.x) else None

    arrays: dict[str, np.ndarray] = {"q_inv_angstrom": col("x") * factor, "intensity": col("y")}
    dy = col("dy")
    if dy is not None:
        arrays["sigma"] = dy
    dx, dxl, dxw = col("dx"), col("dxl"), col("dxw")
    if dxl is not None and np.any(np.abs(dxl[np.isfinite(dxl)]) > 0):
        arrays["slit_length_inv_angstrom"] = np.abs(dxl) * factor
        arrays["slit_width_inv_angstrom"] = (np.abs(dxw) * factor) if dxw is not None else np.zeros_like(dxl)
        meta["resolution"] = "slit (dQl/dQw)"
    elif dxw is not None and np.any(np.abs(dxw[np.isfinite(dxw)]) > 0):
        arrays["slit_length_inv_angstrom"] = np.zeros_like(dxw)
        arrays["slit_width_inv_angstrom"] = np.abs(dxw) * factor
        meta["resolution"] = "slit (dQw)"
    elif dx is not None and np.any(dx[np.isfinite(dx)] > 0):
        arrays["dq_inv_angstrom"] = np.abs(dx) * factor  # Qdev / sigmaQ: one standard deviation
        meta["resolution"] = "pinhole dQ (one standard deviation)"
    else:
        meta["resolution"] = "none in the file"
    try:
        arrays, row_warnings = clean_rows(arrays, zero_q)
    except AnalysisError as exc:
        raise AnalysisError(f"{p}: {exc}") from None
    warnings.extend(row_warnings)
    if warnings:
        meta["warnings"] = warnings
    return Measurement(technique="saxs", arrays=arrays, metadata=meta)


def _line_collimation(footer: str, desmeared: str | None, meta: dict[str, Any], warnings: list[str]) -> None:
    """A PDH footer's CounterSlitLength: the file comes from a line-collimation camera (Anton Paar SAXSess,
    SAXSpace), whose curves are slit-smeared by the beam profile unless they were desmeared. The file gives
    neither the profile nor whether it was desmeared, so the slit length (Å⁻¹) goes to the metadata
    (`line_collimation_slit_inv_angstrom`), whose presence flags every descriptor (`flag_line_collimation`),
    unless `desmeared` is "yes"."""
    m = _PDH_SLIT.search(footer)
    try:
        value = float(m.group(1)) if m else 0.0
    except ValueError:
        value = 0.0
    factor = _unit_factor(m.group(2).replace("_", "")) if m else None
    if not (value > 0 and factor):
        return
    slit = value * factor
    if desmeared == "yes":
        meta["line_collimation_desmeared"] = slit
        return
    meta["line_collimation_slit_inv_angstrom"] = slit
    warnings.append(f"the PDH file comes from a line-collimation camera (counter slit length {slit:.3g} Å⁻¹): unless the "
                    "curve was desmeared it is slit-smeared by a beam profile the file does not give, so every value is "
                    "flagged slit_smearing_suspect; if it was desmeared (SAXSquant, GIFT) pass `--desmeared yes`")


def _sasdata_version() -> str:
    try:
        from importlib.metadata import version

        return version("sasdata")
    except Exception:
        return "?"


def _reader(kind: str):
    def read(path: str | Path, format: str | None = "auto", q_unit: str | None = None,
             desmeared: str | None = None) -> Measurement:
        return read_sas(path, format=format, q_unit=q_unit, expected=kind, desmeared=desmeared)

    read.__name__ = f"read_{kind}"
    read.__doc__ = (f"A {FORMAT_NAMES[kind]} file (its suffix's format); with format='auto' the content is sniffed "
                    "and handed to the right loader, another `format` forces that one.")
    return read


read_columns = _reader("columns")
read_cansas = _reader("cansas")
read_nxcansas = _reader("nxcansas")
read_rkh = _reader("rkh")
read_pdh = _reader("pdh")
read_abs = _reader("abs")
