"""Campaign configuration (Pydantic v2) and loading it from YAML/JSON with clear errors.

A campaign says what may be varied (parameters), how a sample is made and measured (workflow),
how measurements become descriptors (analysis), what is wanted (objectives, constraints), how the
next experiment is chosen (strategy), and when to stop (budget). Units are in the field names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator,
                      model_validator)

from sdl import broker as broker_url
from sdl.errors import ConfigError, TransportError

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SEGMENT_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----- search space ------------------------------------------------------------------------------


class FloatParameter(_Strict):
    name: str
    type: Literal["float"] = "float"
    bounds: tuple[float, float]
    log_scale: bool = False
    unit: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "FloatParameter":
        lo, hi = self.bounds
        if not lo < hi:
            raise ValueError(f"bounds must be [low, high] with low < high, got {list(self.bounds)}")
        if self.log_scale and lo <= 0:
            raise ValueError(f"log_scale needs positive bounds, got low={lo}")
        return self


class IntParameter(FloatParameter):
    type: Literal["int"] = "int"  # type: ignore[assignment]


class ChoiceParameter(_Strict):
    name: str
    type: Literal["choice"] = "choice"
    values: list[str | int | float | bool] = Field(min_length=2)
    ordered: bool = False

    @field_validator("values")
    @classmethod
    def _distinct(cls, v: list) -> list:
        if len(set(map(str, v))) != len(v):
            raise ValueError("values must be distinct")
        return v


class FixedParameter(_Strict):
    """A parameter held constant: sent to the drivers but not optimised."""

    name: str
    type: Literal["fixed"] = "fixed"
    value: str | int | float | bool


Parameter = Annotated[FloatParameter | IntParameter | ChoiceParameter | FixedParameter, Field(discriminator="type")]


# ----- workflow and analysis --------------------------------------------------------------------


class Step(_Strict):
    """One command to one instrument. A step with `technique` returns a Measurement.
    `instrument` may list several interchangeable instruments (a pool, e.g. two SAXS cameras):
    each sample goes to whichever is free first, in the order listed."""

    name: str
    instrument: str | list[str] = Field(min_length=1)
    action: str
    technique: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(default=600.0, gt=0)
    retries: int = Field(default=0, ge=0, le=5)  # re-sends (same command id) after a timeout

    @property
    def pool(self) -> list[str]:
        """The instruments that can run this step, in order of preference."""
        return [self.instrument] if isinstance(self.instrument, str) else list(self.instrument)


class Lab(_Strict):
    """Where the instruments are. `world` names a simulated lab (entry point group `sdl.labs`)
    whose drivers sdl starts itself; without `world`, drivers are already running on the broker."""

    id: str = "lab"
    world: str | None = "nanoparticles"
    time_scale: float = Field(default=0.0, ge=0)  # real seconds per simulated instrument second
    seed: int | None = None  # the world's own seed (hidden sample noise); default: strategy seed

    @field_validator("id")
    @classmethod
    def _segment(cls, v: str) -> str:
        if not SEGMENT_RE.match(v):
            raise ValueError("must be letters, digits, '_', '-', '.' (it becomes an MQTT topic segment)")
        return v


class BrokerTls(_Strict):
    """TLS to a `broker: mqtts://...`: the CA that signed the broker's certificate (default: the
    system's trusted CAs), a client certificate and key for a broker that asks for one (PEM
    files), and `insecure` (tests only: the certificate's host name is not checked)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False


# ----- objectives ------------------------------------------------------------------------------


class Objective(_Strict):
    """What is wanted of a numeric descriptor: maximize/minimize it, bring it to `value` within
    `tolerance` (target), or map it (learn it over the whole space rather than optimise it).

    `threshold` (maximize/minimize, several objectives): the worst value still of interest; the
    thresholds form the reference point of the Pareto front's hypervolume.
    """

    descriptor: str
    goal: Literal["maximize", "minimize", "target", "map"]
    value: float | None = None
    tolerance: float | None = Field(default=None, gt=0)
    threshold: float | None = None

    @model_validator(mode="after")
    def _target(self) -> "Objective":
        if self.goal == "target" and (self.value is None or self.tolerance is None):
            raise ValueError("goal 'target' needs `value` and `tolerance` (same unit as the descriptor)")
        if self.goal != "target" and (self.value is not None or self.tolerance is not None):
            raise ValueError(f"`value`/`tolerance` only apply to goal 'target', not {self.goal!r}")
        if self.threshold is not None and self.goal not in ("maximize", "minimize"):
            raise ValueError(f"`threshold` applies to goals 'maximize'/'minimize', not {self.goal!r}")
        return self


class Constraint(_Strict):
    """A requirement on a descriptor: numeric bound (`op` + `bound`) or a categorical `equals`."""

    descriptor: str
    op: Literal["<=", ">="] | None = None
    bound: float | None = None
    equals: str | None = None
    min_probability: float = Field(default=0.5, gt=0, lt=1)  # for `equals`: P(class) required

    @model_validator(mode="after")
    def _one_kind(self) -> "Constraint":
        numeric = self.op is not None or self.bound is not None
        if numeric == (self.equals is not None):
            raise ValueError("give either `op` and `bound` (numeric) or `equals` (categorical), not both or neither")
        if numeric and (self.op is None or self.bound is None):
            raise ValueError("a numeric constraint needs both `op` ('<=' or '>=') and `bound`")
        return self


# ----- strategy, budget, campaign ------------------------------------------------------------------


class Cost(_Strict):
    """Cost of one experiment, linear in the parameters: `base` + sum(per[p] * value of p), in any
    unit (e.g. hours). With a cost, the acquisition is expected improvement per unit cost."""

    base: float = Field(default=1.0, ge=0)
    per: dict[str, float] = Field(default_factory=dict)

    @field_validator("per")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: c for k, c in v.items() if c < 0}
        if bad:
            raise ValueError(f"cost coefficients must be >= 0 (a cheaper experiment for more of something "
                             f"is not supported), got {bad}")
        return v


