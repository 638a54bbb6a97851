"""Toy emission spectroscopy: I(E) with one Gaussian peak on a sloping background -> peak position,
width and height. A third-party technique: nothing in sdl names it; it registers under the
entry-point group `sdl.techniques` (`toy = sdl_toy:TECHNIQUE`)."""

from sdl.analysis.technique import CurveAxes, DescriptorSpec, Option, Reader, Technique

TECHNIQUE = Technique(
    name="toy",
    title="toy emission spectroscopy, one Gaussian peak I(E)",
    readers=(
        Reader("sdl_toy.reader:read_toy",
               "`.toy` text: a `# toy` first line, optional `# energy_offset_eV: X` header, columns "
               "energy_eV, intensity[, sigma]",
               suffixes=(".toy",),
               options=(Option("energy_offset_ev", "calibration offset added to every energy, in eV "
                               "(overrides the file's `# energy_offset_eV:` header)", type=float, metavar="eV"),)),
    ),
    analysers={"toy_fit": "sdl_toy.analyser:ToyPeakAnalyser"},
    curves=(CurveAxes("energy_eV", "energy (eV)", "intensity (counts)"),),
    descriptors=(
        DescriptorSpec("toy.peak_position_eV", "eV", "centre of the emission peak"),
        DescriptorSpec("toy.peak_width_eV", "eV", "full width at half maximum of the peak"),
        DescriptorSpec("toy.peak_height", "counts", "peak amplitude above the background"),
        DescriptorSpec("toy.chi2_reduced", None, "reduced chi² of the peak fit"),
    ),
)
