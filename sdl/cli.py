"""`sdl` command line: run | resume | status | report | export | approve | reject | add | validate |
analyse | drivers | train.

Imports of heavy libraries (Ax, torch, sasmodels) happen inside the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sdl.errors import SdlError

DEFAULT_STORE = "sqlite:///sdl.db"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SdlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; the campaign is stored and `sdl resume` continues it", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `sdl status | head`
        sys.stderr.close()
        return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdl", description="Self-driving laboratory: closed-loop campaigns over MQTT.")
    sub = p.add_subparsers(metavar="COMMAND")

    r = sub.add_parser("run", help="run a campaign file (dry run against its simulated lab by default)")
    r.add_argument("file")
    r.add_argument("--budget", type=int, help="maximum number of experiments")
    r.add_argument("--seed", type=int, help="strategy (and simulated world) seed")
    r.add_argument("--broker", help="MQTT broker URL, e.g. mqtt://127.0.0.1:1883 (default: embedded)")
    r.add_argument("--store", help="store URL, e.g. sqlite:///runs.db or postgresql://user@host/db")
    r.add_argument("--time-scale", type=float, help="real seconds per simulated instrument second")
    r.add_argument("--in-flight", type=int, help="samples in flight at once")
    r.add_argument("--external-lab", action="store_true", help="drivers already run on the broker (do not start the simulated lab)")
    r.add_argument("--lab-id", help="lab id, the topic segment sdl/<lab-id>/... (the drivers' --id)")
    r.add_argument("--quiet", action="store_true", help="no per-trial lines")
    r.set_defaults(func=cmd_run)

    rs = sub.add_parser("resume", help="continue a stopped or crashed campaign without repeating or losing a trial")
    rs.add_argument("campaign", nargs="?", help="campaign id or name, or the campaign's YAML file (default: latest)")
    rs.add_argument("--store")
    rs.add_argument("--broker")
    rs.add_argument("--budget", type=int, help="raise the experiment budget")
    rs.add_argument("--quiet", action="store_true")
    rs.set_defaults(func=cmd_resume)

    st = sub.add_parser("status", help="trials, descriptors and the best result")
    st.add_argument("campaign", nargs="?")
    st.add_argument("--store", default=DEFAULT_STORE)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    rp = sub.add_parser("report", help="PNG with the optimisation trace and the best sample's fitted curve")
    rp.add_argument("campaign", nargs="?")
    rp.add_argument("--store", default=DEFAULT_STORE)
    rp.add_argument("--out", help="PNG path (default: <campaign id>.png)")
    rp.set_defaults(func=cmd_report)

    ex = sub.add_parser("export", help="trials and descriptors as CSV, measurements as column files")
    ex.add_argument("campaign", nargs="?")
    ex.add_argument("--store", default=DEFAULT_STORE)
    ex.add_argument("--out", help="folder (default: export-<campaign id>)")
    ex.set_defaults(func=cmd_export)

    for name, text in (("approve", "let proposed trials run (campaigns with strategy.require_approval)"),
                       ("reject", "fail proposed trials with a reason; the strategy learns they are unwanted")):
        ap = sub.add_parser(name, help=text)
        ap.add_argument("campaign", help="campaign id or name")
        ap.add_argument("trials", nargs="*", type=int, help="trial indices (approve: default all waiting)")
        ap.add_argument("--store", default=DEFAULT_STORE)
        if name == "reject":
            ap.add_argument("--reason", required=True, help="why; stored with the trial")
        ap.set_defaults(func=cmd_review, approve=name == "approve", reason=None)

    ad = sub.add_parser("add", help="add an experiment made by hand, with its measured result, to a campaign")
    ad.add_argument("campaign", help="campaign id or name")
    ad.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="one per parameter")
    ad.add_argument("--measurement", metavar="FILE", help="data file, analysed with the campaign's analysers")
    ad.add_argument("--step", help="the measuring step the file belongs to (default: the first)")
    ad.add_argument("--descriptor", action="append", default=[], metavar="NAME=VALUE[+-SEM]",
                    help="a result measured elsewhere, e.g. saxs.radius_nm=8.1+-0.2")
    ad.add_argument("--note", help="free text stored with the trial")
    ad.add_argument("--store", default=DEFAULT_STORE)
    ad.set_defaults(func=cmd_add)

    v = sub.add_parser("validate", help="check a campaign file")
    v.add_argument("file")
    v.set_defaults(func=cmd_validate)

    a = sub.add_parser("analyse", aliases=["analyze"], help="analyse measured data files (no campaign needed)")
    a.add_argument("technique", help="e.g. saxs")
    a.add_argument("path", help="a data file or a folder of them")
    a.add_argument("--analyser", help="analyser name (default: the technique's default)")
    a.add_argument("--q-unit", choices=["angstrom", "nm"], help="q unit when the file header does not say")
    a.add_argument("--json", action="store_true", help="one JSON record per file")
    a.set_defaults(func=cmd_analyse)

    d = sub.add_parser("drivers", help="simulated-lab drivers as a separate process")
    dsub = d.add_subparsers(metavar="ACTION")
    ds = dsub.add_parser("start", help="start a simulated lab's drivers and serve until Ctrl-C")
    ds.add_argument("--lab", required=True, help="simulated world, e.g. nanoparticles")
    ds.add_argument("--id", default="lab", help="lab id (topic segment; the campaign's lab.id)")
    ds.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    ds.add_argument("--seed", type=int, default=0)
    ds.add_argument("--time-scale", type=float, default=0.0)
    ds.set_defaults(func=cmd_drivers_start)
    dl = dsub.add_parser("list", help="simulated labs available")
    dl.set_defaults(func=cmd_drivers_list)

    t = sub.add_parser("train", help="train a technique's ML analysers (e.g. `sdl train saxs --help`)")
    t.add_argument("technique")
    t.add_argument("rest", nargs=argparse.REMAINDER)
    t.set_defaults(func=cmd_train)
    return p


# ----- campaign commands -----------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from sdl.config import load_campaign

    overrides: dict[str, Any] = {
        "budget.max_experiments": args.budget, "strategy.seed": args.seed, "broker": args.broker,
        "store": args.store, "lab.time_scale": args.time_scale, "strategy.max_in_flight": args.in_flight,
        "lab.id": args.lab_id,
    }
    campaign = load_campaign(args.file, **overrides)
    if args.external_lab:
        campaign = campaign.model_copy(update={"lab": campaign.lab.model_copy(update={"world": None})})
    return _run(campaign, None, args.quiet)


def cmd_resume(args: argparse.Namespace) -> int:
    from sdl.config import Campaign, load_campaign
    from sdl.store import Store

    ref, store_url = args.campaign, args.store
    if ref and Path(ref).suffix in (".yaml", ".yml", ".json") and Path(ref).exists():
        from_file = load_campaign(ref)
        ref, store_url = from_file.name, store_url or from_file.store
    store = Store(store_url or DEFAULT_STORE)
    row = store.find_campaign(ref)
    if row.status == "finished" and not args.budget:
        print(f"campaign {row.id} already finished ({row.stop_reason}); use --budget N to extend it")
        return 0
    campaign = Campaign.model_validate_json(row.config_json)
    update: dict[str, Any] = {}
    if args.broker:
        update["broker"] = args.broker
    if args.budget:
        update["budget"] = campaign.budget.model_copy(update={"max_experiments": args.budget})
    campaign = campaign.model_copy(update=update)
    return _run(campaign, row.id, args.quiet, store)


def _run(campaign, campaign_id: str | None, quiet: bool, store=None) -> int:
    from sdl.orchestrator import run_campaign
    from sdl.store import Store

    store = store or Store(campaign.store)
    reporter = ConsoleReporter(quiet=quiet)
    summary = run_campaign(campaign, store=store, campaign_id=campaign_id, reporter=reporter)
    return 0 if summary.status == "finished" else 3


class ConsoleReporter:
    """A progress bar over the experiment budget and one line per finished trial."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar = None

    def started(self, campaign_id: str, campaign, done: int) -> None:
        from tqdm import tqdm

        self.campaign = campaign
        print(f"campaign {campaign_id}: {campaign.description.strip() or campaign.name}")
        self.bar = tqdm(total=campaign.budget.max_experiments, initial=done, unit="exp", dynamic_ncols=True,
                        desc=campaign.name, file=sys.stderr)

    def trial_finished(self, trial, evaluation, descriptors) -> None:
        if self.bar is not None:
            self.bar.update(1)
        if self.quiet:
            return
        params = " ".join(f"{k}={_fmt(v)}" for k, v in trial.parameters.items())
        wanted = self.campaign.descriptors_needed()
        desc = " ".join(_fmt_descriptor(d) for d in descriptors if d.name in wanted)
        if trial.status == "failed":
            line = f"trial {trial.index:3d} FAILED  {params}\n            {trial.failure}"
        else:
            mark = "  <- target met" if trial.target_met else ""
            if evaluation is not None and evaluation.missing:
                mark += f"  (not produced: {', '.join(evaluation.missing)})"
            line = f"trial {trial.index:3d} {params}\n            {desc}  score={trial.score:.3g}{mark}"
        self._write(line)

    def message(self, level: str, text: str) -> None:
        self._write(f"{level}: {text}")

    def finished(self, summary) -> None:
        if self.bar is not None:
            self.bar.close()
        t = summary.timings_s
        print(f"\n{summary.status}: {summary.stop_reason}")
        print(f"  trials {summary.n_trials} (completed {summary.n_completed}, failed {summary.n_failed})")
        if summary.target_met_at:
            print(f"  target first met after {summary.target_met_at} experiments")
        if summary.best_trial is not None:
            print(f"  best trial: {summary.best_trial}")
        print("  time: strategy {:.1f} s, analysis {:.1f} s, instruments {:.1f} s".format(
            t.get("strategy_s", 0), t.get("analysis_s", 0), t.get("instrument_wall_s", 0)))
        if summary.makespan_s:
            clock = "simulated" if summary.clock == "instrument" else "wall-clock"
            busy = ", ".join(f"{k} {u:.0%}" for k, u in sorted(summary.utilisation.items()))
            span = f"{summary.makespan_s / 3600:.2f} h" if summary.makespan_s >= 3600 else f"{summary.makespan_s:.3g} s"
            print(f"  makespan {span} ({clock}); instrument utilisation: {busy}")
        print(f"  see `sdl status {summary.campaign_id}`, `sdl report {summary.campaign_id}`")

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _fmt_descriptor(d) -> str:
    short = d.name.split(".", 1)[-1]
    if isinstance(d.value, str):
        p = (d.probabilities or {}).get(d.value)
        return f"{short}={d.value}" + (f"({p:.2f})" if p is not None else "")
    unc = f"±{d.uncertainty:.2g}" if d.uncertainty is not None else ""
    flags = f"[{','.join(d.flags)}]" if d.flags else ""
    return f"{short}={d.value:.4g}{unc}{flags}"


