"""Which BoTorch acquisition function a campaign's objectives call for, and the one sdl adds.

  one objective (max/min/target)  -> qLogNoisyExpectedImprovement      (Ax's default)
  several objectives              -> qLogNoisyExpectedHypervolumeImprovement (Ax's default)
  goal `map`                      -> qNegIntegratedPosteriorVariance   (learn the surface)
  strategy.cost, one objective    -> CostWeightedLogNEI: log EI(x) - log cost(x)

Pending trials reach every one of them as `X_pending` (Ax passes the running trials' arms), so
k samples in flight get k different proposals. Imported only by the Ax strategy (torch, BoTorch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.active_learning import qNegIntegratedPosteriorVariance
from botorch.acquisition.input_constructors import acqf_input_constructor, get_acqf_input_constructor
from botorch.acquisition.logei import qLogNoisyExpectedImprovement

from sdl.config import Campaign, FloatParameter


class CostWeightedLogNEI(qLogNoisyExpectedImprovement):
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


@dataclass(frozen=True)
class Acquisition:
    """What Ax's BoTorch generator is given: the class (None: Ax's default choice), its options,
    and the acquisition optimiser's settings (None: Ax's)."""

    cls: type[AcquisitionFunction] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None


def acquisition_for(campaign: Campaign) -> Acquisition:
    """The acquisition for a campaign's objectives (module docstring's table)."""
    from sdl.strategy import acquisition_kind

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
        return Acquisition(optimizer={"num_restarts": 10, "raw_samples": 512})
    if kind == "cost":
        cost = campaign.strategy.cost
        by_name = {p.name: p for p in campaign.parameters}
        per = {name: [coef, isinstance(by_name[name], FloatParameter) and by_name[name].log_scale]
               for name, coef in cost.per.items() if coef}
        return Acquisition(CostWeightedLogNEI, {"cost_base": cost.base, "cost_per": per})
    return Acquisition()


def experiment_cost(campaign: Campaign, params: dict[str, Any]) -> float:
    """The campaign's cost model evaluated for one recipe (1.0 without a cost model)."""
    cost = campaign.strategy.cost
    if cost is None:
        return 1.0
    return cost.base + sum(coef * float(params[name]) for name, coef in cost.per.items())


def register_with_ax() -> None:
    """Ax's JSON snapshot stores the acquisition class by name: register the ones Ax lacks."""
    from ax.storage.botorch_modular_registry import ACQUISITION_FUNCTION_REGISTRY, register_acquisition_function

    for cls in (CostWeightedLogNEI, qNegIntegratedPosteriorVariance):
        if cls not in ACQUISITION_FUNCTION_REGISTRY:
            register_acquisition_function(cls)


def improvement_from(acq_value: float, acqf: str | None, cost: float) -> float | None:
    """Expected improvement (standardised objective units) behind an acquisition value, or None
    where the acquisition is not an improvement (mapping)."""
    if acqf == qNegIntegratedPosteriorVariance.__name__:
        return None
    log_ei = acq_value + (math.log(cost) if acqf == CostWeightedLogNEI.__name__ else 0.0)
    return math.exp(log_ei)
