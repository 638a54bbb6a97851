"""Analyser registry, keyed by technique and analyser name.

Built-in analysers are listed in `BUILTIN` as import paths (imported on first use: sasmodels and
torch are slow to import). Third-party analysers register under the entry-point group
`sdl.analysers` as `name = "module:Class"`; the class's `technique` attribute files it.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import entry_points

from sdl.analysis.base import AnalysisResult, Analyser, Descriptor
from sdl.errors import AnalysisError

__all__ = ["AnalysisResult", "Analyser", "Descriptor", "available", "get", "default_for", "load", "READERS", "TRAINERS"]

# technique -> {analyser name -> "module:Class"}; the first listed is the technique's default.
BUILTIN: dict[str, dict[str, str]] = {
    "saxs": {"saxs_ml": "sdl.analysis.sas_ml:SaxsMLAnalyser", "saxs_fit": "sdl.analysis.sas_fit:SaxsFitAnalyser"},
    "pd": {"pd_ml": "sdl.analysis.pd_ml:PdMLAnalyser"},
}

# technique -> "module:function(path, **options) -> Measurement" for `sdl analyse TECHNIQUE FILE`
READERS: dict[str, str] = {
    "saxs": "sdl.measurement:read_saxs",
    "pd": "sdl.analysis.pd_ml:read_pd",
}

# technique -> "module:function(argv: list[str]) -> int" for `sdl train TECHNIQUE ...`
TRAINERS: dict[str, str] = {"saxs": "sdl.analysis.sas_train:main", "pd": "sdl.analysis.pd_train:main"}


def load(path: str):
    """The object named by "module:attr" (imported now)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


@lru_cache(maxsize=1)
def _plugins() -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = {}
    for ep in entry_points(group="sdl.analysers"):
        cls = ep.load()
        table.setdefault(cls.technique, {})[ep.name] = ep.value
    return table


def available() -> dict[str, list[str]]:
    """technique -> analyser names, built-ins first."""
    out = {t: list(names) for t, names in BUILTIN.items()}
    for t, names in _plugins().items():
        out.setdefault(t, []).extend(n for n in names if n not in out.get(t, []))
    return out


def default_for(technique: str) -> str:
    names = available().get(technique)
    if not names:
        raise AnalysisError(f"no analyser for technique {technique!r}; known techniques: {sorted(available())}")
    return names[0]


@lru_cache(maxsize=None)
def get(technique: str, name: str | None = None) -> Analyser:
    """An instance of the named analyser (cached: models load once)."""
    name = name or default_for(technique)
    path = BUILTIN.get(technique, {}).get(name) or _plugins().get(technique, {}).get(name)
    if path is None:
        raise AnalysisError(
            f"unknown analyser {name!r} for technique {technique!r}; available: {available().get(technique, [])}"
        )
    return load(path)()
