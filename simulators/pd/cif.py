"""Crystal structures from CIF files, for the powder-diffraction forward model.

Parsing uses gemmi (a maintained C++ CIF 1.1/2.0 parser with the space-group tables of the
International Tables, including settings and origin choices): it reads the many dialects
databases write (ICSD, COD, Materials Project, VESTA, Dans_Diffraction, FullProf exports),
reports syntax errors with a line number, and turns a Hermann–Mauguin or Hall symbol or an IT
number into symmetry operations when a file lists none. The structure factors are then computed by
Dans_Diffraction (`simulators.pd.physics.build_crystal`) from the cell, the symmetry operations and
the asymmetric unit read here, so the forward model is the same for CIF phases and for the phases
defined in code. pymatgen would also parse CIFs but is a far heavier dependency for this one job;
Dans_Diffraction's own reader silently treats a file without symmetry as P1 and has no error
positions.

What is checked, per file (`CifProblem` says what is wrong, in one line naming the file):

* readable CIF syntax; a data block with `_cell_length_a/b/c`, `_cell_angle_*` (angles default
  to 90° only when all three are absent, as CIF allows) and at least one `_atom_site_fract_*` row;
* symmetry: the `_space_group_symop_operation_xyz` / `_symmetry_equiv_pos_as_xyz` loop, else the
  space-group symbol (`_space_group_name_H-M_alt`, `_symmetry_space_group_name_H-M`, Hall) or
  number; a file with none of these is rejected (reading it as P1 would silently drop every
  symmetry-generated atom), unless it states P 1 itself;
* elements recognised (`_atom_site_type_symbol`, else the label's leading letters).

Partial occupancies are kept (the structure factor weights each site by its occupancy, i.e. the
average structure of a disordered solid solution); a note lists the sites. Missing U_iso/B_iso are
set to 0.006 Å² with a note. Hydrogen is kept.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np

from simulators.pd.physics import PhaseDef

__all__ = ["CifProblem", "read_cif", "write_cif", "formula_string", "phase_label"]

DEFAULT_UISO = 0.006  # Å²
_SYMOP_TAGS = ("_space_group_symop_operation_xyz", "_symmetry_equiv_pos_as_xyz", "_space_group_symop.operation_xyz",
               "_symmetry_equiv.pos_as_xyz")
_HM_TAGS = ("_space_group_name_H-M_alt", "_symmetry_space_group_name_H-M", "_space_group.name_H-M_alt",
            "_symmetry.space_group_name_H-M")
_HALL_TAGS = ("_space_group_name_Hall", "_symmetry_space_group_name_Hall", "_space_group.name_Hall")
_NUMBER_TAGS = ("_space_group_IT_number", "_symmetry_Int_Tables_number", "_space_group.IT_number")


class CifProblem(ValueError):
    """A CIF that cannot become a phase; the message names the file and what is missing."""


def _num(text: str | None) -> float | None:
    """A CIF number ('5.411(2)' -> 5.411); None for '?', '.' or absent."""
    if text is None:
        return None
    t = text.strip().strip("'\"")
    if t in ("", "?", "."):
        return None
    t = re.sub(r"\(\d+\)$", "", t)
    try:
        return float(t)
    except ValueError:
        return None


def _value(block, tags) -> str | None:
    for t in tags:
        v = block.find_value(t)
        if v is not None and v.strip().strip("'\"") not in ("", "?", "."):
            return v.strip().strip("'\"")
    return None


def _loop(block, tag) -> list[str]:
    col = block.find_values(tag)
    return [str(col[i]) for i in range(len(col))] if col else []


def _element(symbol: str):
    import gemmi

    m = re.match(r"([A-Z][a-z]?)", symbol.strip().strip("'\"").capitalize() if symbol.islower() else symbol.strip().strip("'\""))
    if not m:
        return None
    for cand in (m.group(1), m.group(1)[:1]):
        el = gemmi.Element(cand)
        if el.atomic_number > 0 and el.name.lower() == cand.lower():
            return el
    return None


def formula_string(counts: "OrderedDict[str, float]") -> str:
    """'LiCoO2' from {'Li': 1, 'Co': 1, 'O': 2}; non-integer counts written with up to 3 decimals."""
    out = []
    for el, n in counts.items():
        if abs(n - 1.0) < 1e-3:
            out.append(el)
        elif abs(n - round(n)) < 1e-3:
            out.append(f"{el}{int(round(n))}")
        else:
            out.append(f"{el}{n:.3f}".rstrip("0").rstrip("."))
    return "".join(out)


_EN = dict(zip(
    "H Li Be B C N O F Na Mg Al Si P S Cl K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Rb Sr Y Zr Nb Mo Tc Ru Rh "
    "Pd Ag Cd In Sn Sb Te I Cs Ba La Ce Pr Nd Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Th U".split(),
    [2.20, 0.98, 1.57, 2.04, 2.55, 3.04, 3.44, 3.98, 0.93, 1.31, 1.61, 1.90, 2.19, 2.58, 3.16, 0.82, 1.00, 1.36, 1.54,
     1.63, 1.66, 1.55, 1.83, 1.88, 1.91, 1.90, 1.65, 1.81, 2.01, 2.18, 2.55, 2.96, 0.82, 0.95, 1.22, 1.33, 1.6, 2.16,
     1.9, 2.2, 2.28, 2.20, 1.93, 1.69, 1.78, 1.96, 2.05, 2.1, 2.66, 0.79, 0.89, 1.10, 1.12, 1.13, 1.14, 1.17, 1.2, 1.2,
     1.1, 1.22, 1.23, 1.24, 1.25, 1.1, 1.27, 1.3, 1.5, 2.36, 1.9, 2.2, 2.20, 2.28, 2.54, 2.00, 1.62, 1.87, 2.02, 1.3,
     1.38]))  # Pauling electronegativities


def _reduce(counts: "OrderedDict[str, float]", z_declared: float | None) -> tuple["OrderedDict[str, float]", float]:
    """Counts per formula unit and Z: the declared Z (`_cell_formula_units_Z`), else the gcd of
    integral cell contents."""
    vals = np.array(list(counts.values()))
    if z_declared and z_declared > 0 and np.all(vals / z_declared > 0.01):
        z = float(z_declared)
    elif np.all(np.abs(vals - np.round(vals)) < 2e-3):
        z = float(np.gcd.reduce(np.round(vals).astype(int)))
    elif z_declared and z_declared > 0:
        z = float(z_declared)
    else:
        # mixed sites: the largest divisor of the integral counts' gcd that leaves the mixed
        # elements an integral total (Ce3.2Zr0.8O8 -> Ce0.8Zr0.2O2)
        integral = np.abs(vals - np.round(vals)) < 2e-3
        g = int(np.gcd.reduce(np.round(vals[integral]).astype(int))) if integral.any() else 1
        mixed = float(vals[~integral].sum())
        z = next((float(d) for d in range(max(g, 1), 0, -1)
                  if g % d == 0 and abs(mixed / d - round(mixed / d)) < 2e-3 and round(mixed / d) > 0), float(max(g, 1)))
    z = max(z, 1.0)
    return OrderedDict((k, v / z) for k, v in counts.items()), z


def phase_label(formula: str, spacegroup_symbol: str) -> str:
    """The label of a CIF phase: formula and space group, e.g. 'LiCoO2_R-3m', 'TiO2_I41/amd'
    ('/' kept: labels are descriptor-name parts, not file names)."""
    return f"{formula}_{spacegroup_symbol.replace(' ', '')}"


def read_cif(path: str | Path) -> tuple[PhaseDef, list[str]]:
    """(PhaseDef, notes) of the first structure in a CIF file; `CifProblem` when it cannot be one.

    The PhaseDef's name is the label (`phase_label`: formula and space group), its formula the
    reduced sum formula from the unit-cell contents (elements in the order of
    `_chemical_formula_sum` when the file states one), `source` the file name."""
    import gemmi

    path = Path(path)
    name = path.name
    notes: list[str] = []
    try:
        try:
            doc = gemmi.cif.read_file(str(path))
        except (RuntimeError, ValueError) as exc:
            if "duplicate" not in str(exc):
                raise
            doc = gemmi.cif.read_file(str(path), check_level=0)  # files written by some programs repeat a tag
            notes.append(f"{str(exc).replace(str(path), name)}: the first value is used")
    except (RuntimeError, ValueError, OSError) as exc:
        msg = str(exc).replace(str(path), name)
        raise CifProblem(f"{name}: not a readable CIF ({msg})") from None
    blocks = [b for b in doc if b.find_value("_cell_length_a") is not None]
    if not blocks:
        raise CifProblem(f"{name}: no data block with a unit cell (_cell_length_a, _cell_length_b, _cell_length_c)")
    block = blocks[0]
    if len(blocks) > 1:
        notes.append(f"{len(blocks)} structures in the file; the first (data_{block.name}) is used")
    abc = [_num(block.find_value(f"_cell_length_{k}")) for k in "abc"]
    if any(v is None or v <= 0 for v in abc):
        raise CifProblem(f"{name}: unit cell lengths _cell_length_a/b/c missing or not positive ({abc})")
    ang = [_num(block.find_value(f"_cell_angle_{k}")) for k in ("alpha", "beta", "gamma")]
    if all(v is None for v in ang):
        ang = [90.0, 90.0, 90.0]
        notes.append("no _cell_angle_* given: 90° assumed")
    if any(v is None or not (0 < v < 180) for v in ang):
        raise CifProblem(f"{name}: cell angles _cell_angle_alpha/beta/gamma incomplete or out of range ({ang})")
    cell = tuple(float(v) for v in (*abc, *ang))

    # symmetry
    ops: list[str] = []
    for t in _SYMOP_TAGS:
        ops = [o.strip().strip("'\"") for o in _loop(block, t)]
        if ops:
            break
    sg = None
    if ops:
        try:
            go = gemmi.GroupOps([gemmi.Op(o.replace(" ", "")) for o in ops])
        except (RuntimeError, ValueError) as exc:
            raise CifProblem(f"{name}: a symmetry operation in the file is not understood ({exc})") from None
        sg = gemmi.find_spacegroup_by_ops(go)
        ops = [op.triplet() for op in go]
    else:
        hall, hm, number = _value(block, _HALL_TAGS), _value(block, _HM_TAGS), _value(block, _NUMBER_TAGS)
        try:
            if hall:
                sg = gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(hall))
            if sg is None and hm:
                sg = gemmi.find_spacegroup_by_name(hm, cell[3], cell[5])
            if sg is None and number and _num(number):
                sg = gemmi.find_spacegroup_by_number(int(_num(number)))
                notes.append(f"symmetry from the space-group number {int(_num(number))} alone: the standard "
                             f"setting {sg.xhm()} is assumed")
        except (RuntimeError, ValueError):
            sg = None
        if sg is None:
            given = hm or hall or number
            raise CifProblem(
                f"{name}: no symmetry: neither a _space_group_symop_operation_xyz (or _symmetry_equiv_pos_as_xyz) "
                "loop nor a space group " + (f"gemmi recognises ({given!r})" if given else
                                             "(_space_group_name_H-M_alt, _space_group_IT_number)")
                + "; add one, or write the full cell in P 1 with `_space_group_name_H-M_alt 'P 1'`")
        ops = [op.triplet() for op in sg.operations()]
    if sg is not None:
        sg_symbol, sg_number = sg.short_name(), sg.number
        if sg_symbol.startswith("H"):  # gemmi's short name of a rhombohedral group on hexagonal axes
            sg_symbol = "R" + sg_symbol[1:]
    else:
        sg_symbol = (_value(block, _HM_TAGS) or "unknown").replace(" ", "")
        sg_number = int(_num(_value(block, _NUMBER_TAGS)) or 0)
        notes.append(f"symmetry operations match no tabulated space-group setting; used as given ({len(ops)} operations)")

    # atoms
    fx, fy, fz = (_loop(block, f"_atom_site_fract_{k}") for k in "xyz")
    if not fx or not (len(fx) == len(fy) == len(fz)):
        raise CifProblem(f"{name}: no atom positions (_atom_site_fract_x/y/z loop)")
    labels = _loop(block, "_atom_site_label") or [f"site{i + 1}" for i in range(len(fx))]
    types = _loop(block, "_atom_site_type_symbol") or labels
    occs = _loop(block, "_atom_site_occupancy") or ["1"] * len(fx)
    uisos = _loop(block, "_atom_site_U_iso_or_equiv")
    bisos = _loop(block, "_atom_site_B_iso_or_equiv")
    atoms, u_list, partial, no_u = [], [], [], []
    for i in range(len(fx)):
        el = _element(types[i] if i < len(types) else labels[i])
        if el is None:
            raise CifProblem(f"{name}: atom site {labels[i]!r} has no recognisable element ({types[i]!r})")
        xyz = [_num(v[i]) for v in (fx, fy, fz)]
        if any(v is None for v in xyz):
            raise CifProblem(f"{name}: atom site {labels[i]!r} has an incomplete position {xyz}")
        occ = _num(occs[i]) if i < len(occs) else 1.0
        occ = 1.0 if occ is None else occ
        if not (0 < occ <= 1.0 + 1e-6):
            raise CifProblem(f"{name}: atom site {labels[i]!r} has occupancy {occ} outside (0, 1]")
        if occ < 0.999:
            partial.append(f"{labels[i]} {occ:g}")
        u = _num(uisos[i]) if i < len(uisos) else None
        if u is None and i < len(bisos) and _num(bisos[i]) is not None:
            u = _num(bisos[i]) / (8 * math.pi ** 2)
        if u is None or u <= 0 or u > 0.5:
            no_u.append(labels[i])
            u = DEFAULT_UISO
        atoms.append((el.name, *xyz, float(min(occ, 1.0))))
        u_list.append(float(u))
    if partial:
        notes.append("partial occupancies kept (average structure; superstructure peaks of an ordered "
                     f"arrangement are not modelled): {', '.join(partial[:6])}{' ...' if len(partial) > 6 else ''}")
    if no_u:
        notes.append(f"no displacement parameter for {', '.join(no_u[:6])}{' ...' if len(no_u) > 6 else ''}: "
                     f"U_iso = {DEFAULT_UISO} Å² used")

    # unit-cell contents: every symmetry image of every site, duplicates (special positions) merged
    counts: "OrderedDict[str, float]" = OrderedDict()
    mass = 0.0
    import gemmi as _g

    gops = [_g.Op(o) for o in ops]
    for el, x, y, z, occ in atoms:
        pts = np.array([op.apply_to_xyz([x, y, z]) for op in gops], dtype=float) % 1.0
        uniq: list[np.ndarray] = []
        for p in pts:
            if not any(np.all(np.abs(((p - q) + 0.5) % 1.0 - 0.5) < 2e-3) for q in uniq):
                uniq.append(p)
        n = len(uniq) * occ
        counts[el] = counts.get(el, 0.0) + n
        mass += n * _g.Element(el).weight
    per_fu, z = _reduce(counts, _num(block.find_value("_cell_formula_units_Z")))
    # elements by Pauling electronegativity (cations first: LiCoO2, Sr3LiRuO6), as chemists write them
    per_fu = OrderedDict(sorted(per_fu.items(), key=lambda kv: (_EN.get(kv[0], 2.0), kv[0])))
    formula = formula_string(per_fu)
    label = phase_label(formula, sg_symbol)
    phase = PhaseDef(name=label, formula=formula, spacegroup=int(sg_number), cell=cell, atoms=tuple(atoms),
                     z_formula_units=int(round(z)) if abs(z - round(z)) < 1e-6 else 1,
                     molar_mass_g=mass / (round(z) if abs(z - round(z)) < 1e-6 else 1.0),
                     uiso=float(np.mean(u_list)), symops=tuple(ops), uisos=tuple(u_list),
                     spacegroup_symbol=sg_symbol, source=name)
    return phase, notes


def write_cif(phase: PhaseDef, path: str | Path, comment: str = "") -> Path:
    """A CIF 1.1 file of a PhaseDef (cell, symmetry operations, asymmetric unit with occupancies
    and U_iso; `_pd_phase_name` keeps its name). The symmetry operations are written out (from
    Dans_Diffraction's tables for a PhaseDef given by IT number: the Bilbao default setting), so
    no reader has to guess the setting."""
    from simulators.pd.physics import symmetry_operations

    ops = symmetry_operations(phase)
    import gemmi

    sg = gemmi.find_spacegroup_by_ops(gemmi.GroupOps([gemmi.Op(o) for o in ops]))
    lines = [f"# {comment}" if comment else "# written by simulators.pd.cif.write_cif", f"data_{re.sub(r'[^A-Za-z0-9_]', '_', phase.name)}",
             f"_pd_phase_name '{phase.name}'", f"_chemical_formula_sum '{phase.formula}'"]
    for k, v in zip(("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma"), phase.cell):
        lines.append(f"_cell_{k} {v:.6g}")
    lines.append(f"_cell_formula_units_Z {phase.z_formula_units}")
    if sg is not None:
        lines += [f"_space_group_name_H-M_alt '{sg.xhm()}'", f"_space_group_IT_number {sg.number}"]
    lines += ["loop_", "_space_group_symop_operation_xyz"] + [f"'{o}'" for o in ops]
    lines += ["loop_", "_atom_site_label", "_atom_site_type_symbol", "_atom_site_fract_x", "_atom_site_fract_y",
              "_atom_site_fract_z", "_atom_site_occupancy", "_atom_site_U_iso_or_equiv"]
    us = phase.uisos or (phase.uiso,) * len(phase.atoms)
    for i, ((el, x, y, z, occ), u) in enumerate(zip(phase.atoms, us)):
        lines.append(f"{el}{i + 1} {el} {x:.6f} {y:.6f} {z:.6f} {occ:.4f} {u:.5f}")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path
