"""From descriptors to the numbers the strategy learns from.

Each objective and constraint of a campaign becomes one metric (name, mean, SEM):
  maximize/minimize d   -> metric `d`                          (SEM = descriptor uncertainty)
  map d                 -> metric `d` (learnt everywhere, not optimised)
  target d = v ± tol    -> metric `d__dist` = |d - v|, minimised (SEM = descriptor uncertainty)
  d <= b, d >= b        -> metric `d`, an outcome constraint
  d == label            -> metric `d__is_<label>` = P(label), constraint >= min_probability
Metric names replace '.' by '_' (Ax parses expressions over metric names).

A descriptor the analysers did not produce (e.g. the crystallite size of a phase that is not in
the sample) leaves its metric out: the strategy learns from the metrics that exist, and the trial
misses the target.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sdl.analysis.base import Descriptor
from sdl.config import Campaign, Constraint, Objective
from sdl.errors import AnalysisError

MIN_SEM = 1e-6
MISSING_PENALTY = 10.0  # added to the score per needed descriptor not produced


def metric_name(descriptor: str, suffix: str = "") -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", descriptor) + suffix


@dataclass(frozen=True)
class MetricSpec:
    """One metric the strategy models."""

    name: str
    descriptor: str
    kind: str  # "objective" | "constraint"
    minimize: bool = False


def objective_metric(o: Objective) -> MetricSpec:
    if o.goal == "target":
        return MetricSpec(metric_name(o.descriptor, "__dist"), o.descriptor, "objective", minimize=True)
    return MetricSpec(metric_name(o.descriptor), o.descriptor, "objective", minimize=o.goal == "minimize")


def constraint_metric(c: Constraint) -> MetricSpec:
    if c.equals is not None:
        return MetricSpec(metric_name(c.descriptor, f"__is_{metric_name(c.equals)}"), c.descriptor, "constraint")
    return MetricSpec(metric_name(c.descriptor), c.descriptor, "constraint")


def metrics(campaign: Campaign) -> list[MetricSpec]:
    """The metrics to model, one per name."""
    out = [objective_metric(o) for o in campaign.objectives] + [constraint_metric(c) for c in campaign.constraints]
    seen: dict[str, MetricSpec] = {}
    for m in out:
        seen.setdefault(m.name, m)  # an objective and a bound on the same descriptor share a metric
    return list(seen.values())


def _bounds(campaign: Campaign, thresholds: bool) -> dict[tuple[str, str], float]:
    """(metric, "<=" or ">=") -> bound, from the constraints (and the objective thresholds). Ax
    takes one bound per metric and direction: where several apply, the tightest is kept."""
    bounds: dict[tuple[str, str], float] = {}

    def add(name: str, op: str, bound: float) -> None:
        old = bounds.get((name, op))
        bounds[(name, op)] = bound if old is None else (max(old, bound) if op == ">=" else min(old, bound))

    for c in campaign.constraints:
        if c.equals is not None:
            add(constraint_metric(c).name, ">=", c.min_probability)
        else:
            add(constraint_metric(c).name, c.op, c.bound)
    for o in campaign.objectives:
        if thresholds and o.threshold is not None:
            add(objective_metric(o).name, "<=" if o.goal == "minimize" else ">=", o.threshold)
    return bounds


def outcome_constraints(campaign: Campaign) -> list[str]:
    """Ax outcome-constraint expressions: the constraints and the objective thresholds (Ax reads a
    bound on an objective metric as its reference point)."""
    return [f"{name} {op} {bound}" for (name, op), bound in _bounds(campaign, thresholds=True).items()]


def feasible(campaign: Campaign, values: dict[str, list[float] | tuple[float, float]]) -> bool:
    """Whether a trial's metrics (name -> (mean, sem)) meet every constraint; a missing one does not."""
    for (name, op), bound in _bounds(campaign, thresholds=False).items():
        if name not in values:
            return False
        x = values[name][0]
        if not (x <= bound if op == "<=" else x >= bound):
            return False
    return True


