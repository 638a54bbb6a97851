"""Reading a campaign back for people: a status record (JSON-able), a PNG report, and exports
(CSV for trials and descriptors, plain column files for measurements)."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from sdl import outcome as outcome_mod
from sdl.broker import redact, redact_url
from sdl.config import Campaign
from sdl.errors import SdlError
from sdl.measurement import Measurement, write_columns
from sdl.store import Store, unpack_arrays


def _values(trials: list[dict[str, Any]], descriptor: str) -> np.ndarray:
    """The numeric value of `descriptor` per trial record; NaN where missing or categorical."""
    out = []
    for t in trials:
        v = t["descriptors"].get(descriptor, {}).get("value")
        out.append(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan)
    return np.array(out, dtype=float)


def _max_min(campaign: Campaign) -> list[Any]:
    """The objectives with a direction (maximize/minimize), in campaign order."""
    return [o for o in campaign.objectives if o.goal in ("maximize", "minimize")]


def _maximised(goals: list[str]) -> np.ndarray:
    """Per objective, the sign that turns it into one to maximise."""
    return np.array([1.0 if g == "maximize" else -1.0 for g in goals])


def _non_dominated(Y: np.ndarray, goals: list[str]) -> np.ndarray:
    """Boolean mask of the rows of Y (n, k) no other row dominates (>= everywhere and > somewhere,
    after flipping minimised columns)."""
    Z = Y * _maximised(goals)
    ge = (Z[None, :, :] >= Z[:, None, :]).all(-1)  # ge[i, j]: row j is at least as good as row i
    gt = (Z[None, :, :] > Z[:, None, :]).any(-1)
    return ~(ge & gt).any(1)


def _front_inputs(records: list[dict[str, Any]], objectives: list[Any]) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Completed trials with a number for each of `objectives`, and those numbers (n, k)."""
    done = [r for r in records if r["status"] == "completed"]
    Y = np.column_stack([_values(done, o.descriptor) for o in objectives]) if done else np.zeros((0, len(objectives)))
    ok = np.isfinite(Y).all(1)
    return [r for r, k in zip(done, ok) if k], Y[ok]


def hypervolume(Y: np.ndarray, goals: list[str], ref: np.ndarray) -> float:
    """Volume dominated by the rows of Y (n, k) beyond the reference point `ref`, in the
    objectives' own units (product of them); minimised columns are flipped first."""
    import torch
    from botorch.utils.multi_objective.box_decompositions.dominated import DominatedPartitioning

    sign = _maximised(goals)
    Z, r = Y * sign, np.asarray(ref, dtype=float) * sign
    Z = Z[np.isfinite(Z).all(1) & (Z > r).all(1)]
    if not len(Z):
        return 0.0
    return float(DominatedPartitioning(ref_point=torch.tensor(r), Y=torch.tensor(Z)).compute_hypervolume())


def pareto_front(campaign: Campaign, records: list[dict[str, Any]]) -> list[int]:
    """Indices of the completed trials that no other completed trial dominates on all maximize/
    minimize objectives (their descriptor values, constraints not considered)."""
    objectives = _max_min(campaign)
    done, Y = _front_inputs(records, objectives)
    return [r["index"] for r, keep in zip(done, _non_dominated(Y, [o.goal for o in objectives])) if keep]


