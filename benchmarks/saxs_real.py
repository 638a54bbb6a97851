"""saxs_ml on real measured SANS curves (tests/data/sas_real: SasView's sasdata example data, read with
sasdata's loaders): for each sample, what the analyser says and whether that is right, flagged (`ood` or
`low_confidence` on saxs.model) or a confident error (wrong and unflagged). What counts as right is in
tests/data/sas_real/expected.json (the library shapes that describe the sample; a hollow sample's core-shell
answer must have its core contrast within HOLLOW_CORE of 0). Under each answer its warnings but the model-free
descriptors' (info["warnings"], as `sdl analyse saxs` prints them): the reader's, and why saxs.model is flagged.

    python benchmarks/saxs_real.py [--plot DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from printout import Printout  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "sas_real"
OUT = Path(__file__).resolve().parent / "results" / "saxs_real.txt"
HOLLOW_CORE = 0.3  # |core contrast| (core SLD - solvent relative to shell - solvent) below which a core is "solvent"


def verdict(result, expected: dict) -> str:
    """"right", "flagged" (wrong or not, saxs.model carries ood/low_confidence) or "confident error"."""
    got = {d.name: d for d in result.descriptors}
    model = got["saxs.model"]
    right = model.value in expected["accepted"]
    if right and expected.get("hollow") and model.value.startswith("core_shell"):
        cc = got.get("saxs.core_contrast")
        right = cc is not None and abs(cc.value) < HOLLOW_CORE
    if right:
        return "right"
    return "flagged" if {"ood", "low_confidence"} & set(model.flags) else "confident error"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plot", type=Path, default=None, help="also write one PNG per file (sdl analyse --plot)")
    args = ap.parse_args()
    from sdl.analysis import technique
    from sdl.report import plot_analysis
    from sdl.techniques.saxs.formats import read_sas
    from sdl.techniques.saxs.ml import SaxsMLAnalyser

    out = Printout()
    an = SaxsMLAnalyser()
    spec = json.loads((DATA / "expected.json").read_text())
    out("saxs_ml on real measured SANS curves (tests/data/sas_real; expected.json says what is right)")
    counts: dict[str, int] = {}
    unflagged_right = 0
    for e in spec["files"]:
        t = time.perf_counter()
        m = read_sas(DATA / e["file"])
        r = an.analyse(m)
        dt = time.perf_counter() - t
        got = {d.name: d for d in r.descriptors}
        model = got["saxs.model"]
        v = verdict(r, e)
        counts[v] = counts.get(v, 0) + 1
        unflagged_right += v == "right" and not ({"ood", "low_confidence"} & set(model.flags))
        sizes = ", ".join(f"{k.split('.')[1]} {got[k].value:.3g}" for k in ("saxs.radius_nm", "saxs.shell_nm", "saxs.length_nm",
                          "saxs.polar_radius_nm", "saxs.polydispersity", "saxs.core_contrast", "saxs.volume_fraction")
                          if k in got)
        sf = got.get("saxs.structure_factor")
        rg = got.get("saxs.rg_nm")
        out(f"{e['file']}: {e['sample']}")
        how = "apparent" if rg is None or "fit_failed" in rg.flags else (r.info.get("saxs.rg_nm") or {}).get("fit") or "?"
        guinier = f"Rg {rg.value:.3g} nm ({how.split(' (')[0]}) [{', '.join(rg.flags) or 'no flag'}]" if rg else "no Rg"
        out(f"    accepted {'/'.join(e['accepted'])}{' (hollow)' if e.get('hollow') else ''}; answer {model.value} "
            f"(p {max(model.probabilities.values()):.2f}) [{', '.join(model.flags) or 'no flag'}] -> {v.upper()}; "
            f"{sizes or 'no sizes'}{f', S(q) {sf.value}' if sf else ''}; {guinier}; {dt:.1f} s")
        for w in (w for w in r.info.get("warnings", []) if not w.startswith("saxs.")):  # the reader's, why flagged
            out(f"    warning: {w}")
        if args.plot:
            plot_analysis(r, args.plot / f"{Path(e['file']).stem}.png", technique=technique("saxs"), measurement=m)
    n = len(spec["files"])
    out(f"{n} real curves: right {counts.get('right', 0)} ({unflagged_right} of them unflagged), flagged "
        f"{counts.get('flagged', 0)}, confident errors {counts.get('confident error', 0)}")
    out.write(OUT)


if __name__ == "__main__":
    main()
