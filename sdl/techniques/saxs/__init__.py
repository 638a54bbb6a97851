"""Small-angle scattering (SAXS/SANS): I(q) of particles in solution -> shape, size, polydispersity."""

from sdl.analysis.technique import CurveAxes, DescriptorSpec, Option, Reader, Technique, Trainer

TECHNIQUE = Technique(
    name="saxs",
    title="small-angle X-ray/neutron scattering, I(q)",
    # one reader per format family; each sniffs the content and hands over to the right loader
    # (sdl.techniques.saxs.formats), `--format` forces one
    readers=tuple(
        Reader(f"sdl.techniques.saxs.{function}", text, suffixes, options=(
            Option("q_unit", "q unit when the file does not say (plain columns, RKH); given, it overrides the "
                   "file's own", choices=("angstrom", "nm")),
            Option("format", "file format (default auto: sniffed from the content, then the suffix)",
                   choices=("auto", "columns", "cansas", "nxcansas", "rkh", "pdh", "abs")),
            Option("desmeared", "yes: the curve of a line-collimation file (an Anton Paar PDH with a counter slit "
                   "length) was desmeared, so it is analysed unflagged; by default such a curve counts as "
                   "slit-smeared and every value is flagged slit_smearing_suspect", choices=("yes", "no"))))
        for function, text, suffixes in (
            ("formats:read_columns", "plain columns q, I[, sigma[, dq]], q in Å⁻¹ or nm⁻¹ (header `# q_unit: nm` or a "
             "column label such as `q (1/nm)`)",
             (".dat", ".txt", ".csv", ".xy", ".xye", ".iq", ".chi", ".gr", ".sq", ".fq")),
            ("formats:read_cansas", "CanSAS 1D XML (.xml: Mantid, SasView, most facilities)", (".xml",)),
            ("formats:read_nxcansas", "NXcanSAS HDF5 (.h5, .hdf5, .hdf, .nxs)", (".h5", ".hdf5", ".hdf", ".nxs")),
            ("formats:read_rkh", "ISIS RKH/COLETTE text (a Fortran-format header line such as `3 (F12.5,2E16.6)`; "
             "sniffed in .txt/.dat files)", (".rkh", ".txt", ".dat", ".q")),
            ("formats:read_pdh", "Anton Paar PDH (.pdh)", (".pdh",)),
            ("formats:read_abs", "NIST ABS (.abs, .cor; SANS and slit-smeared USANS)", (".abs", ".cor")),
        )),
    analysers={"saxs_ml": "sdl.techniques.saxs.ml:SaxsMLAnalyser",
               "saxs_fit": "sdl.techniques.saxs.fit:SaxsFitAnalyser",
               "saxs_modelfree": "sdl.techniques.saxs.modelfree:SaxsModelFreeAnalyser"},
    trainers={"saxs_ml": Trainer("sdl.techniques.saxs.train", "the saxs_ml CNN ensemble on simulated sasmodels curves")},
    curves=(CurveAxes("q_inv_angstrom", "q (Å⁻¹)", "I (cm⁻¹)", xscale="log", yscale="log"),),
    descriptors=(
        DescriptorSpec("saxs.model", None, "particle shape model (sphere, core_shell_sphere, ellipsoid, cylinder, "
                       "disc, core_shell_cylinder, other), with probabilities", kind="class"),
        DescriptorSpec("saxs.radius_nm", "nm", "radius (equatorial for ellipsoids, cross-section for cylinders; "
                       "core radius for core-shell particles)"),
        DescriptorSpec("saxs.length_nm", "nm", "cylinder or disc length"),
        DescriptorSpec("saxs.polar_radius_nm", "nm", "ellipsoid polar radius"),
        DescriptorSpec("saxs.shell_nm", "nm", "shell thickness of core-shell particles"),
        DescriptorSpec("saxs.polydispersity", None, "relative standard deviation of the size distribution (Schulz)"),
        DescriptorSpec("saxs.structure_factor", None, "interparticle structure factor S(q) chosen by BIC for spheres and "
                       "core-shell spheres (none, hard_sphere, charged: Hayter-Penfold MSA), with probabilities", kind="class"),
        DescriptorSpec("saxs.volume_fraction", None, "particle volume fraction from the fitted S(q) (when "
                       "saxs.structure_factor is not none)"),
        DescriptorSpec("saxs.core_contrast", None, "core-shell particles: core SLD contrast relative to the shell's "
                       "(solvent 0; 0 = hollow core, a vesicle or cage)"),
        DescriptorSpec("saxs.rg_nm", "nm", "Guinier radius of gyration (model-free: ln I vs q², range chosen "
                       "automatically with q_max·Rg ≤ 1.3; fit_failed when the curve has no Guinier region)"),
        DescriptorSpec("saxs.porod_exponent", None, "power-law exponent n of I ∝ q⁻ⁿ at high q after background "
                       "(4 smooth sharp interfaces, 3-4 surface fractals, ~2 Gaussian coils, ~1.7 swollen coils)"),
        DescriptorSpec("saxs.invariant", "I·Å⁻³", "scattering invariant Q* = ∫ q² I(q) dq with Guinier and "
                       "power-law extrapolations (in the intensity's unit × Å⁻³; cm⁻¹ Å⁻³ on absolute scale)"),
        DescriptorSpec("saxs.specific_surface_m2_per_cm3", "m²/cm³", "interface area per sample volume S/V "
                       "(Porod's law; only on absolute scale with a known volume fraction or contrast)"),
        DescriptorSpec("saxs.chi2_reduced", None, "reduced chi² of the chosen model's fit"),
        DescriptorSpec("saxs.ood_score", None, "distance of the curve from the ML model's training data "
                       "(above the threshold: flagged ood)"),
    ),
)
