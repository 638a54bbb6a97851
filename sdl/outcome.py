"""What a campaign came to, in one place: whether the target was met and at which experiment,
which trial is best, how it stands against each objective and constraint, what was measured
(and by which analyser) and what it was made with.

The end-of-run summary, `sdl status` (text and `--json`), `sdl report` and `sdl export` all read
this module, so they say the same thing.

Words used in every output:
- *experiment N* counts from 1, in the order the trials were made (trial index order);
- *trial N* is the trial's index, from 0 (what `sdl approve`, the store and the export use);
- *score* is `sdl.strategy.objectives.evaluate`'s ranking number, lower is better (docs/strategy.md);
- *best*: the best-scoring completed trial that meets every constraint (one that also meets the
  target first); when none meets them all, the one that violates them least.

The value shown for a descriptor is the one the evaluation used: `sdl.analysis.base.choose` over
the trial's stored descriptors, in the order the analyser chain produced them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sdl.analysis.base import Descriptor, choose
from sdl.config import Campaign, Constraint, Objective
from sdl.store import DescriptorRow, TrialRow
from sdl.strategy.objectives import MISSING_PENALTY

FINISHED = ("completed", "failed")
SCORE_WORDS = "lower is better"


def score_legend(campaign: Campaign) -> str:
    """What a trial's score is made of for this campaign, in one line (docs/strategy.md, "Score")."""
    terms = []
    for o in campaign.objectives:
        if o.goal == "target":
            terms.append(f"|{o.descriptor} - {fmt_number(o.value)}| / {fmt_number(o.tolerance)}")
        elif o.goal in ("maximize", "minimize"):
            terms.append(("-" if o.goal == "maximize" else "+") + o.descriptor)
    if campaign.constraints:
        terms.append("per violated constraint 1 + its relative distance to the bound")
    terms.append(f"{MISSING_PENALTY:g} per needed descriptor not produced")
    return f"score ({SCORE_WORDS}) = " + " + ".join(terms) + " (docs/strategy.md, Score)"


# ----- numbers -------------------------------------------------------------------------------------


def fmt_number(x: Any, digits: int = 4) -> str:
    """A number as a person writes it: `digits` significant digits, no trailing zeros, no float
    noise (0.30000000000000004 -> 0.3); ints and non-numbers as they are."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    e = math.floor(math.log10(abs(x)))
    if -4 <= e < 6:
        s = f"{x:.{max(digits - 1 - e, 0)}f}"
        return s.rstrip("0").rstrip(".") if "." in s else s
    return f"{x:.{digits}g}"


def _decimals(u: float) -> int | None:
    """Decimal places that show an uncertainty to 2 significant digits when it starts with 1 or 2,
    else 1 (0.0513 -> 2: "0.05"; 0.023 -> 3: "0.023"); None when it cannot be shown that way."""
    if not math.isfinite(u) or u <= 0:
        return None
    e = math.floor(math.log10(u))
    lead = u / 10 ** e
    if round(lead, 1) >= 9.5:  # 0.096 rounds to 0.1: one digit less
        e, lead = e + 1, lead / 10
    sig = 2 if lead < 3 else 1
    d = sig - 1 - e
    return d if 0 <= d <= 10 else (0 if d < 0 else None)


def fmt_value(x: Any, uncertainty: float | None = None, *, plus_minus: bool = True) -> str:
    """`x ± u` with x rounded to u's precision (7.9412, 0.0513 -> "7.94 ± 0.05"); without an
    uncertainty, fmt_number(x). plus_minus=False: the rounded value only."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        return str(x)
    d = _decimals(float(uncertainty)) if uncertainty is not None else None
    if d is None:
        return fmt_number(x)
    value = f"{float(x):.{d}f}"
    return f"{value} ± {float(uncertainty):.{d}f}" if plus_minus else value


def with_unit(text: str, unit: str | None) -> str:
    return f"{text} {unit}" if unit else text


