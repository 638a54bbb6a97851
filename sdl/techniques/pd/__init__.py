"""Powder diffraction: I(2θ) or I(Q) -> phases present, weight fractions, lattice parameters, crystallite sizes."""

from sdl.analysis.technique import PLAIN_SUFFIXES, CurveAxes, DescriptorSpec, Option, Reader, Technique, Trainer

TECHNIQUE = Technique(
    name="pd",
    title="powder diffraction, I(2θ) or I(Q)",
    readers=(
        Reader("sdl.techniques.pd.reader:read_pd",
               "columns x, I[, sigma] (.xy .xye .dat .txt .csv; x is 2θ in degrees or Q: header label, or --x-unit), "
               "Fit2D/pyFAI .chi, PANalytical .xrdml, GSAS .gsa/.gss/.fxye/.raw (CONST banks); Bruker .brml/binary "
               ".raw: export as .xy. The wavelength from the file where it is stored, else --wavelength-angstrom",
               suffixes=PLAIN_SUFFIXES + (".xrdml", ".gsa", ".gss", ".fxye", ".raw", ".brml"),
               options=(Option("wavelength_angstrom", "X-ray wavelength in Å when the file does not say "
                               "(e.g. 1.5406 for Cu Kα1, 0.7093 Mo Kα1)", type=float, metavar="Å"),
                        Option("kalpha2_ratio", "the scan holds a Kα1/Kα2 doublet (tube without monochromator): "
                               "Kα2/Kα1 intensity ratio, usually 0.5; the refinement then fits both lines (.xrdml "
                               "files say so themselves)", type=float, metavar="RATIO"),
                        Option("x_unit", "what the first column is when the header does not say: 2θ in degrees, "
                               "Q in Å⁻¹ or Q in nm⁻¹", choices=("2theta", "q", "q_nm")))),
    ),
    analysers={"pd_ml": "sdl.techniques.pd.ml:PdMLAnalyser"},
    analyser_options={"pd_ml": (Option("model", "model folder made by `sdl train pd --phases CIF_DIR --out MODEL_DIR` "
                                       "(default: the shipped 12-oxide model)", metavar="MODEL_DIR"),)},
    trainers={"pd_ml": Trainer("sdl.techniques.pd.train", "the pd_ml CNN and refinement library from a folder of CIF "
                               "files (phase identification, mixtures, fractions, lattice, size)")},
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
        DescriptorSpec("pd.unexplained_peaks", "peaks", "peaks the refined phases leave in the data (each ≥ 5σ and ≥ 3 % "
                       "of the strongest fitted peak; 2θ positions in info): flag unexplained_peaks on pd.phases"),
    ),
)
