"""The analyser interface: Measurement in, Descriptors out.

A Descriptor is one named structural quantity with its uncertainty and unit (`saxs.radius_nm`),
or a categorical one (`saxs.model` = "sphere") with class probabilities. Flags mark results that
must not be used silently: `ood` (outside the analyser's training/validity domain),
`fit_failed`, any `<what>_suspect` (a reader's guess about the file, e.g. a unit, looks wrong),
`low_confidence` (informative: used, but shown).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sdl.measurement import Measurement

UNTRUSTED_FLAGS = frozenset({"ood", "fit_failed"})
SUSPECT_SUFFIX = "_suspect"  # e.g. q_unit_suspect: untrusted too


class Descriptor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    value: float | str
    uncertainty: float | None = None  # one standard deviation, same unit as value
    unit: str | None = None
    flags: list[str] = Field(default_factory=list)
    probabilities: dict[str, float] | None = None  # categorical descriptors: class -> probability
    analyser: str | None = None

    @property
    def trusted(self) -> bool:
        return not any(untrusted(f) for f in self.flags)


def untrusted(flag: str) -> bool:
    """Whether a descriptor with this flag must not be told to the strategy."""
    return flag in UNTRUSTED_FLAGS or flag.endswith(SUSPECT_SUFFIX)


def choose(descriptors: list[Descriptor]) -> dict[str, Descriptor]:
    """One value per descriptor name: the first trusted one in list order, else the first."""
    chosen: dict[str, Descriptor] = {}
    for d in descriptors:
        if d.name not in chosen or (d.trusted and not chosen[d.name].trusted):
            chosen[d.name] = d
    return chosen


class AnalysisResult(BaseModel):
    """Descriptors plus what a person wants to see next to them (e.g. the fitted model curve)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    analyser: str
    descriptors: list[Descriptor]
    curves: dict[str, np.ndarray] = Field(default_factory=dict)  # e.g. {"q_inv_angstrom":..., "fit":...}
    info: dict[str, Any] = Field(default_factory=dict)  # method, chi2, model ranking, ...


@runtime_checkable
class Analyser(Protocol):
    """Turns one Measurement of `technique` into descriptors. Raises AnalysisError on bad input."""

    name: ClassVar[str]
    technique: ClassVar[str]

    def analyse(self, measurement: Measurement) -> AnalysisResult: ...
