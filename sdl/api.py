"""Campaigns as Python objects, for notebooks and scripts: build or load a `Campaign`, `run` it,
read a typed `Result` (DataFrames of trials and descriptors).

`Campaign` is the Pydantic model a campaign YAML file loads into (`sdl.config.Campaign`, with the
same child models and validators), so a campaign written in Python is checked exactly like a file,
and a bad one raises `sdl.errors.ConfigError` naming the field, as `sdl validate` does. `run` and
`resume` drive the same loop as `sdl run`/`sdl resume` (`sdl.runner.run_campaign`) and read
the result back from the store, so what a notebook sees is what `sdl status` shows.

Importing this module is light (pydantic, yaml); Ax, torch, sasmodels and pandas are imported
only when a campaign runs or a DataFrame is asked for. See docs/python_api.md.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from sdl import config
from sdl.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from sdl.runner import Subscriber, Summary
    from sdl.store import Store

__all__ = ["Campaign", "DescriptorValue", "Result", "Trial", "load_campaign", "resume", "run"]

DEFAULT_STORE = "sqlite:///sdl.db"  # = sdl.store.DEFAULT_STORE (not imported: `import sdl` stays free of SQLAlchemy)


# ----- campaigns ---------------------------------------------------------------------------------------


class Campaign(config.Campaign):
    """A campaign: what may be varied, how a sample is made and measured, what is wanted, when to
    stop. The fields, their units and their checks are `sdl.config.Campaign`'s (the YAML schema;
    `sdl.Campaign.model_json_schema()` prints it); nested parts may be given as plain dicts, as in
    the YAML.

    Differs from `sdl.config.Campaign` only in how it is built: `Campaign(...)`, `from_yaml` and
    `replace` raise `ConfigError` (one line per wrong field, e.g. ``parameters[0](temp).bounds:
    ...``) instead of pydantic's ValidationError, and it compares equal to a `sdl.config.Campaign`
    with the same fields. Every sdl function accepts either.
    """

    def __init__(self, /, **fields: Any) -> None:
        try:
            super().__init__(**fields)
        except ValidationError as exc:
            raise ConfigError(f"Campaign(...): invalid campaign\n{config.explain(exc, fields)}") from None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, config.Campaign):
            return self.model_dump() == other.model_dump()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like every pydantic model

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "Campaign":
        """The campaign in a YAML (or .json) file, with `overrides` applied (see `replace`), e.g.
        ``Campaign.from_yaml("campaigns/nanoparticle_size.yaml", budget={"max_experiments": 5})``.

        Raises ConfigError when the file cannot be read, is not YAML, or (before or after the
        overrides) is not a valid campaign."""
        base = config.load_campaign(path)
        origin = f"{path} with overrides {_names(overrides)}" if overrides else str(path)
        return cls._build(_merge(base.model_dump(mode="json"), overrides), origin)

    def replace(self, **overrides: Any) -> "Campaign":
        """A validated copy with some fields changed. A mapping merges into the field it names
        (``budget={"max_experiments": 5}`` keeps the other budget fields); anything else replaces
        it, None included (``lab={"world": None}``: no simulated lab). Dotted names reach inside:
        ``**{"strategy.seed": 3}``. Raises ConfigError naming the wrong field."""
        return self._build(_merge(self.model_dump(mode="json"), overrides), f"replace({_names(overrides)})")

    @classmethod
    def _build(cls, data: dict[str, Any], origin: str) -> "Campaign":
        """Validate `data` (plain types) by sdl.config.Campaign's rules; errors say `origin`."""
        try:
            valid = config.Campaign.model_validate(data)  # the base: this class's __init__ would name itself
        except ValidationError as exc:
            raise ConfigError(f"{origin}: invalid campaign\n{config.explain(exc, data)}") from None
        return cls.model_construct(_fields_set=valid.model_fields_set, **dict(valid))


def load_campaign(source: str | Path | Mapping[str, Any], **overrides: Any) -> Campaign:
    """A Campaign from a YAML/JSON file or a mapping of its fields, with `overrides` applied as
    in `Campaign.replace` (unlike sdl.config.load_campaign's, a None override is a value, not "no
    change"). Raises ConfigError naming the file and the wrong field."""
    if isinstance(source, Mapping):
        return Campaign._build(_merge(json.loads(json.dumps(dict(source), default=_plain)), overrides), "campaign")
    return Campaign.from_yaml(source, **overrides)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not a campaign value")