# ----- reading a campaign back -------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from sdl.report import campaign_record

    from sdl.store import Store

    store = Store(args.store)
    rec = campaign_record(store, store.find_campaign(args.campaign).id)
    if args.json:
        print(json.dumps(rec, indent=2, default=str))
        return 0
    c = rec["campaign"]
    print(f"campaign {c['id']} ({c['status']}{': ' + c['stop_reason'] if c['stop_reason'] else ''})")
    print(f"  trials {rec['counts']}")
    for t in rec["trials"]:
        desc = " ".join(f"{k.split('.', 1)[-1]}={_fmt(v['value'])}" for k, v in t["descriptors"].items()
                        if k in rec["wanted"])
        extra = t["failure"] or desc
        mark = " *" if t["target_met"] else ""
        print(f"  {t['index']:3d} {t['status']:9s} {extra}{mark}")
    if rec["best"]:
        b = rec["best"]
        print(f"best: trial {b['index']} {b['parameters']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from sdl.report import write_report
    from sdl.store import Store

    store = Store(args.store)
    cid = store.find_campaign(args.campaign).id
    out = write_report(store, cid, Path(args.out or f"{cid}.png"))
    print(f"wrote {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sdl.report import export
    from sdl.store import Store

    store = Store(args.store)
    cid = store.find_campaign(args.campaign).id
    out = export(store, cid, Path(args.out or f"export-{cid}"))
    print(f"wrote {out}/ (trials.csv, descriptors.csv, events.csv, campaign.json, measurements/)")
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from sdl.store import Store

    store = Store(args.store)
    cid = store.find_campaign(args.campaign).id
    done = store.review_trials(cid, args.trials or None, approve=args.approve, reason=args.reason)
    verb = "approved" if args.approve else "rejected"
    print(f"campaign {cid}: {verb} trial(s) {done}" if done else f"campaign {cid}: no trial waits for approval")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from sdl.config import Campaign
    from sdl.errors import ConfigError
    from sdl.manual import parse_descriptor, submit
    from sdl.store import Store

    store = Store(args.store)
    row = store.find_campaign(args.campaign)
    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--param {item!r}: write NAME=VALUE")
        params[name.strip()] = value.strip()
    req = submit(store, row.id, Campaign.model_validate_json(row.config_json), params,
                 measurement=args.measurement, step=args.step,
                 descriptors=[parse_descriptor(d) for d in args.descriptor], note=args.note)
    met = "meets the target" if req.target_met else f"score {req.score:.3g}"
    when = "the running campaign attaches it within a second" if row.status == "running" else \
        f"`sdl resume {row.id}` attaches it"
    print(f"manual experiment {req.id} queued ({met}); {when}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from sdl.config import load_campaign
    from sdl.strategy import ACQUISITIONS, acquisition_kind

    c = load_campaign(args.file)
    print(f"{args.file}: valid campaign {c.name!r}: {len(c.parameters)} parameters, {len(c.workflow)} steps, "
          f"{len(c.objectives)} objective(s), {len(c.constraints)} constraint(s), budget {c.budget.max_experiments}")
    chooser = {"sobol": "Sobol sampling (baseline)", "ax_default": "Ax's default generation strategy (baseline)"}
    print(f"  next experiment: {chooser.get(c.strategy.kind) or ACQUISITIONS[acquisition_kind(c)]}"
          + (f" after {c.strategy.initial_trials} start trials" if c.strategy.kind == "bayesian" else ""))
    return 0


# ----- analysis, drivers, training ---------------------------------------------------------------------


def cmd_analyse(args: argparse.Namespace) -> int:
    from sdl import analysis
    from sdl.errors import AnalysisError
    from sdl.measurement import PLAIN_SUFFIXES

    if args.technique not in analysis.READERS:
        raise AnalysisError(f"no file reader for technique {args.technique!r}; known: {sorted(analysis.READERS)}")
    reader = analysis.load(analysis.READERS[args.technique])
    path = Path(args.path)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.suffix.lower() in PLAIN_SUFFIXES)
        if not files:
            raise AnalysisError(f"no data files ({', '.join(sorted(PLAIN_SUFFIXES))}) in {path}")
    elif path.exists():
        files = [path]
    else:
        raise AnalysisError(f"no such file or folder: {path}")
    analyser = analysis.get(args.technique, args.analyser)
    options = {"q_unit": args.q_unit} if args.q_unit else {}
    failures = 0
    for f in files:
        try:
            result = analyser.analyse(reader(f, **options))
            record = {"file": str(f), "analyser": result.analyser,
                      "descriptors": {d.name: d.model_dump(exclude={"name"}, exclude_none=True) for d in result.descriptors},
                      "info": result.info}
        except AnalysisError as exc:
            failures += 1
            record = {"file": str(f), "error": str(exc)}
        if args.json:
            print(json.dumps(record, default=str))
        elif "error" in record:
            print(f"{f}: error: {record['error']}")
        else:
            print(f"{f}:")
            for d in result.descriptors:
                print(f"  {_fmt_descriptor(d)}" + (f" {d.unit}" if d.unit else ""))
    return 1 if failures == len(files) else 0


def cmd_drivers_start(args: argparse.Namespace) -> int:
    from importlib.metadata import entry_points

    from sdl.errors import ConfigError

    eps = {ep.name: ep for ep in entry_points(group="sdl.labs")}
    if args.lab not in eps:
        raise ConfigError(f"unknown simulated lab {args.lab!r}; known: {sorted(eps)}")
    module = eps[args.lab].module
    run_lab = getattr(__import__(module, fromlist=["run_lab"]), "run_lab")
    print(f"serving simulated lab {args.lab!r} as sdl/{args.id}/... on {args.broker} (Ctrl-C stops)")
    run_lab(args.lab, args.id, args.broker, seed=args.seed, time_scale=args.time_scale)
    return 0


def cmd_drivers_list(args: argparse.Namespace) -> int:
    from importlib.metadata import entry_points

    for ep in entry_points(group="sdl.labs"):
        print(f"{ep.name}  ({ep.value})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from sdl import analysis
    from sdl.errors import AnalysisError

    if args.technique not in analysis.TRAINERS:
        raise AnalysisError(f"no trainer for technique {args.technique!r}; known: {sorted(analysis.TRAINERS)}")
    return int(analysis.load(analysis.TRAINERS[args.technique])(args.rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
