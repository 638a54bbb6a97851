"""Measurement: what an instrument returns (named arrays with units in their names, plus metadata),
and reading/writing the field's plain column formats (.xy, .dat, .chi, .gr, .csv).

Array names carry units (`x_inv_angstrom`, `x_deg`, `x_eV`, `x_angstrom`; `intensity` and `sigma`
share one unit). Readers of a technique's own formats live in its folder (sdl/techniques/<t>/).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sdl.errors import AnalysisError, ProtocolError
from sdl.protocol import ArrayPayload


class Measurement(BaseModel):
    """One measurement of one sample by one technique."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    technique: str
    arrays: dict[str, np.ndarray]
    metadata: dict[str, Any] = Field(default_factory=dict)

    def require(self, *names: str) -> list[np.ndarray]:
        """The named arrays as float64, checked to be present, 1-D, equal length and finite."""
        missing = [n for n in names if n not in self.arrays]
        if missing:
            raise AnalysisError(
                f"{self.technique} measurement lacks array(s) {missing}; it has {sorted(self.arrays)}"
            )
        out = [np.asarray(self.arrays[n], dtype=float) for n in names]
        n0 = out[0].shape
        for name, a in zip(names, out):
            if a.ndim != 1 or a.shape != n0:
                raise AnalysisError(f"{self.technique} array {name!r} has shape {a.shape}; expected 1-D of {n0}")
            bad = int(np.count_nonzero(~np.isfinite(a)))
            if bad:
                raise AnalysisError(
                    f"{self.technique} measurement has {bad} non-finite value(s) (NaN/inf) in {name!r}"
                    f"{' of ' + str(self.metadata.get('source')) if self.metadata.get('source') else ''};"
                    " mask or remove them before analysis"
                )
        return out

    # ----- wire ------------------------------------------------------------------------------
    def to_wire(self) -> dict[str, Any]:
        return {
            "technique": self.technique,
            "arrays": {k: ArrayPayload.encode(v).model_dump() for k, v in self.arrays.items()},
            "metadata": self.metadata,
        }

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> "Measurement":
        try:
            technique = body["technique"]
            arrays = {k: ArrayPayload.model_validate(v).decode(k) for k, v in body["arrays"].items()}
        except ProtocolError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ProtocolError(f"measurement body malformed: {exc!r}; expected technique, arrays{{name: array}}, metadata") from None
        return cls(technique=str(technique), arrays=arrays, metadata=dict(body.get("metadata") or {}))


# ----- plain column files --------------------------------------------------------------------------

def read_columns(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Numeric columns of a plain text file, and its header/comment lines.

    Accepts whitespace, comma or semicolon separated columns; lines starting with #, !, % or
    any non-numeric line before the data are header.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise AnalysisError(f"cannot read {p}: {exc.strerror}") from None
    header: list[str] = []
    rows: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if s[0] in "#!%;":
            header.append(s.lstrip("#!%; "))
            continue
        fields = [f for f in re.split(r"[,;\s]+", s) if f]
        try:
            row = [float(f) for f in fields]
        except ValueError:
            if rows:
                raise AnalysisError(f"{p}:{lineno}: non-numeric value in data row: {s[:60]!r}") from None
            header.append(s)
            continue
        rows.append(row)
    if not rows:
        raise AnalysisError(f"{p}: no numeric data rows found")
    width = min(len(r) for r in rows)
    if width < 2:
        raise AnalysisError(f"{p}: need at least two columns (x, y), found {width}")
    if any(len(r) != len(rows[0]) for r in rows):
        raise AnalysisError(f"{p}: rows have different numbers of columns; expected {len(rows[0])} everywhere")
    return np.asarray(rows, dtype=float), header


# metadata a reader adds about what it assumed of the file, not data to write back
_READ_NOTES = ("assumed",)


def write_columns(path: str | Path, measurement: Measurement, names: list[str] | None = None) -> Path:
    """Write 1-D arrays as whitespace columns with a '# name name ...' header (the .dat convention).

    The column names carry their units (`q_inv_angstrom`, `two_theta_deg`), so a reader takes the
    unit from the header whatever the original file's notes said."""
    p = Path(path)
    names = names or [k for k, v in measurement.arrays.items() if np.ndim(v) == 1]
    cols = np.column_stack([np.asarray(measurement.arrays[n], dtype=float) for n in names])
    meta = " ".join(f"{k}={v}" for k, v in measurement.metadata.items()
                    if isinstance(v, (int, float, str)) and k not in _READ_NOTES)
    header = f"technique={measurement.technique} {meta}\n" + " ".join(names)
    np.savetxt(p, cols, header=header, fmt="%.10g")
    return p
