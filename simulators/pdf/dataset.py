"""Labelled G(r) of metal nanoclusters for training and testing the PDF analysers (pure physics on
simulators.pdf.physics).

Classes (`CLASSES`): DeepStruc's seven motifs plus "other":

* `sc`, `bcc`, `fcc`, `hcp`: spheres (and some ellipsoids) cut around random centres from the
  crystal; fcc includes twinned, intrinsically faulted and randomly faulted stacks (5–25 % of the
  layers hexagonal), hcp includes singly and randomly faulted stacks (5–40 % of the layers cubic)
  and c/a other than ideal (training: 1.57–1.90, Ru/Ti/Os to Zn/Cd). `icosahedral` (Mackay), `decahedral` (Marks), `octahedral` (truncated),
  each also with partly grown outer shells (sizes between the magic numbers).
* `other`: what the analyser must not force into a motif: amorphous (liquid-like, random close
  packed) clusters, periodic bulk crystals (G(r) without size decay out to r_max), and mixtures of
  2–3 motifs in which none holds more than 55 % of the atoms.

A curve can hold a size distribution (2–3 sizes of its motif) or a minority motif (≤ 30 % of the
atoms); the label is then the dominant motif, `n_atoms`, `diameter_nm` and `nn_distance_angstrom`
are atom-weighted means over the components (what a PDF measures: every atom counts once).
`diameter_nm` = (largest interatomic distance + one bond length) / 10, the outer size a
microscope sees; `n_atoms` = -1 and `diameter_nm` = NaN for bulk. `nn_distance_angstrom` is the
mean first-shell distance of the structure as built (icosahedra are strained: 1.00–1.05 × the
bond length), `expansion` the bond length over the element's bulk nearest-neighbour distance,
`adp_angstrom2` the Uiso of all atoms.

Recipes (two separate code paths, `_train_recipe` and `_heldout_recipe`, over two separately
built structure pools):

| | train | heldout |
|---|---|---|
| elements (nearest-neighbour Å) | Pt Pd Au Ag Cu Ni Fe W Co Ti (2.48–2.90) | Rh Ir Al Mo Nb Cr Zn Mg Ru (2.50–3.20) |
| atoms | 13–1500 | 13–2200 (other shell fractions, other ladder shapes, ellipsoids to 1.5) |
| hcp c/a, stacking faults | 1.57–1.90; one fault (20 %) or 5–40 % faulted layers (30 %) | 1.633, 1.59, 1.856; one fault (40 %) |
| fcc stacking | twin 20 %, one fault 15 %, 5–25 % random faults 15 % | twin 30 %, one fault 20 % |
| surface trim (partly grown shells) | icosahedra 0.3/0.6, decahedra 0.3, octahedra 0.4 and 0.1–0.4 | 0.15/0.45/0.75, 0.25, 0.2 |
| cut spheres | fcc 200, hcp 130 (150 / 60 of them in 10 log size bands) | 30 each |
| expansion, Uiso (Å²) | 0.97–1.03, 0.002–0.015 | 0.955–1.045, 0.001–0.025 |
| Qmin, Qmax, Qdamp (Å⁻¹) | 0.5–1.0, 18–28 (≤ √(6/U)), 0.02–0.05 | 0.3–1.5, 14–35 (≤ √((4.5–7)/U)), 0.01–0.08 |
| counts at Q→0 | 3·10⁴–3·10⁶ | 2·10⁴–10⁷ |
| background | water, toluene, glass capillary; level 0.2–3, error ±3 % | kapton, ethanol, hexane in quartz; 0.1–5, ±6 % |
| processing | r_poly 0.8–1.0, normalisation error ±2 % | r_poly 0.6–1.3, ±4 %, Lorch window on 25 % |
| shell | 30 %: S, O or P, 0.2–0.8 per surface atom | 35 %: S, O, P or Cl, 0.1–1.2, other bond lengths |
| size distribution / minority motif | 50 % / 25 % | 60 % (up to 4 sizes) / 30 % |

The held-out ranges in the table are those of 60 % of its curves; the other 40 % draw atoms,
element (bond length), expansion, Uiso, Qmin, Qmax and Qdamp inside the training ranges (still
other elements, structures and artefact recipes). `in_range` (held-out curves) is True where all of
those parameters and the structures' own (`TRAIN_SHAPES`: hcp c/a, elongation, trim fraction per
motif, stacking kind, at most 3 sizes per curve within a factor e^0.5) lie inside the training
ranges (about a quarter of the set); the artefact recipes (background shapes, Lorch, noise levels,
shells) always differ.

Speed: each pool structure's pair table is computed once per process (`_pool`); a curve is then an
interpolation of 1–4 tables, the artefacts on F(Q) and one row of a batched sine transform.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from simulators.pdf import physics as P

CLASSES = P.MOTIFS + ("other",)
RECIPES = ("train", "heldout")

TRAIN = dict(
    elements=("Pt", "Pd", "Au", "Ag", "Cu", "Ni", "Fe", "W", "Co", "Ti"),
    n_atoms=(13, 1500), expansion=(0.97, 1.03), adp=(0.002, 0.015),
    qmin=(0.5, 1.0), qmax=(18.0, 28.0), qdamp=(0.02, 0.05),
)
# structural ranges of the training pool (`_train_structures`) and recipe (`_train_recipe`): hcp c/a,
# ellipsoid elongation, surface trim fraction per motif, stacking kinds per lattice, sizes per curve
# (one motif) and their spread (|ln n/n_main|); `_in_range` labels held-out curves against them
TRAIN_SHAPES = dict(
    c_over_a=(1.57, 1.90), elongation=1.3, trim={"icosahedral": 0.6, "octahedral": 0.4, "decahedral": 0.3},
    stacking={"fcc": ("twin", "fault", "random"), "hcp": ("hcp_fault", "random")}, sizes=3, size_log_ratio=0.5,
)
N_SIZE_BANDS = 10  # size bands of the training pool's extra fcc/hcp sphere cuts (`_train_structures`)
HELDOUT_ELEMENTS = ("Rh", "Ir", "Al", "Mo", "Nb", "Cr", "Zn", "Mg", "Ru")
_TRAIN_NN = tuple(P.ELEMENTS[e].nn_angstrom for e in TRAIN["elements"])
NN_RANGE = (min(_TRAIN_NN) * TRAIN["expansion"][0], max(_TRAIN_NN) * TRAIN["expansion"][1])  # Å, trained


@dataclass(frozen=True, eq=False)
class Entry:
    """One pool structure: its class, the kind of structure, its pair table (bond length 1)."""

    label: str  # a motif or "other"
    kind: str  # e.g. "fcc", "fcc_twin", "icosahedral_trim", "amorphous", "bulk_fcc"
    table: P.PairTable

    @property
    def n_atoms(self) -> int:
        return -1 if self.table.bulk else self.table.n_atoms


# ----- structure pools ---------------------------------------------------------------------------------

_DENSITY = {"fcc": math.sqrt(2.0), "bcc": 3 * math.sqrt(3) / 4, "sc": 1.0, "hcp": math.sqrt(2.0)}


def _radius(lattice: str, n: float, elong: float = 1.0, c_over_a: float = math.sqrt(8 / 3)) -> float:
    rho = _DENSITY[lattice] * (math.sqrt(8 / 3) / c_over_a if lattice == "hcp" else 1.0)
    return (3 * n / (4 * math.pi * rho * elong)) ** (1 / 3)


def _crystal_shapes(lattice: str, rng: np.random.Generator, n_sizes: int, n_range: tuple[float, float],
                    elong_p: float, elong_max: float, stackings: tuple[tuple[str | None, float], ...],
                    c_over_a: tuple[float, ...], ca_ranges: tuple[tuple[float, float, float], ...] = (),
                    hexagonality: tuple[float, float] = (0.0, 0.0)) -> list[tuple[str, dict]]:
    """Sphere/ellipsoid cuts: sizes log-uniform in n_range, random centres, random stacking. hcp c/a:
    one of `c_over_a`, or, when `ca_ranges` ((probability, lo, hi), ...) is given, uniform in one of
    those ranges; stacking "random": hexagonality uniform in `hexagonality`."""
    out = []
    for n in np.exp(rng.uniform(math.log(n_range[0]), math.log(n_range[1]), n_sizes)):
        elong = float(rng.uniform(1.0, elong_max)) if rng.random() < elong_p else 1.0
        if lattice != "hcp":
            ca = math.sqrt(8 / 3)
        elif ca_ranges:
            pr = np.array([c[0] for c in ca_ranges])
            c = ca_ranges[int(rng.choice(len(ca_ranges), p=pr / pr.sum()))]
            ca = float(rng.uniform(c[1], c[2]))
        else:
            ca = float(rng.choice(c_over_a))
        shape: dict[str, Any] = {"radius": round(_radius(lattice, n, elong, ca), 4),
                                 "centre": [round(float(v), 3) for v in rng.random(3)]}
        if elong > 1.0:
            ax = rng.normal(size=3)
            shape.update(elongation=round(elong, 3), axis=[round(float(v), 4) for v in ax / np.linalg.norm(ax)])
        if lattice == "hcp" and abs(ca - math.sqrt(8 / 3)) > 1e-6:
            shape["c_over_a"] = round(ca, 4)
        names, probs = zip(*stackings)
        st = names[int(rng.choice(len(names), p=np.asarray(probs) / sum(probs)))]
        kind = lattice
        if st == "random":
            shape.update(stacking=st, hexagonality=round(float(rng.uniform(*hexagonality)), 3),
                         stack_seed=int(rng.integers(1 << 20)))
            kind = f"{lattice}_faults"
        elif st is not None:
            shape.update(stacking=st, where=round(float(rng.uniform(0.3, 0.7)), 3))
            kind = f"{lattice}_{st}"
        out.append((kind, shape))
    return out


def _ladder(motif: str, keep) -> list[dict]:
    return [json.loads(s) for i, (n, s) in enumerate(P._size_ladder(motif)) if keep(i, n)]


def _build(specs: list[tuple[str, str, str, dict]], n_range: tuple[int, int], progress: bool) -> list[Entry]:
    """Pair tables of (label, kind, motif, shape) specs, keeping those with n_range atoms."""
    out = []
    it = specs
    if progress:
        from tqdm import tqdm

        it = tqdm(specs, desc="pdf structures", leave=False)
    for label, kind, motif, shape in it:
        if motif.startswith("bulk_"):
            out.append(Entry(label, kind, P.bulk_table(motif[5:], **shape)))
            continue
        t = P.base_table(motif, **shape)
        if n_range[0] <= t.n_atoms <= n_range[1]:
            out.append(Entry(label, kind, t))
    return out


_CACHE_DIR = Path(__file__).with_name("_cache")
_CACHE_VERSION = 1  # bump when the structure builders or the table layout change


@lru_cache(maxsize=None)
def _pool(recipe: str, progress: bool = False) -> tuple[Entry, ...]:
    """The structures of a recipe: built once per process, and memoised on disk next to this file
    (keyed by a hash of the structure specs), so that later runs and worker processes skip the
    ~40 s of building."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; use one of {RECIPES}")
    make, n_range = {"train": (_train_structures, TRAIN["n_atoms"]), "heldout": (_heldout_structures, (13, 2200))}[recipe]
    # the key is the code that makes the structures (building the specs alone takes seconds)
    code = [inspect.getsource(f) for f in (make, _crystal_shapes, _radius, _ladder, _build, P.base_positions,
                                            P._size_ladder, P._close_packed, P._stacking, P._lattice_points, P._crystal_cloud,
                                            P._trim, P._random_close_packed, P.pair_table, P._histogram_to_table,
                                            P._cic, P.bulk_table)]
    text = json.dumps([_CACHE_VERSION, recipe, n_range, code, P._X_STEP, P._NX, P._R_BIN, P._NN_TOL, N_SIZE_BANDS])
    path = _CACHE_DIR / f"pool-{recipe}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.npz"
    if path.exists():
        try:
            return _load_pool(path)
        except (OSError, ValueError, KeyError):
            pass
    entries = tuple(_build(make(), n_range, progress))
    try:
        _CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        _save_pool(tmp, entries)
        tmp.replace(path)
    except OSError:
        pass
    return entries


