"""PDF forward model of metal nanoclusters: structures from ase, pair-distance tables, reciprocal-
space artefacts, G(r) by sine Fourier transform.

Conventions (PDFgetX3 / pdffit2):

* S(Q) - 1 = (1/N) Σ_{i≠j} f_i f_j sin(Q r_ij)/(Q r_ij) · exp(-Q² U) / <f>²  (Debye equation per atom,
  Faber–Ziman normalisation by the mean form factor squared; U = Uiso in Å², the pair Debye–Waller
  factor of two uncorrelated atoms, exp(-Q²(U_i + U_j)/2)).
* F(Q) = Q [S(Q) - 1] (Å⁻¹), G(r) = (2/π) ∫_{Qmin}^{Qmax} F(Q) sin(Qr) dQ (Å⁻²), which for Qmin → 0
  above the small-angle region and Qmax → ∞ is 4πr[ρ(r) - ρ0] (for a cluster, ρ0 γ0(r)). Qdamp is
  the instrument's Gaussian Q resolution: it multiplies G(r) by exp(-(Qdamp r)²/2) as in pdffit2.
* debyecalculator (used as the reference in tests and by `debye_gr`) sums only i < j pairs, so its
  G(r) is half this one; the shapes agree.
* r grid: `R_GRID` = 1.0–30.0 Å in 0.05 Å steps (what the analysers see); Q grid: `Q_STEP` =
  0.05 Å⁻¹ from 0 to `Q_LIMIT` = 40 Å⁻¹ (the sine transform's period 2π/Q_STEP = 126 Å is far
  beyond the largest cluster, so no aliasing).

Speed: a structure's Debye sum is computed once, as a `PairTable`: its pair distances (CIC-binned on
a fine grid, 0.0048 length units) are turned into Σ h_k sinc(x r_k) on a grid of x = Q·length by one
FFT (x_k r_k = 2π jk/M), with the binning window divided out. Everything else is cheap and analytic
on that table: lattice expansion and the element's bond length scale x, ADPs multiply by
exp(-Q²U), mixtures and size distributions are atom-weighted sums of tables, a ligand/oxide shell
adds metal–ligand and ligand–ligand pair terms with form factors (Waasmaier–Kirfel, from
debyecalculator's table), and the measurement (`Acquisition`: counting noise on I(Q) with Compton
scattering and solvent/capillary background, imperfect background subtraction, PDFgetX3's ad-hoc
polynomial correction up to r_poly, Qmin/Qmax truncation, optional Lorch window, Qdamp) runs on
F(Q) before the transform. Base structures are built with the nearest-neighbour distance as the
length unit, so one table serves every element (a monatomic PDF depends on the element only through
its bond length).

Motifs (DeepStruc's 7 types) and builders (ase): `icosahedral` (ase.cluster.Icosahedron, Mackay
shells), `decahedral` (ase.cluster.Decahedron, Marks re-entrances), `octahedral`
(ase.cluster.Octahedron, truncated), `fcc`/`bcc`/`sc` (ase.build.bulk cut to a sphere or ellipsoid
around a random centre), `hcp` (close-packed layers AB, c/a free), and twinned or stacking-faulted
fcc/hcp (close-packed layers in a given stacking sequence). `amorphous` clusters (random close
packing by soft-sphere relaxation) and periodic `bulk` crystals (windowed pair sums with the
continuum subtracted, so G(r) keeps its -4πρ0 r baseline out to r_max) are the "other" structures.
"""

from __future__ import annotations

import importlib.util
import json
import math
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "R_GRID", "Q_STEP", "Q_LIMIT", "Q_GRID", "MOTIFS", "ELEMENTS", "Element",
    "base_positions", "build_cluster", "PairTable", "pair_table", "base_table", "bulk_table",
    "form_factor", "ClusterComponent", "Shell", "Acquisition", "reduced_structure_function",
    "sq_minus_1", "measured_fq", "adhoc_correction", "fq_to_gr", "gr", "fq", "sq", "iq", "debye_gr",
    "BACKGROUNDS", "background_shape", "coordination_numbers",
]

R_GRID = np.arange(1.0, 30.0 + 1e-9, 0.05)  # Å
Q_STEP = 0.05  # Å⁻¹
Q_LIMIT = 40.0  # Å⁻¹, the highest Qmax the model computes
Q_GRID = np.arange(0.0, Q_LIMIT + 1e-9, Q_STEP)

MOTIFS = ("sc", "bcc", "fcc", "hcp", "icosahedral", "decahedral", "octahedral")

# Table grid (reduced units: x = Q · length, r in length units)
_X_STEP = 0.01
_X_MAX = 150.0  # Q_LIMIT × 3.75 Å (the longest bond length of the element table, with expansion)
_NX = int(round(_X_MAX / _X_STEP)) + 1
_FFT_N = 2 ** 17
_R_BIN = 2.0 * math.pi / (_FFT_N * _X_STEP)  # 0.0048 length units
_NN_TOL = 1.1  # first-shell cutoff in bond lengths (bcc second shell at 1.155, fcc/hcp/sc at √2)


@dataclass(frozen=True)
class Element:
    """An element's room-temperature structure and nearest-neighbour distance (Å). `lattice` is its
    own crystal structure (a, c in Å); clusters of any motif take `nn_angstrom` as bond length."""

    symbol: str
    lattice: str
    a: float
    c: float = 0.0

    @property
    def nn_angstrom(self) -> float:
        if self.lattice == "fcc":
            return self.a / math.sqrt(2.0)
        if self.lattice == "bcc":
            return self.a * math.sqrt(3.0) / 2.0
        if self.lattice == "hcp":
            return min(self.a, math.sqrt(self.a ** 2 / 3.0 + self.c ** 2 / 4.0))
        return self.a  # sc


# Lattice parameters at room temperature (Å), from the standard crystallographic tables (Kittel;
# Pearson's handbook); Po is the only simple-cubic element.
ELEMENTS: dict[str, Element] = {e.symbol: e for e in [
    Element("Pt", "fcc", 3.9242), Element("Pd", "fcc", 3.8907), Element("Au", "fcc", 4.0782),
    Element("Ag", "fcc", 4.0853), Element("Cu", "fcc", 3.6149), Element("Ni", "fcc", 3.5240),
    Element("Rh", "fcc", 3.8034), Element("Ir", "fcc", 3.8390), Element("Al", "fcc", 4.0495),
    Element("Fe", "bcc", 2.8665), Element("Mo", "bcc", 3.1470), Element("W", "bcc", 3.1652),
    Element("Nb", "bcc", 3.3004), Element("Cr", "bcc", 2.8846),
    Element("Co", "hcp", 2.5071, 4.0695), Element("Zn", "hcp", 2.6649, 4.9468),
    Element("Mg", "hcp", 3.2094, 5.2108), Element("Ti", "hcp", 2.9508, 4.6855),
    Element("Ru", "hcp", 2.7059, 4.2815),
    Element("Po", "sc", 3.359),
]}


