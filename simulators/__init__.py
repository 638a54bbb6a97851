"""Physics forward models and simulated worlds (synthesis -> material -> signal).

Pure physics on numpy/scipy and the field's libraries; nothing here imports `sdl` or `drivers`.
Submodules are imported on use (sasmodels is slow to import):

- `simulators.nanoparticles`: `NanoparticleWorld`, the hidden synthesis -> nanoparticle response.
- `simulators.saxs`: `SaxsInstrument` (sasmodels I(q) with resolution, background and counting
  noise) and `form_factor_curve`.
- `simulators.sas_dataset`: labelled SAS curves (shapes, sizes, artefacts) for training the ML analyser.
- `simulators.oxides`: `OxideWorld`, co-precipitation + calcination -> Ce1-xZrxO2 phases and crystallite sizes.
- `simulators.pd`: `PdInstrument`, powder diffraction (Dans_Diffraction structure factors, Scherrer
  and microstrain broadening, Caglioti resolution, background, counting noise) over the phase
  library of `simulators.phases` (structures with their literature sources).
"""

__all__ = ["nanoparticles", "saxs", "sas_dataset", "oxides", "pd"]
