"""Powder diffraction forward model: reflection lists from crystal structures, profiles in numpy.

Peak positions and structure factors come from Dans_Diffraction (X-ray form factors of
Waasmaier & Kirfel, isotropic Debye-Waller factors). The structures are built in code from the
lattice, the space group and the Wyckoff positions (`PHASES`, sources in `simulators.pd.phases`).
Each phase's reflection list (hkl, d, |F|²·multiplicity) is computed once per process and cached
(and memoised on disk next to this file, keyed by a hash of the structure, so that worker
processes and test runs skip the structure-factor sums).

Pattern model (integrated intensities in 2θ, everything vectorised over reflections and points):

    I(2θ) = bkg(2θ) + scale · Σ_p v_p/V_p² · Σ_hkl m|F|²_hkl · LP(θ) · PO_hkl · pV(2θ - 2θ_hkl; H, η)

* v_p: volume fraction of phase p (from its weight fraction and density), V_p: cell volume.
* Lattice: every length of the cell multiplied by `lattice_scale` (isotropic strain; Vegard's law
  for solid solutions such as Ce1-xZrxO2 uses this), so d_hkl = s·d_hkl(ref).
* LP = P(2θ) / (sin²θ cosθ), P = (1 + cos²2θ)/2 for an unpolarised tube, 1 for a synchrotron beam
  polarised in the plane normal to the scattering plane.
* Profile: Thompson–Cox–Hastings pseudo-Voigt. Gaussian FWHM² = U tan²θ + V tanθ + W (Caglioti,
  instrument) + (4 ε tanθ)² (microstrain ε, in radians→degrees); Lorentzian FWHM = Kλ/(L cosθ)
  (Scherrer, K = 0.9, crystallite size L).
* Peak shift: zero shift z (deg) and sample displacement s (mm) on a goniometer of radius R (mm):
  Δ2θ = z - 2 s cosθ / R (radians→degrees).
* Preferred orientation: March–Dollase, PO = mean over the members of each reflection group of
  (r² cos²α + sin²α / r)^(-3/2), α the angle between the reflection and the texture axis.
* Background: Chebyshev polynomial in x = 2(2θ - 2θ_min)/(2θ_max - 2θ_min) - 1.
* Noise: Poisson counts, `counts_max` counts at the strongest point.

Q = 4π sinθ / λ (Å⁻¹) relates the two axes; `two_theta_to_q` and `q_to_two_theta` convert.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = [
    "WAVELENGTH_CU_KA1",
    "WAVELENGTH_SYNCHROTRON",
    "SCHERRER_K",
    "PhaseDef",
    "PHASES",
    "EXTRA_PHASES",
    "LIBRARY",
    "ReflectionList",
    "reflections",
    "build_crystal",
    "symmetry_operations",
    "two_theta_to_q",
    "q_to_two_theta",
    "PhaseComponent",
    "Profile",
    "peak_list",
    "simulate",
    "chebyshev_background",
    "add_poisson_noise",
    "pseudo_voigt_fwhm",
]

WAVELENGTH_CU_KA1 = 1.5406  # Å
WAVELENGTH_SYNCHROTRON = 0.1665  # Å (74.5 keV, a high-energy powder beamline)
SCHERRER_K = 0.9
Q_MAX_REFLECTIONS = 8.0  # Å⁻¹ (d >= 0.785 Å): covers Cu Kα to 2θ = 159° and 0.1665 Å to 12.2°
_CACHE_DIR = Path(__file__).with_name("phases") / "_cache"
_LOCK = threading.Lock()


@dataclass(frozen=True)
class PhaseDef:
    """A crystal structure: cell (a, b, c, α, β, γ in Å and degrees), space group number (Bilbao
    default setting), and the asymmetric unit as (element, x, y, z, occupancy)."""

    name: str
    formula: str
    spacegroup: int
    cell: tuple[float, float, float, float, float, float]
    atoms: tuple[tuple[str, float, float, float, float], ...]
    z_formula_units: int
    molar_mass_g: float  # of one formula unit
    uiso: float = 0.006  # Å²
    texture_axis: tuple[int, int, int] = (0, 0, 1)
    family: str = ""
    # from a CIF (simulators.pd.cif): the symmetry operations as written (x,y,z triplets; empty =
    # the IT number's Bilbao default setting), per-atom U_iso (Å²; empty = `uiso` for all), the
    # space-group symbol and the source file name
    symops: tuple[str, ...] = ()
    uisos: tuple[float, ...] = ()
    spacegroup_symbol: str = ""
    source: str = ""

    @property
    def a(self) -> float:
        return self.cell[0]


_O = 15.999
_M = {"Ti": 47.867, "Zr": 91.224, "Ce": 140.116, "Ni": 58.693, "Pd": 106.42, "Zn": 65.38, "Al": 26.982,
      "Fe": 55.845, "Co": 58.933, "Sr": 87.62, "Cu": 63.546, "Y": 88.906}

_TZ = 0.2044  # t-ZrO2 oxygen z (origin choice 1 description), written out in P1 below
PHASES: dict[str, PhaseDef] = {
    p.name: p
    for p in [
        PhaseDef("TiO2_anatase", "TiO2", 141, (3.7852, 3.7852, 9.5139, 90, 90, 90),
                 (("Ti", 0.0, 0.75, 0.125, 1.0), ("O", 0.0, 0.25, 0.0833, 1.0)), 4, _M["Ti"] + 2 * _O,
                 family="TiO2"),
        PhaseDef("TiO2_rutile", "TiO2", 136, (4.5937, 4.5937, 2.9587, 90, 90, 90),
                 (("Ti", 0.0, 0.0, 0.0, 1.0), ("O", 0.3048, 0.3048, 0.0, 1.0)), 2, _M["Ti"] + 2 * _O,
                 family="TiO2"),
        PhaseDef("TiO2_brookite", "TiO2", 61, (9.184, 5.447, 5.145, 90, 90, 90),
                 (("Ti", 0.1289, 0.0972, 0.8628, 1.0), ("O", 0.0101, 0.1486, 0.1835, 1.0),
                  ("O", 0.2304, 0.1130, 0.5371, 1.0)), 8, _M["Ti"] + 2 * _O, family="TiO2"),
        PhaseDef("ZrO2_monoclinic", "ZrO2", 14, (5.1507, 5.2028, 5.3156, 90, 99.194, 90),
                 (("Zr", 0.2754, 0.0395, 0.2083, 1.0), ("O", 0.0700, 0.3317, 0.3447, 1.0),
                  ("O", 0.4496, 0.7569, 0.4792, 1.0)), 4, _M["Zr"] + 2 * _O, family="ZrO2"),
        PhaseDef("ZrO2_tetragonal", "ZrO2", 1, (3.596, 3.596, 5.184, 90, 90, 90),
                 (("Zr", 0.0, 0.0, 0.0, 1.0), ("Zr", 0.5, 0.5, 0.5, 1.0),
                  ("O", 0.0, 0.5, _TZ, 1.0), ("O", 0.0, 0.5, _TZ + 0.5, 1.0),
                  ("O", 0.5, 0.0, 1.0 - _TZ, 1.0), ("O", 0.5, 0.0, 0.5 - _TZ, 1.0)), 2, _M["Zr"] + 2 * _O,
                 family="ZrO2"),
        PhaseDef("CeO2", "CeO2", 225, (5.411, 5.411, 5.411, 90, 90, 90),
                 (("Ce", 0.0, 0.0, 0.0, 1.0), ("O", 0.25, 0.25, 0.25, 1.0)), 4, _M["Ce"] + 2 * _O,
                 texture_axis=(1, 1, 1), family="CeO2-ZrO2"),
        PhaseDef("NiO", "NiO", 225, (4.1771, 4.1771, 4.1771, 90, 90, 90),
                 (("Ni", 0.0, 0.0, 0.0, 1.0), ("O", 0.5, 0.5, 0.5, 1.0)), 4, _M["Ni"] + _O,
                 texture_axis=(1, 1, 1)),
        PhaseDef("PdO", "PdO", 131, (3.043, 3.043, 5.336, 90, 90, 90),
                 (("Pd", 0.0, 0.5, 0.0, 1.0), ("O", 0.0, 0.0, 0.25, 1.0)), 2, _M["Pd"] + _O),
        PhaseDef("ZnO", "ZnO", 186, (3.2498, 3.2498, 5.2066, 90, 90, 120),
                 (("Zn", 1 / 3, 2 / 3, 0.0, 1.0), ("O", 1 / 3, 2 / 3, 0.3819, 1.0)), 2, _M["Zn"] + _O),
        PhaseDef("Al2O3_corundum", "Al2O3", 167, (4.7589, 4.7589, 12.991, 90, 90, 120),
                 (("Al", 0.0, 0.0, 0.35216, 1.0), ("O", 0.30624, 0.0, 0.25, 1.0)), 6, 2 * _M["Al"] + 3 * _O),
        PhaseDef("Fe2O3_hematite", "Fe2O3", 167, (5.0356, 5.0356, 13.7489, 90, 90, 120),
                 (("Fe", 0.0, 0.0, 0.35530, 1.0), ("O", 0.3059, 0.0, 0.25, 1.0)), 6, 2 * _M["Fe"] + 3 * _O),
        PhaseDef("Co3O4", "Co3O4", 227, (8.0837, 8.0837, 8.0837, 90, 90, 90),
                 (("Co", 0.125, 0.125, 0.125, 1.0), ("Co", 0.5, 0.5, 0.5, 1.0), ("O", 0.2631, 0.2631, 0.2631, 1.0)),
                 8, 3 * _M["Co"] + 4 * _O, texture_axis=(1, 1, 1)),
    ]
}

# Phases NOT in the analyser's library (out-of-distribution tests; Ce2O3 is what CeO2 turns into
# under hydrogen at high temperature in simulators.worlds.oxides).
EXTRA_PHASES: dict[str, PhaseDef] = {
    p.name: p
    for p in [
        PhaseDef("Ce2O3_hexagonal", "Ce2O3", 164, (3.891, 3.891, 6.059, 90, 90, 120),
                 (("Ce", 1 / 3, 2 / 3, 0.2454, 1.0), ("O", 0.0, 0.0, 0.0, 1.0), ("O", 1 / 3, 2 / 3, 0.6471, 1.0)),
                 1, 2 * _M["Ce"] + 3 * _O),
        PhaseDef("SrTiO3", "SrTiO3", 221, (3.905, 3.905, 3.905, 90, 90, 90),
                 (("Sr", 0.0, 0.0, 0.0, 1.0), ("Ti", 0.5, 0.5, 0.5, 1.0), ("O", 0.0, 0.5, 0.5, 1.0)),
                 1, _M["Sr"] + _M["Ti"] + 3 * _O),
        PhaseDef("CuO_tenorite", "CuO", 15, (4.6837, 3.4226, 5.1288, 90, 99.54, 90),
                 (("Cu", 0.25, 0.25, 0.0, 1.0), ("O", 0.0, 0.4184, 0.25, 1.0)), 4, _M["Cu"] + _O),
        PhaseDef("Y2O3_bixbyite", "Y2O3", 206, (10.604, 10.604, 10.604, 90, 90, 90),
                 (("Y", 0.25, 0.25, 0.25, 1.0), ("Y", -0.0323, 0.0, 0.25, 1.0), ("O", 0.391, 0.152, 0.380, 1.0)),
                 16, 2 * _M["Y"] + 3 * _O),
    ]
}

LIBRARY: tuple[str, ...] = tuple(PHASES)  # the analyser's class order


def _phase(name: "str | PhaseDef") -> PhaseDef:
    """A PhaseDef itself, or the built-in one of that name."""
    if isinstance(name, PhaseDef):
        return name
    if name in PHASES:
        return PHASES[name]
    if name in EXTRA_PHASES:
        return EXTRA_PHASES[name]
    raise KeyError(f"unknown phase {name!r}; known: {sorted(PHASES) + sorted(EXTRA_PHASES)}")


def symmetry_operations(phase: "str | PhaseDef") -> list[str]:
    """The phase's symmetry operations as x,y,z triplets: as read from its CIF, else those of its
    IT number in Dans_Diffraction's tables (Bilbao default setting)."""
    p = _phase(phase)
    if p.symops:
        return list(p.symops)
    import Dans_Diffraction.functions_crystallography as fc

    return list(fc.spacegroup(p.spacegroup)["general positions"])


