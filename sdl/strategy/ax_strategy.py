"""Active learning with Ax (experiment book-keeping) and BoTorch (models, acquisition) underneath.

`bayesian`: Ax's start design (centre point + Sobol), then Ax's BoTorch generation (GP + the
acquisition of sdl/strategy/acquisition.py, for one objective optimised once per value of each
unordered choice parameter; outcome constraints handled by the acquisition). `sobol`: quasi-random sampling only, the baseline.
Ax is imported here, lazily (≈4.5 s), never by `import sdl`.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from typing import Any

from sdl.config import Campaign, ChoiceParameter, FixedParameter
from sdl.errors import StrategyError
from sdl.strategy.objectives import metrics, outcome_constraints


_LIBS = ("ax", "botorch", "gpytorch", "linear_operator")
# a campaign's GPs are small: one torch thread fits and optimises them faster than several, which
# contend with the drivers, the broker and each other on a few cores (benchmarks/strategy_step.py)
TORCH_THREADS = 1


SNAPSHOT_FORMAT = "sdl-ax-2"  # {"format", "ax": Ax's snapshot, "data": exact rows}; older ones: Ax's alone
_ROW_FIELDS = ("trial_index", "arm_name", "metric_name", "metric_signature", "mean", "se", "step", "n")
_FLOAT_FIELDS = {"mean", "se", "step"}


def _exact_data(experiment) -> list[list[Any]] | None:
    """The experiment's observations, one list per Ax DataRow, in Ax's order (floats as JSON
    writes them: repr, which reads back to the same double). None where a row has a start or end
    time (sdl sets none): those are left to Ax's snapshot."""
    rows = experiment.data._data_rows
    if any(r.start_time is not None or r.end_time is not None for r in rows):
        return None
    return [[_finite_or_text(getattr(r, f)) for f in _ROW_FIELDS] for r in rows]


def _finite_or_text(v: Any) -> Any:
    """NaN (an SEM the GP infers, Ax's empty `step`) and infinities as "nan"/"inf"/"-inf": the
    snapshot stays strict JSON, as Ax's own part is."""
    return repr(float(v)) if isinstance(v, float) and not math.isfinite(v) else v


def _restore_data(experiment, rows: list[list[Any]] | None) -> None:
    """Put back the observations `_exact_data` took, in place of Ax's copy rounded to 10 decimals."""
    from ax.core.data import Data, DataRow

    if rows is not None:
        experiment.data = Data(data_rows=[DataRow(**{f: float(v) if f in _FLOAT_FIELDS and isinstance(v, str) else v
                                                      for f, v in zip(_ROW_FIELDS, r)}) for r in rows])


def _seed_everything(seed: int) -> None:
    """torch (BoTorch's raw samples, restarts, MC base samples, GP fit retries), numpy's and
    Python's global RNGs (Ax's rounding and transforms)."""
    import random

    import numpy as np
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _forget_fits(client) -> None:
    """Drop the models Ax keeps between proposals. Ax updates a fitted adapter in place when it
    can (GeneratorSpec.fit); a strategy restored from a snapshot has none and fits from scratch.
    Forgetting them makes the live strategy take the same path, so both propose the same."""
    gs = client._maybe_generation_strategy
    for node in getattr(gs, "_nodes", ()):
        for spec in [*node.generator_specs, *(getattr(node, "fallback_specs", None) or {}).values()]:
            spec._fitted_adapter = None
            spec._last_fit_arg_ids = None