def _element(symbol: str) -> Element:
    try:
        return ELEMENTS[symbol]
    except KeyError:
        raise ValueError(f"unknown element {symbol!r}; known: {sorted(ELEMENTS)}") from None


# ----- structures (positions in nearest-neighbour units) ----------------------------------------------

_CP_OFFSETS = np.array([[0.0, 0.0], [0.5, math.sqrt(3) / 6], [1.0, math.sqrt(3) / 3]])  # A, B, C


def _stacking(kind: str, n_layers: int, rng: np.random.Generator | None, where: float = 0.5,
              hexagonality: float = 0.0) -> list[int]:
    """Layer positions (0=A, 1=B, 2=C) of a close-packed stack: `fcc` (ABC…), `hcp` (AB…), `twin`
    (fcc mirrored at one plane), `fault` (fcc with one intrinsic fault), `hcp_fault` (hcp with one
    fcc-like step), `random` (each layer hexagonal, i.e. ABA-like, with probability `hexagonality`,
    else cubic: 0 is fcc, 1 hcp; 0.6–0.95 a faulted hcp with 5–40 % of its layers faulted, 0.05–0.25
    a randomly faulted/twinned fcc; needs `rng`). `where`: fraction of the stack at which the
    twin/fault sits."""
    k = max(1, min(n_layers - 2, int(round(where * n_layers))))
    seq = [0]
    step = 1
    for i in range(1, n_layers):
        if kind == "random":
            if rng is None:
                raise ValueError("stacking 'random' needs an rng")
            # a flip of the step direction makes the previous layer hexagonal (ABA), else cubic (ABC)
            step = -step if (i > 1 and rng.random() < hexagonality) else step
        elif kind == "fcc":
            step = 1
        elif kind == "twin":
            step = 1 if i <= k else -1
        elif kind == "fault":
            step = -1 if i == k else 1
        elif kind == "hcp":
            step = 1 if i % 2 else -1
        elif kind == "hcp_fault":
            step = (1 if i % 2 else -1) if i != k else (1 if (i - 1) % 2 else -1)
        else:
            raise ValueError(f"unknown stacking {kind!r}")
        seq.append((seq[-1] + step) % 3)
    return seq


def _close_packed(radius: float, kind: str, c_over_a: float, centre: np.ndarray, where: float,
                  hexagonality: float = 0.0, stack_seed: int = 0) -> np.ndarray:
    """Close-packed layers (bond length 1) stacked along z by `_stacking(kind)`, large enough to cut
    a sphere of `radius` around `centre` (fractional offset within one cell); layer spacing c/a / 2
    (`random` and hcp kinds; fcc kinds: the ideal √(2/3))."""
    spacing = math.sqrt(2.0 / 3.0) if kind in ("fcc", "twin", "fault") else c_over_a / 2.0
    n_lay = int(math.ceil(2 * radius / spacing)) + 4
    m = int(math.ceil(radius)) + 3
    seq = _stacking(kind, n_lay, np.random.default_rng(stack_seed) if kind == "random" else None, where, hexagonality)
    i, j = np.meshgrid(np.arange(-2 * m, 2 * m + 1), np.arange(-2 * m, 2 * m + 1), indexing="ij")
    base = np.stack([i.ravel() + 0.5 * j.ravel(), (math.sqrt(3) / 2) * j.ravel()], axis=1)
    pts = []
    for L, s in enumerate(seq):
        xy = base + _CP_OFFSETS[s]
        z = np.full((xy.shape[0], 1), (L - n_lay / 2) * spacing)
        pts.append(np.hstack([xy, z]))
    pos = np.vstack(pts)
    return pos - np.array([centre[0], centre[1] * math.sqrt(3) / 2, centre[2] * spacing])