def build_crystal(name: "str | PhaseDef"):
    """A Dans_Diffraction Crystal of the phase (a PhaseDef or a built-in name), set up for X-ray
    scattering."""
    import Dans_Diffraction as dd
    import Dans_Diffraction.functions_crystallography as fc

    p = _phase(name)
    xtl = dd.Crystal()
    xtl.name = p.name
    xtl.Cell.latt(list(p.cell))
    if p.symops:
        ops = list(p.symops)
        xtl.Symmetry.symmetry_operations = ops
        xtl.Symmetry.symmetry_operations_magnetic = fc.symmetry_ops2magnetic(ops)
        xtl.Symmetry.symmetry_operations_time = [1] * len(ops)
        xtl.Symmetry.generate_matrices()
    else:
        xtl.Symmetry.load_spacegroup(p.spacegroup)
    el, x, y, z, occ = zip(*p.atoms)
    labels = [f"{e}{i + 1}" for i, e in enumerate(el)]
    xtl.new_atoms(u=list(x), v=list(y), w=list(z), type=list(el), label=labels, occupancy=list(occ),
                  uiso=list(p.uisos) if p.uisos else [p.uiso] * len(el))
    # magnetic_formfactor=False: the X-ray charge scattering does not use it, and Dans_Diffraction
    # would re-read its orbital tables for every atom on every call (95 % of the time otherwise)
    xtl.Scatter.setup_scatter(scattering_type="xray", energy_kev=12.39842 / WAVELENGTH_CU_KA1, output=False,
                              magnetic_formfactor=False)
    return xtl


