"""Which BoTorch acquisition function a campaign's objectives call for, the ones sdl adds, and how
they are optimised over choice parameters.

  one objective (max/min/target)  -> LogNEI: qLogNoisyExpectedImprovement with 128 QMC samples
  several objectives              -> qLogNoisyExpectedHypervolumeImprovement (Ax's default, choices relaxed)
  goal `map`                      -> qNegIntegratedPosteriorVariance   (learn the surface)
  strategy.cost, one objective    -> CostWeightedLogNEI: log EI(x) - log cost(x)

Pending trials reach every one of them as `X_pending` (Ax passes the running trials' arms), so
k samples in flight get k different proposals. The improvement acquisitions are optimised by
ChoiceEnumeratingAcquisition: once per value of the campaign's unordered choice parameters, with
the optimiser budget shared among the values. Imported only by the Ax strategy (torch, BoTorch).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.active_learning import qNegIntegratedPosteriorVariance
from botorch.acquisition.input_constructors import (_register_acqf_input_constructor, acqf_input_constructor,
                                                   get_acqf_input_constructor)
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from ax.adapter.transforms.one_hot import OH_PARAM_INFIX
from ax.generators.torch.botorch_modular.acquisition import Acquisition as AxAcquisition

from sdl.config import Campaign, FloatParameter
from sdl.strategy.objectives import acquisition_kind

MC_SAMPLES = 128  # quasi-MC samples of the improvement acquisitions (BoTorch's default: 512)
MAX_ENUMERATED_CHOICES = 12  # more value combinations than this: Ax's relaxation instead
AX_RESTARTS, AX_RAW_SAMPLES = 20, 1024  # Ax's acquisition optimiser budget, where sdl sets none
MIN_RAW_SAMPLES = 32  # per enumerated value
# one objective: 3 L-BFGS restarts from the best of 384 raw samples, at most 40 iterations each
# (Ax: 20 restarts, 1024 raw samples, 200 iterations); with one 3-value choice that is one
# restart from 128 raw samples per value (benchmarks/strategy_step.py)
IMPROVEMENT_OPTIMIZER = {"num_restarts": 3, "raw_samples": 384, "options": {"maxiter": 40}}
# several objectives: BoTorch's qNEHVI-tutorial budget, choices relaxed as Ax does. Optimised per
# choice value with 6 restarts / 384 raw samples / 30 iterations shared, the oxide Pareto benchmark
# fell from a median 0.592 to ~0.43 of the best hypervolume after 20 experiments (8 seeds), so
# enumeration is kept to the improvement acquisitions, where it was measured to help
HYPERVOLUME_OPTIMIZER = {"num_restarts": 10, "raw_samples": 512}


class LogNEI(qLogNoisyExpectedImprovement):
    """qLogNEI with 128 quasi-MC samples instead of BoTorch's default 512: for one candidate at a
    time the estimate barely moves, and each evaluation is ~4x cheaper (benchmarks/strategy_step.py)."""

    _default_sample_shape = torch.Size([MC_SAMPLES])


_register_acqf_input_constructor(LogNEI, get_acqf_input_constructor(qLogNoisyExpectedImprovement))


class CostWeightedLogNEI(LogNEI):
    """Expected improvement per unit cost, in logs: log EI(x) - log(base + sum_j c_j * p_j(x)).

    `cost_columns`: (column in Ax's feature space, coefficient, is log10-transformed) for each
    parameter the cost depends on; Ax keeps linear parameters as they are and log-scale ones as
    log10(value), so the cost is computed in the parameters' own units.
    """

    def __init__(self, *args: Any, cost_base: float, cost_columns: list[tuple[int, float, bool]], **kw: Any):
        super().__init__(*args, **kw)
        self.cost_base = cost_base
        self.cost_columns = cost_columns

    def cost(self, X: torch.Tensor) -> torch.Tensor:
        """Cost of each q-batch (sum over its q points); X is batch x q x d."""
        total = torch.full(X.shape[:-1], self.cost_base, dtype=X.dtype, device=X.device)
        for col, coef, is_log in self.cost_columns:
            v = X[..., col]
            total = total + coef * (10.0**v if is_log else v)
        return total.sum(-1).clamp_min(1e-9)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return super().forward(X) - self.cost(X).log()  # pending points are added inside, not costed


@acqf_input_constructor(CostWeightedLogNEI)
def _construct_cost_weighted(model, training_data, cost_base: float, cost_per: dict[str, list], objective=None,
                             posterior_transform=None, X_pending=None, X_baseline=None, constraints=None,
                             ) -> dict[str, Any]:
    """qLogNEI's inputs plus the cost columns, found by name in the model's feature space."""
    inputs = get_acqf_input_constructor(qLogNoisyExpectedImprovement)(
        model=model, training_data=training_data, objective=objective, posterior_transform=posterior_transform,
        X_pending=X_pending, X_baseline=X_baseline, constraints=constraints)
    first = next(iter(training_data.values())) if isinstance(training_data, dict) else training_data
    names = list(first.feature_names)
    inputs["cost_columns"] = [(names.index(name), float(coef), bool(is_log)) for name, (coef, is_log) in cost_per.items()]
    inputs["cost_base"] = float(cost_base)
    return inputs


class ChoiceEnumeratingAcquisition(AxAcquisition):
    """Ax's acquisition, optimised once per value of each unordered choice parameter instead of
    over its relaxed one-hot columns.

    Ax one-hot encodes an unordered choice and optimises the encoding as continuous numbers in
    [0, 1], then rounds the optimum at random (`randomized_onehot_round`): the acquisition value
    of a point like (0.4, 0.35, 0.25) means nothing, and a category the model has seen little of
    is rarely proposed. Here each combination of values is a fixed-feature optimisation of the
    continuous parameters, the restarts and raw samples of the optimiser shared among them (so a
    step costs about what one relaxed optimisation does), and the best acquisition value wins:
    every category competes on its own acquisition value (BoTorch's `optimize_acqf_mixed`).
    On the nanoparticle world (3 reducing agents) this met the target in 10/10 seeds where the
    relaxation missed it in seed 0 (docs/strategy.md). Batches (n > 1) keep Ax's relaxation, so
    samples in flight can differ in category.
    """

    def optimize(self, n: int, search_space_digest: Any, **kwargs: Any):
        fixed_features = kwargs.pop("fixed_features", None)
        groups: dict[str, list[int]] = {}
        for j, name in enumerate(search_space_digest.feature_names):
            if OH_PARAM_INFIX in name and j not in (fixed_features or {}):
                groups.setdefault(name.split(OH_PARAM_INFIX)[0], []).append(j)
        combos = list(itertools.product(*groups.values()))
        if not groups or n > 1 or len(combos) > MAX_ENUMERATED_CHOICES:
            return super().optimize(n, search_space_digest, fixed_features=fixed_features, **kwargs)
        options = dict(kwargs.pop("optimizer_options", None) or {})
        k = len(combos)
        options["num_restarts"] = max(1, round(options.get("num_restarts", AX_RESTARTS) / k))
        options["raw_samples"] = max(MIN_RAW_SAMPLES, options.get("raw_samples", AX_RAW_SAMPLES) // k)
        best = None
        for on in combos:
            fixed = dict(fixed_features or {})
            fixed.update({j: float(j in on) for cols in groups.values() for j in cols})
            result = super().optimize(n, search_space_digest, fixed_features=fixed, optimizer_options=dict(options),
                                      **kwargs)
            if best is None or float(result[1].sum()) > float(best[1].sum()):
                best = result
        return best


@dataclass(frozen=True)
class Acquisition:
    """What Ax's BoTorch generator is given: the class (None: Ax's default choice), its options,
    the acquisition optimiser's settings (None: Ax's), and whether choice parameters are optimised
    once per value (ChoiceEnumeratingAcquisition) rather than relaxed."""

    cls: type[AcquisitionFunction] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None
    per_choice: bool = False


def acquisition_for(campaign: Campaign) -> Acquisition:
    """The acquisition for a campaign's objectives (module docstring's table)."""
    kind = acquisition_kind(campaign)
    if kind == "map":
        # it fantasises an observation at every candidate: a smaller optimiser budget than Ax's
        # default (20 restarts, 1024 raw samples) keeps a proposal to seconds
        return Acquisition(qNegIntegratedPosteriorVariance, {"num_mc_points": 256},
                           {"num_restarts": 4, "raw_samples": 128})
    if kind == "hypervolume":
        # Ax's default acquisition, optimised with the budget of BoTorch's qNEHVI tutorial (10
        # restarts, 512 raw samples) rather than Ax's 20 / 1024: the strategy step for 100
        # observations x 2 objectives drops from 2.4 s to under 2 s (benchmarks/strategy_step.py)
        return Acquisition(optimizer=HYPERVOLUME_OPTIMIZER)  # relaxed choices: see HYPERVOLUME_OPTIMIZER
    if kind == "cost":
        cost = campaign.strategy.cost
        by_name = {p.name: p for p in campaign.parameters}
        per = {name: [coef, isinstance(by_name[name], FloatParameter) and by_name[name].log_scale]
               for name, coef in cost.per.items() if coef}
        return Acquisition(CostWeightedLogNEI, {"cost_base": cost.base, "cost_per": per}, IMPROVEMENT_OPTIMIZER,
                           per_choice=True)
    return Acquisition(LogNEI, optimizer=IMPROVEMENT_OPTIMIZER, per_choice=True)


def experiment_cost(campaign: Campaign, params: dict[str, Any]) -> float:
    """The campaign's cost model evaluated for one recipe (1.0 without a cost model)."""
    cost = campaign.strategy.cost
    if cost is None:
        return 1.0
    return cost.base + sum(coef * float(params[name]) for name, coef in cost.per.items())


def register_with_ax() -> None:
    """Ax's JSON snapshot stores the acquisition class by name: register the ones Ax lacks."""
    from ax.storage.botorch_modular_registry import (ACQUISITION_FUNCTION_REGISTRY, ACQUISITION_REGISTRY,
                                                     register_acquisition, register_acquisition_function)

    if ChoiceEnumeratingAcquisition not in ACQUISITION_REGISTRY:
        register_acquisition(ChoiceEnumeratingAcquisition)

    for cls in (LogNEI, CostWeightedLogNEI, qNegIntegratedPosteriorVariance):
        if cls not in ACQUISITION_FUNCTION_REGISTRY:
            register_acquisition_function(cls)


def improvement_from(acq_value: float, acqf: str | None, cost: float) -> float | None:
    """Expected improvement (standardised objective units) behind an acquisition value, or None
    where the acquisition is not an improvement (mapping)."""
    if acqf == qNegIntegratedPosteriorVariance.__name__:
        return None
    log_ei = acq_value + (math.log(cost) if acqf == CostWeightedLogNEI.__name__ else 0.0)
    return math.exp(log_ei)
