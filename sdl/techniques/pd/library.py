"""The phase library of a pd_ml model: CIF files in, a phase table out.

`read_cif_folder` turns a folder of CIFs into phases (simulators.pd.cif: gemmi parsing, the
Dans_Diffraction forward model), one clear line per file that cannot be used (the rest still
train), and drops duplicates: the same reduced formula and space group, or a simulated pattern that
matches an earlier phase's (cosine ≥ `PATTERN_MATCH` at the best relative lattice scale, i.e. the
two cannot be told apart by powder diffraction within the lattice freedom the analyser allows:
±1 % each, so the relative scale is searched over ±2 %).

A model folder holds `phases.json` (the table: label = formula + space group, or the file name
with `--label file`; source CIF file; space group; lattice-scale range; notes) and `cif/` (copies of
the CIFs, so the folder is self-contained); `load_phases` reads the structures back from there.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdl.errors import AnalysisError
from simulators.pd.cif import CifProblem, read_cif
from simulators.pd.physics import PhaseDef

__all__ = ["LibraryPhase", "read_cif_folder", "save_phases", "load_phases", "PHASES_FILE", "CIF_DIR",
           "DEFAULT_LATTICE_RANGE", "PATTERN_MATCH"]

PHASES_FILE = "phases.json"
CIF_DIR = "cif"
DEFAULT_LATTICE_RANGE = (0.99, 1.01)  # lattice scale relative to the CIF cell
PATTERN_MATCH = 0.98
CIF_SUFFIXES = (".cif", ".mcif")


@dataclass
class LibraryPhase:
    """One phase of a model's library."""

    phase: PhaseDef
    lattice_range: tuple[float, float] = DEFAULT_LATTICE_RANGE
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.phase.name

    def row(self) -> dict:
        p = self.phase
        return {"label": p.name, "formula": p.formula, "space_group": p.spacegroup_symbol,
                "space_group_number": p.spacegroup, "source_cif": p.source, "cif": f"{CIF_DIR}/{p.source}",
                "lattice_range": list(self.lattice_range), "a_angstrom": p.cell[0], "notes": self.notes}


def _standard_patterns(phases: list[PhaseDef], scales=tuple(np.linspace(0.98, 1.02, 33))) -> np.ndarray:
    """(P, S, N) unit-norm patterns at Cu Kα over Q 0.75–5.15 Å⁻¹ (30 nm crystallites), one per
    lattice scale (±2 %: two phases each free by ±1 % can meet anywhere in it), for the
    pattern-match duplicate test."""
    from simulators.pd import physics as spd

    q = np.linspace(0.75, 5.15, 4096)
    tt = spd.q_to_two_theta(q, spd.WAVELENGTH_CU_KA1)
    prof = spd.Profile()
    out = np.zeros((len(phases), len(scales), q.size), np.float32)
    for i, p in enumerate(phases):
        for j, s in enumerate(scales):
            v = spd.phase_patterns(tt, [spd.PhaseComponent(p, 1.0, s, 30.0)], prof)[0]
            out[i, j] = v / max(np.linalg.norm(v), 1e-300)
    return out