@dataclass
class ReflectionList:
    """Reflections of one phase, grouped by d-spacing (symmetry-equivalent and accidentally
    coincident reflections form one group).

    hkl: a representative (G, 3); d_angstrom (G,) at the reference lattice; fsq_mult (G,) =
    Σ_members |F|² (electrons², i.e. |F|²·multiplicity); member_group (M,) and member_cos2 (M,):
    each member's group and cos² of its angle to the phase's texture axis (March–Dollase)."""

    phase: str
    hkl: np.ndarray
    d_angstrom: np.ndarray
    fsq_mult: np.ndarray
    member_group: np.ndarray
    member_cos2: np.ndarray
    volume_angstrom3: float
    density_g_cm3: float
    multiplicity: np.ndarray = field(default=None)  # type: ignore[assignment]

    def march_dollase(self, r: float) -> np.ndarray:
        """Per-group March–Dollase factor for texture ratio r (1 = random powder)."""
        if abs(r - 1.0) < 1e-9:
            return np.ones(self.d_angstrom.size)
        c2 = self.member_cos2
        f = (r * r * c2 + (1.0 - c2) / r) ** -1.5
        s = np.bincount(self.member_group, weights=f, minlength=self.d_angstrom.size)
        return s / self.multiplicity


def _structure_key(p: PhaseDef, q_max: float) -> str:
    import Dans_Diffraction as dd

    extra = [list(p.symops), list(p.uisos)] if (p.symops or p.uisos) else []
    text = json.dumps([p.name, p.spacegroup, p.cell, p.atoms, p.uiso, p.texture_axis, q_max,
                       getattr(dd, "__version__", "?"), 2, p.z_formula_units, p.molar_mass_g] + extra)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _compute_reflections(name: "str | PhaseDef", q_max: float) -> dict[str, np.ndarray]:
    p = _phase(name)
    xtl = build_crystal(p)
    hkl = xtl.Cell.all_hkl(maxq=q_max).astype(float)
    hkl = hkl[np.any(hkl != 0, axis=1)]
    fsq = np.asarray(xtl.Scatter.intensity(hkl), dtype=float)
    qvec = np.asarray(xtl.Cell.calculateQ(hkl), dtype=float)
    qmag = np.linalg.norm(qvec, axis=1)
    keep = fsq > 1e-6 * fsq.max()
    hkl, fsq, qvec, qmag = hkl[keep], fsq[keep], qvec[keep], qmag[keep]
    order = np.argsort(qmag, kind="stable")
    hkl, fsq, qvec, qmag = hkl[order], fsq[order], qvec[order], qmag[order]
    new = np.concatenate([[True], np.diff(qmag) > 2e-6 * qmag[1:]])
    group = np.cumsum(new) - 1
    ng = int(group[-1]) + 1
    fsq_mult = np.bincount(group, weights=fsq, minlength=ng)
    mult = np.bincount(group, minlength=ng).astype(float)
    q_group = np.bincount(group, weights=qmag, minlength=ng) / mult
    first = np.flatnonzero(new)
    # representative hkl: the member with the most non-negative indices, then the smallest sum
    rep = hkl[first]
    tex = np.asarray(xtl.Cell.calculateQ(np.asarray([p.texture_axis], dtype=float)), dtype=float)[0]
    tex /= np.linalg.norm(tex)
    cos2 = (qvec @ tex / qmag) ** 2
    strong = fsq_mult > 1e-4 * fsq_mult.max()
    remap = -np.ones(ng, dtype=int)
    remap[strong] = np.arange(int(strong.sum()))
    mk = strong[group]
    volume = float(xtl.Cell.volume())
    density = p.z_formula_units * p.molar_mass_g / 6.02214076e23 / (volume * 1e-24)
    for i in range(ng):
        members = hkl[first[i]: (first[i + 1] if i + 1 < ng else hkl.shape[0])]
        score = (members >= 0).sum(axis=1) * 1000 - np.abs(members).sum(axis=1)
        rep[i] = members[int(np.argmax(score))]
    return {
        "hkl": rep[strong].astype(np.int16),
        "d_angstrom": (2 * np.pi / q_group)[strong],
        "fsq_mult": fsq_mult[strong],
        "multiplicity": mult[strong],
        "member_group": remap[group[mk]],
        "member_cos2": cos2[mk],
        "volume_angstrom3": np.array(volume),
        "density_g_cm3": np.array(density),
    }


