"""Physics forward models and simulated worlds (synthesis -> material -> signal).

Pure physics on numpy/scipy and the field's libraries; nothing here imports `sdl` or `drivers`.
Submodules are imported on use (sasmodels is slow to import):

- `simulators.world`: what every world shares (SynthesisFailed, stable seeds, recipe checks, World).
- `simulators.worlds.nanoparticles`: `NanoparticleWorld`, synthesis -> nanoparticles (offers SAXS).
- `simulators.worlds.oxides`: `OxideWorld`, co-precipitation + calcination -> Ce1-xZrxO2 phases
  and crystallite sizes (offers powder diffraction).
- `simulators.worlds.nanoclusters`: `NanoclusterWorld`, colloidal reduction of Pt/Pd/Au salts ->
  cluster motifs, sizes, disorder (offers total scattering / PDF).
- `simulators.<technique>`: one folder per technique: its sample contract (a Protocol in
  `__init__`), its physics, its simulated `instrument` and its training-set generator.
  `simulators.saxs` (sasmodels I(q) with resolution, background and counting noise; `dataset`:
  labelled SAS curves), `simulators.pd` (Dans_Diffraction structure factors, Scherrer and
  microstrain broadening, Caglioti resolution, background, counting noise; `phases`: the library's
  structures with their literature sources), `simulators.pdf` (ase clusters, Debye sums tabulated
  once per structure, reciprocal-space artefacts, G(r); `dataset`: labelled training and held-out
  G(r)).
"""
