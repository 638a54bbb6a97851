"""Writes the files of this folder made by sdl (not the sasdata examples): simulated sasmodels spheres
with known radii, in CanSAS 1D XML (q in 1/nm, two SASentry), NXcanSAS HDF5 and NIST ABS (USANS,
slit-smeared). Run from the repository root: .venv/bin/python tests/data/sas_formats/make_files.py"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulators.saxs.instrument import make_direct_model

HERE = Path(__file__).parent
SPHERE = dict(scale=0.01, background=0.001, sld=4.0, sld_solvent=1.0, radius_pd_type="schulz", radius_pd_n=35)


def sphere(q, radius, pd=0.08, dq=None, slit_length=None, seed=0, rel_noise=0.02):
    i = np.asarray(make_direct_model("sphere", q, dq, slit_length=slit_length)(radius=radius, radius_pd=pd, **SPHERE))
    sigma = rel_noise * i + 1e-4
    return i + np.random.default_rng(seed).normal(0.0, sigma), sigma


def cansas_xml() -> None:
    """Two entries: an R = 6 nm sphere (q in 1/nm, Qdev = 5 % of q) and an R = 3 nm one."""
    entries = []
    for title, radius, seed in (("sphere R=6nm", 60.0, 1), ("sphere R=3nm", 30.0, 2)):
        q = np.geomspace(0.005, 0.4, 90)  # Å⁻¹
        dq = 0.05 * q
        i, s = sphere(q, radius, dq=dq, seed=seed)
        rows = "\n".join(f'      <Idata><Q unit="1/nm">{a * 10:.6g}</Q><I unit="1/cm">{b:.6g}</I>'
                         f'<Idev unit="1/cm">{c:.4g}</Idev><Qdev unit="1/nm">{d * 10:.4g}</Qdev></Idata>'
                         for a, b, c, d in zip(q, i, s, dq))
        entries.append(f'  <SASentry name="{title}">\n    <Title>{title}</Title>\n    <Run>{seed}</Run>\n'
                       f'    <SASdata>\n{rows}\n    </SASdata>\n    <SASsample><ID>{title}</ID></SASsample>\n'
                       '    <SASinstrument><name>simulated</name><SASsource><radiation>x-ray</radiation></SASsource>'
                       '</SASinstrument>\n  </SASentry>')
    (HERE / "sphere_r6nm_qnm_cansas.xml").write_text(
        '<?xml version="1.0"?>\n<SASroot version="1.0" xmlns="cansas1d/1.0" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="cansas1d/1.0 http://svn.smallangles.net/svn/canSAS/1dwg/trunk/cansas1d.xsd">\n'
        + "\n".join(entries) + "\n</SASroot>\n")


def nxcansas() -> None:
    """An R = 5 nm sphere, q in 1/angstrom, Qdev = 5 % of q."""
    import h5py

    q = np.geomspace(0.005, 0.4, 90)
    dq = 0.05 * q
    i, s = sphere(q, 50.0, dq=dq, seed=3)
    with h5py.File(HERE / "sphere_r5nm_nxcansas.h5", "w") as f:
        e = f.create_group("sasentry01")
        e.attrs.update(NX_class="NXentry", canSAS_class="SASentry", version="1.0")
        e.create_dataset("definition", data="NXcanSAS")
        e.create_dataset("title", data="sphere R=5nm")
        e.create_dataset("run", data="5")
        d = e.create_group("sasdata01")
        d.attrs.update(NX_class="NXdata", canSAS_class="SASdata", signal="I", I_axes="Q", Q_indices=0)
        d.create_dataset("Q", data=q).attrs.update(units="1/angstrom", resolutions="Qdev")
        d.create_dataset("I", data=i).attrs.update(units="1/cm", uncertainties="Idev")
        d.create_dataset("Idev", data=s).attrs.update(units="1/cm")
        d.create_dataset("Qdev", data=dq).attrs.update(units="1/angstrom")


def usans_abs() -> None:
    """NIST ABS (USANS): an R = 150 nm sphere smeared by a slit of length 0.117 Å⁻¹ (sigmaQ = -0.117)."""
    q = np.geomspace(4e-5, 4e-3, 70)
    i, s = sphere(q, 1500.0, pd=0.1, slit_length=0.117, seed=4, rel_noise=0.01)
    lines = ["FILE: usans_sphere.abs  CREATED: simulated by sdl (tests/data/sas_formats/make_files.py)",
             "LABEL: sphere R=150nm, slit length 0.117 1/A", "EMP LEVEL: 0.0 ; BKG LEVEL: 0.0",
             "The 6 columns are | Q (1/A) | I(Q) (1/cm) | std. dev. I(Q) (1/cm) | sigmaQ | meanQ | ShadowFactor|"]
    lines += [f"{a:.6e} {b:.6e} {c:.6e} {-0.117:.3f} {a:.6e} 1.000" for a, b, c in zip(q, i, s)]
    (HERE / "usans_sphere_r150nm.abs").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    cansas_xml()
    nxcansas()
    usans_abs()
