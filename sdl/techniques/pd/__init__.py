"""Powder diffraction: I(2θ) or I(Q) -> phases present, weight fractions, lattice parameters, crystallite sizes."""

from sdl.analysis.technique import CurveAxes, DescriptorSpec, Option, Reader, Technique, Trainer

TECHNIQUE = Technique(
    name="pd",
    title="powder diffraction, I(2θ) or I(Q)",
    readers=(
        Reader("sdl.techniques.pd.reader:read_pd",
               "columns x, I[, sigma]; x is 2θ in degrees or Q (header label, or --x-unit); the wavelength from "
               "--wavelength-angstrom or a header line such as `# wavelength = 1.5406`",
               options=(Option("wavelength_angstrom", "X-ray wavelength in Å when the header does not say "
                               "(e.g. 1.5406 for Cu Kα1)", type=float, metavar="Å"),
                        Option("x_unit", "what the first column is when the header does not say: 2θ in degrees, "
                               "Q in Å⁻¹ or Q in nm⁻¹", choices=("2theta", "q", "q_nm")))),
    ),
    analysers={"pd_ml": "sdl.techniques.pd.ml:PdMLAnalyser"},
    trainers={"pd_ml": Trainer("sdl.techniques.pd.train", "the pd_ml CNN on simulated patterns of the phase library")},
    curves=(CurveAxes("two_theta_deg", "2θ (°)", "intensity (counts)"),),
    descriptors=(
        DescriptorSpec("pd.phases", None, "the phases present, joined by '+', with per-phase probabilities",
                       kind="class"),
        DescriptorSpec("pd.fraction.<phase>", "wt fraction", "weight fraction of a library phase (0 within the "
                       "detection limit when absent)"),
        DescriptorSpec("pd.lattice_a_angstrom.<phase>", "Å", "lattice parameter a of a phase present"),
        DescriptorSpec("pd.crystallite_size_nm.<phase>", "nm", "crystallite size (Scherrer) of a phase present"),
        DescriptorSpec("pd.phase_purity", "wt fraction", "weight fraction of the majority phase"),
        DescriptorSpec("pd.ood_score", None, "share of the pattern no library phase explains (above the threshold: "
                       "flagged ood)"),
    ),
)
