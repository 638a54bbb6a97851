"""What every benchmark does with its figures: print each line as it comes (long runs show
progress), keep it, and write all of them to a results file under the command that made them."""

from __future__ import annotations

import sys
from pathlib import Path


class Printout:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def write(self, path: str | Path, head: str | None = None) -> Path:
        """The lines, under `head` (default: the command line as a comment), to `path`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([head or f"# python {' '.join(sys.argv)}", *self.lines]) + "\n")
        return path
