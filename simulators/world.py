"""What every simulated world shares: the failure it raises, stable seeds, recipe checks against
its parameter space, and the book of samples it made (for the instruments to measure)."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np


class SynthesisFailed(Exception):
    """The synthesis made no usable sample; `reason` says why (in words a chemist reads)."""

    def __init__(self, reason: str, sample_id: str | None = None):
        self.reason = reason
        self.sample_id = sample_id
        super().__init__(f"synthesis {sample_id!r} failed: {reason}" if sample_id else reason)


def stable_seed(*parts: Any) -> int:
    """A 64-bit integer from a SHA-256 of the parts' text (stable across processes, unlike hash())."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def check_params(params: dict[str, Any], space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`params` checked against a parameter space ({name: {type, bounds | values, unit}}), floats
    as float; ValueError names the culprit."""
    if not isinstance(params, dict):
        raise ValueError(f"synthesis parameters must be a dict of {sorted(space)}, got {type(params).__name__}")
    unknown = sorted(set(params) - set(space))
    if unknown:
        raise ValueError(f"unknown synthesis parameter(s) {unknown}; allowed: {sorted(space)}")
    missing = sorted(set(space) - set(params))
    if missing:
        raise ValueError(f"missing synthesis parameter(s) {missing}; all of {sorted(space)} are required")
    out: dict[str, Any] = {}
    for name, spec in space.items():
        value = params[name]
        if spec["type"] == "choice":
            if value not in spec["values"]:
                raise ValueError(f"{name}={value!r} is not allowed; choose one of {list(spec['values'])}")
            out[name] = value
            continue
        lo, hi = spec["bounds"]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name}={value!r} must be a number in [{lo}, {hi}] {spec['unit']}")
        v = float(value)
        if not math.isfinite(v) or not (lo <= v <= hi):
            raise ValueError(f"{name}={v!r} is out of range; allowed [{lo}, {hi}] {spec['unit']}")
        out[name] = v
    return out


def from_unit_cube(u: np.ndarray, names: list[str] | tuple[str, ...], space: dict[str, dict[str, Any]]
                   ) -> list[np.ndarray]:
    """Columns of `u` (n x len(names), in [0, 1]) mapped onto the named float parameters' bounds,
    log-scaled where the space says so (for sampling the search space uniformly as the strategy sees it)."""
    cols = []
    for j, name in enumerate(names):
        lo, hi = space[name]["bounds"]
        cols.append(lo * (hi / lo) ** u[:, j] if space[name]["log_scale"] else lo + (hi - lo) * u[:, j])
    return cols


class World:
    """Base of the simulated worlds: a seed and every sample made, by id. A subclass's
    `synthesize(params, sample_id)` makes a sample (or raises SynthesisFailed) and `_keep`s it."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self._samples: dict[str, Any] = {}

    def _keep(self, sample: Any) -> Any:
        self._samples[sample.sample_id] = sample
        return sample

    def sample(self, sample_id: str) -> Any:
        try:
            return self._samples[sample_id]
        except KeyError:
            known = sorted(self._samples)
            shown = known[:10] + (["..."] if len(known) > 10 else [])
            raise KeyError(
                f"no sample {sample_id!r} in this world (it was never synthesised, or its synthesis "
                f"failed); known samples: {shown}"
            ) from None

    @property
    def samples(self) -> dict[str, Any]:
        return dict(self._samples)