def campaign_record(store: Store, campaign_id: str) -> dict[str, Any]:
    """Everything `sdl status --json` prints: campaign, counts, trials with descriptors, the best
    trial's record (`best`, chosen by sdl.outcome's rule), the `outcome` in words and numbers, and
    `pareto_front` (trial indices) when the campaign has two or more maximize/minimize objectives.

    A trial's `descriptors` hold, per name, the value the evaluation used (the analyser chain's
    choice); `alternatives` the other analysers' values of a name where the chain produced several.
    `target_met_at` is an experiment number (from 1); trial `index`es count from 0."""
    row = store.find_campaign(campaign_id)
    campaign = Campaign.model_validate_json(row.config_json)
    trials = store.trials(campaign_id)
    rows = store.descriptors(campaign_id)
    measured = outcome_mod.by_trial(rows)
    result = outcome_mod.outcome(campaign, trials, rows)

    records = [{
        "index": t.index, "status": t.status, "sample_id": t.sample_id, "manual": bool(t.manual),
        "parameters": t.parameters, "objectives": t.objectives, "score": t.score, "target_met": t.target_met,
        "failure": redact_url(t.failure),
        "descriptors": {n: m.chosen.record() for n, m in measured.get(t.index, {}).items()},
        "alternatives": {n: [o.record() for o in m.others]
                         for n, m in measured.get(t.index, {}).items() if m.others},
    } for t in trials]
    best = next((r for r in records if r["index"] == result.best), None)
    counts = {s: sum(r["status"] == s for r in records)
              for s in ("completed", "failed", "running", "measured", "proposed", "approved", "rejected")}
    return {
        "campaign": {"id": row.id, "name": row.name, "status": row.status, "stop_reason": redact_url(row.stop_reason),
                     "created_at": row.created_at, "updated_at": row.updated_at},
        "counts": {k: v for k, v in counts.items() if v},
        "wanted": sorted(campaign.descriptors_needed()),
        "target_met_at": result.target_met_at,
        "best": best,
        "outcome": result.to_json(),
        "trials": records,
        **({"pareto_front": pareto_front(campaign, records)} if len(_max_min(campaign)) >= 2 else {}),
    }