def _names(overrides: Mapping[str, Any]) -> str:
    return ", ".join(overrides) or "no overrides"


def _merge(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`data` (plain types) with `overrides` applied: dotted keys reach inside, mappings merge
    into mappings, anything else (None included) replaces."""
    for key, value in overrides.items():
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            _merge(node[leaf], value)
        elif isinstance(value, Mapping):
            node[leaf] = _merge({}, value)
        else:
            node[leaf] = json.loads(json.dumps(value, default=_plain))
    return data


# ----- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DescriptorValue:
    """One structural quantity an analyser made of a measurement, e.g. ``saxs.radius_nm``."""

    value: float | str | None
    """A number in `unit`, or a class name for a categorical descriptor (``saxs.model``)."""
    uncertainty: float | None
    """One standard deviation, in `unit`; None where the analyser gives none (categorical)."""
    unit: str | None
    """e.g. "nm"; the unit is also in the descriptor's name (``radius_nm``)."""
    analyser: str | None
    """Which analyser of the technique's chain produced it (e.g. saxs_ml, saxs_fit)."""
    flags: tuple[str, ...] = ()
    """Warnings: `ood` (outside the analyser's domain) and `fit_failed` mark it untrusted."""
    probabilities: dict[str, float] | None = None
    """Categorical descriptors: class -> probability (0 to 1)."""

    def __str__(self) -> str:
        if isinstance(self.value, float):
            text = f"{self.value:.4g}" + (f" ± {self.uncertainty:.2g}" if self.uncertainty is not None else "")
        else:
            p = (self.probabilities or {}).get(self.value) if isinstance(self.value, str) else None
            text = str(self.value) + (f" (p = {p:.2f})" if p is not None else "")
        return text + (f" {self.unit}" if self.unit else "") + (f" [{', '.join(self.flags)}]" if self.flags else "")


@dataclass(frozen=True)
class Trial:
    """One experiment (a sample made and measured, or added by hand with `sdl add`)."""

    index: int
    """The trial's index, from 0 in the order proposed (experiment number = index + 1)."""
    status: str
    """completed | failed, or proposed | approved | running | measured while the campaign runs."""
    sample_id: str
    parameters: dict[str, Any]
    """Parameter name -> value sent to the lab, in the unit the campaign gives the parameter."""
    descriptors: dict[str, DescriptorValue]
    """Descriptor name -> the value the objectives were evaluated on: of the analysers' fallback
    chain, the first trusted one (every value stored is in `Result.descriptors`)."""
    score: float | None
    """Ranking score, lower is better (sdl.strategy.objectives.evaluate: distance from a target
    in tolerances, plus constraint violations); None for a failed trial."""
    target_met: bool | None
    """Every target and constraint met, with trusted descriptors."""
    failure: str | None
    """Why a failed trial failed (timeout, driver error, synthesis made nothing usable, ...)."""
    manual: bool = False
    """Added by hand (`sdl add`) or from a warm start, not proposed by the strategy."""


@dataclass(frozen=True)
class Result:
    """A campaign as stored, read back after `run`/`resume` (or by `Result.load`)."""

    campaign_id: str
    """The id in the store (``<name>-<UTC date-time>-<hex>``); `resume` and `sdl status` take it."""
    store_url: str
    """Where everything is stored (SQLite file or PostgreSQL URL)."""
    campaign: config.Campaign
    """The configuration the campaign ran with (with `run`'s overrides applied)."""
    status: str
    """finished | stopped (e.g. an instrument went offline, Ctrl-C, or its orchestrator was killed:
    `resume` continues it) | failed | running (an orchestrator holds the campaign's lease now, as
    `sdl status` says)."""
    stop_reason: str | None
    """Why it stopped, e.g. "budget of 5 experiments used", "target met by trial 7"."""
    target_met_at: int | None
    """Number of experiments (from 1, in trial order) up to the first that met every target and
    constraint; None if none did."""
    best: Trial | None
    """The best completed trial, by `sdl status`'s rule (sdl.report.campaign_record); None if no
    trial completed."""
    trial_list: tuple[Trial, ...]
    """Every trial, in index order (`trials` is the same as a DataFrame)."""
    wanted: tuple[str, ...]
    """The descriptors the objectives and constraints read, sorted."""
    pareto_front: tuple[int, ...] | None
    """Indices of the non-dominated trials (two or more maximize/minimize objectives), else None."""
    summary: "Summary | None"
    """The loop's Summary of this run (sdl.runner.Summary: counts, timings in s, makespan, instrument
    utilisation); None from `Result.load` or when a finished campaign was resumed with nothing to do."""
    record: dict[str, Any] = field(repr=False)
    """`sdl status --json`'s record (plain JSON types), for anything not typed here."""
    stored_descriptors: tuple[dict[str, Any], ...] = field(repr=False, default=())
    """Every stored descriptor as a plain dict (the rows of `descriptors`)."""

    def __repr__(self) -> str:
        best = f"trial {self.best.index}" if self.best else None
        return (f"Result(campaign_id={self.campaign_id!r}, status={self.status!r}, stop_reason={self.stop_reason!r}, "
                f"trials={len(self.trial_list)}, target_met_at={self.target_met_at}, best={best}, "
                f"store_url={self.store_url!r})")

    def trial(self, index: int) -> Trial:
        """The trial with this index (from 0)."""
        for t in self.trial_list:
            if t.index == index:
                return t
        raise KeyError(f"campaign {self.campaign_id} has no trial {index} (it has {len(self.trial_list)})")

    @property
    def trials(self) -> "pd.DataFrame":
        """One row per trial: index, status, sample_id, one column per parameter, for each wanted
        descriptor its value (column named like the descriptor, e.g. ``saxs.radius_nm``, in its unit)
        and ``<descriptor>_uncertainty`` (one standard deviation), then target_met, score, failure.
        A parameter named like one of the fixed columns gets the column ``parameter.<name>``."""
        import pandas as pd

        fixed = ["index", "status", "sample_id"]
        tail = ["target_met", "score", "failure"]
        names = [p.name for p in self.campaign.parameters]
        pcol = {n: f"parameter.{n}" if n in fixed + tail else n for n in names}
        dcols = [c for d in self.wanted for c in (d, f"{d}_uncertainty")]
        rows = []
        for t in self.trial_list:
            row: dict[str, Any] = {"index": t.index, "status": t.status, "sample_id": t.sample_id}
            row.update({pcol[n]: t.parameters.get(n) for n in names})
            for d in self.wanted:
                v = t.descriptors.get(d)
                row[d] = v.value if v else None
                row[f"{d}_uncertainty"] = v.uncertainty if v else None
            row.update(target_met=t.target_met, score=t.score, failure=t.failure)
            rows.append(row)
        return pd.DataFrame(rows, columns=fixed + [pcol[n] for n in names] + dcols + tail)

    @property
    def descriptors(self) -> "pd.DataFrame":
        """Every descriptor stored, one row each (all analysers of each chain, trusted or not):
        trial, name, value (in `unit`; a class name for categorical ones), uncertainty (one
        standard deviation, in `unit`), unit, analyser, flags (list), probabilities (categorical:
        class -> probability), used (whether the objectives were evaluated on this one)."""
        import pandas as pd

        cols = ["trial", "name", "value", "uncertainty", "unit", "analyser", "flags", "probabilities", "used"]
        return pd.DataFrame(list(self.stored_descriptors), columns=cols)

    @classmethod
    def load(cls, campaign: str | None = None, *, store: str = DEFAULT_STORE) -> "Result":
        """A stored campaign (id, or name for its latest run, or None for the latest of all) read
        from `store`, without running anything. Raises StoreError if there is none."""
        from sdl.store import Store

        st = Store(store)
        try:
            return _read(st, st.find_campaign(campaign).id, None)
        finally:
            st.close()


def _read(store: "Store", campaign_id: str, summary: "Summary | None") -> Result:
    """The Result of a campaign, read from the store."""
    from sdl.outcome import used_rows
    from sdl.report import campaign_record

    rec = campaign_record(store, campaign_id)  # each trial's descriptors: the values the evaluation used
    row = store.find_campaign(campaign_id)
    campaign = Campaign.model_validate_json(row.config_json)
    stored = store.descriptors(campaign_id)
    used = used_rows(stored)
    rows = []
    for d in stored:
        f = d.fields()
        rows.append({"trial": d.trial_index, "name": d.name, "value": f["value"], "uncertainty": f["uncertainty"],
                     "unit": f["unit"], "analyser": f["analyser"], "flags": f["flags"],
                     "probabilities": f["probabilities"], "used": d.id in used})

    def value(d: dict[str, Any]) -> DescriptorValue:
        return DescriptorValue(d["value"], d.get("uncertainty"), d.get("unit"), d.get("analyser"),
                               tuple(d.get("flags") or ()), d.get("probabilities"))

    def trial(r: dict[str, Any]) -> Trial:
        return Trial(index=r["index"], status=r["status"], sample_id=r["sample_id"], parameters=dict(r["parameters"]),
                     descriptors={n: value(d) for n, d in r["descriptors"].items()},
                     score=r["score"], target_met=r["target_met"], failure=r["failure"],
                     manual=bool(r.get("manual", False)))

    trials = tuple(trial(r) for r in rec["trials"])
    best = rec["best"]
    status, reason = _live_status(store, campaign_id, rec)
    return Result(
        campaign_id=campaign_id, store_url=store.url, campaign=campaign, status=status,
        stop_reason=reason, target_met_at=rec["target_met_at"],
        best=next((t for t in trials if t.index == best["index"]), None) if best else None,
        trial_list=trials, wanted=tuple(rec["wanted"]),
        pareto_front=tuple(rec["pareto_front"]) if "pareto_front" in rec else None,
        summary=summary, record=rec, stored_descriptors=tuple(rows))


def _live_status(store: "Store", campaign_id: str, rec: dict[str, Any]) -> tuple[str, str | None]:
    """(status, stop_reason) as `sdl status` tells them: "running" only while a process holds the
    campaign's lease (whatever the stored status says: a resumed run may not have marked it yet); a
    campaign stored as running without one was killed, and is "stopped". Adds the holder to `rec`
    (`rec["campaign"]["orchestrator"]`, as in `sdl status --json`)."""
    from sdl.store import store_option

    c = rec["campaign"]
    holder = store.orchestrator(campaign_id)
    c["orchestrator"] = {"pid": holder.pid, "host": holder.host, "since": holder.since} if holder else None
    if holder:
        return "running", None
    if c["status"] == "running":
        return "stopped", (f"no orchestrator (killed, or its machine went down); "
                           f"`sdl resume {campaign_id}{store_option(store.url)}` continues it")
    return c["status"], c["stop_reason"]


# ----- running -------------------------------------------------------------------------------------------


def _budget(budget: int | Mapping[str, Any] | None) -> dict[str, Any]:
    if budget is None:
        return {}
    if isinstance(budget, bool) or not isinstance(budget, (int, Mapping)):
        raise ConfigError(f"budget: give the maximum number of experiments (int) or budget fields (dict), "
                          f"got {budget!r}")
    return {"budget": {"max_experiments": budget} if isinstance(budget, int) else dict(budget)}


def _subscribers(progress: bool, subscribers: "Iterable[Subscriber]") -> "list[Subscriber]":
    subscribers = list(subscribers)
    for fn in subscribers:
        if not callable(fn):
            raise ConfigError(f"subscribers: each is a callable taking one event (sdl.runner.events), got {fn!r}")
    if progress:
        from sdl.runner.console import ProgressBar

        subscribers.insert(0, ProgressBar())
    return subscribers


def run(campaign: config.Campaign | str | Path, *, seed: int | None = None,
        budget: int | Mapping[str, Any] | None = None, store: str | None = None,
        resume: bool | str | None = None, progress: bool = False, subscribers: "Iterable[Subscriber]" = ()) -> Result:
    """Run a campaign to its end and return what was stored.

    Like `sdl run`: without `broker` in the campaign an embedded MQTT broker is started, and with
    `lab.world` that simulated lab's drivers are started in this process (and both stopped after).

    campaign: a Campaign (or sdl.config.Campaign), or the path of a campaign file.
    seed: strategy seed (also the simulated world's, unless `lab.seed` is set).
    budget: maximum number of experiments, or budget fields (``{"max_experiments": 20,
        "max_wall_time_s": 3600}``), merged into the campaign's budget.
    store: store URL, replacing the campaign's `store` (e.g. ``sqlite:///runs.db``).
    resume: continue a stopped or crashed campaign instead of starting one: its id, or True for
        the latest campaign with this campaign's name in the store (see `resume`).
    progress: show a progress bar (tqdm) and the loop's messages.
    subscribers: callables that receive every event of the loop as it happens (sdl.runner.events:
        TrialProposed, CommandSent, MeasurementReceived, Told, TrialFailed, Finished, ...), after
        the store has it; e.g. ``seen = []; run(c, subscribers=[seen.append])``.

    A campaign that stopped early (an instrument offline) is returned with status "stopped" and a
    RuntimeWarning. Raises ConfigError (a bad campaign or option, unknown lab world), StoreError (the
    store cannot be opened; resume: no such campaign), TransportError (broker unreachable),
    DriverError (instruments not online); all subclasses of sdl.errors.SdlError. Ctrl-C (a kernel
    interrupt) stops the campaign, stored; `resume` continues it.
    """
    if isinstance(campaign, (str, Path)):
        campaign = load_campaign(campaign)
    elif not isinstance(campaign, config.Campaign):
        raise ConfigError(f"run() needs a Campaign or the path of a campaign file, got {type(campaign).__name__}")
    if resume:
        if seed is not None:
            raise ConfigError("seed: a resumed campaign keeps its seed (its strategy state is restored from the store)")
        ref = campaign.name if resume is True else str(resume)
        return _resume(ref, store=store or campaign.store, budget=budget, subscribers=_subscribers(progress, subscribers),
                       name=campaign.name)
    overrides: dict[str, Any] = {**_budget(budget)}
    if seed is not None:
        overrides["strategy.seed"] = seed
    if store is not None:
        overrides["store"] = store
    if overrides or not isinstance(campaign, Campaign):
        campaign = Campaign._build(_merge(campaign.model_dump(mode="json"), overrides), f"run({_names(overrides)})")
    return _run(campaign, None, store_url=campaign.store, subscribers=_subscribers(progress, subscribers))


def resume(campaign: str | None = None, *, store: str = DEFAULT_STORE, budget: int | Mapping[str, Any] | None = None,
           progress: bool = False, subscribers: "Iterable[Subscriber]" = ()) -> Result:
    """Continue a stopped or crashed campaign from the store, without repeating or losing a trial
    (like `sdl resume`), with the configuration it was started with.

    campaign: its id, or a name for the latest campaign of that name, or None for the latest of all.
    store: the store URL it is in.
    budget: raise the experiment budget (int), or change budget fields (dict), e.g. to extend a
        finished campaign; a finished campaign resumed without one is returned as stored.
    progress, subscribers: as in `run`.

    Raises StoreError when the store has no such campaign; otherwise as `run`.
    """
    return _resume(campaign, store=store, budget=budget, subscribers=_subscribers(progress, subscribers), name=None)


def _resume(ref: str | None, *, store: str, budget: int | Mapping[str, Any] | None,
            subscribers: "list[Subscriber]", name: str | None) -> Result:
    """resume(); with `name`, the campaign found must have that name (run(campaign, resume=...))."""
    from sdl.store import Store

    st = Store(store)
    try:
        row = st.find_campaign(ref)
        if name is not None and row.name != name:
            raise ConfigError(f"resume={ref!r}: campaign {row.id} in {store} is named {row.name!r}, "
                              f"not {name!r}")
        if row.status == "finished" and budget is None:
            return _read(st, row.id, None)
        stored = Campaign._build(json.loads(row.config_json), f"stored campaign {row.id}")
        updated = stored.replace(**_budget(budget)) if budget is not None else stored
    finally:
        st.close()
    return _run(updated, row.id, store_url=store, subscribers=subscribers)


def _run(campaign: config.Campaign, campaign_id: str | None, *, store_url: str,
         subscribers: "list[Subscriber]") -> Result:
    from sdl.runner import run_campaign
    from sdl.store import Store

    st = Store(store_url)
    try:
        summary = run_campaign(campaign, store=st, campaign_id=campaign_id, subscribers=subscribers)
        result = _read(st, summary.campaign_id, summary)
    finally:
        st.close()
    if result.status != "finished":
        warnings.warn(f"campaign {result.campaign_id} {result.status}: {result.stop_reason}; "
                      f"sdl.resume({result.campaign_id!r}, store={result.store_url!r}) continues it",
                      RuntimeWarning, stacklevel=3)
    return result