_GEOMETRY = ("n_atoms", "d_max", "nn_mean", "cn_mean", "n_surface")


def _save_pool(path: Path, entries: tuple[Entry, ...]) -> None:
    meta = [{"label": e.label, "kind": e.kind, "motif": e.table.motif, "shape": e.table.shape, "bulk": e.table.bulk,
             "pairs": e.table.pairs, "counts": e.table.counts, **{k: getattr(e.table, k) for k in _GEOMETRY}}
            for e in entries]
    np.savez(path, tables=np.stack([e.table.table[0] for e in entries]).astype(np.float32),
             meta=np.array(json.dumps(meta, default=float)))


def _load_pool(path: Path) -> tuple[Entry, ...]:
    with np.load(path) as z:
        tables = z["tables"]
        meta = json.loads(str(z["meta"]))
    out = []
    for row, m in zip(tables, meta):
        t = P.PairTable(table=row[None, :].copy(), pairs=[tuple(p) for p in m["pairs"]], counts=m["counts"],
                        motif=m["motif"], shape=m["shape"], bulk=m["bulk"], **{k: m[k] for k in _GEOMETRY})
        out.append(Entry(m["label"], m["kind"], t))
    return tuple(out)


def _train_structures() -> list[tuple[str, str, str, dict]]:
    rng = np.random.default_rng(20260)
    specs: list[tuple[str, str, str, dict]] = []
    for k in range(2, 9):
        specs.append(("icosahedral", "icosahedral", "icosahedral", {"shells": k}))
        if k >= 3:
            for trim, seed in ((0.3, 1), (0.6, 2)):
                specs.append(("icosahedral", "icosahedral_trim", "icosahedral", {"shells": k, "trim": trim, "seed": seed}))
    for i, s in enumerate(_ladder("decahedral", lambda i, n: i % 3 != 2 and 13 <= n <= 1500)):
        specs.append(("decahedral", "decahedral", "decahedral", s))
        if i % 2 == 0 and s["p"] >= 3:  # partly grown outer shells
            specs.append(("decahedral", "decahedral_trim", "decahedral", {**s, "trim": 0.3, "seed": 200 + i}))
    trim_rng = np.random.default_rng(20261)
    for i, s in enumerate(_ladder("octahedral", lambda i, n: 13 <= n <= 1500)):
        specs.append(("octahedral", "octahedral", "octahedral", s))
        if i % 2 == 0 and s["length"] >= 4:
            specs.append(("octahedral", "octahedral_trim", "octahedral", {**s, "trim": 0.4, "seed": i}))
        if s["length"] >= 4:  # every shape also partly grown by a random fraction of the trained range
            specs.append(("octahedral", "octahedral_trim", "octahedral",
                          {**s, "trim": round(float(trim_rng.uniform(0.1, 0.4)), 3), "seed": 500 + i}))
    cp = math.sqrt(8 / 3)
    # fcc: twins, single intrinsic faults and random faulting (5–25 % hexagonal layers); hcp: c/a of
    # real hcp metals (Ru/Ti/Os 1.58–1.59 ... Co/Mg 1.62 ... Zn 1.86, Cd 1.89), one fault, or 5–40 %
    # of the layers faulted (hexagonality 0.6–0.95). Sphere cuts are many (the octahedral ladder's
    # 63 shapes plus trims are the fcc class's nearest rival: sparse sizes of cut spheres left gaps,
    # e.g. no fcc sphere of 155-290 atoms with the earlier 50), their sizes stratified: an equal
    # number log-uniform in each of N_SIZE_BANDS bands of 13-1500 atoms
    for lattice, n_sizes, stack, ca_ranges, hexa in (
            ("fcc", 50, ((None, 0.5), ("twin", 0.2), ("fault", 0.15), ("random", 0.15)), (), (0.05, 0.25)),
            ("hcp", 70, ((None, 0.5), ("hcp_fault", 0.2), ("random", 0.3)), ((0.6, 1.57, 1.65), (0.4, 1.65, 1.90)),
             (0.6, 0.95)),
            ("bcc", 40, ((None, 1.0),), (), (0.0, 0.0)), ("sc", 40, ((None, 1.0),), (), (0.0, 0.0))):
        for kind, shape in _crystal_shapes(lattice, rng, n_sizes, (13, 1500), 0.3, 1.3, stack, (cp,), ca_ranges, hexa):
            specs.append((lattice, kind, lattice, shape))
    band_rng = np.random.default_rng(20262)
    edges = np.exp(np.linspace(math.log(13), math.log(1500), N_SIZE_BANDS + 1))
    for lattice, per_band, stack, ca_ranges, hexa in (
            ("fcc", 15, ((None, 0.5), ("twin", 0.2), ("fault", 0.15), ("random", 0.15)), (), (0.05, 0.25)),
            ("hcp", 6, ((None, 0.5), ("hcp_fault", 0.2), ("random", 0.3)), ((0.6, 1.57, 1.65), (0.4, 1.65, 1.90)),
             (0.6, 0.95))):
        for lo, hi in zip(edges[:-1], edges[1:]):
            for kind, shape in _crystal_shapes(lattice, band_rng, per_band, (lo, hi), 0.3, 1.3, stack, (cp,), ca_ranges, hexa):
                specs.append((lattice, kind, lattice, shape))
    for i, n in enumerate(np.exp(rng.uniform(math.log(13), math.log(1500), 24))):
        specs.append(("other", "amorphous", "amorphous", {"n_atoms": int(n), "seed": 100 + i}))
    for lattice in ("fcc", "bcc", "hcp", "sc"):
        specs.append(("other", f"bulk_{lattice}", f"bulk_{lattice}", {}))
    return specs