def reflections(name: "str | PhaseDef", q_max: float = Q_MAX_REFLECTIONS) -> ReflectionList:
    """The cached reflection list of a phase, a built-in name or a PhaseDef (computed with
    Dans_Diffraction on first use)."""
    return _reflections(_phase(name), q_max)


@lru_cache(maxsize=None)
def _reflections(p: PhaseDef, q_max: float) -> ReflectionList:
    name = p.name
    with _LOCK:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60]
        path = _CACHE_DIR / f"{safe}-{_structure_key(p, q_max)}.npz"
        data = None
        if path.exists():
            try:
                with np.load(path) as z:
                    data = {k: z[k] for k in z.files}
            except (OSError, ValueError):
                data = None
        if data is None:
            data = _compute_reflections(p, q_max)
            try:
                _CACHE_DIR.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{threading.get_ident()}.tmp.npz")
                np.savez(tmp, **data)
                tmp.replace(path)
            except OSError:
                pass
    return ReflectionList(
        phase=name,
        hkl=data["hkl"].astype(int),
        d_angstrom=data["d_angstrom"],
        fsq_mult=data["fsq_mult"],
        member_group=data["member_group"].astype(int),
        member_cos2=data["member_cos2"],
        volume_angstrom3=float(data["volume_angstrom3"]),
        density_g_cm3=float(data["density_g_cm3"]),
        multiplicity=data["multiplicity"],
    )