class _DropExpected(logging.Filter):
    """Ax warns when a trial completes with a metric missing; sdl does that on purpose (objectives.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "missing optimization config metrics" not in record.getMessage()


def _quiet_ax() -> None:
    """Ax gives each of its module loggers its own INFO level and handler, so set them all."""
    for name in [*_LIBS, *logging.root.manager.loggerDict]:
        if name.split(".")[0] in _LIBS:
            logger = logging.getLogger(name)
            logger.setLevel(logging.WARNING)
            if not any(isinstance(f, _DropExpected) for f in logger.filters):
                logger.addFilter(_DropExpected())
    warnings.filterwarnings("ignore", module=r"(ax|botorch|gpytorch|linear_operator)(\..*)?")


class AxStrategy:
    """Strategy backed by an Ax `Client`. Fixed parameters are kept outside Ax and merged in."""

    def __init__(self, campaign: Campaign, snapshot: str | None = None):
        logging.disable(logging.INFO)  # Ax logs at INFO while it imports
        try:
            from ax.api.client import Client
        finally:
            logging.disable(logging.NOTSET)
        _quiet_ax()  # Ax configures its loggers on import

        from sdl.strategy.acquisition import register_with_ax

        register_with_ax()
        self.campaign = campaign
        self.fixed = {p.name: p.value for p in campaign.parameters if isinstance(p, FixedParameter)}
        self.metric_specs = metrics(campaign)
        if snapshot:
            try:
                state = json.loads(snapshot)
                exact = state.get("format") == SNAPSHOT_FORMAT
                self.client = Client._from_json_snapshot(state["ax"] if exact else state)
                if exact:
                    _restore_data(self.client._experiment, state["data"])
            except Exception as exc:  # Ax raises many kinds here
                raise StrategyError(f"cannot restore the strategy of campaign {campaign.name!r}: {exc}") from exc
            return
        self.client = Client()
        self._configure()

    # ----- set-up ----------------------------------------------------------------------------
    def _configure(self) -> None:
        from ax.api.configs import ChoiceParameterConfig, RangeParameterConfig

        c = self.campaign
        params = []
        for p in c.parameters:
            if isinstance(p, FixedParameter):
                continue
            if isinstance(p, ChoiceParameter):
                kind = {bool: "bool", int: "int", float: "float", str: "str"}[type(p.values[0])]
                params.append(ChoiceParameterConfig(name=p.name, values=list(p.values), parameter_type=kind,
                                                    is_ordered=p.ordered))
            else:
                params.append(RangeParameterConfig(name=p.name, bounds=tuple(map(float, p.bounds)) if p.type == "float"
                                                   else tuple(map(int, p.bounds)),
                                                   parameter_type=p.type, scaling="log" if p.log_scale else "linear"))
        if not params:
            raise StrategyError(f"campaign {c.name!r} has no parameter to vary (all are fixed)")
        try:
            self.client.configure_experiment(parameters=params, parameter_constraints=c.parameter_constraints or None,
                                             name=c.name)
            objectives = [m for m in self.metric_specs if m.kind == "objective"]
            objective = ", ".join(("-" if m.minimize else "") + m.name for m in objectives)
            constraints = outcome_constraints(c)
            self.client.configure_optimization(objective=objective, outcome_constraints=constraints or None)
            self._configure_generation()
        except Exception as exc:
            raise StrategyError(f"Ax rejected the campaign {c.name!r}: {exc}") from exc

    def _configure_generation(self) -> None:
        s = self.campaign.strategy
        if s.kind == "sobol":
            self.client.configure_generation_strategy(method="random_search", initialization_random_seed=s.seed)
            return
        if s.kind == "ax_default":  # Ax out of the box: its own initialisation size, centre point first
            self.client.configure_generation_strategy(initialization_random_seed=s.seed)
            return
        from ax.api.utils.generation_strategy_dispatch import choose_generation_strategy
        from ax.api.utils.structs import GenerationStrategyDispatchStruct

        from sdl.strategy.acquisition import ChoiceEnumeratingAcquisition, acquisition_for

        acq = acquisition_for(self.campaign)
        gs = choose_generation_strategy(
            GenerationStrategyDispatchStruct(method="fast", initialization_budget=s.initial_trials,
                                             initialization_random_seed=s.seed,
                                             # prior data already gives a start: no centre point then
                                             initialize_with_center=s.initialize_with_center and not s.warm_start,
                                             allow_exceeding_initialization_budget=True),
            botorch_acqf_class=acq.cls)
        spec = gs._nodes[-1].generator_specs[0]  # the model-based node
        if acq.per_choice:
            spec.generator_kwargs["acquisition_class"] = ChoiceEnumeratingAcquisition
        if acq.options:
            spec.generator_kwargs["botorch_acqf_options"] = acq.options
        if acq.optimizer:
            spec.generator_gen_kwargs = {"model_gen_options": {"optimizer_kwargs": acq.optimizer}}
        self.client.set_generation_strategy(gs)

    # ----- the Strategy protocol -------------------------------------------------------------
    def ask(self, n: int) -> list[tuple[int, dict[str, Any]]]:
        import torch

        # a proposal is a function of the seed and the history only: every RNG seeded, and the
        # model fitted from scratch (as a restored strategy must) rather than updated in place
        _seed_everything(self.campaign.strategy.seed * 100_003 + len(self.client._experiment.trials))
        _forget_fits(self.client)
        _quiet_ax()  # loggers of modules Ax imports on first use
        threads = torch.get_num_threads()
        torch.set_num_threads(TORCH_THREADS)
        try:
            trials = self.client.get_next_trials(max_trials=n)
        except Exception as exc:
            raise StrategyError(f"strategy could not propose a trial: {exc}") from exc
        finally:
            torch.set_num_threads(threads)
        return [(int(i), {**dict(p), **self.fixed}) for i, p in sorted(trials.items())]

    def expected_improvement(self, index: int) -> float | None:
        """The expected improvement the model saw in proposing trial `index` (standardised units of
        the objective, or of hypervolume for several); None for Sobol and mapping proposals."""
        from sdl.strategy.acquisition import experiment_cost, improvement_from

        trial = self.client._experiment.trials[index]
        run = trial.generator_runs[0] if trial.generator_runs else None
        meta = (run.gen_metadata or {}) if run else {}
        values = meta.get("expected_acquisition_value")
        if values is None or run._generator_key == "Sobol":
            return None
        values = values if isinstance(values, list) else [values]
        kwargs = run._generator_kwargs or {}
        acqf = kwargs.get("botorch_acqf_class")
        params = {**dict(trial.arm.parameters), **self.fixed}
        return improvement_from(float(max(values)), getattr(acqf, "__name__", acqf),
                                experiment_cost(self.campaign, params))

    def tell(self, index: int, outcomes: dict[str, tuple[float, float]]) -> None:
        unknown = set(outcomes) - {m.name for m in self.metric_specs}
        if unknown or not outcomes:
            raise StrategyError(f"trial {index}: outcomes {sorted(outcomes)} do not match the campaign's metrics "
                                f"{sorted(m.name for m in self.metric_specs)}")
        # a metric may be missing (descriptor not produced): Ax models each metric on the trials that have it
        measured = self.campaign.strategy.noise == "measured"
        data = {k: (float(m), float(s)) if measured else float(m) for k, (m, s) in outcomes.items()}
        self.client.complete_trial(trial_index=index, raw_data=data)

    def attach(self, parameters: dict[str, Any], outcomes: dict[str, tuple[float, float]]) -> int:
        free = {k: v for k, v in parameters.items() if k not in self.fixed}
        try:
            index = int(self.client.attach_trial(parameters=free))
        except Exception as exc:
            raise StrategyError(f"Ax did not accept the manual experiment {free}: {exc}") from exc
        if outcomes:
            self.tell(index, outcomes)
        else:
            self.fail(index, "manual experiment without any of the campaign's descriptors")
        return index

    def fail(self, index: int, reason: str, infeasible: bool = False) -> None:
        worst = self._worst_observed() if infeasible else {}
        if worst:
            # the failed recipe gets the worst value seen of each objective (constraints left out):
            # without it the GP knows nothing there and keeps proposing into a region that fails
            self.client.complete_trial(trial_index=index, raw_data=worst)
        else:
            self.client.mark_trial_failed(trial_index=index, failed_reason=reason[:500])

    def _worst_observed(self) -> dict[str, float | tuple[float, float]]:
        data = self.client._experiment.lookup_data().df
        out: dict[str, float | tuple[float, float]] = {}
        for m in self.metric_specs:
            seen = data.loc[data["metric_name"] == m.name, "mean"] if len(data) else []
            if m.kind != "objective" or len(seen) == 0:
                continue
            worst = float(seen.max() if m.minimize else seen.min())
            out[m.name] = (worst, float(seen.std(ddof=0))) if self.campaign.strategy.noise == "measured" else worst
        return out

    def snapshot(self) -> str:
        """Ax's JSON snapshot, plus the observations at full precision: Ax writes its data as a
        pandas `to_json` table, rounded to 10 decimal places, so a restored GP would be fitted
        to slightly different numbers and propose a different next trial."""
        return json.dumps({"format": SNAPSHOT_FORMAT, "ax": self.client._to_json_snapshot(),
                           "data": _exact_data(self.client._experiment)})

    # ----- insight ----------------------------------------------------------------------------
    def predict(self, points: list[dict[str, Any]]) -> list[dict[str, tuple[float, float]]]:
        free = [{k: v for k, v in p.items() if k not in self.fixed} for p in points]
        return self.client.predict(points=free)
