"""Powder diffraction physics: the sample contract, the forward model (`physics`: reflection lists
from Dans_Diffraction, profiles in numpy), structures from CIF files (`cif`, gemmi), the simulated
diffractometer (`instrument`), the training-set generator (`dataset`) and the built-in phases'
sources (`phases`, with their CIFs in `phases/oxides`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from simulators.pd.physics import PhaseComponent


@runtime_checkable
class PdSample(Protocol):
    """What a powder diffractometer needs from a sample: its crystalline phases, each with weight
    fraction, lattice scale, crystallite size, microstrain and texture. A world offers powder
    diffraction by making samples with this attribute."""

    sample_id: str

    @property
    def components(self) -> list["PhaseComponent"]: ...
