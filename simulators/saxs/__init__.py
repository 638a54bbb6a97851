"""Small-angle scattering physics: the sample contract, the simulated camera (`instrument`) and
the labelled training curves (`dataset`), all on sasmodels."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class SasSample(Protocol):
    """What a SAXS camera needs from a sample: a sasmodels model name and its parameters
    (lengths in Å, SLDs in 1e-6 Å⁻², polydispersity as `<param>_pd`). A world offers SAXS by
    making samples that have these two attributes."""

    sample_id: str
    shape: str
    model_params: dict[str, Any]