# ----- axes ------------------------------------------------------------------------------------------

def two_theta_to_q(two_theta_deg, wavelength_angstrom: float):
    """Q = 4π sinθ / λ (Å⁻¹)."""
    return 4.0 * np.pi * np.sin(np.radians(np.asarray(two_theta_deg, dtype=float)) / 2.0) / wavelength_angstrom


def q_to_two_theta(q_inv_angstrom, wavelength_angstrom: float):
    """2θ (deg) of Q; NaN where Qλ/4π > 1 (not reachable at this wavelength)."""
    s = np.asarray(q_inv_angstrom, dtype=float) * wavelength_angstrom / (4.0 * np.pi)
    with np.errstate(invalid="ignore"):
        return np.degrees(2.0 * np.arcsin(np.where(np.abs(s) <= 1, s, np.nan)))


# ----- patterns ---------------------------------------------------------------------------------------

@dataclass
class PhaseComponent:
    """One phase in a sample: weight fraction, isotropic lattice scale, crystallite size (nm),
    microstrain ε (dimensionless, e.g. 1e-3) and March–Dollase ratio r."""

    phase: "str | PhaseDef"  # a built-in name or a PhaseDef (e.g. read from a CIF)
    weight_fraction: float = 1.0
    lattice_scale: float = 1.0
    size_nm: float = 50.0
    strain: float = 0.0
    po_ratio: float = 1.0


@dataclass
class Profile:
    """Instrument and sample-mounting parameters."""

    wavelength_angstrom: float = WAVELENGTH_CU_KA1
    caglioti_uvw_deg2: tuple[float, float, float] = (0.004, -0.002, 0.003)
    zero_shift_deg: float = 0.0
    displacement_mm: float = 0.0
    radius_mm: float = 240.0
    polarisation: str = "unpolarised"  # or "synchrotron"
    scherrer_k: float = SCHERRER_K
    # a tube without a monochromator: the Kα2 line (Å) at this intensity ratio to Kα1 (0 = one line)
    kalpha2_angstrom: float = 0.0
    kalpha2_ratio: float = 0.0


