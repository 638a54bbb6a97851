"""What a technique declares about itself: readers and their options, analysers in chain order,
trainers, the curve axes a report plots and the descriptors it can produce.

A technique is a folder (sdl/techniques/<name>/ for the built-ins, any package for a third party)
whose `__init__.py` holds one `TECHNIQUE = Technique(...)`, registered under the entry-point group
`sdl.techniques`. Heavy parts (torch models, sasmodels) are named as "module:attribute" strings
and imported only when used, so reading a declaration is cheap: `sdl --help` and `sdl analyse
<t> --help` import no model.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from sdl.errors import AnalysisError

PLAIN_SUFFIXES = (".xy", ".dat", ".chi", ".gr", ".txt", ".csv", ".xye", ".sq", ".fq", ".iq")


def load(path: str) -> Any:
    """The object named by "module:attr" (imported now)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Option:
    """One keyword option of a reader, offered as `--<name with dashes>` by `sdl analyse <t>`."""

    name: str  # the reader's keyword, e.g. "q_unit" -> --q-unit
    help: str
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Reader:
    """A file reader: `function(path, **options) -> Measurement`, for files with these suffixes."""

    function: str  # "module:function"
    description: str
    suffixes: tuple[str, ...] = PLAIN_SUFFIXES
    options: tuple[Option, ...] = ()

    def accepts(self, path: Path) -> bool:
        return path.suffix.lower() in self.suffixes


@dataclass(frozen=True)
class Trainer:
    """`sdl train <technique> [NAME]`: a module with `add_arguments(parser)` and `run(args) -> int`."""

    module: str
    description: str


@dataclass(frozen=True)
class CurveAxes:
    """How a report plots a curve whose x array is `x` (an array name with its unit)."""

    x: str
    xlabel: str
    ylabel: str
    xscale: Literal["linear", "log"] = "linear"
    yscale: Literal["linear", "log"] = "linear"


@dataclass(frozen=True)
class DescriptorSpec:
    """A descriptor the technique's analysers can produce. `<...>` in a name stands for a part the
    data decides (e.g. `pd.fraction.<phase>`)."""

    name: str
    unit: str | None
    meaning: str
    kind: Literal["number", "class"] = "number"

    def matches(self, name: str) -> bool:
        head, sep, _ = self.name.partition("<")
        return name == self.name if not sep else name.startswith(head) and len(name) > len(head)


@dataclass(frozen=True)
class Technique:
    """One measuring technique, declared in the style of a sasmodels model file."""

    name: str  # the measurement's `technique` and the descriptors' prefix ("saxs" -> saxs.radius_nm)
    title: str
    readers: tuple[Reader, ...]
    analysers: dict[str, str]  # analyser name -> "module:Class", in default fallback-chain order
    descriptors: tuple[DescriptorSpec, ...]
    curves: tuple[CurveAxes, ...] = ()
    trainers: dict[str, Trainer] = field(default_factory=dict)  # the first is `sdl train <t>`'s default
    # keyword options of an analyser's constructor (e.g. a model folder): `sdl analyse <t> --<name>`,
    # and `{name: <analyser>, <option>: value}` in a campaign's `analysis:` chain
    analyser_options: dict[str, tuple[Option, ...]] = field(default_factory=dict)

    def reader_for(self, path: Path) -> Reader:
        """The first reader that takes the file's suffix, else the first (plain columns)."""
        if not self.readers:
            raise AnalysisError(f"technique {self.name!r} declares no file reader")
        return next((r for r in self.readers if r.accepts(path)), self.readers[0])

    def read(self, path: str | Path, **options: Any):
        """The Measurement in `path`; options a reader does not declare are not passed to it."""
        reader = self.reader_for(Path(path))
        known = {o.name for o in reader.options}
        return load(reader.function)(path, **{k: v for k, v in options.items() if k in known and v is not None})

    @property
    def options(self) -> tuple[Option, ...]:
        """Every reader's options, each name once."""
        seen: dict[str, Option] = {}
        for r in self.readers:
            for o in r.options:
                seen.setdefault(o.name, o)
        return tuple(seen.values())

    def analyser_option_names(self, analyser: str) -> set[str]:
        return {o.name for o in self.analyser_options.get(analyser, ())}

    @property
    def suffixes(self) -> tuple[str, ...]:
        return tuple(sorted({s for r in self.readers for s in r.suffixes}))

    def descriptor(self, name: str) -> DescriptorSpec | None:
        return next((d for d in self.descriptors if d.matches(name)), None)
