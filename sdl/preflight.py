"""What a campaign needs of this installation, checked before a run stores anything.

`sdl.config` checks a campaign file on its own (fields, types, names that refer to each other).
This module checks it against what is installed and declared, in the words of the YAML:

- every workflow technique is a registered technique (entry-point group `sdl.techniques`), and
  every analyser named under `analysis:` is one of that technique's;
- every objective and constraint reads a descriptor the technique declares (its analysers'
  `DescriptorSpec`s, sdl.analysis.technique), of the right kind: a number for objectives and
  `op`/`bound` constraints, a class for `equals`;
- with `lab.world` (a simulated lab sdl starts itself): the lab exists, has the workflow's
  instruments and actions, and the parameter bounds and step settings lie inside the limits its
  drivers declare (the robot's world `PARAMETER_SPACE`, each instrument class's `COMMAND_SETTINGS`).

- without `lab.world` but with a `broker`: the step settings and parameter bounds lie inside the
  safety limits the drivers online under `lab.id` publish with their retained status (`limits`;
  with a lab secret only authenticated statuses count). Drivers not online are not checked here
  (the run waits for them; they refuse an out-of-range command with `bad_command` whatever the
  campaign says, which fails that trial). `lab_notes` says what was and was not checked, and
  whether the lab's messages are authenticated.

`sdl validate` and `run_campaign` (`sdl run`, `sdl resume`, `sdl.run`) call `check`; a problem is
a ConfigError listing every problem found, before a campaign is created, a lease taken or a lab
started.

Reading declarations is cheap: no analyser module (torch, sasmodels) is imported.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field
from typing import Any

from sdl.config import Campaign, ChoiceParameter, FixedParameter
from sdl.errors import ConfigError

PLACEHOLDER_BROKER = "mqtt://127.0.0.1:1883"  # a simulated lab's drivers are built, never started, to read limits
ONLINE_WAIT_S = 0.5  # how long to wait for the retained statuses of drivers online (they come at once)
ONLINE_CONNECT_S = 3.0


def check(campaign: Campaign, origin: str | None = None) -> None:
    """ConfigError naming every problem (`problems`), or nothing. `origin`: what the error calls
    the campaign (a file name; default `campaign '<name>'`)."""
    found = problems(campaign)
    if found:
        where = origin or f"campaign {campaign.name!r}"
        raise ConfigError(f"{where}: campaign cannot run\n" + "\n".join(f"  - {p}" for p in found))


def problems(campaign: Campaign) -> list[str]:
    """One line per problem, each starting with the YAML path it is about."""
    return analysis_problems(campaign) + lab_problems(campaign)


# ----- techniques, analysers, descriptors ---------------------------------------------------------


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _descriptor_candidates(name: str, specs) -> list[str]:
    """Declared names to suggest from, a pattern (`pd.fraction.<phase>`) filled in with the part
    of `name` at the pattern's place (`pd.fracton.ZrO2` -> `pd.fraction.ZrO2`)."""
    out = []
    for s in specs:
        head, sep, _ = s.name.partition("<")
        if sep:
            parts = name.split(".", head.count("."))
            out.append(head + parts[-1] if len(parts) > head.count(".") else s.name)
        else:
            out.append(s.name)
    return out