def pseudo_voigt_fwhm(h_g, h_l):
    """Thompson–Cox–Hastings total FWHM and Lorentzian fraction η of a pseudo-Voigt."""
    h_g = np.maximum(h_g, 1e-8)
    h_l = np.maximum(h_l, 0.0)
    h = (h_g ** 5 + 2.69269 * h_g ** 4 * h_l + 2.42843 * h_g ** 3 * h_l ** 2 + 4.47163 * h_g ** 2 * h_l ** 3
         + 0.07842 * h_g * h_l ** 4 + h_l ** 5) ** 0.2
    q = h_l / h
    eta = np.clip(1.36603 * q - 0.47719 * q ** 2 + 0.11116 * q ** 3, 0.0, 1.0)
    return h, eta


def peak_list(component: PhaseComponent, profile: Profile, two_theta_range: tuple[float, float] | None = None):
    """Positions (deg), integrated intensities (per unit volume fraction, before scale), FWHM (deg)
    and η of one phase's reflections under the profile; reflections outside the range (±2°) dropped."""
    ref = reflections(component.phase)
    lam = profile.wavelength_angstrom
    d = ref.d_angstrom * component.lattice_scale
    s = lam / (2.0 * d)
    ok = s < 0.9999
    theta = np.arcsin(np.where(ok, s, 0.5))
    tt = np.degrees(2 * theta)
    cos_t = np.cos(theta)
    tt = tt + profile.zero_shift_deg - np.degrees(2.0 * profile.displacement_mm * cos_t / profile.radius_mm)
    if two_theta_range is not None:
        ok &= (tt > two_theta_range[0] - 2.0) & (tt < two_theta_range[1] + 2.0)
    tan_t = np.tan(theta)
    U, V, W = profile.caglioti_uvw_deg2
    hg2 = np.maximum(U * tan_t ** 2 + V * tan_t + W, 1e-10) + np.degrees(4.0 * component.strain * tan_t) ** 2
    hl = np.degrees(profile.scherrer_k * lam / (component.size_nm * 10.0 * cos_t))
    h, eta = pseudo_voigt_fwhm(np.sqrt(hg2), hl)
    c2t = np.cos(2 * theta)
    pol = np.ones_like(c2t) if profile.polarisation == "synchrotron" else (1 + c2t ** 2) / 2
    lp = pol / (np.sin(theta) ** 2 * cos_t)
    vol = ref.volume_angstrom3 * component.lattice_scale ** 3
    area = ref.fsq_mult * lp * ref.march_dollase(component.po_ratio) / vol ** 2
    return tt[ok], area[ok], h[ok], eta[ok]


def _pv_sum(x: np.ndarray, pos: np.ndarray, area: np.ndarray, h: np.ndarray, eta: np.ndarray,
            cutoff_fwhm: float = 25.0) -> np.ndarray:
    """Σ_k area_k pV(x - pos_k) on an ascending grid x (N,), each peak evaluated within
    ±cutoff_fwhm·FWHM of its centre (beyond that the Lorentzian tail holds < 1.3 % of its area).
    Vectorised over all (peak, point) pairs inside the windows."""
    x = np.asarray(x, dtype=float)
    out = np.zeros(x.shape, dtype=float)
    if pos.size == 0:
        return out
    lo = np.searchsorted(x, pos - cutoff_fwhm * h, side="left")
    hi = np.searchsorted(x, pos + cutoff_fwhm * h, side="right")
    n = hi - lo
    keep = n > 0
    if not np.any(keep):
        return out
    lo, n, pos, area, h, eta = lo[keep], n[keep], pos[keep], area[keep], h[keep], eta[keep]
    peak = np.repeat(np.arange(n.size), n)
    start = np.cumsum(n) - n
    idx = lo[peak] + (np.arange(int(n.sum())) - start[peak])
    dx = (x[idx] - pos[peak]) / h[peak]
    dx2 = dx * dx
    g = np.exp(-4.0 * math.log(2) * dx2) * (2.0 * math.sqrt(math.log(2) / math.pi))
    lor = (2.0 / math.pi) / (1.0 + 4.0 * dx2)
    e = eta[peak]
    vals = (e * lor + (1.0 - e) * g) * (area / h)[peak]
    return np.bincount(idx, weights=vals, minlength=x.size)