def _heldout_structures() -> list[tuple[str, str, str, dict]]:
    """Independent of the training pool: other trim fractions and seeds, the ladder shapes training
    skipped, sizes to 2200 atoms, other centres, ellipsoids to 1.5, a Zn-like c/a, other amorphous
    seeds, bulk hcp at c/a 1.59."""
    rng = np.random.default_rng(977)
    specs: list[tuple[str, str, str, dict]] = []
    for k in range(2, 10):
        specs.append(("icosahedral", "icosahedral", "icosahedral", {"shells": k}))
        if k >= 3:
            for trim, seed in ((0.15, 31), (0.45, 32), (0.75, 33)):
                specs.append(("icosahedral", "icosahedral_trim", "icosahedral", {"shells": k, "trim": trim, "seed": seed}))
    for s in _ladder("decahedral", lambda i, n: (i % 3 == 2 or n > 1500) and n <= 2200):
        specs.append(("decahedral", "decahedral", "decahedral", s))
        if s["p"] >= 4:
            specs.append(("decahedral", "decahedral_trim", "decahedral", {**s, "trim": 0.25, "seed": 41}))
    for i, s in enumerate(_ladder("octahedral", lambda i, n: 13 <= n <= 2200)):
        if i % 2 == 1 and s["length"] >= 4:
            specs.append(("octahedral", "octahedral_trim", "octahedral", {**s, "trim": 0.2, "seed": 50 + i}))
        else:
            specs.append(("octahedral", "octahedral", "octahedral", s))
    for lattice, stack, ca in (("fcc", ((None, 0.5), ("twin", 0.3), ("fault", 0.2)), (math.sqrt(8 / 3),)),
                               ("hcp", ((None, 0.6), ("hcp_fault", 0.4)), (math.sqrt(8 / 3), 1.59, 1.856)),
                               ("bcc", ((None, 1.0),), (1.0,)), ("sc", ((None, 1.0),), (1.0,))):
        for kind, shape in _crystal_shapes(lattice, rng, 30, (13, 2200), 0.4, 1.5, stack, ca):
            specs.append((lattice, kind, lattice, shape))
    for i, n in enumerate(np.exp(rng.uniform(math.log(13), math.log(2200), 16))):
        specs.append(("other", "amorphous", "amorphous", {"n_atoms": int(n), "seed": 900 + i}))
    for lattice, shape in (("fcc", {}), ("bcc", {}), ("hcp", {"c_over_a": 1.59}), ("sc", {})):
        specs.append(("other", f"bulk_{lattice}", f"bulk_{lattice}", shape))
    return specs