def read_cif_folder(folder: str | Path, lattice_ranges: dict[str, tuple[float, float]] | None = None,
                    log=print, label: str = "formula") -> tuple[list[LibraryPhase], list[str], list[str]]:
    """(phases, problems, dropped) from every .cif in `folder` (sorted by file name). `problems`:
    one line per file that could not be used; `dropped`: one line per duplicate. `log` prints the
    per-file notes as they come. `label`: "formula" (formula_spacegroup, e.g. LiCoO2_R-3m) or
    "file" (the file name without .cif)."""
    from dataclasses import replace

    if label not in ("formula", "file"):
        raise AnalysisError(f"--label {label!r}: use 'formula' or 'file'")
    folder = Path(folder)
    if not folder.is_dir():
        raise AnalysisError(f"--phases {folder}: not a folder of CIF files")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in CIF_SUFFIXES)
    if not files:
        raise AnalysisError(f"--phases {folder}: no .cif files in it")
    ranges = dict(lattice_ranges or {})
    phases: list[LibraryPhase] = []
    problems: list[str] = []
    dropped: list[str] = []
    seen: dict[tuple[str, int], str] = {}
    for f in files:
        try:
            p, notes = read_cif(f)
        except CifProblem as exc:
            problems.append(str(exc))
            log(f"  skipped {exc}")
            continue
        if label == "file":
            p = replace(p, name=f.stem)
        key = (p.formula, p.spacegroup if p.spacegroup else hash(p.symops))
        if key in seen:
            dropped.append(f"{f.name}: same formula {p.formula} and space group {p.spacegroup_symbol} as {seen[key]}")
            continue
        if any(q.label == p.name for q in phases):
            dropped.append(f"{f.name}: label {p.name} already taken by an earlier file")
            continue
        seen[key] = f.name
        for n in notes:
            log(f"  {f.name}: note: {n}")
        phases.append(LibraryPhase(p, tuple(ranges.pop(p.name, DEFAULT_LATTICE_RANGE)), notes))
    if ranges:
        raise AnalysisError(f"--lattice-range names phases not in the library: {sorted(ranges)} "
                            f"(labels: {[q.label for q in phases]})")
    if len(phases) > 1:
        from simulators.pd import physics as spd

        try:
            pats = _standard_patterns([q.phase for q in phases])
        except Exception as exc:  # noqa: BLE001 - a structure Dans_Diffraction cannot compute
            raise AnalysisError(f"simulating the library's patterns failed: {type(exc).__name__}: {exc}") from None
        keep: list[int] = []
        for i in range(len(phases)):
            match = None
            for j in keep:
                c = float(np.max(pats[i] @ pats[j][len(pats[j]) // 2]))
                if c >= PATTERN_MATCH:
                    match = (j, c)
                    break
            if match is None:
                keep.append(i)
            else:
                j, c = match
                dropped.append(f"{phases[i].phase.source}: its powder pattern matches {phases[j].phase.source} "
                               f"({phases[j].label}; cosine {c:.3f} at a relative lattice scale within ±2 %, "
                               "where each phase's ±1 % freedom lets them meet)")
        phases = [phases[i] for i in keep]
        del spd
    return phases, problems, dropped


def save_phases(phases: list[LibraryPhase], source_folder: str | Path, model_dir: str | Path,
                extra: dict | None = None) -> Path:
    """Write phases.json and copy the CIFs into model_dir/cif/."""
    out = Path(model_dir)
    cif_dir = out / CIF_DIR
    cif_dir.mkdir(parents=True, exist_ok=True)
    for q in phases:
        src = Path(source_folder) / q.phase.source
        if src.resolve() != (cif_dir / q.phase.source).resolve():
            shutil.copyfile(src, cif_dir / q.phase.source)
    table = {"phases": [q.row() for q in phases], **(extra or {})}
    path = out / PHASES_FILE
    path.write_text(json.dumps(table, indent=2, ensure_ascii=False))
    return path


def load_phases(model_dir: str | Path) -> list[LibraryPhase]:
    """The library of a model folder, in the network's class order, structures read from its cif/."""
    d = Path(model_dir)
    path = d / PHASES_FILE
    if not path.exists():
        raise AnalysisError(f"{d} is not a pd_ml model folder: no {PHASES_FILE} (make one with "
                            "`sdl train pd --phases CIF_DIR --out MODEL_DIR`)")
    table = json.loads(path.read_text())
    out: list[LibraryPhase] = []
    for row in table["phases"]:
        try:
            p, notes = read_cif(d / row["cif"])
        except (CifProblem, OSError) as exc:
            raise AnalysisError(f"model {d}: phase {row['label']}: {exc}") from None
        if p.name != row["label"]:
            from dataclasses import replace

            p = replace(p, name=row["label"])
        out.append(LibraryPhase(p, tuple(row.get("lattice_range", DEFAULT_LATTICE_RANGE)), list(row.get("notes", []))))
    return out
