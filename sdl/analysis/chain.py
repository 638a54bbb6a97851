"""The analyser fallback chain: a trial's measurements -> descriptors, each technique's analysers
tried in order while a descriptor the campaign needs is missing or untrusted. Used by the loop and
by manual experiments."""

from __future__ import annotations

from sdl import analysis
from sdl.analysis.base import AnalysisResult, Descriptor, choose
from sdl.config import Campaign
from sdl.measurement import Measurement

Analysis = tuple[str, str, dict, dict]  # (step name, analyser, info, curves)


def chain_for(campaign: Campaign, technique: str) -> list[str]:
    """Analyser names tried in order for a technique: the campaign's `analysis:` list, else the
    technique's declared chain (e.g. saxs: saxs_ml, then saxs_fit)."""
    return [name for name, _ in chain_entries(campaign, technique)]


def chain_entries(campaign: Campaign, technique: str) -> list[tuple[str, dict]]:
    """(analyser name, constructor options) in chain order: an `analysis:` entry is a name or
    `{name: NAME, option: value, ...}`."""
    entries = campaign.analysis.get(technique) or list(analysis.technique(technique).analysers)
    return [(e, {}) if isinstance(e, str) else (e["name"], {k: v for k, v in e.items() if k != "name"}) for e in entries]


def analyse_measurements(campaign: Campaign, measurements: dict[str, Measurement]
                         ) -> tuple[list[Descriptor], list[Analysis]]:
    """Run the campaign's analysers on a trial's measurements (step name -> Measurement; steps
    without one are skipped). Returns (all descriptors, one Analysis per analyser run);
    `sdl.analysis.base.choose` picks one value per name."""
    descriptors: list[Descriptor] = []
    analyses: list[Analysis] = []
    for step in campaign.measuring_steps():
        m = measurements.get(step.name)
        if m is None:
            continue
        needed = {n for n in campaign.descriptors_needed() if n.startswith(step.technique + ".")}
        for name, options in chain_entries(campaign, step.technique):
            # the next analyser runs only while a descriptor the campaign needs is missing or
            # untrusted (e.g. ML flagged OOD)
            chosen = choose(descriptors)
            if needed and all(n in chosen and chosen[n].trusted for n in needed):
                break
            result: AnalysisResult = analysis.get(step.technique, name, **options).analyse(m)
            descriptors.extend(result.descriptors)
            analyses.append((step.name, result.analyser, result.info, result.curves))
    return descriptors, analyses
