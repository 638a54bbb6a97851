"""A simulated colloidal synthesis of metal nanoclusters: metal salt reduced in a ligand solution ->
(hidden) cluster motifs, sizes, disorder and yield, measured by a simulated total-scattering
instrument (`simulators.pdf.instrument.PdfInstrument`).

Synthesis parameters (`PARAMETER_SPACE`):

* `metal` "Pt", "Pd" or "Au" (chloride salts).
* `temperature_C` 20–250 °C (water/polyol at the low end, oleylamine at the high end).
* `reducer_strength` 0–1: 0 a mild reducer (polyol, ascorbic acid), 1 a strong one (NaBH4); the
  rate constant spans 10^2.5.
* `ligand_ratio` 0.05–20 mol ligand per mol metal (log scale): thiols for Au, amines for Pt/Pd.
* `time_min` 1–600 min (log scale).

The hidden response (plausible, after Baletto & Ferrando, Rev. Mod. Phys. 77, 371 (2005) for the
size-dependent motif crossovers, LaMer nucleation and LSW ripening for the sizes):

* Reduction: k = k_m · exp(-Ea/R (1/T - 1/393 K)) · 10^(2.5 (s - 0.5)) per min, Ea = 60 kJ/mol,
  k_m = 3 (Au), 1 (Pt), 0.6 (Pd) after their reduction potentials; conversion X = 1 - exp(-k t).
* Size (atoms): a burst of nuclei, denser for faster reduction and more ligand,
  N0 = N_m · k^-0.6 · (1 + L)^-0.5 · X, then Ostwald ripening N = N0 + K t with
  K = 2 exp(-70 kJ/mol/R (1/T - 1/433 K)) / √(1 + L) atoms/min; clipped to 13–3000 atoms.
* Motif: icosahedra below N_c1, decahedra between N_c1 and N_c2, fcc above (logistic mixtures of
  width 0.25 in ln N): N_c1 = 80 (Au), 120 (Pt), 180 (Pd), N_c2 = 600 (Au), 900 (Pt), 2500 (Pd),
  both shifted up by kinetic trapping (fast reduction, low temperature: five-fold twinned
  clusters grow before they can anneal) by up to e^0.8 and e^1.0. Large fcc clusters grown with
  ligand (ratio ≳ 0.7) below ~210 °C are faceted truncated octahedra (`octahedral`), else rounded (`fcc`).
* Disorder: Uiso = U_m (1 + 1.5/N^(1/3)) (surface softening; U_m = 0.0045 Pt, 0.0055 Pd, 0.0075
  Au Å²) plus static disorder from fast, cold reduction; very strong reducer below ~50 °C gives
  amorphous clusters. Bond lengths contract in small clusters (expansion 1 - 0.06/N^(1/3)); thiols
  expand gold slightly.
* Ligand shell: S (Au, 2.35 Å) or N (Pt/Pd, 2.10 Å), coverage rising with the ligand ratio.
* Failures: below ~5 % conversion nothing is reduced ("too cold, too mild or too short"); below a
  ligand ratio of 0.065 the clusters aggregate and precipitate. Between 0.065 and ~0.15 part of the
  metal aggregates into bulk-like crystallites (a bulk fcc component, which the analyser should
  flag as out of distribution).

Every synthesis draws batch-to-batch noise (size ±8 %, Uiso ±5 %, expansion ±0.1 %, motif fractions
±0.03) from SeedSequence([world seed, SHA-256(sample id)]).

Structures measured: each motif present as two size populations (n·e^{±σ}), each the nearest of a
few standard shapes (`_shape_for`): Mackay icosahedra (magic numbers), compact Marks decahedra
(p = 2…9, |p − q| ≤ 1, r = 0…2: 5–10 % apart in atoms from 100 atoms on), truncated octahedra,
fcc spheres in 0.25-bond radius steps, amorphous clusters.

Default target (`DEFAULT_TARGET`): decahedral Pt clusters (≥ 70 % of the atoms) of 2.0–2.5 nm
diameter; `target_fraction()` measures the share of the (log-scaled) parameter space that meets it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from simulators.pdf import physics as _pdf
from simulators.world import SynthesisFailed, World, check_params, from_unit_cube, stable_seed

__all__ = ["PARAMETER_SPACE", "METALS", "DEFAULT_TARGET", "SynthesisFailed", "Sample", "NanoclusterWorld",
           "validate_params", "response", "meets_target", "target_fraction", "stable_seed"]

METALS = ("Pt", "Pd", "Au")
PARAMETER_SPACE: dict[str, dict[str, Any]] = {
    "metal": {"type": "choice", "values": METALS, "log_scale": False, "unit": None},
    "temperature_C": {"type": "float", "bounds": (20.0, 250.0), "log_scale": False, "unit": "°C"},
    "reducer_strength": {"type": "float", "bounds": (0.0, 1.0), "log_scale": False,
                         "unit": "0 mild (polyol) … 1 strong (NaBH4)"},
    "ligand_ratio": {"type": "float", "bounds": (0.05, 20.0), "log_scale": True, "unit": "mol/mol ligand:metal"},
    "time_min": {"type": "float", "bounds": (1.0, 600.0), "log_scale": True, "unit": "min"},
}
DEFAULT_TARGET = {"metal": "Pt", "motif": "decahedral", "min_fraction": 0.7, "diameter_nm": (2.0, 2.5)}

R_GAS = 8.314462618
K_METAL = {"Au": 3.0, "Pt": 1.0, "Pd": 0.6}  # reduction rate at 120 °C, s = 0.5 (1/min)
N_METAL = {"Au": 400.0, "Pt": 250.0, "Pd": 300.0}  # atoms per nucleus after the burst at k = 1/min
N_ICO_DECA = {"Au": 80.0, "Pt": 120.0, "Pd": 180.0}
N_DECA_FCC = {"Au": 600.0, "Pt": 900.0, "Pd": 2500.0}
U_METAL = {"Au": 0.0075, "Pt": 0.0045, "Pd": 0.0055}  # Å², room-temperature bulk Uiso
LIGAND = {"Au": ("S", 2.35, 2.0), "Pt": ("N", 2.10, 1.0), "Pd": ("N", 2.10, 1.0)}  # element, bond Å, bonds
HANDLING_S = 900.0  # dosing, quench, washing and loading the capillary

_OK, _NO_REDUCTION, _AGGREGATED = 0, 1, 2
_FAILURE_REASONS = {
    _NO_REDUCTION: "no clusters formed: less than 5 % of the metal was reduced (too cold, too mild a reducer or "
    "too short; raise temperature_C, reducer_strength or time_min)",
    _AGGREGATED: "the clusters aggregated and precipitated: too little ligand to keep them in solution "
    "(raise ligand_ratio above ~0.1)",
}
MOTIF_KEYS = ("icosahedral", "decahedral", "octahedral", "fcc", "amorphous", "bulk_fcc")


def validate_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters checked against PARAMETER_SPACE (floats as float); ValueError names the culprit."""
    return check_params(params, PARAMETER_SPACE)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def response(metal_index, T_C, strength, ligand, t_min) -> dict[str, np.ndarray]:
    """Noise-free response, vectorised over arrays of equal length: `n_atoms` (median cluster size),
    motif atom fractions `f_<motif>` (MOTIF_KEYS), `adp_angstrom2`, `expansion`, `conversion`,
    `diameter_nm` (of a sphere-like cluster of n_atoms), `status` (0 ok, else a failure code)."""
    m = np.asarray(metal_index, dtype=int)
    T = np.asarray(T_C, dtype=float)
    s = np.asarray(strength, dtype=float)
    L = np.asarray(ligand, dtype=float)
    t = np.asarray(t_min, dtype=float)
    TK = T + 273.15
    pick = lambda d: np.array([d[x] for x in METALS])[m]  # noqa: E731
    k = pick(K_METAL) * np.exp(-60_000.0 / R_GAS * (1 / TK - 1 / 393.15)) * 10 ** (2.5 * (s - 0.5))
    conv = 1.0 - np.exp(-k * t)
    n0 = pick(N_METAL) * k ** -0.6 / np.sqrt(1.0 + L) * conv
    ripen = 2.0 * np.exp(-70_000.0 / R_GAS * (1 / TK - 1 / 433.15)) / np.sqrt(1.0 + L)
    n = np.clip(n0 + ripen * t, 13.0, 3000.0)
    kin = np.clip(1.2 * (s - 0.5) - (T - 120.0) / 120.0, -1.0, 1.0)
    nc1 = pick(N_ICO_DECA) * np.exp(0.8 * kin)
    nc2 = pick(N_DECA_FCC) * np.exp(1.0 * kin)
    lnn = np.log(n)
    f_ico = _sig((np.log(nc1) - lnn) / 0.25)
    f_fcc_like = _sig((lnn - np.log(nc2)) / 0.25)
    f_deca = np.clip(1.0 - f_ico - f_fcc_like, 0.0, 1.0)
    octa_share = _sig((np.log(L) - math.log(0.7)) / 0.5) * _sig((210.0 - T) / 30.0)
    f_octa, f_fcc = f_fcc_like * octa_share, f_fcc_like * (1 - octa_share)
    f_am = _sig((s - 0.85) / 0.04) * _sig((50.0 - T) / 10.0)
    f_bulk = _sig((math.log(0.11) - np.log(L)) / 0.2)
    cluster = (1.0 - f_am) * (1.0 - f_bulk)
    fr = {"f_icosahedral": f_ico * cluster, "f_decahedral": f_deca * cluster, "f_octahedral": f_octa * cluster,
          "f_fcc": f_fcc * cluster, "f_amorphous": f_am * (1.0 - f_bulk), "f_bulk_fcc": f_bulk}
    adp = pick(U_METAL) * (1.0 + 1.5 / np.cbrt(n)) + 0.003 * _sig((s - 0.7) / 0.1) * np.exp(-(T - 20.0) / 60.0)
    expansion = 1.0 - 0.06 / np.cbrt(n) + np.where(m == METALS.index("Au"), 0.004 * np.log10(1.0 + L), 0.0)
    nn = pick({e: _pdf.ELEMENTS[e].nn_angstrom for e in METALS}) * expansion
    # outer diameter of a compact cluster: largest distance (2 R, R from the fcc packing) + one bond
    diameter = (2.0 * np.cbrt(3.0 * n / (4.0 * math.pi * math.sqrt(2.0))) + 1.0) * nn / 10.0
    status = np.full(n.shape, _OK)
    status = np.where(conv < 0.05, _NO_REDUCTION, status)
    status = np.where(L < 0.065, _AGGREGATED, status)
    return {"n_atoms": n, **fr, "adp_angstrom2": adp, "expansion": expansion, "conversion": conv,
            "diameter_nm": diameter, "status": status}