def analysis_problems(campaign: Campaign) -> list[str]:
    from sdl import analysis

    known = analysis.techniques()
    names = sorted(known)
    out: list[str] = []
    for i, step in enumerate(campaign.workflow):
        if step.technique and step.technique not in known:
            out.append(f"workflow[{i}]({step.name}).technique: unknown technique {step.technique!r}"
                       f"{_suggest(step.technique, names)} (known: {', '.join(names) or 'none'}; a technique "
                       f"registers under the entry-point group {analysis.GROUP!r})")
    for t, chain in campaign.analysis.items():
        if t not in known:
            continue  # said at its workflow step
        offered = list(known[t].analysers)
        for j, entry in enumerate(chain):
            name = entry if isinstance(entry, str) else entry["name"]
            if name not in offered:
                out.append(f"analysis.{t}[{j}]: unknown analyser {name!r} of technique {t}{_suggest(name, offered)} "
                           f"(known: {', '.join(offered)})")
                continue
            opts = known[t].analyser_option_names(name)
            for k in (sorted(set(entry) - {"name"}) if isinstance(entry, dict) else []):
                if k not in opts:
                    out.append(f"analysis.{t}[{j}].{k}: analyser {name} has no option {k!r}{_suggest(k, sorted(opts))} "
                               f"(its options: {', '.join(sorted(opts)) or 'none'})")
    measured = sorted({s.technique for s in campaign.measuring_steps()}, key=len, reverse=True)
    items = [("objectives", i, o) for i, o in enumerate(campaign.objectives)]
    items += [("constraints", i, c) for i, c in enumerate(campaign.constraints)]
    for where, i, item in items:
        name = item.descriptor
        t = next((t for t in measured if name.startswith(t + ".")), None)  # sdl.config made sure of one
        if t is None or t not in known:
            continue
        decl = known[t]
        spec = decl.descriptor(name)
        path = f"{where}[{i}].descriptor"
        if spec is None:
            chain = [e if isinstance(e, str) else e["name"] for e in (campaign.analysis.get(t) or decl.analysers)]
            out.append(f"{path}: {name!r} is not produced by analysers {', '.join(chain)} of technique {t}"
                       f"{_suggest(name, _descriptor_candidates(name, decl.descriptors))} "
                       f"(known: {', '.join(d.name for d in decl.descriptors)})")
            continue
        categorical = spec.kind == "class"
        if where == "objectives" and categorical:
            out.append(f"{path}: {name!r} is a class (categorical) descriptor; an objective needs a number "
                       "(a wanted class is a constraint with `equals: <class>`)")
        elif where == "constraints" and item.equals is not None and not categorical:
            out.append(f"{path}: {name!r} is a number{f' in {spec.unit}' if spec.unit else ''}; `equals` "
                       "compares classes: use `op` ('<=' or '>=') and `bound`")
        elif where == "constraints" and item.equals is None and categorical:
            out.append(f"{path}: {name!r} is a class (categorical) descriptor; `op`/`bound` compare numbers: "
                       "use `equals: <class>`")
    return out


# ----- the simulated lab's declared limits -------------------------------------------------------------


@dataclass
class Limits:
    """What a driver declares it accepts for its commands' params: a closed set of names (None:
    any), numeric ranges, allowed values, the names it requires, their units."""

    names: set[str] | None = None
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    values: dict[str, list[Any]] = field(default_factory=dict)
    required: set[str] = field(default_factory=set)
    units: dict[str, str] = field(default_factory=dict)


def driver_limits(driver: Any) -> Limits | None:
    """The limits a simulated driver declares, read from what it is built from (duck-typed, sdl
    does not import `drivers`): an instrument's `limits`/`settings` (its class's COMMAND_SETTINGS
    and keyword settings), a robot's world's `PARAMETER_SPACE` ({name: {type, bounds | values,
    unit}}, a constant of the world's module). None when it declares nothing."""
    lim = _built_limits(driver)
    safety = getattr(driver, "safety_limits", None)
    if callable(safety):  # the driver's own hard limits (drivers.base.Driver.safety_limits), what it publishes
        try:
            published = {k: (v.min, v.max, v.unit) for k, v in safety().items()}
        except Exception:
            published = {}
        if published:
            lim = _merge(lim or Limits(), published)
    return lim


def _built_limits(driver: Any) -> Limits | None:
    if isinstance(getattr(driver, "limits", None), dict) and isinstance(getattr(driver, "settings", None), dict):
        return Limits(names=set(driver.settings),
                      ranges={k: (float(lo), float(hi)) for k, (lo, hi) in driver.limits.items()})
    world = getattr(driver, "world", None)
    if world is None:
        return None
    space = (getattr(world, "PARAMETER_SPACE", None)
             or getattr(sys.modules.get(type(world).__module__), "PARAMETER_SPACE", None))
    if not isinstance(space, dict):
        return None
    lim = Limits(names=set(space), required=set(space))
    for name, spec in space.items():
        if spec.get("type") == "choice":
            lim.values[name] = list(spec["values"])
        elif "bounds" in spec:
            lim.ranges[name] = (float(spec["bounds"][0]), float(spec["bounds"][1]))
        if spec.get("unit"):
            lim.units[name] = spec["unit"]
    return lim


