"""What every benchmark does with its figures: print each line as it comes (long runs show
progress), keep it, and write all of them to a results file under the command that made them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str:
    """The commit the figures were made on, with `+changes` when the tree differs from it."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "sdl", "simulators", "drivers", "benchmarks",
                ":(exclude)benchmarks/results")
    return head + ("+changes" if dirty else "")


class Printout:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.commit = commit()  # at the start: the code the run imported, not what HEAD is when it ends

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def write(self, path: str | Path, head: str | None = None) -> Path:
        """The lines, under `head` (default: the command line as a comment) and the commit they
        were made on, to `path`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [head or f"# python {' '.join(sys.argv)}", f"# commit {self.commit}", *self.lines]
        path.write_text("\n".join(lines) + "\n")
        return path