# ----- per-curve recipes ---------------------------------------------------------------------------------

@dataclass
class CurveSpec:
    """One simulated measurement: components, shell, acquisition, labels."""

    components: list[P.ClusterComponent]
    shell: P.Shell | None
    acquisition: P.Acquisition
    label: str
    kind: str
    element: str
    entries: list[Entry]


def _by_label(pool: tuple[Entry, ...]) -> dict[str, tuple[Entry, ...]]:
    return {c: tuple(e for e in pool if e.label == c) for c in CLASSES}


@lru_cache(maxsize=64)
def _log_sizes(entries: tuple[Entry, ...]) -> np.ndarray:
    return np.array([math.log(e.n_atoms) if e.n_atoms > 0 else np.inf for e in entries])


def _similar(entries: tuple[Entry, ...], ref: Entry, rng: np.random.Generator, max_log_ratio: float) -> Entry:
    """A random entry whose size is within a factor exp(max_log_ratio) of ref's (ref itself if none)."""
    ok = np.flatnonzero(np.abs(_log_sizes(entries) - math.log(max(ref.n_atoms, 1))) <= max_log_ratio)
    ok = [i for i in ok if entries[i] is not ref]
    return entries[ok[int(rng.integers(len(ok)))]] if ok else ref


def _motif_entries(rng, by, label, n_extra_sizes, mix_p, mix_max, size_log_ratio):
    """Dominant entry of `label` plus size-distribution partners and maybe a minority motif."""
    main = by[label][int(rng.integers(len(by[label])))]
    entries = [main]
    for _ in range(n_extra_sizes):
        entries.append(_similar(by[label], main, rng, size_log_ratio))
    w = rng.dirichlet(np.full(len(entries), 2.0)) if len(entries) > 1 else np.ones(1)
    if rng.random() < mix_p:
        other = [m for m in P.MOTIFS if m != label]
        m2 = other[int(rng.integers(len(other)))]
        entries.append(_similar(by[m2], main, rng, 0.6))
        f2 = float(rng.uniform(0.05, mix_max))
        w = np.concatenate([w * (1 - f2), [f2]])
    return entries, w


