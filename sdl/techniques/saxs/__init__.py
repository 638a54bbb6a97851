"""Small-angle scattering (SAXS/SANS): I(q) of particles in solution -> shape, size, polydispersity."""

from sdl.analysis.technique import CurveAxes, DescriptorSpec, Option, Reader, Technique, Trainer

TECHNIQUE = Technique(
    name="saxs",
    title="small-angle X-ray/neutron scattering, I(q)",
    readers=(
        Reader("sdl.techniques.saxs.reader:read_saxs",
               "columns q, I[, sigma[, dq]]; q in Å⁻¹ or nm⁻¹ (header `# q_unit: nm` or a column label such as "
               "`q (1/nm)`)",
               options=(Option("q_unit", "q unit when the file header does not say", choices=("angstrom", "nm")),)),
    ),
    analysers={"saxs_ml": "sdl.techniques.saxs.ml:SaxsMLAnalyser",
               "saxs_fit": "sdl.techniques.saxs.fit:SaxsFitAnalyser"},
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
        DescriptorSpec("saxs.rg_nm", "nm", "Guinier radius of gyration"),
        DescriptorSpec("saxs.chi2_reduced", None, "reduced chi² of the chosen model's fit"),
        DescriptorSpec("saxs.ood_score", None, "distance of the curve from the ML model's training data "
                       "(above the threshold: flagged ood)"),
    ),
)
