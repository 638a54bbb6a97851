"""`sdl` command line: run | resume | status | report | export | approve | reject | add | validate |
acl | schema | analyse | drivers | train.

Imports of heavy libraries (Ax, torch, sasmodels) happen inside the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sdl.errors import SdlError

DEFAULT_STORE = "sqlite:///sdl.db"  # = sdl.store.DEFAULT_STORE, not imported so that `sdl --help` stays light
LATEST = "campaign id or name (default: the latest campaign that has trials)"

# `sdl run` options -> the campaign fields they override (errors name the option, not the field)
RUN_OVERRIDES = {"budget": "budget.max_experiments", "seed": "strategy.seed", "broker": "broker", "store": "store",
                 "time_scale": "lab.time_scale", "in_flight": "strategy.max_in_flight", "lab_id": "lab.id"}
# broker options of `sdl run`, `sdl resume` and `sdl drivers start` -> campaign fields (and URL options)
BROKER_OVERRIDES = {"broker_credentials": "broker_credentials", "tls_ca_file": "broker_tls.ca_file",
                    "tls_cert_file": "broker_tls.cert_file", "tls_key_file": "broker_tls.key_file",
                    "tls_insecure": "broker_tls.insecure"}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SdlError as exc:
        from sdl.broker import redact_url

        print(f"error: {redact_url(str(exc))}", file=sys.stderr)  # no URL's password, whoever wrote the message
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; the campaign is stored and `sdl resume` continues it", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `sdl status | head`
        sys.stderr.close()
        return 0


def _broker_options(p: argparse.ArgumentParser) -> None:
    """--broker-credentials and the TLS options (campaign fields broker_credentials, broker_tls)."""
    g = p.add_argument_group("broker login and TLS (passwords never on the command line: use SDL_BROKER_USERNAME "
                             "and SDL_BROKER_PASSWORD, or a credentials file)")
    g.add_argument("--broker-credentials", metavar="PATH",
                   help="file with `username: NAME` and `password: SECRET` lines (chmod 600)")
    g.add_argument("--tls-ca-file", metavar="PATH", help="CA certificate (PEM) that signed the broker's (mqtts://)")
    g.add_argument("--tls-cert-file", metavar="PATH", help="client certificate (PEM), for a broker that asks for one")
    g.add_argument("--tls-key-file", metavar="PATH", help="the client certificate's private key (PEM)")
    g.add_argument("--tls-insecure", action="store_true", default=None,
                   help="do not check the broker certificate's host name (tests only)")


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
    _broker_options(r)
    r.set_defaults(func=cmd_run)

    rs = sub.add_parser("resume", help="continue a stopped or crashed campaign without repeating or losing a trial")
    rs.add_argument("campaign", nargs="?",
                    help="campaign id or name, or the campaign's YAML file (default: the latest that has trials)")
    rs.add_argument("--store")
    rs.add_argument("--broker")
    rs.add_argument("--budget", type=int, help="raise the experiment budget")
    rs.add_argument("--quiet", action="store_true")
    _broker_options(rs)
    rs.set_defaults(func=cmd_resume)

    st = sub.add_parser("status", help="trials, descriptors and the best result")
    st.add_argument("campaign", nargs="?", help=LATEST)
    st.add_argument("--store", default=DEFAULT_STORE)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    rp = sub.add_parser("report", help="PNG with the optimisation trace and the best sample's fitted curve")
    rp.add_argument("campaign", nargs="?", help=LATEST)
    rp.add_argument("--store", default=DEFAULT_STORE)
    rp.add_argument("--out", help="PNG path (default: <campaign id>.png)")
    rp.set_defaults(func=cmd_report)

    ex = sub.add_parser("export", help="trials and descriptors as CSV, measurements as column files")
    ex.add_argument("campaign", nargs="?", help=LATEST)
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

    acl = sub.add_parser("acl", help="print a Mosquitto acl_file for a lab (docs/security.md)")
    acl.add_argument("file", nargs="?", help="campaign file: its lab.id and the instruments of its workflow")
    acl.add_argument("--lab-id", help="lab id (default: the campaign's lab.id)")
    acl.add_argument("--instrument", action="append", default=[], metavar="NAME",
                     help="an instrument of the lab, once per instrument (default: the campaign's)")
    acl.add_argument("--orchestrator-user", metavar="USER", help="the orchestrator's broker user "
                     "(default sdl-<lab>-orchestrator)")
    acl.add_argument("--driver-user", default="sdl-{lab}-{instrument}", metavar="PATTERN",
                     help="each driver's broker user, with {lab} and {instrument} (default %(default)s)")
    acl.set_defaults(func=cmd_acl)

    sc = sub.add_parser("schema", help="print the JSON Schema of campaign files (editor completion and checking)")
    sc.add_argument("--out", metavar="FILE", help="write it to FILE instead of printing it")
    sc.set_defaults(func=cmd_schema)

    a = sub.add_parser("analyse", aliases=["analyze"], add_help=False,
                       help="analyse measured data files (no campaign needed); `sdl analyse TECHNIQUE --help`")
    a.add_argument("technique", nargs="?", help="a registered technique (`sdl analyse --help` lists them)")
    a.add_argument("rest", nargs=argparse.REMAINDER)
    a.add_argument("-h", "--help", action="store_true", dest="show_help", help="list the techniques")
    a.set_defaults(func=cmd_analyse, parser=a)

    d = sub.add_parser("drivers", help="simulated-lab drivers as a separate process")
    dsub = d.add_subparsers(metavar="ACTION")
    ds = dsub.add_parser("start", help="start a simulated lab's drivers and serve until Ctrl-C")
    ds.add_argument("--lab", required=True, help="simulated world, e.g. nanoparticles")
    ds.add_argument("--id", default="lab", help="lab id (topic segment; the campaign's lab.id)")
    ds.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    ds.add_argument("--seed", type=int, default=0)
    ds.add_argument("--time-scale", type=float, default=0.0)
    _broker_options(ds)
    ds.set_defaults(func=cmd_drivers_start)
    dl = dsub.add_parser("list", help="simulated labs available")
    dl.set_defaults(func=cmd_drivers_list)

    t = sub.add_parser("train", add_help=False,
                       help="train a technique's ML analyser (`sdl train TECHNIQUE --help` shows its options)")
    t.add_argument("technique", nargs="?", help="a registered technique")
    t.add_argument("rest", nargs=argparse.REMAINDER)
    t.add_argument("-h", "--help", action="store_true", dest="show_help", help="list the techniques")
    t.set_defaults(func=cmd_train, parser=t)
    return p


# ----- campaign commands -----------------------------------------------------------------------------


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def store_option(url: str) -> str:
    """The ` --store URL` a printed command needs (sdl.store.store_option)."""
    from sdl.store import store_option as option

    return option(url)


def cmd_run(args: argparse.Namespace) -> int:
    from sdl.config import load_campaign
    from sdl.errors import ConfigError

    given = RUN_OVERRIDES | BROKER_OVERRIDES
    overrides = {field: getattr(args, dest) for dest, field in given.items()}
    labels = {field: _flag(dest) for dest, field in given.items()}
    campaign = load_campaign(args.file, labels=labels, **overrides)
    world_hint = None
    if args.external_lab:
        if not campaign.broker:
            raise ConfigError(
                "--external-lab: drivers running elsewhere need a broker they can reach, but without --broker "
                f"(or `broker:` in {args.file}) sdl starts an embedded broker only this process can use; give "
                "--broker mqtt://HOST:PORT, e.g. --broker mqtt://127.0.0.1:1883 with Mosquitto running there")
        world_hint = campaign.lab.world  # for the hint to start its drivers; the run itself starts none
        campaign = campaign.model_copy(update={"lab": campaign.lab.model_copy(update={"world": None})})
    return _run(campaign, None, args.quiet, world_hint=world_hint)


def _find(store, ref: str | None):
    """The campaign `ref` names (Store.find_campaign: without one, the latest that has trials);
    says on stderr which newer campaigns without trials were passed over."""
    row = store.find_campaign(ref)
    if ref is None or row.id != ref:
        skipped = store.newer_without_trials(row.id) if store.trials(row.id) else []
        skipped = [c for c in skipped if ref is None or c.name == ref]
        if skipped:
            what = ", ".join(f"{c.id} ({c.status}{': ' + c.stop_reason if c.stop_reason else ''})" for c in skipped[:3])
            print(f"note: campaign {row.id} is the latest with trials; newer without any: {what}"
                  + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""), file=sys.stderr)
    return row


def cmd_resume(args: argparse.Namespace) -> int:
    from sdl.config import load_campaign
    from sdl.store import Store

    ref, store_url = args.campaign, args.store
    if ref and Path(ref).suffix in (".yaml", ".yml", ".json") and Path(ref).exists():
        from_file = load_campaign(ref)
        ref, store_url = from_file.name, store_url or from_file.store
    store = Store(store_url or DEFAULT_STORE)
    row = _find(store, ref)
    if row.status == "finished" and args.budget is None:
        print(f"campaign {row.id} already finished ({row.stop_reason}); extend it with "
              f"`sdl resume {row.id} --budget N{store_option(store.url)}`")
        return 0
    given = {"budget": "budget.max_experiments", "broker": "broker"} | BROKER_OVERRIDES
    campaign = load_campaign(json.loads(row.config_json), labels={field: _flag(dest) for dest, field in given.items()},
                             origin=f"campaign {row.id}",
                             **{field: getattr(args, dest) for dest, field in given.items()})
    return _run(campaign, row.id, args.quiet, store)


def _run(campaign, campaign_id: str | None, quiet: bool, store=None, world_hint: str | None = None) -> int:
    from sdl.runner import run_campaign
    from sdl.runner.console import ConsoleReporter
    from sdl.store import Store

    store = store or Store(campaign.store)
    reporter = ConsoleReporter(quiet=quiet, store_url=store.url)
    try:
        summary = run_campaign(campaign, store=store, campaign_id=campaign_id, subscribers=[reporter],
                               world_hint=world_hint)
    except BaseException:
        if reporter.bar is not None:  # closed before the error is printed, not after it at exit
            reporter.bar.close()
        raise
    finally:
        store.close()  # releases what the run holds of the store (its lease, a deleted file's handles)
    return 0 if summary.status == "finished" else 3


# ----- reading a campaign back -------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from sdl.config import Campaign
    from sdl.outcome import by_trial, needed, outcome, trial_verdict
    from sdl.report import campaign_record
    from sdl.store import Store

    store = Store(args.store)  # an SQLite file this process may not write is opened read-only
    row = _find(store, args.campaign)
    rec = campaign_record(store, row.id)
    holder = store.orchestrator(row.id)
    rec["campaign"]["orchestrator"] = ({"pid": holder.pid, "host": holder.host, "since": holder.since}
                                       if holder else None)
    messages = [e.message for e in store.events(row.id) if e.kind == "lab_messages"]
    rec["campaign"]["lab_messages"] = messages[-1] if messages else None  # as of the latest run's start
    if args.json:
        print(json.dumps(rec, indent=2, default=str))
        return 0
    campaign = Campaign.model_validate_json(row.config_json)
    c = rec["campaign"]
    if holder:  # whatever the stored status says: a resumed run may not have marked it running yet
        state = f"running: {holder.text()}"
    elif c["status"] == "running":  # its orchestrator ended without saying so (killed, machine down)
        state = f"stopped: no orchestrator; `sdl resume {row.id}{store_option(store.url)}` continues it"
    else:
        state = c["status"] + (": " + c["stop_reason"] if c["stop_reason"] else "")
    print(f"campaign {c['id']} ({state})")
    if c["lab_messages"]:
        print(f"  lab messages {c['lab_messages']}")
    if not rec["trials"]:
        print("  no trials")
        return 0
    print("  trials: " + ", ".join(f"{n} {s}" for s, n in rec["counts"].items()))
    rows = store.descriptors(row.id)
    measured = by_trial(rows)
    wanted = needed(campaign)
    print("  trial status    descriptors the evaluation used; score (lower is better) and what it met or missed")
    for t in rec["trials"]:
        m = measured.get(t["index"], {})
        desc = " ".join(m[n].short() for n in wanted if n in m)
        verdict = trial_verdict(campaign, m, status=t["status"], score=t["score"], target_met=t["target_met"],
                                failure=t["failure"])
        manual = " (manual)" if t["manual"] else ""
        print(f"  {t['index']:5d} {t['status']:9s} " + (f"{desc}  {verdict}" if t["status"] == "completed"
                                                        else verdict + (f"  {desc}" if desc else "")) + manual)
    print()
    for line in outcome(campaign, store.trials(row.id), rows).lines():
        print(f"  {line}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from sdl.report import write_report
    from sdl.store import Store

    store = Store(args.store)
    cid = _find(store, args.campaign).id
    out = write_report(store, cid, Path(args.out or f"{cid}.png"))
    print(f"wrote {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sdl.report import export
    from sdl.store import Store

    store = Store(args.store)
    row = _find(store, args.campaign)
    out = export(store, row.id, Path(args.out or f"export-{row.id}"))
    print(f"wrote {out}/ (trials.csv, descriptors.csv, events.csv, campaign.json, measurements/)")
    if not store.trials(row.id):
        why = f" ({row.status}: {row.stop_reason})" if row.stop_reason else ""
        print(f"campaign {row.id} has no trials{why}: only its events and configuration have content")
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
    from sdl.outcome import SCORE_WORDS, fmt_number

    met = "meets the target" if req.target_met else f"target not met: score {fmt_number(req.score, 3)}, {SCORE_WORDS}"
    when = "the running campaign attaches it within a second" if row.status == "running" else \
        f"`sdl resume {row.id}{store_option(store.url)}` attaches it"
    print(f"manual experiment {req.id} queued ({met}); {when}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from sdl.analysis.chain import chain_for
    from sdl.config import load_campaign
    from sdl.preflight import check
    from sdl.strategy import ACQUISITIONS, acquisition_kind

    c = load_campaign(args.file)
    check(c, origin=args.file)  # what `sdl run` checks before it stores anything
    print(f"{args.file}: valid campaign {c.name!r}: {len(c.parameters)} parameters, {len(c.workflow)} steps, "
          f"{len(c.objectives)} objective(s), {len(c.constraints)} constraint(s), budget {c.budget.max_experiments}")
    chooser = {"sobol": "Sobol sampling (baseline)", "ax_default": "Ax's default generation strategy (baseline)"}
    print(f"  next experiment: {chooser.get(c.strategy.kind) or ACQUISITIONS[acquisition_kind(c)]}"
          + (f" after {c.strategy.initial_trials} start trials" if c.strategy.kind == "bayesian" else ""))
    chains = "; ".join(f"{s.technique}: {', '.join(chain_for(c, s.technique))}"
                       for s in {s.technique: s for s in c.measuring_steps()}.values())
    print(f"  descriptors: every objective and constraint reads one its technique declares (analysers {chains})")
    from sdl.preflight import lab_notes

    for line in lab_notes(c):
        print(f"  {line}")
    return 0


def cmd_acl(args: argparse.Namespace) -> int:
    """`sdl acl`: the Mosquitto acl_file of a lab (sdl.runner.lab.mosquitto_acl) on stdout."""
    from sdl.errors import ConfigError
    from sdl.runner.lab import mosquitto_acl

    lab, instruments = args.lab_id, list(args.instrument)
    if args.file:
        from sdl.config import load_campaign

        campaign = load_campaign(args.file)
        lab = lab or campaign.lab.id
        instruments = instruments or [i for s in campaign.workflow for i in s.pool]
        if campaign.lab.world:
            print(f"note: {args.file} runs the simulated lab {campaign.lab.world!r} inside `sdl run`; these ACLs are for "
                  f"drivers on a shared broker (`sdl drivers start --id {lab}`, or real ones)", file=sys.stderr)
    if not lab or not instruments:
        raise ConfigError("sdl acl: give a campaign file, or --lab-id ID and --instrument NAME once per instrument")
    try:
        args.driver_user.format(lab=lab, instrument=instruments[0])
    except (KeyError, IndexError, ValueError):
        raise ConfigError(f"--driver-user {args.driver_user!r}: a user name with {{lab}} and {{instrument}} "
                          "as the only placeholders, e.g. sdl-{lab}-{instrument}") from None
    print(mosquitto_acl(lab, instruments, orchestrator_user=args.orchestrator_user, driver_user=args.driver_user),
          end="")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from sdl.config import Campaign

    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              **Campaign.model_json_schema(),
              "description": "sdl campaign file (YAML or JSON): parameters, workflow, analysis, objectives, "
                             "constraints, strategy, budget. `sdl validate FILE` checks one."}
    text = json.dumps(schema, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


# ----- analysis, drivers, training ---------------------------------------------------------------------


def _technique_or_help(args: argparse.Namespace, what: str):
    """The declaration of the technique named on the command line; without one (or with --help in
    its place), the known techniques are printed and None returned."""
    from sdl import analysis

    if args.technique is None or args.show_help:
        args.parser.print_usage()
        print(f"\n{what} one technique's files; its own options: sdl {args.parser.prog.split()[-1]} TECHNIQUE --help")
        for name, t in sorted(analysis.techniques().items()):
            print(f"  {name:8s} {t.title}")
        return None
    return analysis.technique(args.technique)


def analyse_parser(technique) -> argparse.ArgumentParser:
    """`sdl analyse <technique>`'s options, generated from the technique's declaration."""
    p = argparse.ArgumentParser(prog=f"sdl analyse {technique.name}",
                                description=f"Analyse {technique.title} files with the {technique.name} analysers.")
    p.add_argument("path", help=f"a data file or a folder of them ({', '.join(technique.suffixes)})")
    p.add_argument("--analyser", choices=list(technique.analysers),
                   help=f"analyser (default: {next(iter(technique.analysers), '-')})")
    p.add_argument("--json", action="store_true", help="one JSON record per file")
    p.add_argument("--plot", metavar="DIR", help="write one PNG per file into DIR: the data with error bars, the "
                   "analyser's fit, the residuals and the descriptors (untrusted ones in red)")
    for o in technique.options:
        p.add_argument(o.flag, dest=o.name, type=o.type, choices=o.choices, metavar=o.metavar, help=o.help)
    for a, opts in technique.analyser_options.items():
        for o in opts:
            p.add_argument(o.flag, dest=f"analyser_{o.name}", type=o.type, choices=o.choices, metavar=o.metavar,
                           help=f"{o.help} ({a})")
    p.epilog = "readers: " + "; ".join(r.description for r in technique.readers)
    return p


def cmd_analyse(args: argparse.Namespace) -> int:
    from sdl import analysis
    from sdl.errors import AnalysisError
    from sdl.outcome import Shown

    technique = _technique_or_help(args, "analyse")
    if technique is None:
        return 0 if args.show_help else 2
    opts = analyse_parser(technique).parse_args(args.rest)
    path = Path(opts.path)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if any(r.accepts(f) for r in technique.readers))
        if not files:
            raise AnalysisError(f"no data files ({', '.join(technique.suffixes)}) in {path}")
    elif path.exists():
        files = [path]
    else:
        raise AnalysisError(f"no such file or folder: {path}")
    name = opts.analyser or next(iter(technique.analysers), None)
    analyser = analysis.get(technique.name, name, **{o.name: getattr(opts, f"analyser_{o.name}")
                                                     for o in technique.analyser_options.get(name, ())})
    options = {o.name: getattr(opts, o.name) for o in technique.options}
    failures = 0
    plotted: set[str] = set()
    for f in files:
        try:
            measurement = technique.read(f, **options)
            result = analyser.analyse(measurement)
            record = {"file": str(f), "analyser": result.analyser,
                      "descriptors": {d.name: d.model_dump(exclude={"name"}, exclude_none=True) for d in result.descriptors},
                      "info": result.info}
        except AnalysisError as exc:
            failures += 1
            record = {"file": str(f), "error": str(exc)}
        if opts.json:
            print(json.dumps(record, default=str))
        elif "error" in record:
            print(f"{f}: error: {record['error']}")
        else:
            print(f"{f}:")
            for d in result.descriptors:
                print(f"  {Shown.of(d).text()}")
            for w in result.info.get("warnings", []):
                print(f"  warning: {w}")
        if opts.plot and "error" not in record:
            from sdl.report import plot_analysis

            stem = f.stem if f.stem not in plotted else f.name  # x.dat and x.xml side by side
            plotted.add(stem)
            png = plot_analysis(result, Path(opts.plot) / f"{stem}.png", technique=technique,
                                measurement=measurement, name=f.name)
            print(f"wrote {png}", file=sys.stderr if opts.json else sys.stdout)
    return 1 if failures == len(files) else 0


def cmd_drivers_start(args: argparse.Namespace) -> int:
    from sdl import broker
    from sdl.errors import ConfigError
    from sdl.runner.lab import serve, simulated_labs

    labs = simulated_labs()
    if args.lab not in labs:
        raise ConfigError(f"unknown simulated lab {args.lab!r}; known: {sorted(labs)}")
    url = broker.hide_password(args.broker)  # a password in --broker still works; it is shown as ***
    url = broker.with_options(url, **{dest.removeprefix("broker_"): getattr(args, dest) for dest in BROKER_OVERRIDES})
    print(f"serving simulated lab {args.lab!r} as sdl/{args.id}/... on {url} (Ctrl-C stops)")
    serve(args.lab, args.id, url, seed=args.seed, time_scale=args.time_scale)
    return 0


def cmd_drivers_list(args: argparse.Namespace) -> int:
    from sdl.runner.lab import simulated_labs

    for name, ep in simulated_labs().items():
        print(f"{name}  ({ep.value})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """`sdl train TECHNIQUE [--trainer NAME] ...`: the trainer module's own options."""
    import importlib

    from sdl.errors import AnalysisError

    technique = _technique_or_help(args, "train")
    if technique is None:
        return 0 if args.show_help else 2
    if not technique.trainers:
        raise AnalysisError(f"technique {technique.name!r} declares no trainer")
    rest = list(args.rest)
    name = next(iter(technique.trainers))
    if rest[:1] == ["--trainer"] and len(rest) > 1:
        name, rest = rest[1], rest[2:]
    if name not in technique.trainers:
        raise AnalysisError(f"--trainer {name}: technique {technique.name!r} has trainers {list(technique.trainers)}")
    trainer = technique.trainers[name]
    module = importlib.import_module(trainer.module)
    p = argparse.ArgumentParser(prog=f"sdl train {technique.name}",
                                description=f"Train {name}: {trainer.description}.",
                                epilog=f"trainers: {', '.join(technique.trainers)} (choose with --trainer NAME first)")
    module.add_arguments(p)
    return int(module.run(p.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