def volume_fractions(components: Sequence[PhaseComponent]) -> np.ndarray:
    w = np.array([c.weight_fraction for c in components], dtype=float)
    rho = np.array([reflections(c.phase).density_g_cm3 for c in components])
    v = w / rho
    return v / v.sum() if v.sum() > 0 else v


def weight_fractions_from_scales(phases: Sequence[str], phase_scales: np.ndarray, lattice_scales=None) -> np.ndarray:
    """Weight fractions from per-phase intensity scales (the scale multiplying v_p/V_p² terms is
    v_p itself here), i.e. w_p ∝ v_p ρ_p."""
    rho = np.array([reflections(p).density_g_cm3 for p in phases])
    if lattice_scales is not None:
        rho = rho / np.asarray(lattice_scales, dtype=float) ** 3
    w = np.maximum(np.asarray(phase_scales, dtype=float), 0) * rho
    return w / w.sum() if w.sum() > 0 else w


KALPHA2 = {1.5406: 1.54443, 1.7890: 1.79285, 0.7093: 0.71359, 1.9360: 1.93998, 2.2897: 2.29361, 0.5594: 0.56380}
"""Kα1 -> Kα2 wavelengths (Å) of the usual anodes: Cu, Co, Mo, Fe, Cr, Ag."""


def phase_profile(x: np.ndarray, component: PhaseComponent, profile: Profile,
                  two_theta_range: tuple[float, float] | None = None) -> np.ndarray:
    """One phase's noiseless pattern on an ascending 2θ grid x (unit volume fraction), with the
    Kα2 line added when the profile has one."""
    pos, area, h, eta = peak_list(component, profile, two_theta_range)
    y = _pv_sum(x, pos, area, h, eta)
    if profile.kalpha2_ratio > 0 and profile.kalpha2_angstrom > 0:
        from dataclasses import replace

        p2 = replace(profile, wavelength_angstrom=profile.kalpha2_angstrom, kalpha2_ratio=0.0)
        pos, area, h, eta = peak_list(component, p2, two_theta_range)
        y = y + profile.kalpha2_ratio * _pv_sum(x, pos, area, h, eta)
    return y


def phase_patterns(two_theta_deg: np.ndarray, components: Sequence[PhaseComponent], profile: Profile) -> np.ndarray:
    """(P, N) noiseless pattern of each phase at unit volume fraction (no background, no scale)."""
    x = np.asarray(two_theta_deg, dtype=float)
    rng_ = (float(x.min()), float(x.max()))
    out = np.empty((len(components), x.size))
    for i, c in enumerate(components):
        out[i] = phase_profile(x, c, profile, rng_)
    return out


def chebyshev_background(two_theta_deg: np.ndarray, coeffs: Sequence[float]) -> np.ndarray:
    x = np.asarray(two_theta_deg, dtype=float)
    lo, hi = float(x.min()), float(x.max())
    t = 2.0 * (x - lo) / max(hi - lo, 1e-12) - 1.0
    return np.polynomial.chebyshev.chebval(t, np.asarray(coeffs, dtype=float))


def simulate(
    two_theta_deg: np.ndarray,
    components: Sequence[PhaseComponent],
    profile: Profile | None = None,
    *,
    background_coeffs: Sequence[float] = (0.0,),
    scale: float = 1.0,
) -> np.ndarray:
    """Noiseless I(2θ): scale · Σ_p v_p · pattern_p + Chebyshev background (same units)."""
    profile = profile or Profile()
    if not components:
        raise ValueError("simulate needs at least one PhaseComponent")
    v = volume_fractions(components)
    pats = phase_patterns(two_theta_deg, components, profile)
    return scale * (v @ pats) + chebyshev_background(two_theta_deg, background_coeffs)


def add_poisson_noise(expected: np.ndarray, counts_max: float, rng: np.random.Generator):
    """Poisson counts with `counts_max` at the largest point; returns (intensity, sigma) in the
    units of `expected` (sigma = sqrt(max(counts, 1)) / factor)."""
    peak = float(np.max(expected))
    if not np.isfinite(peak) or peak <= 0:
        raise ValueError("expected intensity must be positive somewhere to add counting noise")
    f = counts_max / peak
    counts = rng.poisson(np.maximum(expected, 0) * f).astype(float)
    return counts / f, np.sqrt(np.maximum(counts, 1.0)) / f