def _merge(lim: Limits, safety: dict[str, tuple[float | None, float | None, str | None]]) -> Limits:
    """`lim` narrowed by safety limits {param: (min, max, unit)} (either end may be None: open)."""
    for name, (lo, hi, unit) in safety.items():
        olo, ohi = lim.ranges.get(name, (float("-inf"), float("inf")))
        lim.ranges[name] = (max(olo, float("-inf") if lo is None else float(lo)),
                            min(ohi, float("inf") if hi is None else float(hi)))
        if unit and name not in lim.units:
            lim.units[name] = unit
    return lim


def _simulated_lab(campaign: Campaign) -> tuple[list[Any] | None, str | None]:
    """The drivers of the campaign's simulated lab, built but not started (no connection is made);
    or (None, the problem)."""
    from importlib.metadata import entry_points

    world = campaign.lab.world
    labs = {ep.name: ep for ep in entry_points(group="sdl.labs")}
    if world not in labs:
        return None, (f"lab.world: {world!r} is not a known simulated lab{_suggest(world, sorted(labs))} (known: "
                      f"{', '.join(sorted(labs)) or 'none'}; entry-point group 'sdl.labs'); without `lab.world`, "
                      "drivers already running on `broker` are used")
    try:
        return list(labs[world].load()(campaign.lab.id, campaign.broker or PLACEHOLDER_BROKER, seed=0,
                                       time_scale=0.0)), None
    except Exception as exc:  # its factory's own failure: the run would fail on it too
        return None, f"lab.world: the simulated lab {world!r} could not be built: {exc.__class__.__name__}: {exc}"


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else repr(v)


def _value_problem(value: Any, name: str, lim: Limits) -> str | None:
    """Why `value` of param `name` is outside `lim`, or None."""
    if name in lim.values and value not in lim.values[name]:
        return f"{value!r} is not one of {lim.values[name]}"
    if name in lim.ranges:
        lo, hi = lim.ranges[name]
        unit = f" {lim.units[name]}" if name in lim.units else ""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{value!r} is not a number (accepted {_fmt(lo)} to {_fmt(hi)}{unit})"
        if not lo <= value <= hi:
            return f"{_fmt(value)} is outside {_fmt(lo)} to {_fmt(hi)}{unit}"
    return None


def lab_problems(campaign: Campaign) -> list[str]:
    """The workflow and the search space against the limits the simulated lab's drivers declare,
    or, without `lab.world`, those the drivers online on the campaign's broker publish."""
    if campaign.lab.world is None:
        return online_problems(campaign)
    drivers, problem = _simulated_lab(campaign)
    if problem:
        return [problem]
    world = campaign.lab.world
    by_name = {getattr(d, "instrument", None): d for d in drivers}
    out: list[str] = []
    for i, step in enumerate(campaign.workflow):
        at = f"workflow[{i}]({step.name})"
        for inst in step.pool:
            d = by_name.get(inst)
            who = f"instrument {inst!r} of lab {world!r}"
            if d is None:
                out.append(f"{at}.instrument: lab {world!r} has no instrument {inst!r}"
                           f"{_suggest(inst, sorted(n for n in by_name if n))} (it has "
                           f"{', '.join(sorted(n for n in by_name if n))})")
                continue
            try:
                actions = sorted(d.actions())
            except Exception:
                actions = []
            if actions and step.action not in actions:
                out.append(f"{at}.action: {who} has no action {step.action!r}{_suggest(step.action, actions)} "
                           f"(it offers {', '.join(actions)})")
            technique = getattr(d, "technique", None)
            if step.technique and isinstance(technique, str) and technique != step.technique:
                out.append(f"{at}.technique: {step.technique!r}, but {who} measures {technique!r}")
            lim = driver_limits(d)
            if lim is None:
                continue
            out += _params_problems(campaign, step, at, who, lim)
    return out


