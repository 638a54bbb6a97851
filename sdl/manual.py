"""Manual experiments: a sample made and measured outside the loop, added to a campaign (`sdl add`).

`submit` checks the parameters against the campaign's search space, analyses the measurement file
with the campaign's analysers (or takes descriptor values the scientist typed in), and queues the
result in the store. The running loop (or the next `sdl resume`) finds it there (sdl.runner.operator)
and attaches it to the strategy as a completed trial. Manual trials do not count against the
experiment budget.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdl import analysis
from sdl.analysis.base import Descriptor, choose
from sdl.analysis.chain import analyse_measurements
from sdl.config import Campaign, ChoiceParameter, FixedParameter
from sdl.errors import AnalysisError, ConfigError
from sdl.store import ManualRow, Store, pack_arrays
from sdl.strategy import evaluate


def check_parameters(campaign: Campaign, given: dict[str, Any]) -> dict[str, Any]:
    """`given` (strings from the command line, or values) coerced and checked against the search
    space; fixed parameters filled in. Raises ConfigError naming what is wrong."""
    out: dict[str, Any] = {}
    names = {p.name for p in campaign.parameters}
    unknown = sorted(set(given) - names)
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown}; the campaign's parameters are {sorted(names)}")
    for p in campaign.parameters:
        if isinstance(p, FixedParameter):
            if p.name in given and str(given[p.name]) != str(p.value):
                raise ConfigError(f"parameter {p.name} is fixed at {p.value!r} in this campaign, got {given[p.name]!r}")
            out[p.name] = p.value
            continue
        if p.name not in given:
            raise ConfigError(f"parameter {p.name} is missing: give --param {p.name}=VALUE")
        v = given[p.name]
        if isinstance(p, ChoiceParameter):
            match = [c for c in p.values if str(c) == str(v)]
            if not match:
                raise ConfigError(f"parameter {p.name}={v!r} is not one of {list(p.values)}")
            out[p.name] = match[0]
            continue
        try:
            x = int(v) if p.type == "int" else float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"parameter {p.name}={v!r} is not a number") from None
        lo, hi = p.bounds
        if not lo <= x <= hi:
            raise ConfigError(f"parameter {p.name}={x} is outside the search space [{lo}, {hi}]")
        out[p.name] = x
    return out


def parse_descriptor(text: str) -> Descriptor:
    """`saxs.radius_nm=8.1` or `saxs.radius_nm=8.1+-0.2` (value ± one standard deviation) or
    `saxs.model=sphere`."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise ConfigError(f"descriptor {text!r}: write NAME=VALUE or NAME=VALUE+-SEM")
    value, _, sem = rest.replace("±", "+-").partition("+-")
    try:
        num: float | str = float(value)
    except ValueError:
        num = value.strip()
    try:
        unc = float(sem) if sem else None
    except ValueError:
        raise ConfigError(f"descriptor {text!r}: uncertainty {sem!r} is not a number") from None
    probs = {num: 1.0} if isinstance(num, str) else None
    return Descriptor(name=name.strip(), value=num, uncertainty=unc, probabilities=probs, analyser="manual")


def submit(store: Store, campaign_id: str, campaign: Campaign, parameters: dict[str, Any], *,
           measurement: str | Path | None = None, step: str | None = None,
           descriptors: list[Descriptor] | None = None, note: str | None = None) -> ManualRow:
    """Analyse and queue one manual experiment; returns the stored request (status "pending").

    Give either `measurement` (a data file for the measuring step `step`, default the first) or
    `descriptors` (values measured elsewhere); both may be given, typed values then win."""
    params = check_parameters(campaign, parameters)
    if measurement is None and not descriptors:
        raise ConfigError("a manual experiment needs its result: --measurement FILE or --descriptor NAME=VALUE")
    found: list[Descriptor] = []
    analyses: list = []
    meas_json = arrays = None
    if measurement is not None:
        steps = {s.name: s for s in campaign.measuring_steps()}
        st = steps.get(step) if step else next(iter(steps.values()))
        if st is None:
            raise ConfigError(f"step {step!r} does not measure anything; measuring steps: {sorted(steps)}")
        m = analysis.technique(st.technique).read(measurement)
        m.metadata.setdefault("source", f"manual: {measurement}")
        found, analyses = analyse_measurements(campaign, {st.name: m})
        meas_json = json.dumps({"step": st.name, "technique": st.technique, "metadata": m.metadata}, default=str)
        arrays = pack_arrays(m.arrays)
    typed = {d.name for d in descriptors or []}
    chosen = [*(descriptors or []), *(d for d in found if d.name not in typed)]
    ev = evaluate(campaign, list(choose(chosen).values()))
    row = ManualRow(campaign_id=campaign_id, parameters_json=json.dumps(params),
                    objectives_json=json.dumps(ev.metrics), score=ev.score, target_met=ev.target_met,
                    descriptors_json=json.dumps([d.model_dump() for d in chosen]),
                    analyses_json=json.dumps([(s, a, i, {k: v.tolist() for k, v in c.items()})
                                              for s, a, i, c in analyses], default=str),
                    measurement_json=meas_json, arrays=arrays, note=note)
    return store.add_manual_request(row)


def warm_start(store: Store, campaign: Campaign) -> tuple[list[ManualRow], list[str]]:
    """The completed trials of the campaign named in `strategy.warm_start` as manual experiments
    for this one (campaign_id still to be set): their stored descriptors are re-evaluated against
    this campaign's objectives, so an earlier campaign with another target still teaches the model
    the response. Returns (rows, reasons for the trials skipped). Raises StoreError for an unknown
    campaign."""
    ws = campaign.strategy.warm_start
    if ws is None:
        return [], []
    source = store if ws.store in (None, campaign.store) else Store(ws.store)
    try:
        earlier = source.find_campaign(ws.campaign)
        by_trial: dict[int, list[Descriptor]] = {}
        for d in source.descriptors(earlier.id):
            by_trial.setdefault(d.trial_index, []).append(Descriptor(**d.fields()))
        trials = source.trials(earlier.id)
    finally:
        if source is not store:
            source.close()
    rows, skipped = [], []
    for t in trials:
        if t.status != "completed":
            continue
        try:
            params = check_parameters(campaign, t.parameters)
            ev = evaluate(campaign, list(choose(by_trial.get(t.index, [])).values()))
        except (ConfigError, AnalysisError) as exc:
            skipped.append(f"trial {t.index}: {exc}")
            continue
        rows.append(ManualRow(
            campaign_id="", parameters_json=json.dumps(params), objectives_json=json.dumps(ev.metrics),
            score=ev.score, target_met=ev.target_met,
            descriptors_json=json.dumps([d.model_dump() for d in by_trial.get(t.index, [])]),
            analyses_json="[]", note=f"warm start: trial {t.index} of campaign {earlier.id}"))
    return rows, skipped