def meets_target(resp: dict[str, np.ndarray], metal_index, target: dict[str, Any] | None = None) -> np.ndarray:
    tgt = target or DEFAULT_TARGET
    lo, hi = tgt["diameter_nm"]
    return ((resp["status"] == _OK) & (np.asarray(metal_index) == METALS.index(tgt["metal"]))
            & (resp["f_" + tgt["motif"]] >= tgt["min_fraction"]) & (resp["diameter_nm"] >= lo)
            & (resp["diameter_nm"] <= hi))


def target_fraction(n: int = 200_000, seed: int = 0, target: dict[str, Any] | None = None) -> float:
    """Share of the search space (unit cube, ligand ratio and time log-scaled, metals equally
    weighted) whose noise-free response meets the target (default DEFAULT_TARGET)."""
    rng = np.random.default_rng(seed)
    u = rng.random((n, 4))
    metal = rng.integers(0, len(METALS), n)
    T, s, L, t = from_unit_cube(u, ("temperature_C", "reducer_strength", "ligand_ratio", "time_min"), PARAMETER_SPACE)
    return float(np.mean(meets_target(response(metal, T, s, L, t), metal, target)))


# ----- cluster shapes for a target size ---------------------------------------------------------------

@lru_cache(maxsize=None)
def _decahedra() -> tuple[tuple[int, tuple[int, int, int]], ...]:
    """(n_atoms, (p, q, r)) of compact Marks decahedra (ase.cluster.Decahedron: p = 2…9, |p − q| ≤ 1,
    re-entrance r = 0…2) up to 3000 atoms, sorted by size: 5–10 % apart in atoms (2–3 % in
    diameter) from 100 atoms on, so that the diameter of decahedral samples varies nearly smoothly
    with the recipe."""
    out = []
    for p in range(2, 10):
        for q in (p - 1, p, p + 1):
            for r in (0, 1, 2):
                n = len(_pdf.base_positions("decahedral", p=p, q=q, r=r)) if q >= 1 else 0
                if 13 <= n <= 3000:
                    out.append((n, (p, q, r)))
    return tuple(sorted(out))


