"""sdl: a self-driving laboratory framework.

From Python (docs/python_api.md)::

    from sdl import Campaign, run
    result = run(Campaign.from_yaml("campaigns/nanoparticle_size.yaml", budget={"max_experiments": 5}))
    result.trials          # pandas DataFrame, one row per trial

The public names below live in `sdl.api` and are imported on first use, and heavy dependencies
(Ax, torch, sasmodels, pandas) only by the modules that need them, so `import sdl` and the CLI's
help stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = ("Campaign", "DescriptorValue", "Result", "Trial", "load_campaign", "resume", "run")
__all__ = [*_API, "ConfigError", "SdlError", "__version__"]

if TYPE_CHECKING:
    from sdl.api import Campaign, DescriptorValue, Result, Trial, load_campaign, resume, run
    from sdl.errors import ConfigError, SdlError


def __getattr__(name: str) -> Any:
    if name in _API:
        from sdl import api

        return getattr(api, name)
    if name in ("ConfigError", "SdlError"):
        from sdl import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'sdl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