def _params_problems(campaign: Campaign, step, at: str, who: str, lim: Limits) -> list[str]:
    """The params a step's command carries, against the driver's limits: a measuring step sends
    its settings; any other step the trial's parameters plus its settings (sdl.runner.loop)."""
    out: list[str] = []
    known = ", ".join(sorted(lim.names)) if lim.names is not None else ""
    sent: set[str] = set(step.settings)
    for name, value in step.settings.items():
        if lim.names is not None and name not in lim.names:
            out.append(f"{at}.settings.{name}: {who} takes no setting {name!r}{_suggest(name, sorted(lim.names))} "
                       f"(it takes {known})")
            continue
        why = _value_problem(value, name, lim)
        if why:
            out.append(f"{at}.settings.{name}: {why}, the limits {who} declares")
    if not step.technique:
        for k, p in enumerate(campaign.parameters):
            if p.name in step.settings:
                continue  # the step's setting wins (loop: {**parameters, **settings})
            sent.add(p.name)
            where = f"parameters[{k}]({p.name})"
            if lim.names is not None and p.name not in lim.names:
                out.append(f"{where}: {who} (workflow step {step.name!r}) takes no parameter {p.name!r}"
                           f"{_suggest(p.name, sorted(lim.names))} (it takes {known})")
                continue
            if isinstance(p, FixedParameter):
                why = _value_problem(p.value, p.name, lim)
                if why:
                    out.append(f"{where}.value: {why}, the limits {who} declares")
            elif isinstance(p, ChoiceParameter):
                bad = [v for v in p.values if _value_problem(v, p.name, lim)]
                if bad:
                    out.append(f"{where}.values: {', '.join(map(repr, bad))} not accepted by {who}: "
                               f"{_value_problem(bad[0], p.name, lim)}")
            elif p.name in lim.ranges:
                lo, hi = p.bounds
                rlo, rhi = lim.ranges[p.name]
                if lo < rlo or hi > rhi:
                    unit = f" {lim.units[p.name]}" if p.name in lim.units else ""
                    out.append(f"{where}.bounds: [{_fmt(lo)}, {_fmt(hi)}] reach outside {_fmt(rlo)} to {_fmt(rhi)}"
                               f"{unit}, the limits {who} declares")
            elif p.name in lim.values:
                out.append(f"{where}: {who} accepts only {lim.values[p.name]} for {p.name!r}; make it a choice "
                           "parameter")
        missing = sorted(lim.required - sent)
        if missing:
            out.append(f"{at}: {who} needs {', '.join(map(repr, missing))} as well; add "
                       f"{'it as a parameter' if len(missing) == 1 else 'them as parameters'} (type: fixed for a constant)")
    return out


# ----- drivers online: the limits they publish ----------------------------------------------------------


@dataclass
class Online:
    """What the drivers of a campaign's lab publish on its broker: `statuses` of the instruments
    online (authenticated when a lab secret is set), `refused` instruments whose status failed
    authentication (why), `signed` instruments whose status is signed, `error` when the broker
    could not be asked, `secret` whether this process has a lab secret."""

    broker: str | None
    statuses: dict[str, Any] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    signed: set[str] = field(default_factory=set)
    error: str | None = None
    secret: bool = False


_ONLINE_CACHE: dict[tuple[str, str], tuple[float, Online]] = {}