def _other_entries(rng, by, amorphous_p, bulk_p):
    u = rng.random()
    if u < amorphous_p:
        am = [e for e in by["other"] if e.kind == "amorphous"]
        return [am[int(rng.integers(len(am)))]], np.ones(1), "amorphous"
    if u < amorphous_p + bulk_p:
        bk = [e for e in by["other"] if e.kind.startswith("bulk_")]
        return [bk[int(rng.integers(len(bk)))]], np.ones(1), "bulk"
    k = int(rng.choice([2, 3]))
    motifs = rng.choice(P.MOTIFS, size=k, replace=False)
    first = by[str(motifs[0])][int(rng.integers(len(by[str(motifs[0])])))]
    entries = [first] + [_similar(by[str(m)], first, rng, 0.7) for m in motifs[1:]]
    while True:
        w = rng.dirichlet(np.full(k, 3.0))
        if w.max() <= 0.55:
            return entries, w, "mixture"


def _uniform(rng, lo_hi):
    return float(rng.uniform(*lo_hi))


def _loguniform(rng, lo, hi):
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _train_recipe(rng: np.random.Generator, by: dict[str, tuple[Entry, ...]], label: str) -> CurveSpec:
    el = str(rng.choice(TRAIN["elements"]))
    if label == "other":
        entries, w, kind = _other_entries(rng, by, 0.4, 0.3)
    else:
        n_extra = int(rng.integers(1, 3)) if rng.random() < 0.5 else 0
        entries, w = _motif_entries(rng, by, label, n_extra, 0.25, 0.3, 0.5)
        kind = entries[0].kind
    expansion = _uniform(rng, TRAIN["expansion"])
    adp = _uniform(rng, TRAIN["adp"])
    comps = [P.ClusterComponent(e.table.motif, el, expansion=expansion, adp_angstrom2=adp, fraction=float(f),
                                pair_table=e.table) for e, f in zip(entries, w)]
    shell = None
    if rng.random() < 0.3 and not entries[0].table.bulk:
        lig = str(rng.choice(["S", "O", "P"]))
        bond = {"S": (2.25, 2.45), "O": (1.95, 2.10), "P": (2.25, 2.40)}[lig]
        shell = P.Shell(lig, coverage=_uniform(rng, (0.2, 0.8)), bonds=float(rng.choice([1.0, 2.0, 3.0])),
                        bond_angstrom=_uniform(rng, bond), sigma_angstrom=_uniform(rng, (0.05, 0.12)))
    # an experimenter stops the transform where the Debye–Waller factor has killed the signal
    qmax = min(_uniform(rng, TRAIN["qmax"]), math.sqrt(6.0 / adp))
    acq = P.Acquisition(
        qmin=_uniform(rng, TRAIN["qmin"]), qmax=qmax, qdamp=_uniform(rng, TRAIN["qdamp"]),
        counts=_loguniform(rng, 3e4, 3e6), background=str(rng.choice(["water", "toluene", "glass_capillary"])),
        background_level=_uniform(rng, (0.2, 3.0)), background_error=_uniform(rng, (-0.03, 0.03)),
        rpoly=_uniform(rng, (0.8, 1.0)), normalisation_error=_uniform(rng, (-0.02, 0.02)), lorch=False)
    return CurveSpec(comps, shell, acq, label, kind, el, entries)


