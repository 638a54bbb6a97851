"""Pair distribution function (total scattering) of metal nanoclusters: G(r) -> structure type
(motif), size, nearest-neighbour distance, expansion, ADP, refined fit quality Rw."""

from sdl.analysis.technique import CurveAxes, DescriptorSpec, Option, Reader, Technique, Trainer

_RECIPROCAL_OPTIONS = (
    Option("qmin", "lowest Q (Å⁻¹) used in the Fourier transform of I(Q)/S(Q)/F(Q) (default: the header's "
           "qmin, else the data's)", type=float, metavar="Å⁻¹"),
    Option("qmax", "highest Q (Å⁻¹) used in the Fourier transform (default: the header's qmax, else the data's)",
           type=float, metavar="Å⁻¹"),
    Option("wavelength_angstrom", "X-ray wavelength in Å for an I(2θ) file whose header does not say",
           type=float, metavar="Å"),
    Option("composition", "sample composition for the self-scattering ⟨f²⟩ of an I(Q) file, e.g. Pt or Au144S60 "
           "(default: the header's composition, else estimated from the data)", metavar="FORMULA"),
    Option("x_unit", "what the first column is when the header does not say: r in Å, Q in Å⁻¹, Q in nm⁻¹ or 2θ "
           "in degrees", choices=("r", "q", "q_nm", "2theta")),
)

TECHNIQUE = Technique(
    name="pdf",
    title="pair distribution function G(r) of nanoclusters (or the I(Q) it is computed from)",
    readers=(
        Reader("sdl.techniques.pdf.reader:read_pdf",
               "PDFgetX3 .gr (its `key = value` header gives qmin, qmax, qdamp, wavelength, composition) and plain "
               "r G columns; .xye/.chi/.iq I(Q) (Q or 2θ with a wavelength), .sq S(Q), .fq F(Q), transformed to "
               "G(r) by sdl", options=_RECIPROCAL_OPTIONS),
    ),
    analysers={"pdf_ml": "sdl.techniques.pdf.ml:PdfMLAnalyser"},
    trainers={"pdf_ml": Trainer("sdl.techniques.pdf.train", "the pdf_ml CNN on simulated G(r) of the cluster library "
                                "or of your own candidate structures (--candidates DIR)")},
    curves=(CurveAxes("r_angstrom", "r (Å)", "G(r) (Å⁻²)"),),
    descriptors=(
        DescriptorSpec("pdf.motif", None, "structure type: sc, bcc, fcc, hcp, icosahedral, decahedral, octahedral "
                       "or other (or a --candidates class), with probabilities", kind="class"),
        DescriptorSpec("pdf.n_atoms", "atoms", "number of atoms in the cluster"),
        DescriptorSpec("pdf.diameter_nm", "nm", "cluster diameter (largest atom-atom distance)"),
        DescriptorSpec("pdf.nn_distance_angstrom", "Å", "nearest-neighbour distance"),
        DescriptorSpec("pdf.expansion", None, "nearest-neighbour distance over the element's bulk one (1 = bulk)"),
        DescriptorSpec("pdf.adp_angstrom2", "Å²", "isotropic atomic displacement parameter U_iso"),
        DescriptorSpec("pdf.rw", None, "weighted agreement factor Rw of the refined cluster against G(r)"),
        DescriptorSpec("pdf.ood_score", None, "out-of-distribution score (0-1; above the threshold: flagged ood)"),
    ),
)