@dataclass
class Evaluation:
    """What one trial's descriptors mean for the campaign."""

    metrics: dict[str, tuple[float, float]]  # name -> (mean, sem)
    target_met: bool
    score: float  # one number to rank trials by (lower is better): summed normalised distance + violations
    untrusted: list[str]  # descriptors flagged ood / fit_failed
    missing: list[str]  # needed descriptors the analysers did not produce


def evaluate(campaign: Campaign, descriptors: list[Descriptor]) -> Evaluation:
    """Metrics, whether every target and constraint is met, and a ranking score.

    Raises AnalysisError when the analysers produced none of the descriptors the campaign needs.
    """
    by_name = {d.name: d for d in descriptors}
    needed = campaign.descriptors_needed()
    missing = sorted(needed - set(by_name))
    if len(missing) == len(needed):
        raise AnalysisError(f"analysers produced none of the descriptors the campaign needs {missing} "
                            f"(they produced {sorted(by_name)})")

    values: dict[str, tuple[float, float]] = {}
    met = not missing
    score = MISSING_PENALTY * len(missing)
    untrusted: list[str] = []
    for o in campaign.objectives:
        if o.descriptor in missing:
            continue
        d = by_name[o.descriptor]
        x, sem = _numeric(d), max(d.uncertainty or 0.0, MIN_SEM)
        if not d.trusted:
            untrusted.append(d.name)
        if o.goal == "target":
            dist = abs(x - o.value)
            values[metric_name(o.descriptor, "__dist")] = (dist, sem)
            met &= dist <= o.tolerance
            score += dist / o.tolerance
        else:
            values[metric_name(o.descriptor)] = (x, sem)
            score += {"maximize": -x, "minimize": x, "map": 0.0}[o.goal]
    for c in campaign.constraints:
        if c.descriptor in missing:
            continue
        d = by_name[c.descriptor]
        if not d.trusted:
            untrusted.append(d.name)
        if c.equals is not None:
            p = (d.probabilities or {}).get(c.equals, 1.0 if d.value == c.equals else 0.0)
            values[constraint_metric(c).name] = (float(p), 0.05)
            ok = d.value == c.equals
        else:
            x = _numeric(d)
            values[metric_name(c.descriptor)] = (x, max(d.uncertainty or 0.0, MIN_SEM))
            ok = x <= c.bound if c.op == "<=" else x >= c.bound
            if not ok:
                score += abs(x - c.bound) / (abs(c.bound) or 1.0)
        met &= ok
        score += 0.0 if ok else 1.0
    has_target_or_constraint = any(o.goal == "target" for o in campaign.objectives) or bool(campaign.constraints)
    return Evaluation(values, bool(met and has_target_or_constraint and not untrusted), score, untrusted, missing)


def _numeric(d: Descriptor) -> float:
    if isinstance(d.value, str):
        raise AnalysisError(f"descriptor {d.name!r} is categorical ({d.value!r}); use `equals` in a constraint for it")
    x = float(d.value)
    if not math.isfinite(x):
        raise AnalysisError(f"descriptor {d.name!r} is not finite ({x})")
    return x


ACQUISITIONS = {  # kind -> what it is, for people (docs/strategy.md)
    "improvement": "log noisy expected improvement (qLogNEI)",
    "hypervolume": "log noisy expected hypervolume improvement (qLogNEHVI)",
    "map": "integrated posterior variance (qNegIntegratedPosteriorVariance)",
    "cost": "log noisy expected improvement per unit cost (CostWeightedLogNEI)",
}


def acquisition_kind(campaign) -> str:
    """Which acquisition a `bayesian` campaign's objectives call for (a key of ACQUISITIONS);
    torch-free, so `sdl validate` can say it."""
    if any(o.goal == "map" for o in campaign.objectives):
        return "map"
    if len(campaign.objectives) > 1:
        return "hypervolume"
    return "cost" if campaign.strategy.cost else "improvement"