# ----- descriptors as shown --------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """One stored descriptor as a person reads it."""

    name: str
    value: float | str
    uncertainty: float | None = None
    unit: str | None = None
    probability: float | None = None  # categorical: P(the value's class)
    analyser: str | None = None
    flags: tuple[str, ...] = ()
    probabilities: dict[str, float] | None = None  # categorical: every class's probability

    @classmethod
    def of(cls, d: Descriptor) -> "Shown":
        p = (d.probabilities or {}).get(d.value) if isinstance(d.value, str) else None
        return cls(d.name, d.value, d.uncertainty, d.unit, p, d.analyser, tuple(d.flags), d.probabilities)

    def record(self) -> dict[str, Any]:
        """The stored descriptor's fields without its name (DescriptorRow.fields() less `name`;
        `probabilities` only where there are some)."""
        out = {"value": self.value, "uncertainty": self.uncertainty, "unit": self.unit, "flags": list(self.flags),
               "analyser": self.analyser}
        if self.probabilities is not None:
            out["probabilities"] = dict(self.probabilities)
        return out

    def value_text(self, *, plus_minus: bool = True, flags: bool = True) -> str:
        """"7.94 ± 0.05 nm", "sphere (p = 0.97)"; flags in brackets."""
        if isinstance(self.value, str):
            text = self.value + (f" (p = {self.probability:.2f})" if self.probability is not None else "")
        else:
            text = with_unit(fmt_value(self.value, self.uncertainty, plus_minus=plus_minus), self.unit)
        return text + (f" [{', '.join(self.flags)}]" if self.flags and flags else "")

    def text(self) -> str:
        return f"{self.name} = {self.value_text()}"

    def short(self) -> str:
        """Compact, for one line per trial: "radius_nm=7.94±0.05", "model=sphere(0.97)"."""
        name = self.name.split(".", 1)[-1]
        if isinstance(self.value, str):
            v = self.value + (f"({self.probability:.2f})" if self.probability is not None else "")
        else:
            v = fmt_value(self.value, self.uncertainty).replace(" ± ", "±")
        return f"{name}={v}" + (f"[{','.join(self.flags)}]" if self.flags else "")


@dataclass(frozen=True)
class Measured:
    """A needed descriptor of a trial: the value the evaluation used and what the other analysers
    of the chain said about it."""

    chosen: Shown
    others: tuple[Shown, ...] = ()

    def source(self) -> str:
        """"by saxs_fit; saxs_ml gave rod (p = 0.55) [ood]"."""
        text = f"by {self.chosen.analyser or 'unknown analyser'}"
        for o in self.others:
            text += f"; {o.analyser or 'another analyser'} gave {o.value_text()}"
        return text

    def short(self) -> str:
        """Compact, for one line per trial; the analysers named only where several gave a value:
        "model=sphere(0.97) [saxs_fit; saxs_ml: rod(0.55)[ood]]"."""
        if not self.others:
            return self.chosen.short()
        others = "; ".join(f"{o.analyser}: {o.short().split('=', 1)[1]}" for o in self.others)
        return f"{self.chosen.short()} [{self.chosen.analyser}; {others}]"


def chosen(descriptors: Sequence[Descriptor | DescriptorRow]) -> dict[str, Measured]:
    """One trial's descriptors (stored rows in the order stored, or Descriptors in the order the
    analysers produced them) -> name -> the value `choose` picks, with the others of that name."""
    ds = [d if isinstance(d, Descriptor) else Descriptor(**d.fields()) for d in descriptors]
    picked = choose(ds)
    out = {}
    for name, d in picked.items():
        others = tuple(Shown.of(o) for o in ds if o.name == name and o is not d)
        out[name] = Measured(Shown.of(d), others)
    return out


def used_rows(descriptors: Sequence[DescriptorRow]) -> set[int]:
    """Ids of the stored descriptor rows the evaluation used (one per trial and name)."""
    groups: dict[int, list[DescriptorRow]] = {}
    for r in sorted(descriptors, key=lambda r: (r.trial_index, r.id or 0)):
        groups.setdefault(r.trial_index, []).append(r)
    out: set[int] = set()
    for rows in groups.values():
        ds = [Descriptor(**r.fields()) for r in rows]
        picked = {id(d) for d in choose(ds).values()}
        out |= {r.id for r, d in zip(rows, ds) if id(d) in picked and r.id is not None}
    return out


def needed(campaign: Campaign) -> list[str]:
    """The descriptors the objectives and constraints read, in the campaign's order."""
    return list(dict.fromkeys(item.descriptor for item in [*campaign.objectives, *campaign.constraints]))