def _heldout_recipe(rng: np.random.Generator, by: dict[str, tuple[Entry, ...]], label: str) -> CurveSpec:
    """The held-out measurement recipe: other elements, other artefact models, and for 60 % of the
    curves wider structure/instrument ranges (the other 40 % draw those inside the training ranges,
    so that the set holds a sizeable `in_range` part)."""
    inside = rng.random() < 0.4
    if inside:
        lo, hi = TRAIN["n_atoms"]
        by = {k: tuple(e for e in v if e.n_atoms < 0 or lo <= e.n_atoms <= hi) or v for k, v in by.items()}
        els = [e for e in HELDOUT_ELEMENTS if NN_RANGE[0] <= P.ELEMENTS[e].nn_angstrom <= NN_RANGE[1]]
        el = str(rng.choice(els))
    else:
        el = str(rng.choice(HELDOUT_ELEMENTS))
    if label == "other":
        entries, w, kind = _other_entries(rng, by, 0.35, 0.35)
    else:
        n_extra = int(rng.integers(1, 4)) if rng.random() < 0.6 else 0
        entries, w = _motif_entries(rng, by, label, n_extra, 0.3, 0.3, 0.7)
        kind = entries[0].kind
    # per-component ADPs differ a little (surface-rich minority populations vibrate more)
    adp = _loguniform(rng, *(TRAIN["adp"] if inside else (0.001, 0.025)))
    expansion = _uniform(rng, TRAIN["expansion"] if inside else (0.955, 1.045))
    comps = [P.ClusterComponent(e.table.motif, el, expansion=expansion * float(rng.normal(1.0, 0.003)) if i else expansion,
                                adp_angstrom2=adp * (float(rng.uniform(1.0, 1.4)) if i else 1.0), fraction=float(f),
                                pair_table=e.table) for i, (e, f) in enumerate(zip(entries, w))]
    shell = None
    if rng.random() < 0.35 and not entries[0].table.bulk:
        lig = str(rng.choice(["S", "O", "P", "Cl"]))
        bond = {"S": (2.2, 2.5), "O": (1.9, 2.2), "P": (2.2, 2.45), "Cl": (2.25, 2.45)}[lig]
        shell = P.Shell(lig, coverage=_uniform(rng, (0.1, 1.2)), bonds=float(rng.uniform(1.0, 3.0)),
                        bond_angstrom=_uniform(rng, bond), sigma_angstrom=_uniform(rng, (0.04, 0.18)),
                        ll_neighbours=_uniform(rng, (1.0, 5.0)), ll_sigma_angstrom=_uniform(rng, (0.2, 0.6)))
    # Qmax where exp(−Q²U) has fallen to e^−4.5 … e^−7 at the latest (signal lost in the noise)
    qmax = min(_uniform(rng, TRAIN["qmax"] if inside else (14.0, 35.0)), math.sqrt(_uniform(rng, (4.5, 7.0)) / adp))
    acq = P.Acquisition(
        qmin=_uniform(rng, TRAIN["qmin"] if inside else (0.3, 1.5)), qmax=qmax,
        qdamp=_loguniform(rng, *(TRAIN["qdamp"] if inside else (0.01, 0.08))),
        counts=_loguniform(rng, 2e4, 1e7), background=str(rng.choice(["kapton", "ethanol", "hexane_quartz"])),
        background_level=_uniform(rng, (0.1, 5.0)), background_error=_uniform(rng, (-0.06, 0.06)),
        rpoly=_uniform(rng, (0.6, 1.3)), normalisation_error=_uniform(rng, (-0.04, 0.04)),
        lorch=bool(rng.random() < 0.25), wavelength=float(rng.choice([0.1173, 0.1665, 0.2127])))
    return CurveSpec(comps, shell, acq, label, kind, el, entries)