class WarmStart(_Strict):
    """An earlier campaign whose completed trials seed this one: their stored descriptors are
    re-evaluated against this campaign's objectives and attached as prior experiments (not
    counted against the budget). Trials outside this campaign's search space are skipped."""

    campaign: str  # campaign id or name (latest of that name)
    store: str | None = None  # database URL; default: this campaign's store


class Strategy(_Strict):
    """How the next experiment is chosen. `bayesian`: Sobol start, then a GP with the acquisition
    the objectives call for (log noisy EI for one objective, log noisy expected hypervolume
    improvement for several, integrated posterior variance for `map`, EI per unit cost with
    `cost`). `sobol`: quasi-random sampling (baseline). `ax_default`: Ax's own default generation
    strategy, untuned (baseline)."""

    kind: Literal["bayesian", "sobol", "ax_default"] = "bayesian"
    # space-filling start before the model is used: the centre of the space, then Sobol points
    # (Ax's default design; benchmarks/results/campaign_*: 5 beat 8 on the simulated worlds)
    initial_trials: int = Field(default=5, ge=1)
    initialize_with_center: bool = True
    max_in_flight: int = Field(default=1, ge=1, le=64)  # samples being made/measured at once
    seed: int = 0
    # observation noise of the GP: "inferred" fits it from the data (batch-to-batch synthesis scatter
    # is usually far larger than the analysers' fit uncertainty); "measured" uses the analysers' SEMs
    noise: Literal["inferred", "measured"] = "inferred"
    require_approval: bool = False  # each proposed trial waits for `sdl approve` (or `sdl reject`)
    cost: Cost | None = None
    warm_start: WarmStart | None = None


class Budget(_Strict):
    """When to stop: experiments used, wall time, target met, or no expected improvement left:
    `min_expected_improvement` (in standard deviations of the observed objective; for several
    objectives, of hypervolume) not reached by `patience` model-based proposals in a row."""

    max_experiments: int = Field(default=30, ge=1)
    max_wall_time_s: float | None = Field(default=None, gt=0)
    stop_on_target: bool = True
    min_expected_improvement: float | None = Field(default=None, gt=0)
    patience: int = Field(default=3, ge=1)


