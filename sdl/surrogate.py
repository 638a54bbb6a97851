"""A Gaussian-process model of one descriptor over a campaign's parameters, fitted with BoTorch
directly (not through Ax), so it exists for Sobol campaigns as well as Bayesian ones. The report
draws its mean and the parameter importances from it; benchmarks can use it to measure how well a
campaign has mapped a response surface.

Inputs are encoded into the unit cube: float/int parameters scaled linearly (or in log10 where the
parameter has `log_scale`) from their bounds to [0, 1], choice parameters one-hot, fixed
parameters dropped (they never vary, so there is nothing to learn about them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from sdl.config import Campaign


@dataclass(frozen=True)
class Column:
    """One input column of the encoding: `name` is the parameter name for a number, or
    "<parameter>=<value>" for one level of a choice parameter."""

    name: str
    parameter: str


def columns(campaign: Campaign) -> list[Column]:
    """The encoded columns, in the order `encode` writes them."""
    cols: list[Column] = []
    for p in campaign.parameters:
        if p.type == "choice":
            cols += [Column(f"{p.name}={v}", p.name) for v in p.values]
        elif p.type in ("float", "int"):
            cols.append(Column(p.name, p.name))
    return cols


def encode(campaign: Campaign, params_list: Sequence[dict[str, Any]]) -> torch.Tensor:
    """Parameter dicts -> (n, len(columns(campaign))) float64 tensor on the unit cube.
    Values outside the bounds map outside [0, 1]; a choice value not in `values` is an error."""
    rows = []
    for params in params_list:
        row: list[float] = []
        for p in campaign.parameters:
            if p.type == "fixed":
                continue
            if p.name not in params:
                raise ValueError(f"parameter {p.name!r} missing from {params}")
            v = params[p.name]
            if p.type == "choice":
                levels = [str(x) for x in p.values]
                if str(v) not in levels:
                    raise ValueError(f"{p.name}={v!r} is not one of {p.values}")
                row += [float(str(v) == x) for x in levels]
            else:
                lo, hi = p.bounds
                if p.log_scale:
                    v, lo, hi = math.log10(v), math.log10(lo), math.log10(hi)
                row.append((float(v) - lo) / (hi - lo))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.double).reshape(len(rows), len(columns(campaign)))


@dataclass
class Surrogate:
    """A fitted GP (`model`, a BoTorch SingleTaskGP) of one outcome over `campaign`'s parameters."""

    campaign: Campaign
    model: Any
    columns: list[Column]

    def predict(self, params_list: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the latent function (not of a new noisy
        measurement) at each parameter dict, in the outcome's own units."""
        with torch.no_grad():
            post = self.model.posterior(encode(self.campaign, params_list))
        mean = post.mean.squeeze(-1).numpy()
        std = post.variance.clamp_min(0).sqrt().squeeze(-1).numpy()
        return mean, std

    def importances(self) -> dict[str, float]:
        """Parameter name -> relative importance, from the ARD lengthscales: a column's importance is
        1/lengthscale, a choice parameter's the largest over its one-hot columns; normalised to sum
        to 1 and sorted, most important first. Lengthscales are on the unit-cube (or log10 for
        log-scale parameters) encoding, so this compares effects across each parameter's whole
        range, not per physical unit. Fixed parameters are absent."""
        kernel = self.model.covar_module
        kernel = getattr(kernel, "base_kernel", kernel)  # a ScaleKernel wraps the ARD kernel
        inv = (1.0 / kernel.lengthscale.detach().reshape(-1)).numpy()
        score: dict[str, float] = {}
        for c, w in zip(self.columns, inv):
            score[c.parameter] = max(score.get(c.parameter, 0.0), float(w))
        total = sum(score.values())
        return dict(sorted(((k, v / total) for k, v in score.items()), key=lambda kv: -kv[1]))


def fit(campaign: Campaign, params_list: Sequence[dict[str, Any]], y: Sequence[float] | np.ndarray,
        yvar: Sequence[float] | np.ndarray | None = None, seed: int = 0) -> Surrogate:
    """Fit a GP to outcomes `y` (any unit) at `params_list` by maximising the exact marginal
    likelihood. `yvar`: known observation variances (unit²); without it the noise is inferred,
    which is usually right for synthesis scatter. Deterministic for a given `seed`; the global
    torch random state is left as it was."""
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    cols = columns(campaign)
    if not cols:
        raise ValueError("the campaign has no varied parameter to model")
    X = encode(campaign, params_list)
    Y = torch.as_tensor(np.asarray(y, dtype=float), dtype=torch.double).reshape(-1, 1)
    if len(Y) != len(X) or len(Y) == 0 or not torch.isfinite(Y).all():
        raise ValueError(f"need one finite outcome per parameter dict, got {len(Y)} for {len(X)}")
    Yvar = None if yvar is None else torch.as_tensor(np.asarray(yvar, dtype=float), dtype=torch.double).reshape(-1, 1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SingleTaskGP(X, Y, train_Yvar=Yvar, outcome_transform=Standardize(m=1))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    model.eval()
    return Surrogate(campaign, model, cols)
