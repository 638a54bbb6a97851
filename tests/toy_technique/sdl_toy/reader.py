"""The `.toy` format: a text file whose first line is `# toy`, then optional `# key: value` header
lines (`energy_offset_eV` is read), then whitespace columns energy_eV, intensity[, sigma]."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdl.errors import AnalysisError
from sdl.measurement import Measurement, read_columns


def read_toy(path: str | Path, energy_offset_ev: float | None = None) -> Measurement:
    """A toy spectrum; energies shifted by `energy_offset_ev` (`sdl analyse toy --energy-offset-ev`),
    else by the header's `energy_offset_eV`, else not at all."""
    data, header = read_columns(path)
    if not header or header[0].strip().lower() != "toy":
        raise AnalysisError(f"{path}: not a toy spectrum (the first line must be `# toy`)")
    meta: dict[str, Any] = {"source": str(path), "header": header[:20]}
    for line in header[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip() == "energy_offset_eV":
            try:
                meta["energy_offset_eV"] = float(value)
            except ValueError:
                raise AnalysisError(f"{path}: energy_offset_eV {value.strip()!r} is not a number") from None
    if energy_offset_ev is not None:
        meta["energy_offset_eV"] = float(energy_offset_ev)
    offset = meta.get("energy_offset_eV", 0.0)
    arrays = {"energy_eV": data[:, 0] + offset, "intensity": data[:, 1]}
    if data.shape[1] >= 3:
        arrays["sigma"] = data[:, 2]
    return Measurement(technique="toy", arrays=arrays, metadata=meta)


def write_toy(path: str | Path, energy_eV, intensity, sigma=None, energy_offset_eV: float | None = None) -> Path:
    """Write a `.toy` file (for tests and examples)."""
    p = Path(path)
    lines = ["# toy"]
    if energy_offset_eV is not None:
        lines.append(f"# energy_offset_eV: {energy_offset_eV}")
    cols = [energy_eV, intensity] + ([sigma] if sigma is not None else [])
    lines += [" ".join(f"{float(v):.8g}" for v in row) for row in zip(*cols)]
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p