def _labels(spec: CurveSpec) -> dict[str, Any]:
    w = np.array([c.fraction for c in spec.components], dtype=float)
    w = w / w.sum()
    geo = [c.geometry() for c in spec.components]
    if spec.entries[0].table.bulk:
        n_atoms, diam = -1, float("nan")
    else:
        n_atoms = int(round(float(np.sum(w * [g["n_atoms"] for g in geo]))))
        diam = float(np.sum(w * [g["diameter_nm"] for g in geo]))
    return {"n_atoms": n_atoms, "diameter_nm": diam,
            "nn_distance_angstrom": float(np.sum(w * [g["nn_distance_angstrom"] for g in geo])),
            "expansion": spec.components[0].expansion, "adp_angstrom2": spec.components[0].adp_angstrom2,
            "dominant_fraction": float(w.max())}


def _shape_in_range(e: Entry) -> bool:
    """Is a pool structure inside the training pool's structural ranges (TRAIN_SHAPES)?"""
    sh = e.table.shape
    lim = TRAIN_SHAPES
    if e.label == "hcp" and not lim["c_over_a"][0] <= float(sh.get("c_over_a", math.sqrt(8 / 3))) <= lim["c_over_a"][1]:
        return False
    if float(sh.get("elongation", 1.0)) > lim["elongation"]:
        return False
    if float(sh.get("trim", 0.0)) > lim["trim"].get(e.table.motif, 0.0) + 1e-9:
        return False
    st = sh.get("stacking")
    return st is None or st in lim["stacking"].get(e.table.motif, ())


def _in_range(spec: CurveSpec, lab: dict[str, Any]) -> bool:
    """Structure, size distribution and instrument inside the training ranges (TRAIN, TRAIN_SHAPES,
    NN_RANGE); the artefact recipes are not compared (they always differ)."""
    a = spec.acquisition
    nn_bulk = P.ELEMENTS[spec.element].nn_angstrom * spec.components[0].expansion
    main = spec.entries[0]
    same = [e for e in spec.entries if e.label == main.label]
    lim = TRAIN_SHAPES
    checks = [
        all(_shape_in_range(e) for e in spec.entries),
        spec.label == "other" or (len(same) <= lim["sizes"] and all(
            abs(math.log(max(e.n_atoms, 1) / max(main.n_atoms, 1))) <= lim["size_log_ratio"] + 1e-9 for e in same)),
        TRAIN["qmin"][0] <= a.qmin <= TRAIN["qmin"][1],
        TRAIN["qmax"][0] <= a.qmax <= TRAIN["qmax"][1],
        TRAIN["qdamp"][0] <= a.qdamp <= TRAIN["qdamp"][1],
        TRAIN["expansion"][0] <= spec.components[0].expansion <= TRAIN["expansion"][1],
        TRAIN["adp"][0] <= spec.components[0].adp_angstrom2 <= TRAIN["adp"][1],
        NN_RANGE[0] <= nn_bulk <= NN_RANGE[1],
        lab["n_atoms"] == -1 or TRAIN["n_atoms"][0] <= lab["n_atoms"] <= TRAIN["n_atoms"][1],
    ]
    return bool(all(checks))


