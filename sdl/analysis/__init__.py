"""The technique registry: every technique (built-in or third-party) is found through the
entry-point group `sdl.techniques` (`name = "package:TECHNIQUE"`), and its analysers, readers and
trainers through its declaration (sdl.analysis.technique). The framework names no technique.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable
from importlib.metadata import entry_points

from sdl.analysis.base import AnalysisResult, Analyser, Descriptor
from sdl.analysis.technique import CurveAxes, DescriptorSpec, Option, Reader, Technique, Trainer, load
from sdl.errors import AnalysisError

__all__ = ["AnalysisResult", "Analyser", "CurveAxes", "Descriptor", "DescriptorSpec", "Option", "Reader",
           "Technique", "Trainer", "available", "curve_axes_for", "get", "load", "technique", "techniques"]

GROUP = "sdl.techniques"


@lru_cache(maxsize=1)
def techniques() -> dict[str, Technique]:
    """name -> declaration of every registered technique."""
    out: dict[str, Technique] = {}
    for ep in entry_points(group=GROUP):
        t = ep.load()
        if not isinstance(t, Technique):
            raise AnalysisError(f"entry point {ep.name} = {ep.value!r} ({GROUP}) is not a Technique declaration")
        if t.name != ep.name:
            raise AnalysisError(f"entry point {ep.name!r} ({GROUP}) declares technique {t.name!r}; the names must agree")
        out[t.name] = t
    return out


def technique(name: str) -> Technique:
    """The declaration of technique `name`; AnalysisError lists the known ones."""
    try:
        return techniques()[name]
    except KeyError:
        raise AnalysisError(f"unknown technique {name!r}; known: {sorted(techniques())} (a technique registers "
                            f"under the entry-point group {GROUP!r})") from None


def available() -> dict[str, list[str]]:
    """technique -> analyser names in default chain order."""
    return {name: list(t.analysers) for name, t in techniques().items()}


def get(technique_name: str, name: str | None = None, **options) -> Analyser:
    """An instance of the named analyser, or of the technique's first, built with the constructor
    options the technique declares for it (cached per options: models load once)."""
    return _get(technique_name, name, tuple(sorted((k, v) for k, v in options.items() if v is not None)))


@lru_cache(maxsize=None)
def _get(technique_name: str, name: str | None, options: tuple) -> Analyser:
    t = technique(technique_name)
    if not t.analysers:
        raise AnalysisError(f"technique {technique_name!r} declares no analyser")
    name = name or next(iter(t.analysers))
    if name not in t.analysers:
        raise AnalysisError(f"unknown analyser {name!r} for technique {technique_name!r}; available: {list(t.analysers)}")
    known = t.analyser_option_names(name)
    unknown = [k for k, _ in options if k not in known]
    if unknown:
        raise AnalysisError(f"analyser {name} of technique {technique_name} has no option {', '.join(map(repr, unknown))} "
                            f"(its options: {', '.join(sorted(known)) or 'none'})")
    return load(t.analysers[name])(**dict(options))


def curve_axes_for(curves: Iterable[str], technique: Technique | None = None) -> CurveAxes | None:
    """How to plot an analysis' curves (their array names): the first declared CurveAxes whose x array
    is among them, `technique`'s own first, then any registered technique's; None if none is."""
    declared = (*(technique.curves if technique is not None else ()), *(c for t in techniques().values() for c in t.curves))
    return next((c for c in declared if c.x in curves), None)