# ----- objectives and constraints ------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One objective or constraint against one trial's chosen descriptors.

    ok: met (target) / holds (constraint); None for maximize/minimize/map, which have no pass mark.
    violation: how far a constraint is from holding, on evaluate()'s scale (0 when it holds)."""

    kind: str  # "objective" | "constraint"
    descriptor: str
    wanted: str  # "8 ± 0.5 nm", "<= 0.1", "sphere", "maximize"
    value: Shown | None  # None: the analysers did not produce it
    ok: bool | None
    violation: float = 0.0

    def verdict(self) -> str:
        if self.ok is None:
            return ""
        if self.kind == "objective":
            return "met" if self.ok else "not met"
        return "ok" if self.ok else "violated"

    def text(self) -> str:
        """"saxs.polydispersity = 0.071 <= 0.1", "saxs.radius_nm = 7.94 nm, target 8 ± 0.5 nm"."""
        if self.value is None:
            return f"{self.descriptor}: not produced, wanted {self.wanted}"
        v = self.value
        if self.kind == "constraint" and not isinstance(v.value, str):
            return f"{self.descriptor} = {v.value_text(plus_minus=False, flags=False)} {self.wanted}"
        if self.kind == "constraint":
            return f"{self.descriptor} = {v.value_text(flags=False)}, wanted {self.wanted}"
        if self.wanted in ("maximize", "minimize", "map"):
            return f"{self.descriptor} = {v.value_text(flags=False)} ({self.wanted})"
        return f"{self.descriptor} = {v.value_text(flags=False)}, target {self.wanted}"

    def short(self) -> str:
        """For the one-line-per-trial output: "polydispersity 0.14 > 0.1"."""
        name = self.descriptor.split(".", 1)[-1]
        if self.value is None:
            return f"{name} not produced"
        v = self.value.value_text(plus_minus=False, flags=False)
        if self.kind == "constraint" and not isinstance(self.value.value, str):
            op, bound = self.wanted.split(" ", 1)
            return f"{name} {v} {'>' if op == '<=' else '<'} {bound}"
        if self.kind == "constraint":
            return f"{name} {self.value.value} (wanted {self.wanted})"
        return f"{name} {v} (target {self.wanted})"


def _objective_check(o: Objective, m: Measured | None) -> Check:
    unit = m.chosen.unit if m else None
    if o.goal != "target":
        return Check("objective", o.descriptor, o.goal, m.chosen if m else None, None,
                     MISSING_PENALTY if m is None else 0.0)
    wanted = with_unit(f"{fmt_number(o.value)} ± {fmt_number(o.tolerance)}", unit)
    if m is None:
        return Check("objective", o.descriptor, wanted, None, False, MISSING_PENALTY)
    x = m.chosen.value
    ok = not isinstance(x, str) and abs(float(x) - o.value) <= o.tolerance
    return Check("objective", o.descriptor, wanted, m.chosen, ok)


def _constraint_check(c: Constraint, m: Measured | None) -> Check:
    """The same rule as sdl.strategy.objectives.evaluate: a bound holds on the value, a class
    constraint holds when the chosen class is the one wanted; the violation is evaluate()'s."""
    if c.equals is not None:
        wanted = c.equals
        if m is None:
            return Check("constraint", c.descriptor, wanted, None, False, MISSING_PENALTY)
        ok = m.chosen.value == c.equals
        return Check("constraint", c.descriptor, wanted, m.chosen, ok, 0.0 if ok else 1.0)
    wanted = f"{c.op} {fmt_number(c.bound)}"
    if m is None:
        return Check("constraint", c.descriptor, wanted, None, False, MISSING_PENALTY)
    x = m.chosen.value
    if isinstance(x, str):
        return Check("constraint", c.descriptor, wanted, m.chosen, False, 1.0)
    ok = x <= c.bound if c.op == "<=" else x >= c.bound
    return Check("constraint", c.descriptor, wanted, m.chosen, ok,
                 0.0 if ok else 1.0 + abs(float(x) - c.bound) / (abs(c.bound) or 1.0))


def checks(campaign: Campaign, measured: dict[str, Measured]) -> list[Check]:
    """Each objective, then each constraint, against one trial's chosen descriptors."""
    return ([_objective_check(o, measured.get(o.descriptor)) for o in campaign.objectives]
            + [_constraint_check(c, measured.get(c.descriptor)) for c in campaign.constraints])


