"""Physics forward models and simulated worlds (synthesis -> material -> signal).

Pure physics on numpy/scipy and the field's libraries; nothing here imports `sdl` or `drivers`.
Submodules are imported on use (sasmodels is slow to import):

- `simulators.nanoparticles`: `NanoparticleWorld`, the hidden synthesis -> nanoparticle response.
- `simulators.saxs`: `SaxsInstrument` (sasmodels I(q) with resolution, background and counting
  noise) and `form_factor_curve`.
"""

__all__ = ["nanoparticles", "saxs"]
