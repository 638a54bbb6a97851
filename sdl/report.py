"""Reading a campaign back for people: a status record (JSON-able), a PNG report, and exports
(CSV for trials and descriptors, plain column files for measurements)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from sdl.config import Campaign
from sdl.measurement import Measurement, write_columns
from sdl.store import Store, unpack_arrays


def campaign_record(store: Store, campaign_id: str) -> dict[str, Any]:
    """Everything `sdl status --json` prints: campaign, counts, trials with descriptors, best trial."""
    row = store.find_campaign(campaign_id)
    campaign = Campaign.model_validate_json(row.config_json)
    trials = store.trials(campaign_id)
    descriptors: dict[int, dict[str, Any]] = {}
    for d in store.descriptors(campaign_id):
        descriptors.setdefault(d.trial_index, {}).setdefault(d.name, {
            "value": d.value_str if d.value_str is not None else d.value_num, "uncertainty": d.uncertainty,
            "unit": d.unit, "flags": json.loads(d.flags_json), "analyser": d.analyser,
            **({"probabilities": json.loads(d.probabilities_json)} if d.probabilities_json else {}),
        })
    records = [{
        "index": t.index, "status": t.status, "sample_id": t.sample_id, "parameters": t.parameters,
        "objectives": t.objectives, "score": t.score, "target_met": t.target_met, "failure": t.failure,
        "descriptors": descriptors.get(t.index, {}),
    } for t in trials]
    done = [r for r in records if r["status"] == "completed" and r["score"] is not None]
    best = min(done, key=lambda r: r["score"], default=None)
    counts = {s: sum(r["status"] == s for r in records) for s in ("completed", "failed", "running", "measured")}
    return {
        "campaign": {"id": row.id, "name": row.name, "status": row.status, "stop_reason": row.stop_reason,
                     "created_at": row.created_at, "updated_at": row.updated_at},
        "counts": {k: v for k, v in counts.items() if v},
        "wanted": sorted(campaign.descriptors_needed()),
        "target_met_at": next((i + 1 for i, r in enumerate(records) if r["target_met"]), None),
        "best": best,
        "trials": records,
    }


def write_report(store: Store, campaign_id: str, out: Path) -> Path:
    """Optimisation trace (score per experiment, best so far, each target descriptor with its band)
    and the best trial's measured curve with the analyser's fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = campaign_record(store, campaign_id)
    campaign = Campaign.model_validate_json(store.find_campaign(campaign_id).config_json)
    targets = [o for o in campaign.objectives if o.goal == "target"]
    n_panels = 2 + len(targets)
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 4.2))
    trials = rec["trials"]
    x = np.arange(1, len(trials) + 1)

    ax = axes[0]
    score = np.array([t["score"] if t["score"] is not None else np.nan for t in trials], dtype=float)
    failed = np.array([t["status"] == "failed" for t in trials])
    ax.plot(x[~failed], np.maximum(score[~failed], 1e-3), "o", color="tab:blue", label="trial")
    if failed.any():  # failed trials have no score: mark them along the bottom edge
        ax.plot(x[failed], np.full(failed.sum(), 0.03), "x", color="tab:red", label="failed",
                transform=ax.get_xaxis_transform(), clip_on=False)
    best = np.fmin.accumulate(np.where(np.isnan(score), np.inf, score))
    ax.step(x, np.where(np.isinf(best), np.nan, np.maximum(best, 1e-3)), where="post", color="k", label="best so far")
    met = [i + 1 for i, t in enumerate(trials) if t["target_met"]]
    if met:
        ax.axvline(met[0], color="tab:green", ls="--", label=f"target met (exp. {met[0]})")
    ax.set(xlabel="experiment", ylabel="score (lower is better)", title="optimisation trace")
    ax.set_yscale("log")
    ax.legend(fontsize=8)

    for ax, o in zip(axes[1:], targets):
        vals = [t["descriptors"].get(o.descriptor, {}) for t in trials]
        y = np.array([v.get("value", np.nan) if not isinstance(v.get("value"), str) else np.nan for v in vals], float)
        e = np.array([v.get("uncertainty") or 0.0 for v in vals], float)
        ax.errorbar(x, y, yerr=e, fmt="o", ms=4, color="tab:blue")
        ax.axhspan(o.value - o.tolerance, o.value + o.tolerance, color="tab:green", alpha=0.2, label="target")
        ax.set(xlabel="experiment", ylabel=o.descriptor, title=f"{o.descriptor} vs target")
        ax.legend(fontsize=8)

    ax = axes[-1]
    b = rec["best"]
    shown = False
    if b is not None:
        for a in store.analyses(campaign_id, b["index"]):
            curves = unpack_arrays(a.curves)
            q = curves.get("q_inv_angstrom")
            if q is None:
                continue
            ax.errorbar(q, curves["intensity"], fmt=".", ms=3, color="tab:gray", label="measured")
            if "fit" in curves:
                ax.plot(q, curves["fit"], color="tab:red", label=f"fit ({a.analyser})")
            ax.set(xscale="log", yscale="log", xlabel="q (Å⁻¹)", ylabel="I (cm⁻¹)")
            model = b["descriptors"].get("saxs.model", {}).get("value", "")
            r = b["descriptors"].get("saxs.radius_nm", {})
            label = f"best trial {b['index']}: {model}"
            if r:
                label += f", R = {r['value']:.3g} ± {r.get('uncertainty') or 0:.2g} nm"
            ax.set_title(label, fontsize=9)
            ax.legend(fontsize=8)
            shown = True
            break
    if not shown:
        ax.text(0.5, 0.5, "no analysed trial yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    fig.suptitle(f"{campaign_id} — {rec['campaign']['status']}", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def export(store: Store, campaign_id: str, out: Path) -> Path:
    """trials.csv, descriptors.csv, events.csv, campaign.json and measurements/<trial>_<step>.dat."""
    rec = campaign_record(store, campaign_id)
    out.mkdir(parents=True, exist_ok=True)
    trials = rec["trials"]
    pnames = sorted({k for t in trials for k in t["parameters"]})
    mnames = sorted({k for t in trials for k in t["objectives"]})
    with open(out / "trials.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "status", "sample_id", *pnames, *mnames, "score", "target_met", "failure"])
        for t in trials:
            w.writerow([t["index"], t["status"], t["sample_id"], *[t["parameters"].get(p) for p in pnames],
                        *[t["objectives"].get(m, [None])[0] for m in mnames], t["score"], t["target_met"],
                        t["failure"] or ""])
    with open(out / "descriptors.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "name", "value", "uncertainty", "unit", "flags", "analyser"])
        for d in store.descriptors(campaign_id):
            w.writerow([d.trial_index, d.name, d.value_str if d.value_str is not None else d.value_num,
                        d.uncertainty, d.unit, ";".join(json.loads(d.flags_json)), d.analyser])
    with open(out / "events.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["at", "trial", "level", "kind", "message"])
        for e in store.events(campaign_id):
            w.writerow([e.at.isoformat(), e.trial_index, e.level, e.kind, e.message])
    (out / "campaign.json").write_text(json.dumps(rec["campaign"] | {
        "config": json.loads(store.find_campaign(campaign_id).config_json)}, indent=2, default=str))
    mdir = out / "measurements"
    mdir.mkdir(exist_ok=True)
    for m in store.measurements(campaign_id):
        meas = Measurement(technique=m.technique, arrays=unpack_arrays(m.arrays), metadata=json.loads(m.metadata_json))
        write_columns(mdir / f"trial{m.trial_index:04d}_{m.step}.dat", meas)
    return out