def _lattice_points(lattice: str, radius: float, centre: np.ndarray, c_over_a: float = 1.633) -> np.ndarray:
    """Points of an ase bulk crystal (bond length 1) covering a sphere of `radius` around `centre`."""
    from ase.build import bulk

    if lattice == "fcc":
        atoms = bulk("Cu", "fcc", a=math.sqrt(2.0), cubic=True)
    elif lattice == "bcc":
        atoms = bulk("Fe", "bcc", a=2.0 / math.sqrt(3.0), cubic=True)
    elif lattice == "sc":
        atoms = bulk("Po", "sc", a=1.0)
    elif lattice == "hcp":
        atoms = bulk("Mg", "hcp", a=1.0, c=c_over_a, orthorhombic=True)
    else:
        raise ValueError(f"unknown lattice {lattice!r}")
    cell = np.asarray(atoms.cell)
    n = np.ceil(2 * radius / np.linalg.norm(cell, axis=1)).astype(int) + 2
    rep = atoms.repeat(tuple(int(v) for v in n))
    pos = rep.positions - (n // 2) @ cell
    return pos - np.asarray(centre) @ cell


def _neighbour_counts(pos: np.ndarray, cutoff: float = _NN_TOL) -> np.ndarray:
    from scipy.spatial import cKDTree

    tree = cKDTree(pos)
    return np.array([len(v) - 1 for v in tree.query_ball_point(pos, cutoff)])


def _trim(pos: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Remove `fraction` of the surface atoms (coordination < 12), those furthest along a random
    direction: a partly grown outer shell, which fills the sizes between magic numbers."""
    if fraction <= 0:
        return pos
    cn = _neighbour_counts(pos)
    surf = np.flatnonzero(cn < 12)
    n_remove = int(round(fraction * surf.size))
    if n_remove <= 0 or pos.shape[0] - n_remove < 4:
        return pos
    u = rng.normal(size=3)
    u /= np.linalg.norm(u)
    order = surf[np.argsort(-(pos[surf] @ u))]
    keep = np.ones(pos.shape[0], dtype=bool)
    keep[order[:n_remove]] = False
    return pos[keep]


def _random_close_packed(n_atoms: int, rng: np.random.Generator, iterations: int = 600) -> np.ndarray:
    """A liquid-like (amorphous) cluster: random points in a sphere at packing fraction 0.55,
    pushed apart (soft-sphere relaxation) until no two are closer than 0.92 bond lengths."""
    from scipy.spatial import cKDTree

    radius = (n_atoms / (8 * 0.55)) ** (1 / 3)
    u = rng.normal(size=(n_atoms, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    pos = u * radius * rng.random((n_atoms, 1)) ** (1 / 3)
    for _ in range(iterations):
        pairs = cKDTree(pos).query_pairs(1.0, output_type="ndarray")
        if pairs.size == 0:
            break
        d = pos[pairs[:, 1]] - pos[pairs[:, 0]]
        dist = np.linalg.norm(d, axis=1)
        if dist.min() >= 0.92:
            break
        push = (1.0 - dist)[:, None] * d / np.maximum(dist, 1e-6)[:, None] * 0.5
        move = np.zeros_like(pos)
        np.add.at(move, pairs[:, 0], -push)
        np.add.at(move, pairs[:, 1], push)
        pos += move
    return pos - pos.mean(axis=0)


def base_positions(motif: str, **shape: Any) -> np.ndarray:
    """Atom positions (N, 3) of one cluster in nearest-neighbour units (bond length 1), centred.

    Shapes: icosahedral `shells`; decahedral `p`, `q`, `r` (ase.cluster.Decahedron); octahedral
    `length`, `cutoff`; fcc/bcc/sc/hcp `radius` (bond lengths), `centre` (fractional offset in the
    cell, default 0), `elongation` (≥ 1, along `axis`), hcp `c_over_a` (default ideal 1.633);
    fcc/hcp `stacking` "twin", "fault" or "hcp_fault" (close-packed layers, plane at `where`) or
    "random" (each layer hexagonal with probability `hexagonality`, drawn from `stack_seed`);
    amorphous `n_atoms`, `seed`. Any motif: `trim` (fraction of surface atoms removed) with `seed`."""
    from ase.cluster import Decahedron, Icosahedron, Octahedron

    sh = dict(shape)
    trim = float(sh.pop("trim", 0.0))
    seed = int(sh.pop("seed", 0))
    rng = np.random.default_rng(seed)
    a_fcc = math.sqrt(2.0)
    if motif == "icosahedral":
        pos = Icosahedron("Cu", int(sh.pop("shells")), latticeconstant=a_fcc).positions
    elif motif == "decahedral":
        pos = Decahedron("Cu", int(sh.pop("p")), int(sh.pop("q")), int(sh.pop("r")), latticeconstant=a_fcc).positions
    elif motif == "octahedral":
        pos = Octahedron("Cu", int(sh.pop("length")), int(sh.pop("cutoff", 0)), latticeconstant=a_fcc).positions
    elif motif in ("fcc", "bcc", "sc", "hcp"):
        radius = float(sh.pop("radius"))
        pos, rho = _crystal_cloud(motif, radius, sh)
        pos = pos[rho <= radius + 1e-9]
    elif motif == "amorphous":
        pos = _random_close_packed(int(sh.pop("n_atoms")), rng)
    else:
        raise ValueError(f"unknown motif {motif!r}; known: {list(MOTIFS) + ['amorphous']}")
    if sh:
        raise ValueError(f"unknown shape keyword(s) {sorted(sh)} for motif {motif!r}")
    pos = _trim(np.asarray(pos, dtype=float), trim, rng)
    if pos.shape[0] < 2:
        raise ValueError(f"{motif} {shape} has fewer than 2 atoms")
    return pos - pos.mean(axis=0)


@lru_cache(maxsize=None)
def _size_ladder(motif: str) -> tuple[tuple[int, str], ...]:
    """(n_atoms, shape json) of the standard shapes of a motif, for picking one by atom count."""
    out: list[tuple[int, dict]] = []
    if motif == "icosahedral":
        out = [(len(base_positions("icosahedral", shells=k)), {"shells": k}) for k in range(2, 10)]
    elif motif == "decahedral":
        for p in range(2, 9):
            for q in range(1, 8):
                for r in range(0, 4):
                    n = len(base_positions("decahedral", p=p, q=q, r=r))
                    if n <= 3000:
                        out.append((n, {"p": p, "q": q, "r": r}))
    elif motif == "octahedral":
        for L in range(2, 16):
            for c in range(0, (L - 1) // 2 + 1):
                n = len(base_positions("octahedral", length=L, cutoff=c))
                if 6 <= n <= 3000:
                    out.append((n, {"length": L, "cutoff": c}))
    return tuple((n, json.dumps(s, sort_keys=True)) for n, s in sorted(out, key=lambda t: t[0]))


def _crystal_cloud(motif: str, radius: float, sh: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Crystal points (bond length 1) around the cut centre, enough for `radius`, and each point's
    ellipsoidal radius ρ (semi-axes radius·elongation along `axis`, radius across): the cut keeps
    ρ <= radius. Pops the crystal shape keywords from `sh`."""
    centre = np.asarray(sh.pop("centre", (0.0, 0.0, 0.0)), dtype=float)
    elong = float(sh.pop("elongation", 1.0))
    axis = np.asarray(sh.pop("axis", (0.0, 0.0, 1.0)), dtype=float)
    axis = axis / np.linalg.norm(axis)
    c_over_a = float(sh.pop("c_over_a", math.sqrt(8.0 / 3.0)))
    stacking = sh.pop("stacking", None)
    where = float(sh.pop("where", 0.5))
    hexagonality = float(sh.pop("hexagonality", 0.0))
    stack_seed = int(sh.pop("stack_seed", 0))
    reach = radius * max(elong, 1.0)
    if stacking is not None:
        ok = {"fcc": ("twin", "fault", "random"), "hcp": ("hcp_fault", "random")}.get(motif, ())
        if stacking not in ok:
            raise ValueError(f"stacking={stacking!r} does not fit motif {motif!r}; fcc: twin/fault/random, "
                             "hcp: hcp_fault/random")
        pos = _close_packed(reach, stacking, c_over_a, centre, where, hexagonality, stack_seed)
    else:
        pos = _lattice_points(motif, reach, centre, c_over_a)
    along = pos @ axis
    perp2 = np.maximum(np.sum(pos * pos, axis=1) - along ** 2, 0.0)
    return pos, np.sqrt((along / elong) ** 2 + perp2)


def _radius_for(motif: str, n_atoms: int, **shape: Any) -> float:
    """The cut radius (bond lengths) of a crystal motif that keeps the nearest count to `n_atoms`
    atoms: halfway between the last shell kept and the next (one lattice, no search)."""
    density = {"fcc": math.sqrt(2.0), "hcp": math.sqrt(2.0), "bcc": 3 * math.sqrt(3) / 4, "sc": 1.0}[motif]
    elong = float(shape.get("elongation", 1.0))
    r = (3 * n_atoms / (4 * math.pi * density * elong)) ** (1 / 3)
    _, rho = _crystal_cloud(motif, 1.5 * r + 2.0, dict(shape))
    rho = np.sort(rho)
    shells = np.unique(np.round(rho, 9))
    counts = np.searchsorted(rho, shells + 1e-9)  # atoms kept with each shell as the last
    i = int(np.argmin(np.abs(counts - n_atoms)))
    nxt = shells[i + 1] if i + 1 < shells.size else shells[i] + 0.1
    return float(0.5 * (shells[i] + nxt))


def build_cluster(motif: str, element: str, n_atoms: int | None = None, *, expansion: float = 1.0, **shape: Any):
    """An ase.Atoms cluster of `element` with the given motif, bond length = the element's
    nearest-neighbour distance × `expansion`. Give either `n_atoms` (the nearest standard shape:
    Mackay icosahedron, Marks decahedron, truncated octahedron, or a sphere cut from the crystal) or
    the explicit shape keywords of `base_positions`."""
    from ase import Atoms

    el = _element(element)
    if n_atoms is not None:
        if n_atoms < 2:
            raise ValueError(f"n_atoms={n_atoms}: a cluster needs at least 2 atoms")
        if motif in ("icosahedral", "decahedral", "octahedral"):
            ladder = _size_ladder(motif)
            n, s = min(ladder, key=lambda t: abs(t[0] - n_atoms))
            shape = {**json.loads(s), **shape}
        elif motif in ("fcc", "bcc", "sc", "hcp"):
            shape = {**shape, "radius": _radius_for(motif, n_atoms, **shape)}
        elif motif == "amorphous":
            shape = {**shape, "n_atoms": n_atoms}
    pos = base_positions(motif, **shape)
    return Atoms([element] * len(pos), positions=pos * el.nn_angstrom * float(expansion))


# ----- pair tables ----------------------------------------------------------------------------------

@dataclass
class PairTable:
    """The Debye sum of one structure on the reduced grid x = Q·length (length in Å: 1 for a table
    of an Å structure, the bond length for base structures in nearest-neighbour units).

    `table[p]` (float32, on x = k·0.01) = (1/N) Σ_{i∈a, j∈b, i≠j} sinc(x r_ij) (both orders when a ≠ b)
    for element pair p = `pairs[p]` = (a, b); `counts` = atoms per element. Geometry (in length
    units): `d_max` (largest interatomic distance), `nn_mean` (mean first-shell distance), `cn_mean`
    (mean first-shell coordination), `n_surface` (atoms with coordination < 12). `bulk`: True for a
    periodic crystal with the continuum subtracted (no small-angle term)."""

    table: np.ndarray
    pairs: list[tuple[str, str]]
    counts: dict[str, int]
    n_atoms: int
    d_max: float
    nn_mean: float
    cn_mean: float
    n_surface: int
    motif: str = ""
    shape: dict[str, Any] = field(default_factory=dict)
    bulk: bool = False

    def at(self, x: np.ndarray) -> np.ndarray:
        """Linear interpolation of every pair table at x (any shape): (P, *x.shape)."""
        return _interp_rows(self.table, x)


def _interp_rows(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if np.nanmax(x, initial=0.0) > _X_MAX:
        raise ValueError(f"Q·length up to {float(np.max(x)):.1f} exceeds the table range {_X_MAX} (lower qmax)")
    t = x / _X_STEP
    i0 = np.clip(np.floor(t).astype(np.int64), 0, _NX - 2)
    w = t - i0
    return table[..., i0] * (1.0 - w) + table[..., i0 + 1] * w


def _histogram_to_table(h: np.ndarray) -> np.ndarray:
    """Σ_k h_k sinc(x r_k) on the x grid, r_k = k·_R_BIN, via one FFT; the CIC binning window
    sinc²(x·dr/2) divided out."""
    k = np.arange(h.size)
    v = np.zeros(h.size)
    v[1:] = h[1:] / (k[1:] * _R_BIN)
    spec = np.fft.rfft(v, n=_FFT_N)[:_NX]
    x = np.arange(_NX) * _X_STEP
    s = -spec.imag
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(x > 0, s / x, h.sum())
    window = np.sinc(x * _R_BIN / (2 * math.pi)) ** 2
    return out / window


def _cic(d: np.ndarray, weights: float | np.ndarray, size: int) -> np.ndarray:
    t = d / _R_BIN
    i0 = np.floor(t).astype(np.int64)
    f = t - i0
    w = np.broadcast_to(np.asarray(weights, dtype=float), d.shape)
    return (np.bincount(i0, weights=w * (1 - f), minlength=size)[:size]
            + np.bincount(i0 + 1, weights=w * f, minlength=size)[:size])


def pair_table(positions: np.ndarray, symbols: Sequence[str] | None = None, *, motif: str = "",
               shape: dict | None = None, shell_cutoff: float | None = None) -> PairTable:
    """The PairTable of a finite structure (positions in any length unit; x = Q·that unit)."""
    from scipy.spatial.distance import pdist

    pos = np.asarray(positions, dtype=float)
    n = pos.shape[0]
    if pos.ndim != 2 or pos.shape[1] != 3 or n < 2:
        raise ValueError("positions must be an (N, 3) array with N >= 2")
    symbols = list(symbols) if symbols is not None else ["X"] * n
    if len(symbols) != n:
        raise ValueError(f"{len(symbols)} symbols for {n} positions")
    els = sorted(set(symbols))
    idx = {e: np.flatnonzero(np.asarray(symbols) == e) for e in els}
    d_all = pdist(pos)
    d_max = float(d_all.max())
    size = int(math.ceil(d_max / _R_BIN)) + 3
    pairs, tables = [], []
    for ia, a in enumerate(els):
        for b in els[ia:]:
            if a == b:
                d = pdist(pos[idx[a]]) if len(els) > 1 else d_all
            else:
                from scipy.spatial.distance import cdist

                d = cdist(pos[idx[a]], pos[idx[b]]).ravel()
            if d.size == 0:
                continue
            h = _cic(d, 2.0 / n, size)
            pairs.append((a, b))
            tables.append(_histogram_to_table(h))
    # geometry of the whole structure; first shell: up to 1.1 × the shortest bond (ordered
    # clusters) or, when given, `shell_cutoff` (amorphous: 1.35, the first minimum of a liquid's g(r))
    cut = shell_cutoff if shell_cutoff is not None else _NN_TOL * float(d_all.min())
    nn_mean = float(d_all[d_all < cut].mean())
    cn = _neighbour_counts(pos, cut)
    return PairTable(table=np.asarray(tables, dtype=np.float32), pairs=pairs,
                     counts={e: int(idx[e].size) for e in els}, n_atoms=n, d_max=d_max, nn_mean=nn_mean,
                     cn_mean=float(cn.mean()), n_surface=int((cn < 12).sum()), motif=motif, shape=dict(shape or {}))


_TABLE_CACHE: dict[str, PairTable] = {}
_TABLE_LOCK = threading.Lock()


def _shape_key(motif: str, shape: dict) -> str:
    return json.dumps([motif, shape], sort_keys=True, default=float)


def base_table(motif: str, **shape: Any) -> PairTable:
    """The PairTable of a base structure (bond length 1; see base_positions), cached per process."""
    key = _shape_key(motif, shape)
    with _TABLE_LOCK:
        hit = _TABLE_CACHE.get(key)
    if hit is not None:
        return hit
    t = pair_table(base_positions(motif, **shape), motif=motif, shape=shape,
                   shell_cutoff=1.35 if motif == "amorphous" else None)
    with _TABLE_LOCK:
        _TABLE_CACHE[key] = t
    return t


@lru_cache(maxsize=None)
def bulk_table(lattice: str, c_over_a: float = math.sqrt(8.0 / 3.0), r_cut: float = 16.0) -> PairTable:
    """A periodic crystal (bond length 1): pair distances from the atoms of one cell to all others
    within r_cut, weighted by a cosine window from 0.8 r_cut to r_cut, minus the windowed continuum
    4πρ0 r² w(r), so that G(r) = 4πr[ρ(r) − ρ0] below 0.8 r_cut (no particle-size decay)."""
    from scipy.spatial import cKDTree

    pos = _lattice_points(lattice, r_cut + 2.0, np.zeros(3), c_over_a)
    tree = cKDTree(pos)
    # one centre suffices: every site of these lattices has the same surroundings (hcp's two sites
    # are related by symmetry)
    c0 = int(np.argmin(np.linalg.norm(pos, axis=1)))
    nb = tree.query_ball_point(pos[c0], r_cut)
    d = np.linalg.norm(pos[nb] - pos[c0], axis=1)
    d = d[d > 1e-6]
    r_in = 0.8 * r_cut
    w = np.where(d < r_in, 1.0, 0.5 * (1 + np.cos(math.pi * (d - r_in) / (r_cut - r_in))))
    size = int(math.ceil(r_cut / _R_BIN)) + 3
    h = _cic(d, w, size)
    # continuum: the exact number density of the bond-length-1 lattice
    rho0 = {"fcc": math.sqrt(2.0), "bcc": 3 * math.sqrt(3) / 4, "sc": 1.0,
            "hcp": math.sqrt(2.0) * math.sqrt(8.0 / 3.0) / c_over_a}[lattice]
    rk = np.arange(size) * _R_BIN
    wk = np.where(rk < r_in, 1.0, np.where(rk < r_cut, 0.5 * (1 + np.cos(math.pi * (rk - r_in) / (r_cut - r_in))), 0.0))
    h = h - 4 * math.pi * rho0 * rk ** 2 * wk * _R_BIN
    table = _histogram_to_table(h)
    return PairTable(table=np.asarray([table], dtype=np.float32), pairs=[("X", "X")], counts={"X": 1},
                     n_atoms=10 ** 6, d_max=float("inf"), nn_mean=1.0,
                     cn_mean={"fcc": 12.0, "hcp": 12.0, "bcc": 8.0, "sc": 6.0}[lattice], n_surface=0,
                     motif="bulk_" + lattice, shape={"lattice": lattice, "c_over_a": c_over_a}, bulk=True)


def coordination_numbers(atoms_or_positions, cutoff_factor: float = _NN_TOL) -> np.ndarray:
    """First-shell coordination of each atom (ase neighbour list, cutoff = factor × shortest bond)."""
    from ase import Atoms
    from ase.neighborlist import neighbor_list
    from scipy.spatial.distance import pdist

    atoms = atoms_or_positions if isinstance(atoms_or_positions, Atoms) else Atoms(
        positions=np.asarray(atoms_or_positions, dtype=float))
    dmin = float(pdist(atoms.positions).min())
    i = neighbor_list("i", atoms, cutoff_factor * dmin)
    return np.bincount(i, minlength=len(atoms))


# ----- form factors ----------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _form_factor_coefficients() -> dict[str, list[float]]:
    """Waasmaier–Kirfel X-ray form-factor coefficients from debyecalculator's table (read as a file:
    importing debyecalculator itself costs seconds)."""
    import yaml

    spec = importlib.util.find_spec("debyecalculator")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("debyecalculator is not installed (pip install debyecalculator)")
    path = Path(list(spec.submodule_search_locations)[0]) / "utility" / "elements_info.yaml"
    with open(path) as fh:
        data = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return {str(k): list(v) for k, v in data.items()}


def form_factor(element: str, q: np.ndarray) -> np.ndarray:
    """X-ray atomic form factor f0(Q) (electrons), Q in Å⁻¹ (Waasmaier & Kirfel 1995)."""
    co = _form_factor_coefficients()
    if element not in co:
        raise ValueError(f"no X-ray form factor for {element!r}")
    c = co[element]
    s2 = (np.asarray(q, dtype=float) / (4 * math.pi)) ** 2
    return c[5] + sum(c[i] * np.exp(-c[6 + i] * s2) for i in range(5))


@lru_cache(maxsize=None)
def _grid_cached(kind: str, name: str) -> np.ndarray:
    fn = {"f": form_factor, "compton": _compton, "background": background_shape}[kind]
    out = fn(name, Q_GRID)
    out.setflags(write=False)
    return out


def _on_grid(kind: str, name: str, q: np.ndarray) -> np.ndarray:
    """form_factor / _compton / background_shape at q, from a per-process cache when q is a prefix
    of Q_GRID (the dataset's case: thousands of curves share the grid)."""
    n = q.size
    if n <= Q_GRID.size and q[0] == 0.0 and (n < 2 or abs(q[1] - Q_STEP) < 1e-12) and abs(q[-1] - Q_GRID[n - 1]) < 1e-9:
        return _grid_cached(kind, name)[:n]
    return {"f": form_factor, "compton": _compton, "background": background_shape}[kind](name, q)


def _atomic_number(element: str) -> int:
    return int(_form_factor_coefficients()[element][12])


def _compton(element: str, q: np.ndarray) -> np.ndarray:
    """Approximate incoherent (Compton) scattering per atom, Z − f0²/Z (electrons²): 0 at Q = 0,
    → Z at high Q. Shapes the counting noise; it is subtracted like the self-scattering."""
    z = _atomic_number(element)
    return z - form_factor(element, q) ** 2 / z


# ----- sample and measurement descriptions -----------------------------------------------------------

@dataclass
class ClusterComponent:
    """One population of clusters in a sample: motif, element, shape (keywords of base_positions,
    or `n_atoms` for the nearest standard shape), lattice `expansion` (bond length / the element's
    bulk nearest-neighbour distance), `adp_angstrom2` (Uiso, Å²) and `fraction` (of the atoms)."""

    motif: str
    element: str
    n_atoms: int | None = None
    shape: dict[str, Any] = field(default_factory=dict)
    expansion: float = 1.0
    adp_angstrom2: float = 0.005
    fraction: float = 1.0
    pair_table: PairTable | None = field(default=None, repr=False)  # a precomputed base table

    def table(self) -> PairTable:
        if self.pair_table is not None:
            return self.pair_table
        if self.motif.startswith("bulk_"):
            return bulk_table(self.motif[5:], **self.shape)
        shape = dict(self.shape)
        if not shape:
            if self.n_atoms is None:
                raise ValueError(f"{self.motif} component needs n_atoms or shape keywords")
            if self.motif in ("icosahedral", "decahedral", "octahedral"):
                n, s = min(_size_ladder(self.motif), key=lambda t: abs(t[0] - self.n_atoms))
                shape = json.loads(s)
            elif self.motif in ("fcc", "bcc", "sc", "hcp"):
                shape = {"radius": round(_radius_for(self.motif, int(self.n_atoms)), 4)}
            else:
                shape = {"n_atoms": int(self.n_atoms)}
        return base_table(self.motif, **shape)

    @property
    def length_angstrom(self) -> float:
        return _element(self.element).nn_angstrom * self.expansion

    def geometry(self) -> dict[str, float]:
        """What the analysers are asked for: `n_atoms` (-1 for bulk), `diameter_nm` = (largest
        interatomic distance + one bond length)/10, the outer size a microscope sees (NaN for bulk),
        `nn_distance_angstrom` = the mean first-shell distance as built × expansion."""
        t = self.table()
        L = self.length_angstrom
        if t.bulk:
            return {"n_atoms": -1, "diameter_nm": float("nan"), "nn_distance_angstrom": t.nn_mean * L}
        return {"n_atoms": t.n_atoms, "diameter_nm": (t.d_max + 1.0) * L / 10.0, "nn_distance_angstrom": t.nn_mean * L}


@dataclass
class Shell:
    """A ligand or oxide shell: `element` (e.g. "S" for thiolates, "O" for an oxide skin, "P" for
    phosphines), `coverage` (ligand atoms per surface metal atom), each bound to `bonds` metal atoms
    at `bond_angstrom` (±`sigma_angstrom`), with ligand–ligand pairs at the metal bond length
    (broad, `ll_sigma_angstrom`). Added to the cluster's pair sum as Gaussian-broadened pair terms."""

    element: str = "S"
    coverage: float = 0.5
    bonds: float = 2.0
    bond_angstrom: float = 2.35
    sigma_angstrom: float = 0.08
    ll_neighbours: float = 3.0
    ll_sigma_angstrom: float = 0.35


# Smooth solvent / container scattering shapes (per unit level; Q in Å⁻¹): Gaussian humps of liquid
# and glass structure factors on a rising incoherent part.
BACKGROUNDS: dict[str, tuple[tuple[float, float, float], ...]] = {
    # (centre Å⁻¹, width Å⁻¹, height)
    "water": ((2.0, 0.45, 1.0), (3.0, 0.7, 0.35), (5.0, 1.5, 0.15)),
    "toluene": ((1.35, 0.35, 1.0), (3.1, 0.8, 0.3), (5.3, 1.5, 0.1)),
    "glass_capillary": ((1.55, 0.3, 1.0), (2.9, 0.6, 0.45), (5.3, 1.0, 0.25)),
    # held-out shapes
    "kapton": ((0.42, 0.12, 0.6), (1.15, 0.35, 1.0), (1.65, 0.25, 0.7), (3.2, 0.9, 0.2)),
    "ethanol": ((1.65, 0.4, 1.0), (3.3, 0.9, 0.3)),
    "hexane_quartz": ((1.4, 0.3, 0.8), (1.55, 0.25, 0.6), (3.0, 0.7, 0.4), (5.4, 1.2, 0.2)),
}


def background_shape(name: str, q: np.ndarray) -> np.ndarray:
    """A solvent/container background (arbitrary units, maximum ≈ 1 + rising incoherent part)."""
    if name not in BACKGROUNDS:
        raise ValueError(f"unknown background {name!r}; known: {sorted(BACKGROUNDS)}")
    q = np.asarray(q, dtype=float)
    out = 0.3 * (1 - np.exp(-(q / 6.0) ** 2))
    for c, w, h in BACKGROUNDS[name]:
        out = out + h * np.exp(-0.5 * ((q - c) / w) ** 2)
    return out


@dataclass
class Acquisition:
    """How G(r) was measured and processed. `qmin`/`qmax` (Å⁻¹): the range transformed; `qdamp`
    (Å⁻¹): Gaussian Q resolution; `counts`: counts per Q point from the sample's self-scattering at
    Q → 0 (None: noiseless); `background`: solvent/container shape (BACKGROUNDS) at
    `background_level` × the sample's self-scattering at Q → 0, subtracted with a relative error
    `background_error`; `rpoly` (Å): PDFgetX3's ad-hoc polynomial correction (None: off);
    `normalisation_error`: relative error of the Compton/self-scattering subtraction; `lorch`:
    Lorch window on F(Q); `wavelength` (Å, metadata)."""

    qmin: float = 0.8
    qmax: float = 25.0
    qdamp: float = 0.03
    counts: float | None = None
    background: str | None = None
    background_level: float = 0.0
    background_error: float = 0.0
    rpoly: float | None = None
    normalisation_error: float = 0.0
    lorch: bool = False
    wavelength: float = 0.1665

    def check(self) -> None:
        if not (0.0 <= self.qmin < self.qmax <= Q_LIMIT):
            raise ValueError(f"need 0 <= qmin < qmax <= {Q_LIMIT} Å⁻¹, got qmin={self.qmin}, qmax={self.qmax}")
        if self.qdamp < 0:
            raise ValueError(f"qdamp={self.qdamp} must be >= 0 Å⁻¹")
        if self.counts is not None and not self.counts > 0:
            raise ValueError(f"counts={self.counts} must be > 0 (or None for no noise)")


# ----- scattering ------------------------------------------------------------------------------------

def reduced_structure_function(table: PairTable, q: np.ndarray, length_angstrom: float, adp_angstrom2: float,
                               element: str) -> np.ndarray:
    """S(Q) − 1 of one monatomic table of `element` at bond length `length_angstrom` with Uiso."""
    if len(table.pairs) != 1:
        raise ValueError("reduced_structure_function takes a monatomic table")
    return table.at(np.asarray(q) * length_angstrom)[0] * np.exp(-np.asarray(q) ** 2 * adp_angstrom2)


def _shell_terms(shell: Shell, metal: str, q: np.ndarray, n_metal: float, n_surface: float, length: float,
                 adp: float):
    """(pair sum per metal atom in electrons², N_ligand / N_metal) of a ligand shell's M–L and L–L
    terms; `n_surface` is the surface-atom share of the metal (ligands per metal = coverage × it).
    Pair widths: σ² = 2U + σ_static² in r, i.e. exp(−Q²(U + σ_static²/2))."""
    n_l = shell.coverage * n_surface
    fm, fl = _on_grid("f", metal, q), _on_grid("f", shell.element, q)
    ml = 2.0 * n_l * shell.bonds * fm * fl * np.sinc(q * shell.bond_angstrom / math.pi) * np.exp(
        -q ** 2 * (adp + shell.sigma_angstrom ** 2 / 2))
    ll = n_l * shell.ll_neighbours * fl * fl * np.sinc(q * length / math.pi) * np.exp(
        -q ** 2 * (adp + shell.ll_sigma_angstrom ** 2 / 2))
    return (ml + ll), n_l / n_metal


def sq_minus_1(components: Sequence[ClusterComponent], q: np.ndarray = Q_GRID, shell: Shell | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """S(Q) − 1 of a sample (atom-weighted mix of cluster components, one metal element or several,
    plus an optional shell), and the per-atom <f²>(Q) and <f>(Q)² that normalise it (electrons²)."""
    q = np.asarray(q, dtype=float)
    if not components:
        raise ValueError("a sample needs at least one ClusterComponent")
    fr = np.array([c.fraction for c in components], dtype=float)
    if np.any(fr < 0) or fr.sum() <= 0:
        raise ValueError("component fractions must be >= 0 and not all 0")
    fr = fr / fr.sum()
    # every component is monatomic: its atoms scatter with its element's f
    pair = np.zeros_like(q)  # Σ_i≠j f_i f_j sinc / N_metal (electrons²)
    f_mean = np.zeros_like(q)
    f2_mean = np.zeros_like(q)
    n_surface_frac = 0.0
    for c, w in zip(components, fr):
        t = c.table()
        f = _on_grid("f", c.element, q)
        # the mixture's clusters are separate particles: no cross terms between components
        pair += w * f * f * reduced_structure_function(t, q, c.length_angstrom, c.adp_angstrom2, c.element)
        f_mean += w * f
        f2_mean += w * f * f
        n_surface_frac += w * (t.n_surface / t.n_atoms)
    if shell is not None and shell.coverage > 0:
        c0 = max(zip(components, fr), key=lambda t: t[1])[0]
        terms, ratio = _shell_terms(shell, c0.element, q, 1.0, n_surface_frac, c0.length_angstrom, c0.adp_angstrom2)
        fl = _on_grid("f", shell.element, q)
        # per atom of the whole sample (metal + ligand)
        x_l = ratio / (1 + ratio)
        pair = (1 - x_l) * (pair + terms)
        f_mean = (1 - x_l) * f_mean + x_l * fl
        f2_mean = (1 - x_l) * f2_mean + x_l * fl * fl
    return pair / f_mean ** 2, f2_mean, f_mean ** 2


def adhoc_correction(q: np.ndarray, F: np.ndarray, qmin: float, qmax: float, rpoly: float) -> np.ndarray:
    """PDFgetX3's ad-hoc correction: a polynomial in Q (no constant term, degree ≈ rpoly·Qmax/π)
    fitted to F(Q) on [qmin, qmax] and subtracted, which removes slow variations (background and
    normalisation errors) that would only show in G(r) below rpoly."""
    m = (q >= qmin) & (q <= qmax)
    deg = max(1, int(round(rpoly * qmax / math.pi)))
    t = q[m] / qmax
    # basis t·T_k(2t − 1), k < deg: the polynomials of degree <= deg without a constant term, well
    # conditioned, so the normal equations are safe (and 5× cheaper than an SVD per curve)
    A = t[:, None] * np.polynomial.chebyshev.chebvander(2.0 * t - 1.0, deg - 1)
    coef = np.linalg.solve(A.T @ A, A.T @ F[m])
    out = F.copy()
    out[m] = F[m] - A @ coef
    return out


def measured_fq(q: np.ndarray, s_minus_1: np.ndarray, f2: np.ndarray, fbar2: np.ndarray, acq: Acquisition,
                rng: np.random.Generator | None = None, element: str = "Pt") -> np.ndarray:
    """F(Q) as a PDFgetX3-like reduction of a measured pattern gives it: the per-atom coherent
    intensity <f²> + <f>²(S−1) plus Compton scattering and background, with Poisson counts, the
    background subtracted with its error, self and Compton scattering subtracted with the
    normalisation error, normalised by <f>², zero outside [qmin, qmax], the ad-hoc correction and
    an optional Lorch window. `element`: the metal (Compton scattering)."""
    acq.check()
    q = np.asarray(q, dtype=float)
    coh = f2 + fbar2 * s_minus_1
    inc = _on_grid("compton", element, q)
    bkg = np.zeros_like(q)
    if acq.background is not None and acq.background_level > 0:
        bkg = acq.background_level * float(f2[0]) * _on_grid("background", acq.background, q)
    total = coh + inc + bkg
    if acq.counts is not None:
        if rng is None:
            raise ValueError("counting noise needs an rng")
        k = acq.counts / float(f2[0])
        total = rng.poisson(np.maximum(total, 0.0) * k) / k
    sample = total - (1.0 + acq.background_error) * bkg - (1.0 + acq.normalisation_error) * (f2 + inc)
    F = q * sample / fbar2
    m = (q >= acq.qmin) & (q <= acq.qmax)
    F = np.where(m, F, 0.0)
    if acq.rpoly is not None and acq.rpoly > 0:
        F = adhoc_correction(q, F, acq.qmin, acq.qmax, acq.rpoly)
    if acq.lorch:
        F = F * np.sinc(q / acq.qmax)
    return F


@lru_cache(maxsize=8)
def _sine_matrix(nq: int, q_step: float, r_key: bytes) -> np.ndarray:
    r = np.frombuffer(r_key, dtype=float)
    q = np.arange(nq) * q_step
    return (2.0 / math.pi) * q_step * np.sin(np.outer(q, r))


def _sine_rows(nq: int, q_step: float, r: np.ndarray) -> np.ndarray:
    """The first nq rows of the sine-transform matrix; one matrix per r grid serves every Qmax."""
    if abs(q_step - Q_STEP) < 1e-12 and nq <= Q_GRID.size:
        return _sine_matrix(Q_GRID.size, Q_STEP, r.tobytes())[:nq]
    return _sine_matrix(nq, q_step, r.tobytes())


def fq_to_gr(q: np.ndarray, F: np.ndarray, r: np.ndarray = R_GRID, qdamp: float | np.ndarray = 0.0) -> np.ndarray:
    """G(r) = (2/π) ∫ F(Q) sin(Qr) dQ × exp(−(qdamp·r)²/2), for F (nQ,) or (B, nQ) on an evenly
    spaced grid starting at Q = 0 (zeros outside the measured range); qdamp scalar or (B,)."""
    q = np.asarray(q, dtype=float)
    r = np.ascontiguousarray(r, dtype=float)
    step = float(q[1] - q[0])
    if abs(q[0]) > 1e-12 or not np.allclose(np.diff(q), step):
        raise ValueError("fq_to_gr needs an evenly spaced Q grid starting at 0")
    S = _sine_rows(q.size, step, r)
    G = np.asarray(F, dtype=float) @ S
    qd = np.asarray(qdamp, dtype=float)
    env = np.exp(-0.5 * (qd[..., None] * r) ** 2) if qd.ndim else np.exp(-0.5 * (float(qd) * r) ** 2)
    return G * env


def _components_of(structure, element: str | None, expansion: float, adp: float) -> list[ClusterComponent]:
    """Normalise gr()'s input: an ase.Atoms, a PairTable, a ClusterComponent or a list of them."""
    if isinstance(structure, ClusterComponent):
        return [structure]
    if isinstance(structure, (list, tuple)) and structure and all(isinstance(c, ClusterComponent) for c in structure):
        return list(structure)
    raise TypeError("structure must be a ClusterComponent (or a list of them), a PairTable or an ase.Atoms")


def gr(structure, r: np.ndarray = R_GRID, *, qmin: float = 0.8, qmax: float = 25.0, qdamp: float = 0.03,
       adp: float = 0.005, expansion: float = 1.0, element: str | None = None, shell: Shell | None = None,
       acquisition: Acquisition | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """G(r) (Å⁻², PDFgetX3 convention) on r (Å) of a cluster.

    `structure`: an ase.Atoms (any elements; Å; `expansion` scales it), a PairTable of a base
    structure (bond length 1: needs `element`), or ClusterComponent(s) (their own element, expansion
    and ADP; `adp`/`expansion`/`element` ignored). `acquisition` overrides qmin/qmax/qdamp and adds
    the measurement artefacts (noise needs `rng`)."""
    acq = acquisition or Acquisition(qmin=qmin, qmax=qmax, qdamp=qdamp)
    acq.check()
    q = Q_GRID[: int(math.floor(acq.qmax / Q_STEP + 1e-9)) + 2]
    sm1, f2, fb2, metal = _sample_sq(structure, q, element=element, expansion=expansion, adp=adp, shell=shell)
    F = measured_fq(q, sm1, f2, fb2, acq, rng, metal)
    return fq_to_gr(q, F, r, acq.qdamp)


def _sample_sq(structure, q, *, element, expansion, adp, shell):
    """S(Q) − 1, <f²>, <f>² and the dominant metal of gr()'s inputs."""
    from ase import Atoms

    if isinstance(structure, Atoms):
        syms = structure.get_chemical_symbols()
        t = pair_table(structure.positions, syms)
        counts = t.counts
        n = sum(counts.values())
        fs = {e: form_factor(e, q) for e in counts}
        fbar = sum(counts[e] * fs[e] for e in counts) / n
        f2 = sum(counts[e] * fs[e] ** 2 for e in counts) / n
        vals = t.at(q * expansion)
        pair = np.zeros_like(q)
        for p, (a, b) in enumerate(t.pairs):
            pair += fs[a] * fs[b] * vals[p]
        pair *= np.exp(-q ** 2 * adp)
        metal = max(counts, key=counts.get)
        if shell is not None:
            raise ValueError("a shell is added to ClusterComponents; an Atoms structure carries its own ligands")
        return pair / fbar ** 2, f2, fbar ** 2, metal
    if isinstance(structure, PairTable):
        if element is None:
            raise ValueError("a PairTable of a base structure needs `element` (its bond length)")
        structure = ClusterComponent(structure.motif or "custom", element, expansion=expansion, adp_angstrom2=adp,
                                     pair_table=structure)
    comps = _components_of(structure, element, expansion, adp)
    sm1, f2, fb2 = sq_minus_1(comps, q, shell)
    metal = max(comps, key=lambda c: c.fraction).element
    return sm1, f2, fb2, metal


def fq(structure, **kw) -> tuple[np.ndarray, np.ndarray]:
    """(Q, F(Q)) of gr()'s inputs (same keywords, without r), on Q_GRID up to qmax."""
    acq = kw.pop("acquisition", None) or Acquisition(qmin=kw.pop("qmin", 0.8), qmax=kw.pop("qmax", 25.0),
                                                     qdamp=kw.pop("qdamp", 0.03))
    rng = kw.pop("rng", None)
    q = Q_GRID[: int(math.floor(acq.qmax / Q_STEP + 1e-9)) + 2]
    sm1, f2, fb2, metal = _sample_sq(structure, q, element=kw.pop("element", None), expansion=kw.pop("expansion", 1.0),
                                     adp=kw.pop("adp", 0.005), shell=kw.pop("shell", None))
    if kw:
        raise TypeError(f"unknown keyword(s) {sorted(kw)}")
    return q, measured_fq(q, sm1, f2, fb2, acq, rng, metal)


def sq(structure, q: np.ndarray = Q_GRID, *, element: str | None = None, expansion: float = 1.0, adp: float = 0.005,
       shell: Shell | None = None) -> np.ndarray:
    """Total-scattering structure function S(Q) (Faber–Ziman, normalised by <f>²), noiseless."""
    sm1, _, _, _ = _sample_sq(structure, np.asarray(q, dtype=float), element=element, expansion=expansion, adp=adp,
                              shell=shell)
    return 1.0 + sm1


def iq(structure, q: np.ndarray = Q_GRID, *, element: str | None = None, expansion: float = 1.0, adp: float = 0.005,
       shell: Shell | None = None) -> np.ndarray:
    """Coherent intensity per atom, <f²> + <f>²(S(Q) − 1) (electrons²), noiseless."""
    sm1, f2, fb2, _ = _sample_sq(structure, np.asarray(q, dtype=float), element=element, expansion=expansion, adp=adp,
                                 shell=shell)
    return f2 + fb2 * sm1


def debye_gr(atoms, r: np.ndarray = R_GRID, *, qmin: float = 0.8, qmax: float = 25.0, qdamp: float = 0.03,
             adp: float = 0.005) -> np.ndarray:
    """G(r) of an ase.Atoms straight from debyecalculator (CPU, float64, its Q step π/r_max), for
    checking the fast path; debyecalculator sums i < j only, so this is half of gr()."""
    import warnings

    import torch
    from debyecalculator import DebyeCalculator

    r = np.asarray(r, dtype=float)
    step = float(r[1] - r[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calc = DebyeCalculator(qmin=qmin, qmax=qmax, qstep=Q_STEP, qdamp=qdamp, rmin=float(r[0]),
                               rmax=float(r[-1]) + step / 2, rstep=step, biso=8 * math.pi ** 2 * adp, device="cpu",
                               dtype=torch.float64)
        out = calc.gr(atoms)
    g = np.asarray(out.g, dtype=float)
    return g[: r.size]