def render(specs: list[CurveSpec], rng: np.random.Generator, r: np.ndarray = P.R_GRID, batch: int = 512) -> np.ndarray:
    """G(r) (float32, (N, len(r))) of the specs: S(Q)−1 from the tables, the measured F(Q) with its
    artefacts (noise drawn from rng), then a batched sine transform."""
    qmax = max(s.acquisition.qmax for s in specs) if specs else 1.0
    q = P.Q_GRID[: int(math.floor(qmax / P.Q_STEP + 1e-9)) + 2]
    out = np.empty((len(specs), r.size), dtype=np.float32)
    for start in range(0, len(specs), batch):
        chunk = specs[start:start + batch]
        F = np.empty((len(chunk), q.size))
        for i, s in enumerate(chunk):
            sm1, f2, fb2 = P.sq_minus_1(s.components, q, s.shell)
            F[i] = P.measured_fq(q, sm1, f2, fb2, s.acquisition, rng, s.element)
        qd = np.array([s.acquisition.qdamp for s in chunk])
        out[start:start + len(chunk)] = P.fq_to_gr(q, F, r, qd)
    return out


def simulate(n_per_class: int, seed: int, *, recipe: str = "train", progress: bool = False,
             classes: tuple[str, ...] = CLASSES) -> dict[str, Any]:
    """`n_per_class` curves of each class (CLASSES order, shuffled) from `recipe` ("train" or
    "heldout"), reproducible from `seed`. Returns {"r": R_GRID (Å), "G": float32 (N, len(r)) Å⁻²,
    "motif": labels, "kind": structure kinds, "n_atoms", "diameter_nm", "nn_distance_angstrom",
    "expansion", "adp_angstrom2", "dominant_fraction", "element", "qmin", "qmax", "qdamp",
    "shell" (ligand element or ""), "in_range" (bool), "recipe", "seed", "seconds"}."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe={recipe!r}; use one of {RECIPES}")
    if int(n_per_class) < 1:
        raise ValueError(f"n_per_class={n_per_class} must be >= 1")
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        raise ValueError(f"unknown class(es) {unknown}; known: {CLASSES}")
    t0 = time.perf_counter()
    by = _by_label(_pool(recipe, progress))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), RECIPES.index(recipe)]))
    labels = np.repeat(np.array(classes), int(n_per_class))
    rng.shuffle(labels)
    make = _train_recipe if recipe == "train" else _heldout_recipe
    specs = [make(rng, by, str(lab)) for lab in labels]
    if progress:
        print(f"pdf dataset ({recipe}): {len(specs)} curves from {sum(len(v) for v in by.values())} structures")
    G = render(specs, rng)
    labs = [_labels(s) for s in specs]
    col = lambda k, dt: np.array([lab[k] for lab in labs], dtype=dt)  # noqa: E731
    return {
        "r": P.R_GRID.copy(),
        "G": G,
        "motif": [s.label for s in specs],
        "kind": [s.kind for s in specs],
        "n_atoms": col("n_atoms", np.int64),
        "diameter_nm": col("diameter_nm", float),
        "nn_distance_angstrom": col("nn_distance_angstrom", float),
        "expansion": col("expansion", float),
        "adp_angstrom2": col("adp_angstrom2", float),
        "dominant_fraction": col("dominant_fraction", float),
        "element": [s.element for s in specs],
        "qmin": np.array([s.acquisition.qmin for s in specs]),
        "qmax": np.array([s.acquisition.qmax for s in specs]),
        "qdamp": np.array([s.acquisition.qdamp for s in specs]),
        "shell": [s.shell.element if s.shell is not None else "" for s in specs],
        "in_range": np.array([_in_range(s, lab) if recipe == "heldout" else True for s, lab in zip(specs, labs)]),
        "recipe": recipe,
        "seed": int(seed),
        "seconds": time.perf_counter() - t0,
    }