def write_report(store: Store, campaign_id: str, out: Path) -> Path:
    """A PNG on a grid of panels: the optimisation trace (score per trial, best so far), each
    target descriptor with its band, the best trial's measured curve with the analyser's fit, a GP
    model of the first objective's descriptor (heat map over the two most important numeric
    parameters, and the parameter importances), and with two or more maximize/minimize objectives
    the Pareto front of the first two. The x axes are trial indices (from 0), as `sdl status` shows
    them. Raises SdlError for a campaign without trials (nothing to plot)."""
    rec = campaign_record(store, campaign_id)
    if not rec["trials"]:
        c = rec["campaign"]
        why = f" ({c['status']}: {c['stop_reason']})" if c["stop_reason"] else f" ({c['status']})"
        raise SdlError(f"campaign {campaign_id} has no trials{why}; there is nothing to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    campaign = Campaign.model_validate_json(store.find_campaign(campaign_id).config_json)
    targets = [o for o in campaign.objectives if o.goal == "target"]
    pareto = len(_max_min(campaign)) >= 2
    n_panels = 5 + len(targets) + pareto
    ncols = -(-n_panels // 2)
    fig, grid = plt.subplots(2, ncols, figsize=(5.2 * ncols, 8.4), squeeze=False)
    axes = iter(grid.flat)

    if pareto:
        _hypervolume_panel(next(axes), campaign, rec["trials"])
    else:
        _trace_panel(next(axes), rec["trials"])
    for o in targets:
        _target_panel(next(axes), rec["trials"], o)
    _curve_panel(next(axes), store, campaign_id, rec["best"], rec["outcome"])
    _model_panels(fig, next(axes), next(axes), campaign, rec)
    if pareto:
        _pareto_panel(next(axes), campaign, rec)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(f"{campaign_id} — {rec['campaign']['status']}: {rec['outcome']['headline']}\n"
                 f"{rec['outcome']['summary']}", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _trial_axis(ax: Any) -> None:
    """x axis = trial index (from 0), integer ticks: the numbers `sdl status` prints."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _trace_panel(ax: Any, trials: list[dict[str, Any]]) -> None:
    x = np.array([t["index"] for t in trials], dtype=float)
    score = np.array([t["score"] if t["score"] is not None else np.nan for t in trials], dtype=float)
    failed = np.array([t["status"] == "failed" for t in trials], dtype=bool)
    ax.plot(x[~failed], np.maximum(score[~failed], 1e-3), "o", color="tab:blue", label="trial")
    if failed.any():  # failed trials have no score: mark them along the bottom edge
        ax.plot(x[failed], np.full(failed.sum(), 0.03), "x", color="tab:red", label="failed",
                transform=ax.get_xaxis_transform(), clip_on=False)
    best = np.fmin.accumulate(np.where(np.isnan(score), np.inf, score))
    ax.step(x, np.where(np.isinf(best), np.nan, np.maximum(best, 1e-3)), where="post", color="k", label="best so far")
    met = [(n, t["index"]) for n, t in enumerate(trials, start=1) if t["target_met"]]
    if met:
        n, i = met[0]
        ax.axvline(i, color="tab:green", ls="--", label=f"target met: trial {i} (experiment {n})")
    ax.set(ylabel="score (lower is better)", title="optimisation trace")
    _trial_axis(ax)
    if np.nanmin(score, initial=np.inf) > 0:  # distances and violations; maximised values go negative
        ax.set_yscale("log")
    ax.legend(fontsize=8)


def _hypervolume_panel(ax: Any, campaign: Campaign, trials: list[dict[str, Any]]) -> None:
    """Hypervolume of the measured front after each experiment, over the thresholds (or, where an
    objective has none, the worst value measured)."""
    objectives = _max_min(campaign)
    goals = [o.goal for o in objectives]
    Y = np.column_stack([_values(trials, o.descriptor) for o in objectives])
    Y[[t["status"] != "completed" for t in trials]] = np.nan
    worst = np.where(np.array(goals) == "maximize", np.nanmin(Y, 0, initial=np.inf), np.nanmax(Y, 0, initial=-np.inf))
    ref = np.array([o.threshold if o.threshold is not None else w for o, w in zip(objectives, worst)])
    hv = [hypervolume(Y[:k], goals, ref) for k in range(1, len(trials) + 1)]
    ax.step([t["index"] for t in trials], hv, where="post", color="k")  # after each trial
    ax.set(ylabel="hypervolume (product of objective units)", title="dominated hypervolume of the measured front")
    _trial_axis(ax)


def _target_panel(ax: Any, trials: list[dict[str, Any]], o: Any) -> None:
    x = np.array([t["index"] for t in trials], dtype=float)
    e = np.array([t["descriptors"].get(o.descriptor, {}).get("uncertainty") or 0.0 for t in trials], float)
    ax.errorbar(x, _values(trials, o.descriptor), yerr=e, fmt="o", ms=4, color="tab:blue")
    ax.axhspan(o.value - o.tolerance, o.value + o.tolerance, color="tab:green", alpha=0.2, label="target")
    unit = next((t["descriptors"][o.descriptor].get("unit") for t in trials if o.descriptor in t["descriptors"]), None)
    ax.set(ylabel=o.descriptor + (f" ({unit})" if unit else ""), title=f"{o.descriptor} vs target")
    _trial_axis(ax)
    ax.legend(fontsize=8)


def _curve_panel(ax: Any, store: Store, campaign_id: str, b: dict[str, Any] | None, result: dict[str, Any]) -> None:
    """The best trial's measured curve with the fit of the analyser whose descriptors were used
    (the first needed descriptor's first), titled with those descriptors (sdl.outcome)."""
    analyses = store.analyses(campaign_id, b["index"]) if b is not None else []
    used = [d["analyser"] for d in result["descriptors"]]
    analyses.sort(key=lambda a: used.index(a.analyser) if a.analyser in used else len(used))
    from sdl.analysis import curve_axes_for

    for a in analyses:
        curves = unpack_arrays(a.curves)
        spec = curve_axes_for(curves)  # labels and scales from the technique declarations
        if spec is None:
            continue
        x = curves[spec.x]
        ax.plot(x, curves["intensity"], ".", ms=3, color="tab:gray", label="measured")
        if "fit" in curves:
            ax.plot(x, curves["fit"], color="tab:red", lw=1, label=f"fit ({a.analyser})")
        ax.set(xscale=spec.xscale, yscale=spec.yscale, xlabel=spec.xlabel, ylabel=spec.ylabel)
        which = "best" if result["best_meets_constraints"] else "closest (no trial met every constraint):"
        ax.set_title(f"{which} trial {b['index']}\n" + "\n".join(d["text"] for d in result["descriptors"]), fontsize=8)
        ax.legend(fontsize=8)
        return
    _note(ax, "no analysed trial yet" if b is None else f"no curve stored for trial {b['index']}")


def _label(p: Any) -> str:
    return f"{p.name} ({p.unit})" if getattr(p, "unit", None) else p.name


def _model_panels(fig: Any, ax_map: Any, ax_imp: Any, campaign: Campaign, rec: dict[str, Any]) -> None:
    """GP of the first objective's descriptor over the completed trials: its mean over the two most
    important numeric parameters (the others held at the best trial's values), and the importances."""
    from botorch.exceptions.errors import ModelFittingError
    from matplotlib.colors import Normalize

    from sdl import surrogate

    o = campaign.objectives[0]
    done = [t for t in rec["trials"] if t["status"] == "completed"]
    y = _values(done, o.descriptor)
    used = [t for t, v in zip(done, y) if np.isfinite(v)]
    y = y[np.isfinite(y)]
    if len(used) < 3:
        _note(ax_map, f"{o.descriptor}: too few trials for a model")
        _note(ax_imp, "too few trials for a model")
        return
    try:
        model = surrogate.fit(campaign, [t["parameters"] for t in used], y)
    except ModelFittingError as exc:
        _note(ax_map, f"GP fit failed: {exc}")
        _note(ax_imp, "GP fit failed")
        return

    imp = model.importances()
    ax_imp.barh(list(imp)[::-1], list(imp.values())[::-1], color="tab:blue")
    ax_imp.set(xlabel="importance (1 / GP lengthscale, unit-cube scale)",
               title=f"what drives {o.descriptor}")

    by_name = {p.name: p for p in campaign.parameters}
    numeric = [name for name in imp if by_name[name].type in ("float", "int")]
    if len(numeric) < 2:
        _note(ax_map, "a heat map needs two numeric parameters")
        return
    px, py = by_name[numeric[0]], by_name[numeric[1]]
    base = (rec["best"] or done[-1])["parameters"]
    xs, ys = ((np.geomspace if p.log_scale else np.linspace)(*p.bounds, 60) for p in (px, py))
    mean, _ = model.predict([{**base, px.name: a, py.name: b} for b in ys for a in xs])
    Z = mean.reshape(len(ys), len(xs))
    norm = Normalize(min(Z.min(), y.min()), max(Z.max(), y.max()))
    mesh = ax_map.pcolormesh(xs, ys, Z, shading="auto", cmap="viridis", norm=norm)
    ax_map.scatter([t["parameters"][px.name] for t in used], [t["parameters"][py.name] for t in used],
                   c=y, cmap="viridis", norm=norm, edgecolors="k", s=28, label="trials")
    ax_map.plot(base[px.name], base[py.name], "*", color="tab:red", ms=15, mec="w", label="best")
    unit = next((t["descriptors"][o.descriptor].get("unit") for t in used), None)
    fig.colorbar(mesh, ax=ax_map, label=o.descriptor + (f" ({unit})" if unit else ""))
    if o.goal == "target":
        levels = [v for v in (o.value - o.tolerance, o.value, o.value + o.tolerance) if Z.min() < v < Z.max()]
        if levels:
            ax_map.contour(xs, ys, Z, levels=levels, colors="w",
                           linestyles=["-" if v == o.value else "--" for v in levels])
    held = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in base.items() if k not in (px.name, py.name))
    ax_map.set(xlabel=_label(px), ylabel=_label(py), xscale="log" if px.log_scale else "linear",
               yscale="log" if py.log_scale else "linear")
    ax_map.set_title(f"GP mean of {o.descriptor}\n" + (f"held at best: {held}" if held else ""), fontsize=8, wrap=True)
    ax_map.legend(fontsize=7, loc="upper right")


def _pareto_panel(ax: Any, campaign: Campaign, rec: dict[str, Any]) -> None:
    """Completed trials in the plane of the first two maximize/minimize objectives, the front
    (non-dominated in that plane) as a staircase, and the reference point where thresholds are set."""
    ox, oy = _max_min(campaign)[:2]
    done, Y = _front_inputs(rec["trials"], [ox, oy])
    ax.set(xlabel=f"{ox.descriptor} ({ox.goal})", ylabel=f"{oy.descriptor} ({oy.goal})", title="Pareto front")
    if not done:
        _note(ax, "no completed trial with both objectives")
        return
    front = Y[_non_dominated(Y, [ox.goal, oy.goal])]
    front = front[np.argsort(front[:, 0])]
    ax.plot(Y[:, 0], Y[:, 1], "o", color="tab:gray", alpha=0.6, label="trials")
    # the boundary of the region the front dominates: vertical first when x is maximised
    ax.step(front[:, 0], front[:, 1], "-o", where="pre" if ox.goal == "maximize" else "post",
            color="tab:red", label=f"non-dominated ({len(front)})")
    tx, ty = ox.threshold, oy.threshold
    if tx is not None:
        ax.axvline(tx, color="k", ls=":", lw=1)
    if ty is not None:
        ax.axhline(ty, color="k", ls=":", lw=1)
    if tx is not None and ty is not None:
        ax.plot(tx, ty, "kx", ms=9, label="reference point")
    ax.legend(fontsize=8)


def _csv_number(x: Any) -> Any:
    """A number for CSV: 6 significant digits, no float noise (0.30000000000000004 -> 0.3); None -> ""."""
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.6g}"
    return x


def _header(name: str, unit: str | None) -> str:
    """A CSV column name with its unit, the common way: `temperature_C [degC]`."""
    return f"{name} [{unit}]" if unit else name


def trial_table(campaign: Campaign, rec: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """trials.csv as (header, rows): trial (index from 0), status, sample_id, the parameters (unit in
    the header), per needed descriptor the value the evaluation used and its uncertainty (`<name>_sem`,
    one standard deviation) or, for a class, the class and its probability (`<name>_p`), then
    target_met, score (lower is better) and failure."""
    trials = rec["trials"]
    params = [p.name for p in campaign.parameters]
    params += sorted({k for t in trials for k in t["parameters"]} - set(params))
    units = {p.name: getattr(p, "unit", None) for p in campaign.parameters}
    header = ["trial", "status", "sample_id", *[_header(p, units.get(p)) for p in params]]
    columns = []  # (descriptor, categorical)
    for name in outcome_mod.needed(campaign):
        found = [t["descriptors"][name] for t in trials if name in t["descriptors"]]
        categorical = any(isinstance(d["value"], str) for d in found)
        unit = next((d["unit"] for d in found if d.get("unit")), None)
        header += [name, f"{name}_p"] if categorical else [_header(name, unit), _header(f"{name}_sem", unit)]
        columns.append((name, categorical))
    header += ["target_met", "score", "failure"]
    rows = []
    for t in trials:
        row = [t["index"], t["status"], t["sample_id"], *[_csv_number(t["parameters"].get(p)) for p in params]]
        for name, categorical in columns:
            d = t["descriptors"].get(name)
            if d is None:
                row += ["", ""]
            elif categorical:
                row += [d["value"], _csv_number((d.get("probabilities") or {}).get(d["value"]))]
            else:
                row += [_csv_number(d["value"]), _csv_number(d["uncertainty"])]
        met = t["target_met"]
        row += ["" if met is None else str(met).lower(), _csv_number(t["score"]), t["failure"] or ""]
        rows.append(row)
    return header, rows


def export(store: Store, campaign_id: str, out: Path) -> Path:
    """trials.csv (trial_table), descriptors.csv (every analyser's descriptors; `used`: the one the
    evaluation used), events.csv, campaign.json and measurements/<trial>_<step>.dat."""
    rec = campaign_record(store, campaign_id)
    campaign = Campaign.model_validate_json(store.find_campaign(campaign_id).config_json)
    out.mkdir(parents=True, exist_ok=True)
    header, rows = trial_table(campaign, rec)
    with open(out / "trials.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    stored = store.descriptors(campaign_id)
    used = outcome_mod.used_rows(stored)
    with open(out / "descriptors.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "name", "value", "uncertainty", "unit", "flags", "analyser", "used"])
        for d in stored:
            w.writerow([d.trial_index, d.name, _csv_number(d.value), _csv_number(d.uncertainty), d.unit or "",
                        ";".join(json.loads(d.flags_json)), d.analyser or "", str(d.id in used).lower()])
    with open(out / "events.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["at", "trial", "level", "kind", "message"])
        for e in store.events(campaign_id):
            w.writerow([e.at.isoformat(), e.trial_index, e.level, e.kind, redact_url(e.message)])
    # redacted again: a store written by an older sdl may hold a broker password in plain text
    (out / "campaign.json").write_text(json.dumps(rec["campaign"] | {
        "config": redact(json.loads(store.find_campaign(campaign_id).config_json))}, indent=2, default=str))
    mdir = out / "measurements"
    mdir.mkdir(exist_ok=True)
    for m in store.measurements(campaign_id):
        meas = Measurement(technique=m.technique, arrays=unpack_arrays(m.arrays), metadata=json.loads(m.metadata_json))
        write_columns(mdir / f"trial{m.trial_index:04d}_{m.step}.dat", meas)
    return out


# ----- one analysed file, as `sdl analyse TECHNIQUE PATH --plot DIR` draws it ---------------------------


def _curve_spec(technique: Any, curves: dict[str, np.ndarray]) -> Any:
    """The declared CurveAxes for a result's curves (sdl.analysis.curve_axes_for), else a plain linear
    one on the first array that is not intensity/fit."""
    from sdl.analysis import curve_axes_for
    from sdl.analysis.technique import CurveAxes

    spec = curve_axes_for(curves, technique)
    if spec is not None:
        return spec
    x = next((k for k in curves if k not in ("intensity", "fit", "sigma", "background")), None)
    return None if x is None else CurveAxes(x, x, "intensity")


def _sigma_for(x: np.ndarray, y: np.ndarray, curves: dict[str, np.ndarray], measurement: Measurement | None,
               xname: str) -> np.ndarray | None:
    """sigma at the curve's points: the curves' own, else the measurement's at the same x values (an
    analyser may drop or sort points), else None."""
    if "sigma" in curves and np.shape(curves["sigma"]) == np.shape(y):
        return np.asarray(curves["sigma"], float)
    if measurement is None or "sigma" not in measurement.arrays or xname not in measurement.arrays:
        return None
    mx = np.asarray(measurement.arrays[xname], float)
    ms = np.asarray(measurement.arrays["sigma"], float)
    if mx.shape != ms.shape or mx.size == 0:
        return None
    order = np.argsort(mx, kind="stable")
    mx, ms = mx[order], ms[order]
    hi = np.clip(np.searchsorted(mx, x), 0, mx.size - 1)
    lo = np.clip(hi - 1, 0, mx.size - 1)
    idx = np.where(np.abs(mx[lo] - x) < np.abs(mx[hi] - x), lo, hi)  # the nearest measured point
    if not np.allclose(mx[idx], x, rtol=1e-9, atol=0):
        return None
    return ms[idx]


def plot_analysis(result: Any, out: Path, *, technique: Any = None, measurement: Measurement | None = None,
                  name: str | None = None) -> Path:
    """A PNG of one analysed measurement: the data with error bars (sigma), the analyser's fit curve (with its
    "component:<name>" parts), models it considered but did not choose ("candidate:<label>", dashed), positions
    it points out ("marker:<what>"), the residuals ((data − fit)/sigma, or relative without sigma) and every
    descriptor, untrusted ones in red.
    Axis labels and scales come from the technique's CurveAxes (sdl.analysis.curve_axes_for). `result` is an
    sdl.analysis.base.AnalysisResult; `name` titles the figure (default: the file name in metadata)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sdl.outcome import Shown

    curves = {k: np.asarray(v) for k, v in result.curves.items()}
    spec = _curve_spec(technique, curves)
    name = name or (Path(str(measurement.metadata.get("source"))).name if measurement is not None
                    and measurement.metadata.get("source") else "measurement")
    fig = plt.figure(figsize=(11.5, 6.6))
    grid = fig.add_gridspec(2, 2, width_ratios=(2.3, 1), height_ratios=(3, 1), hspace=0.06, wspace=0.04,
                            left=0.075, right=0.985, top=0.86, bottom=0.09)
    ax = fig.add_subplot(grid[0, 0])
    axr = fig.add_subplot(grid[1, 0], sharex=ax)
    axt = fig.add_subplot(grid[:, 1])
    axt.set_axis_off()

    if spec is not None and spec.x in curves and "intensity" in curves:
        x = np.asarray(curves[spec.x], float)
        y = np.asarray(curves["intensity"], float)
        fit = np.asarray(curves["fit"], float) if "fit" in curves and np.shape(curves["fit"]) == y.shape else None
        if fit is not None and not np.isfinite(fit).any():
            fit = None
        sigma = _sigma_for(x, y, curves, measurement, spec.x)
        show = np.isfinite(x) & np.isfinite(y)
        if spec.xscale == "log":
            show &= x > 0
        if spec.yscale == "log":
            show &= y > 0
        if sigma is not None:
            err = np.where(np.isfinite(sigma), sigma, 0.0)
            lower = np.minimum(err, 0.999 * y) if spec.yscale == "log" else err  # error bars stay above zero
            ax.errorbar(x[show], y[show], yerr=[lower[show], err[show]], fmt=".", ms=3, lw=0.6, color="0.3",
                        ecolor="0.75", label="measured ± σ", zorder=1)
        else:
            ax.plot(x[show], y[show], ".", ms=3, color="tab:gray", label="measured", zorder=1)

        def drawable(v: np.ndarray) -> np.ndarray:  # a model curve's points the y scale can show
            return np.isfinite(v) & ((v > 0) if spec.yscale == "log" else True)

        if fit is not None:
            ok = drawable(fit)
            ax.plot(x[ok], fit[ok], color="tab:red", lw=1.0, alpha=0.85, label=f"fit ({result.analyser})", zorder=2)
            if "background" in curves and np.shape(curves["background"]) == y.shape:
                ax.plot(x, curves["background"], color="tab:blue", lw=0.8, ls="--", label="background", zorder=2)
            # an analyser's parts of the fit ("component:<name>", e.g. one crystalline phase each)
            parts = [(k.partition(":")[2], v) for k, v in curves.items()
                     if k.startswith("component:") and np.shape(v) == y.shape]
            colours = ("tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
            for j, (label, v) in enumerate(parts):
                ax.plot(x, v, color=colours[j % len(colours)], lw=0.8, alpha=0.8, label=label, zorder=2)
        # a model the analyser considered but did not choose ("candidate:<label>"), e.g. the library shape
        # closest to a curve it calls "none of these"
        for k, v in curves.items():
            if k.startswith("candidate:") and np.shape(v) == y.shape:
                ok = drawable(v)
                ax.plot(x[ok], v[ok], color="tab:orange", lw=1.0, ls="--", label=k.partition(":")[2], zorder=2)
        # positions an analyser points out ("marker:<what>", x values), e.g. peaks no phase explains
        for k, v in curves.items():
            if k.startswith("marker:") and np.size(v):
                xs = np.atleast_1d(np.asarray(v, float))
                top = float(np.nanmax(y[show])) if np.any(show) else 1.0
                ax.plot(xs, np.full(xs.shape, 1.04 * top), "v", color="crimson", ms=7, label=k.partition(":")[2],
                        zorder=3)
                for xv in xs:
                    axr.axvline(xv, color="crimson", lw=0.7, alpha=0.6)
        if fit is not None:
            if sigma is not None and np.any(sigma > 0):
                r = np.where(sigma > 0, (y - fit) / np.where(sigma > 0, sigma, 1.0), np.nan)
                rlabel = "(data − fit)/σ"
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    r = (y - fit) / np.abs(fit)
                rlabel = "(data − fit)/fit"
            good = np.isfinite(r) & np.isfinite(x) & ((x > 0) if spec.xscale == "log" else True)
            axr.plot(x[good], r[good], ".", ms=2.5, color="tab:gray")
            axr.axhline(0, color="tab:red", lw=0.8)
            if rlabel.endswith("σ"):
                for v in (-3, 3):
                    axr.axhline(v, color="0.6", lw=0.6, ls=":")
            axr.set_ylabel(rlabel)
        else:
            axr.text(0.5, 0.5, "no fit curve from this analyser", ha="center", va="center", transform=axr.transAxes,
                     fontsize=9, color="0.4")
            axr.set_yticks([])
        ax.set(xscale=spec.xscale, yscale=spec.yscale, ylabel=spec.ylabel)
        axr.set_xscale(spec.xscale)
        axr.set_xlabel(spec.xlabel)
        ax.tick_params(labelbottom=False)
        ax.legend(fontsize=8, loc="best")
        ax.grid(True, which="major", alpha=0.25)
    else:
        _note(ax, f"{result.analyser} returned no curve to plot")
        axr.set_axis_off()

    # descriptors, one per line; untrusted ones (ood, fit_failed, *_suspect) in red
    shown = [Shown.of(d) for d in result.descriptors]
    lines = [(s.text(), not d.trusted) for s, d in zip(shown, result.descriptors)]
    lines += [(f"warning: {w}", True) for w in result.info.get("warnings", [])]
    y0 = 1.0
    axt.text(0.03, y0, f"descriptors ({result.analyser})", transform=axt.transAxes, va="top", fontsize=9,
             fontweight="bold")
    y0 -= 0.055
    for text, bad in lines:
        wrapped = textwrap.wrap(text, 44, subsequent_indent="    ") or [""]
        for part in wrapped:
            axt.text(0.03, y0, part, transform=axt.transAxes, va="top", fontsize=7.5,
                     color="tab:red" if bad else "black", family="monospace")
            y0 -= 0.034
        if y0 < 0.02:
            axt.text(0.03, y0, "…", transform=axt.transAxes, va="top", fontsize=8)
            break

    # title: file, the class descriptor with its probability, the main numbers
    cls = next((s for s in shown if isinstance(s.value, str)), None)
    numbers = [s for s in shown if not isinstance(s.value, str) and s.uncertainty is not None]
    head = [name]
    if cls is not None:
        head.append(f"{cls.name} = {cls.value_text(flags=False)}")
    sub = "   ".join(f"{s.name.split('.', 1)[-1]} = {s.value_text(flags=False)}" for s in numbers[:3])
    fig.text(0.075, 0.965, " — ".join(head), fontsize=11, fontweight="bold", va="top")
    if len(sub) > 150:
        sub = sub[:149] + "…"
    if sub:
        fig.text(0.075, 0.925, sub, fontsize=9, va="top")
    bad = [f"{s.name.split('.', 1)[-1]} [{', '.join(s.flags)}]" for s, d in zip(shown, result.descriptors) if not d.trusted]
    if bad:
        fig.text(0.075, 0.893, "untrusted: " + "; ".join(bad)[:125], fontsize=8.5, va="top", color="tab:red")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