def trial_verdict(campaign: Campaign, measured: dict[str, Measured], *, status: str, score: float | None,
                  target_met: bool | None, failure: str | None = None) -> str:
    """A finished trial in words: its score and what it met or missed ("score 2.31; off target:
    radius_nm 9.1 nm (target 8 ± 0.5 nm); violated: polydispersity 0.14 > 0.1")."""
    if status != "completed":
        return failure or status
    text = f"score {fmt_number(score, 3)}" if score is not None else "no score"
    if target_met:
        return f"{text}; target met"
    missed = [c for c in checks(campaign, measured) if c.ok is False]
    off = [c.short() for c in missed if c.kind == "objective"]
    bad = [c.short() for c in missed if c.kind == "constraint"]
    return text + (f"; off target: {', '.join(off)}" if off else "") + (f"; violated: {', '.join(bad)}" if bad else "")


# ----- the outcome ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParameterValue:
    name: str
    value: Any
    unit: str | None = None

    def text(self) -> str:
        return f"{self.name} = {with_unit(fmt_number(self.value), self.unit)}"


@dataclass
class Outcome:
    """What the campaign came to. Experiment numbers count from 1, trial indices from 0."""

    n_trials: int
    n_completed: int
    n_failed: int
    n_in_progress: int
    n_manual: int
    has_target: bool  # a target objective or a constraint: something to meet
    goals: list[str]  # "target saxs.radius_nm", "maximize pd.fraction.t", ... (for the words)
    target_met_at: int | None = None  # experiment number (1-based) of the first trial that met it
    target_met_trial: int | None = None  # that trial's index
    best: int | None = None  # trial index
    best_meets_constraints: bool = False
    best_score: float | None = None
    checks: list[Check] = field(default_factory=list)
    measured: list[Measured] = field(default_factory=list)  # the best trial's needed descriptors
    parameters: list[ParameterValue] = field(default_factory=list)  # the best trial's recipe
    several_objectives: bool = False  # a Pareto front: "best" is by the summed score only

    @property
    def target_met(self) -> bool:
        return self.target_met_at is not None

    @property
    def n_experiments(self) -> int:
        """Finished experiments (completed or failed)."""
        return self.n_completed + self.n_failed

    def headline(self) -> str:
        """"target met at experiment 12 (trial 11)", "target not met in 40 experiments"."""
        n = self.n_experiments
        count = f"{n} experiment{'s' if n != 1 else ''}"
        if self.n_manual:
            count += f" ({self.n_manual} added by hand or warm start)"
        going = f", {self.n_in_progress} in progress" if self.n_in_progress else ""
        if not self.has_target:
            return f"no target to meet ({', '.join(self.goals)}): {count}{going}"
        if self.target_met:
            return f"target met at experiment {self.target_met_at} (trial {self.target_met_trial})"
        return f"target not met in {count}{going}"

    def best_line(self) -> str:
        if self.best is None:
            return "best: none (no completed trial)"
        score = f"score {fmt_number(self.best_score, 3)}, {SCORE_WORDS}" if self.best_score is not None else "no score"
        if not self.best_meets_constraints:
            return f"best: no trial met every constraint; closest: trial {self.best} (least violation; {score})"
        extra = "; several objectives trade off: see the Pareto front (`sdl report`)" if self.several_objectives else ""
        return f"best: trial {self.best} ({score}{extra})"

    def lines(self) -> list[str]:
        """The outcome as text lines (no indentation of their own), for a terminal."""
        out = [self.headline(), self.best_line()]
        if self.best is None:
            return out
        rows: list[tuple[str, str, str]] = []
        for i, c in enumerate(self.checks):
            first = i == 0 or self.checks[i - 1].kind != c.kind
            rows.append((c.kind if first else "", c.text(), c.verdict()))
        for i, m in enumerate(self.measured):
            rows.append(("measured" if i == 0 else "", m.chosen.text(), m.source()))
        for i, p in enumerate(self.parameters):
            rows.append(("made with" if i == 0 else "", p.text(), ""))
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        out += [f"  {a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows]
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-able record (`sdl status --json` key `outcome`)."""
        def shown(s: Shown | None) -> dict[str, Any] | None:
            return None if s is None else {"name": s.name, **s.record(), "probability": s.probability}

        return {
            "headline": self.headline(), "summary": self.best_line(),
            "has_target": self.has_target, "target_met": self.target_met,
            "target_met_at_experiment": self.target_met_at, "target_met_trial": self.target_met_trial,
            "experiments": self.n_experiments, "in_progress": self.n_in_progress, "manual": self.n_manual,
            "best_trial": self.best, "best_meets_constraints": self.best_meets_constraints,
            "best_score": self.best_score,
            "objectives": [self._check_json(c, shown) for c in self.checks if c.kind == "objective"],
            "constraints": [self._check_json(c, shown) for c in self.checks if c.kind == "constraint"],
            "descriptors": [{**shown(m.chosen), "text": m.chosen.text(), "source": m.source(),
                             "others": [shown(o) for o in m.others]} for m in self.measured],
            "parameters": [{"name": p.name, "value": p.value, "unit": p.unit, "text": p.text()} for p in self.parameters],
        }

    @staticmethod
    def _check_json(c: Check, shown: Any) -> dict[str, Any]:
        return {"descriptor": c.descriptor, "wanted": c.wanted, "value": shown(c.value), "ok": c.ok,
                "status": c.verdict() or None, "violation": c.violation, "text": c.text()}


def by_trial(descriptors: Sequence[DescriptorRow]) -> dict[int, dict[str, Measured]]:
    """Stored descriptor rows (any order of trials, stored order within one) -> trial index ->
    name -> Measured."""
    rows: dict[int, list[DescriptorRow]] = {}
    for d in sorted(descriptors, key=lambda r: (r.trial_index, r.id or 0)):
        rows.setdefault(d.trial_index, []).append(d)
    return {i: chosen(ds) for i, ds in rows.items()}


def _goal_words(campaign: Campaign) -> list[str]:
    return [f"{o.goal} {o.descriptor}" for o in campaign.objectives]


def outcome(campaign: Campaign, trials: Sequence[TrialRow], descriptors: Sequence[DescriptorRow]) -> Outcome:
    """The outcome of a campaign from its stored trials and descriptors (the store's rows)."""
    trials = sorted(trials, key=lambda t: t.index)
    measured = by_trial(descriptors)
    has_target = any(o.goal == "target" for o in campaign.objectives) or bool(campaign.constraints)
    out = Outcome(
        n_trials=len(trials), n_completed=sum(t.status == "completed" for t in trials),
        n_failed=sum(t.status == "failed" for t in trials),
        n_in_progress=sum(t.status not in FINISHED for t in trials), n_manual=sum(bool(t.manual) for t in trials),
        has_target=has_target, goals=_goal_words(campaign),
        several_objectives=sum(o.goal in ("maximize", "minimize") for o in campaign.objectives) >= 2,
    )
    for n, t in enumerate(trials, start=1):
        if t.target_met:
            out.target_met_at, out.target_met_trial = n, t.index
            break

    def inf(x: float | None) -> float:
        return x if x is not None and math.isfinite(x) else math.inf

    ranked = []
    for t in trials:
        if t.status != "completed":
            continue
        cs = checks(campaign, measured.get(t.index, {}))
        violation = sum(c.violation for c in cs if c.kind == "constraint")
        # feasible first, then (among feasible) those meeting the target, then by score;
        # among infeasible ones the least violating
        key = (0, not t.target_met, inf(t.score)) if violation == 0 else (1, violation, inf(t.score))
        ranked.append((key, t, cs))
    if not ranked:
        return out
    _, best, cs = min(ranked, key=lambda r: r[0])
    m = measured.get(best.index, {})
    params = {p.name: p for p in campaign.parameters}
    out.best, out.best_score = best.index, best.score
    out.best_meets_constraints = all(c.ok for c in cs if c.kind == "constraint")
    out.checks = cs
    out.measured = [m[n] for n in needed(campaign) if n in m]
    out.parameters = [ParameterValue(k, v, getattr(params.get(k), "unit", None)) for k, v in
                      sorted(best.parameters.items(), key=lambda kv: list(params).index(kv[0]) if kv[0] in params else len(params))]
    return out


def from_store(store: Any, campaign_id: str) -> Outcome:
    """outcome() of a stored campaign."""
    row = store.find_campaign(campaign_id)
    return outcome(Campaign.model_validate_json(row.config_json), store.trials(campaign_id),
                   store.descriptors(campaign_id))