def online(campaign: Campaign) -> Online:
    """The retained statuses of the campaign's lab on its `broker` (nothing asked without a broker,
    or with `lab.world`: that lab is started by the run). Remembered for a few seconds, so that
    `check` and `lab_notes` ask once."""
    import time

    from sdl.protocol import AuthError, Authenticator, ProtocolError, StatusBody, lab_secret, parse_body, topic
    from sdl.transport import MqttClient

    if campaign.lab.world is not None or not campaign.broker:
        return Online(broker=campaign.broker)
    key = (campaign.broker, campaign.lab.id)
    hit = _ONLINE_CACHE.get(key)
    if hit and time.monotonic() - hit[0] < 5.0:
        return hit[1]
    auth = Authenticator(lab_secret())
    out = Online(broker=campaign.broker, secret=auth.enabled)
    needed = {i for s in campaign.workflow for i in s.pool}
    got: dict[str, tuple[str, bytes]] = {}
    try:
        client = MqttClient(campaign.broker)
        out.broker = client.url  # as it may be shown: without a password
        client.connect(timeout_s=ONLINE_CONNECT_S)
    except Exception as exc:  # TransportError, or a bad URL: the run says it in its own words
        out.error = str(exc)
        return out
    try:
        client.subscribe(topic(campaign.lab.id, "+", "status"), lambda t, p: got.__setitem__(t.split("/")[-2], (t, p)))
        deadline = time.monotonic() + ONLINE_WAIT_S
        while time.monotonic() < deadline and not needed <= set(got):
            time.sleep(0.02)
    except Exception as exc:  # e.g. the broker's ACL refuses the subscription
        out.error = str(exc)
        return out
    finally:
        client.close()
    for instrument, (name, payload) in sorted(got.items()):
        if not payload:
            continue
        try:
            env = auth.open(name, payload)
            st = parse_body(StatusBody, env, name)
        except AuthError as exc:
            out.refused[instrument] = str(exc)
            continue
        except ProtocolError:
            continue
        if env.auth is not None:
            out.signed.add(instrument)
        if st.state != "offline":
            out.statuses[instrument] = st
    _ONLINE_CACHE[key] = (time.monotonic(), out)
    return out


def online_problems(campaign: Campaign) -> list[str]:
    """The workflow and the search space against the safety limits the drivers online publish."""
    found = online(campaign)
    out: list[str] = []
    for i, step in enumerate(campaign.workflow):
        at = f"workflow[{i}]({step.name})"
        for inst in step.pool:
            st = found.statuses.get(inst)
            if st is None or not st.limits:
                continue
            who = f"instrument {inst!r} of lab {campaign.lab.id!r} (online on {found.broker})"
            lim = _merge(Limits(), {k: (v.min, v.max, v.unit) for k, v in st.limits.items()})
            out += _params_problems(campaign, step, at, who, lim)
    return out


def lab_notes(campaign: Campaign) -> list[str]:
    """What `sdl validate` can say of the lab beyond the problems: whose limits were checked, which
    drivers were not online, and whether the lab's messages are authenticated."""
    from sdl.protocol import SECRET_ENV, SECRET_FILE_ENV, lab_secret

    if campaign.lab.world is not None:
        return [f"lab: workflow and bounds inside the limits the simulated lab {campaign.lab.world!r} declares; "
                "it runs in this process, its messages signed with a secret of the run"
                + ("" if campaign.lab.id != type(campaign.lab).model_fields["id"].default
                   else ", under a lab id of its own (lab.id not set)")]
    try:
        has_secret = lab_secret() is not None
    except ConfigError as exc:
        return [f"lab: {exc}"]
    auth = (f"messages signed with the lab secret ({SECRET_ENV}/{SECRET_FILE_ENV})" if has_secret else
            f"messages NOT authenticated (neither {SECRET_ENV} nor {SECRET_FILE_ENV} is set): any client of the "
            "broker can command the instruments or forge their replies; see docs/security.md")
    if not campaign.broker:
        return [f"lab: drivers run elsewhere (no lab.world); their limits are not checked here (with a `broker`, "
                f"those the drivers online publish are); {auth}"]
    found = online(campaign)
    if found.error:
        return [f"lab: drivers run elsewhere (no lab.world); the broker could not be asked for their limits "
                f"({found.error}); {auth}"]
    needed = sorted({i for s in campaign.workflow for i in s.pool})
    checked = [i for i in needed if i in found.statuses]
    missing = [i for i in needed if i not in found.statuses]
    lines = [f"lab: {campaign.lab.id!r} on {found.broker}: "
             + (f"workflow and bounds inside the safety limits the drivers of {checked} publish" if checked else
                "no driver online")
             + (f"; not online (not checked): {missing}" if missing else "") + f"; {auth}"]
    if found.refused:
        lines.append(f"lab: the status of {sorted(found.refused)} failed authentication "
                     f"({next(iter(found.refused.values()))})")
    if found.signed and not has_secret:
        lines.append(f"lab: the drivers of {sorted(found.signed)} sign their messages: the run needs the lab's "
                     f"secret ({SECRET_ENV} or {SECRET_FILE_ENV})")
    return lines