class Campaign(_Strict):
    # a validation error never shows the input it was given: it may hold a broker password
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str
    description: str = ""
    lab: Lab = Field(default_factory=Lab)
    # mqtt[s]://[user@]host[:port]; absent = embedded in-process broker. A password written in it is
    # replaced by *** when the campaign is read (kept in this process's memory only: sdl.broker)
    broker: str | None = None
    broker_credentials: str | None = None  # a file with `username: ...` and `password: ...` lines
    broker_tls: BrokerTls | None = None
    store: str = "sqlite:///sdl.db"
    parameters: list[Parameter] = Field(min_length=1)
    parameter_constraints: list[str] = Field(default_factory=list)  # linear, e.g. "a + b <= 1"
    workflow: list[Step] = Field(min_length=1)
    # technique -> analyser fallback chain: names, or {name: NAME, <option>: value} for an analyser's
    # declared options (e.g. {name: pd_ml, model: DIR})
    analysis: dict[str, list[str | dict[str, str | int | float | bool]]] = Field(default_factory=dict)
    objectives: list[Objective] = Field(min_length=1)
    constraints: list[Constraint] = Field(default_factory=list)
    strategy: Strategy = Field(default_factory=Strategy)
    budget: Budget = Field(default_factory=Budget)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SEGMENT_RE.match(v):
            raise ValueError("must be letters, digits, '_', '-', '.'")
        return v

    @field_validator("broker")
    @classmethod
    def _broker(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return broker_url.hide_password(v.strip())
        except TransportError as exc:
            raise ValueError(str(exc)) from None

    @field_serializer("broker")
    def _broker_shown(self, v: str | None) -> str | None:
        return broker_url.redact_url(v) if v else v  # also for a copy made without validation

    @model_validator(mode="after")
    def _broker_options(self) -> "Campaign":
        """broker_credentials and broker_tls go into the broker URL's options (sdl.broker), which every
        client connecting with it reads; where both give one, these fields win."""
        tls = self.broker_tls or BrokerTls()
        given = {"credentials": self.broker_credentials, "tls_ca_file": tls.ca_file,
                 "tls_cert_file": tls.cert_file, "tls_key_file": tls.key_file, "tls_insecure": tls.insecure or None}
        given = {k: v for k, v in given.items() if v is not None}
        if self.broker is None:
            if given:
                raise ValueError("broker_credentials and broker_tls apply to a broker named by `broker:` (the "
                                 "embedded broker needs neither)")
            return self
        self.broker = broker_url.with_options(self.broker, **given)
        try:
            broker_url.check_options(broker_url.parse(self.broker), broker_url.redact_url(self.broker))
        except TransportError as exc:
            raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _consistent(self) -> "Campaign":
        names = [p.name for p in self.parameters]
        for n in names:
            if not NAME_RE.match(n):
                raise ValueError(f"parameter name {n!r} must be an identifier (letters, digits, '_')")
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"parameter names repeat: {sorted(dup)}")
        tunable = {p.name for p in self.parameters if p.type in ("float", "int")}
        for c in self.parameter_constraints:
            for token in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", c):
                if token not in tunable:
                    raise ValueError(
                        f"parameter constraint {c!r} names {token!r}, which is not a float/int parameter "
                        f"(those are {sorted(tunable)})"
                    )
        goals = [o.goal for o in self.objectives]
        if "map" in goals and len(goals) > 1:
            raise ValueError("an objective with goal 'map' must be the only objective (mapping learns one "
                             "response; add the others as constraints or run a second campaign)")
        if any(o.threshold is not None for o in self.objectives) and len(goals) < 2:
            raise ValueError("`threshold` is the reference point of a multi-objective campaign; with one "
                             "objective, write it as a constraint instead")
        if self.strategy.cost:
            for name in self.strategy.cost.per:
                if name not in tunable:
                    raise ValueError(f"strategy.cost.per names {name!r}, which is not a float/int parameter "
                                     f"(those are {sorted(tunable)})")
            if "map" in goals or len(goals) > 1:
                raise ValueError("strategy.cost weighs the expected improvement of one objective; it does not "
                                 "apply to goal 'map' or to several objectives")
        steps = [s.name for s in self.workflow]
        if len(set(steps)) != len(steps):
            raise ValueError(f"workflow step names repeat: {steps}")
        if not any(s.technique for s in self.workflow):
            raise ValueError("workflow has no measuring step (a step with `technique`); nothing to analyse")
        techniques = {s.technique for s in self.workflow if s.technique}
        for t, chain in self.analysis.items():
            for j, e in enumerate(chain):
                if isinstance(e, dict) and not isinstance(e.get("name"), str):
                    raise ValueError(f"analysis.{t}[{j}]: an analyser with options is written {{name: ANALYSER, "
                                     f"option: value}}; this one has no name ({sorted(e)})")
            if t not in techniques:
                raise ValueError(f"analysis names technique {t!r}, but no workflow step measures it ({sorted(techniques)})")
        prefixes = {t + "." for t in techniques}
        for item in [*self.objectives, *self.constraints]:
            if not any(item.descriptor.startswith(p) for p in prefixes):
                raise ValueError(
                    f"descriptor {item.descriptor!r} does not come from a measured technique; "
                    f"descriptors are named <technique>.<quantity>, techniques here: {sorted(techniques)}"
                )
        return self

    def descriptors_needed(self) -> set[str]:
        """Descriptors the objectives and constraints read."""
        return {item.descriptor for item in [*self.objectives, *self.constraints]}

    def measuring_steps(self) -> list[Step]:
        return [s for s in self.workflow if s.technique]


_OPTION_FIELDS = {"credentials": "broker_credentials", "tls_ca_file": "broker_tls.ca_file",
                  "tls_cert_file": "broker_tls.cert_file", "tls_key_file": "broker_tls.key_file",
                  "tls_insecure": "broker_tls.insecure"}


# ----- loading -----------------------------------------------------------------------------------