def _shape_for(motif: str, n: float) -> dict[str, Any]:
    """Base-structure shape keywords of `motif` nearest `n` atoms (few distinct shapes, so the pair
    tables are reused from sample to sample)."""
    if motif == "icosahedral":
        k = min(range(2, 10), key=lambda k: abs((10 * k ** 3 - 15 * k ** 2 + 11 * k - 3) / 3 - n))
        return {"shells": k}
    if motif == "decahedral":
        p, q, r = min(_decahedra(), key=lambda t: abs(t[0] - n))[1]
        return {"p": p, "q": q, "r": r}
    if motif == "octahedral":
        best = min(((L, c) for L in range(3, 16) for c in ((L - 1) // 3, (L - 1) // 2) if c >= 0),
                   key=lambda lc: abs((2 * lc[0] ** 3 + lc[0]) / 3 - lc[1] * (lc[1] + 1) * (2 * lc[1] + 1) - n))
        return {"length": best[0], "cutoff": best[1]}
    if motif == "fcc":
        radius = (3 * n / (4 * math.pi * math.sqrt(2.0))) ** (1 / 3)
        return {"radius": round(radius * 4) / 4}
    if motif == "amorphous":
        return {"n_atoms": int(round(math.exp(round(math.log(n) * 10) / 10))), "seed": 0}
    raise ValueError(f"no shape rule for motif {motif!r}")


@dataclass
class Sample:
    """One batch of clusters. `components`/`shell` are what the PDF instrument measures; `truth`
    (motif fractions, sizes, disorder, yield) is for tests and benchmarks only; the robot sees
    `to_dict()`."""

    sample_id: str
    params: dict[str, Any]
    components: list[_pdf.ClusterComponent]
    shell: _pdf.Shell | None
    truth: dict[str, Any]
    synthesis_time_s: float = 0.0
    made: bool = True
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"sample_id": self.sample_id, "params": dict(self.params), "made": self.made,
                "synthesis_time_s": self.synthesis_time_s}


class NanoclusterWorld(World):
    """The hidden chemistry. `synthesize` makes a Sample (or raises SynthesisFailed); the world keeps
    every sample it made, for the instruments to measure."""

    def synthesis_time_s(self, params: dict[str, Any]) -> float:
        """Reaction time plus handling (s)."""
        return validate_params(params)["time_min"] * 60.0 + HANDLING_S

    def _response(self, p: dict[str, Any]) -> dict[str, Any]:
        r = response([METALS.index(p["metal"])], [p["temperature_C"]], [p["reducer_strength"]],
                     [p["ligand_ratio"]], [p["time_min"]])
        return {k: (int(v[0]) if k == "status" else float(v[0])) for k, v in r.items()}

    def expected(self, params: dict[str, Any]) -> dict[str, Any]:
        """Noise-free response for a recipe (tests, benchmarks, docs; not for the loop)."""
        p = validate_params(params)
        out = self._response(p)
        out["ok"] = out["status"] == _OK
        if not out["ok"]:
            out["failure"] = _FAILURE_REASONS[out["status"]]
        fr = {k: out["f_" + k] for k in MOTIF_KEYS}
        out["motif"] = max(fr, key=fr.get)
        r = response([METALS.index(p["metal"])], [p["temperature_C"]], [p["reducer_strength"]], [p["ligand_ratio"]],
                     [p["time_min"]])
        out["meets_target"] = bool(meets_target(r, [METALS.index(p["metal"])])[0])
        return out

    def synthesize(self, params: dict[str, Any], sample_id: str) -> Sample:
        p = validate_params(params)
        if not isinstance(sample_id, str) or not sample_id:
            raise ValueError(f"sample_id must be a non-empty string, got {sample_id!r}")
        r = self._response(p)
        if r["status"] != _OK:
            raise SynthesisFailed(_FAILURE_REASONS[r["status"]], sample_id)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, stable_seed("nanocluster-synthesis", sample_id)]))
        g = rng.standard_normal(16)
        metal = p["metal"]
        n = float(np.clip(r["n_atoms"] * math.exp(0.08 * g[0]), 13.0, 3000.0))
        adp = r["adp_angstrom2"] * math.exp(0.05 * g[1])
        expansion = r["expansion"] + 0.001 * g[2]
        fr = np.array([r["f_" + k] for k in MOTIF_KEYS])
        fr = np.clip(fr + 0.03 * g[3:3 + len(MOTIF_KEYS)] * (fr > 0.02), 0.0, None)
        fr[fr < 0.03] = 0.0
        fr = fr / fr.sum()
        # size distribution: two populations at n·exp(±σ), σ wider for slow nucleation and long ripening
        sigma = 0.12 + 0.1 * (1.0 - p["reducer_strength"]) + 0.04 * math.log10(p["time_min"])
        comps: list[_pdf.ClusterComponent] = []
        for key, f in zip(MOTIF_KEYS, fr):
            if f <= 0:
                continue
            if key == "bulk_fcc":
                comps.append(_pdf.ClusterComponent("bulk_fcc", metal, expansion=1.0, adp_angstrom2=U_METAL[metal],
                                                   fraction=float(f)))
                continue
            for j, sign in enumerate((-1.0, 1.0)):
                nj = float(np.clip(n * math.exp(sign * sigma * (0.8 + 0.2 * g[10 + j])), 13.0, 3000.0))
                shape = _shape_for(key, nj)
                comps.append(_pdf.ClusterComponent(key, metal, shape=shape, expansion=expansion, adp_angstrom2=adp,
                                                   fraction=float(f) / 2))
        lig, bond, bonds = LIGAND[metal]
        coverage = 0.6 * p["ligand_ratio"] / (1.0 + p["ligand_ratio"]) + 0.05
        shell = _pdf.Shell(lig, coverage=coverage, bonds=bonds, bond_angstrom=bond, sigma_angstrom=0.08)
        truth = self._truth(comps, fr, r, p)
        sample = Sample(sample_id=sample_id, params=dict(p), components=comps, shell=shell, truth=truth,
                        synthesis_time_s=self.synthesis_time_s(p))
        return self._keep(sample)

    @staticmethod
    def _truth(comps: list[_pdf.ClusterComponent], fr: np.ndarray, r: dict[str, Any], p: dict[str, Any]) -> dict:
        fractions = {k: float(f) for k, f in zip(MOTIF_KEYS, fr) if f > 0}
        clusters = [c for c in comps if not c.motif.startswith("bulk_")]
        w = np.array([c.fraction for c in clusters])
        w = w / w.sum() if w.sum() > 0 else w
        geo = [c.geometry() for c in clusters]
        motif = max(fractions, key=fractions.get)
        n_atoms = float(np.sum(w * [g["n_atoms"] for g in geo])) if clusters else -1.0
        diameter = float(np.sum(w * [g["diameter_nm"] for g in geo])) if clusters else float("nan")
        nn = float(np.sum(w * [g["nn_distance_angstrom"] for g in geo])) if clusters else float("nan")
        tgt = DEFAULT_TARGET
        return {
            "motif": motif if motif in _pdf.MOTIFS else "other",
            "motif_fractions": fractions,
            "n_atoms": n_atoms,
            "diameter_nm": diameter,
            "nn_distance_angstrom": nn,
            "expansion": clusters[0].expansion if clusters else 1.0,
            "adp_angstrom2": clusters[0].adp_angstrom2 if clusters else float("nan"),
            "conversion": r["conversion"],
            "meets_target": bool(p["metal"] == tgt["metal"] and fractions.get(tgt["motif"], 0.0) >= tgt["min_fraction"]
                                 and tgt["diameter_nm"][0] <= diameter <= tgt["diameter_nm"][1]),
        }