def load_campaign(source: str | Path | dict[str, Any], *, labels: dict[str, str] | None = None,
                  origin: str | None = None, **overrides: Any) -> Campaign:
    """A Campaign from a YAML/JSON file (or a dict). `overrides` are dotted paths, e.g.
    {"budget.max_experiments": 5, "strategy.seed": 3}; None values are ignored.

    An error in an overridden value names the override, not the file: by its label where
    `labels` gives one (the words the user typed, e.g. {"budget.max_experiments": "--budget"}),
    else as `budget.max_experiments=0 (override)`. `origin`: what errors call the source
    (default: the file's path; "<dict>" for a dict)."""
    if isinstance(source, dict):
        origin = origin or "<dict>"
        data = source
    else:
        path = Path(source)
        origin = origin or str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read campaign file {path}: {exc.strerror}") from None
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (yaml.YAMLError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of campaign fields")
    data = json.loads(json.dumps(data))  # deep copy, and plain types only
    _url_options_replace_fields(data, overrides)
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return Campaign.model_validate(data)
    except ValidationError as exc:
        given = {k: v for k, v in overrides.items() if v is not None}
        text = explain(exc, data, given, labels or {})
        if all(_override_of(e["loc"], given) for e in exc.errors()):
            raise ConfigError(f"invalid value{'s' if len(exc.errors()) > 1 else ''} given for {origin}\n{text}") from None
        raise ConfigError(f"{origin}: invalid campaign\n{text}") from None


def _url_options_replace_fields(data: dict[str, Any], overrides: dict[str, Any]) -> None:
    """A broker URL given as an override (`--broker URL?tls_ca_file=...`) with options in it: the
    campaign's fields for those options give way to it (unless overridden as well)."""
    url = overrides.get("broker")
    if not isinstance(url, str):
        return
    try:
        options = broker_url.parse(url).options()
    except TransportError:
        return  # said by the validation
    for option in options:
        field = _OPTION_FIELDS[option]
        if overrides.get(field) is not None:
            continue
        parent, _, leaf = field.rpartition(".")
        node = data.get(parent) if parent else data
        if isinstance(node, dict):
            node.pop(leaf, None)


def _override_of(loc: tuple, overrides: dict[str, Any]) -> str | None:
    """The dotted override key an error location falls under, if any."""
    dotted = ".".join(str(p) for p in loc)
    return next((k for k in overrides if dotted == k or dotted.startswith(k + ".")), None)


def _given(key: str, value: Any, labels: dict[str, str]) -> str:
    """How an override is named in an error: `--budget 0` (labelled) or `budget.max_experiments=0 (override)`."""
    import shlex

    value = broker_url.redact(value)  # a broker URL's password is never shown
    if key in labels:
        return f"{labels[key]} {shlex.quote(str(value))}"
    return f"{key}={json.dumps(value, default=str)} (override)"


def explain(exc: ValidationError, data: Any = None, overrides: dict[str, Any] | None = None,
            labels: dict[str, str] | None = None) -> str:
    """One line per problem: the field path (parameters[2].bounds), what was wrong, what is
    accepted; for a value given as an override, the override (see load_campaign)."""
    lines = []
    for e in exc.errors():
        key = _override_of(e["loc"], overrides or {})
        loc = _path(e["loc"], data)
        if key:  # the override, and the field inside it where the error lies deeper
            given = _given(key, overrides[key], labels or {})
            loc = given if loc == key else f"{given}, field {loc}"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown field {str(e['loc'][-1])!r}"
            allowed = _allowed_fields(e["loc"][:-1], data)
            if allowed:
                msg += f"; accepted fields here: {', '.join(allowed)}"
        elif e["type"] == "literal_error":
            msg = f"{msg} (got {e.get('input')!r})"
        lines.append(f"  - {loc or '<campaign>'}: {msg}")
    return "\n".join(lines)


def _path(loc: tuple, data: Any) -> str:
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            name = node[part].get("name") if isinstance(node, list) and part < len(node) and isinstance(node[part], dict) else None
            if name:
                out += f"({name})"
            node = node[part] if isinstance(node, list) and part < len(node) else None
        else:
            if part in ("float", "int", "choice", "fixed") and isinstance(node, dict):
                continue  # discriminated-union tag, not a field
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


def _allowed_fields(loc: tuple, data: Any) -> list[str]:
    model: Any = Campaign
    node = data
    for part in loc:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if part in ("float", "int", "choice", "fixed"):
            model = {"float": FloatParameter, "int": IntParameter, "choice": ChoiceParameter, "fixed": FixedParameter}[part]
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _inner_model(field.annotation)
        node = node.get(part) if isinstance(node, dict) else None
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _inner_model(annotation: Any) -> Any:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        m = _inner_model(arg)
        if m is not None:
            return m
    return None
