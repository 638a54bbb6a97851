"""ConsoleReporter: the subscriber that prints a run for `sdl run` / `sdl resume`.

`Reporter` turns the events a user interface cares about into four calls (started,
trial_finished, message, finished); ConsoleReporter prints them, ProgressBar
(`sdl.run(..., progress=True)`) shows them in a notebook.
"""

from __future__ import annotations

import sys
from typing import Any

from sdl.outcome import chosen, fmt_number, needed, score_legend, trial_verdict
from sdl.runner.events import CampaignStarted, Event, Finished, Message, Told, TrialFailed
from sdl.store import DEFAULT_STORE, store_option


class Reporter:
    """A subscriber for user interfaces: override the calls it needs."""

    def __call__(self, event: Event) -> None:
        if isinstance(event, CampaignStarted):
            self.started(event.campaign_id, event.campaign, event.done)
        elif isinstance(event, (Told, TrialFailed)):
            self.trial_finished(event.trial, event.evaluation, list(event.descriptors))
        elif isinstance(event, Message):
            self.message(event.level, event.text)
        elif isinstance(event, Finished):
            self.finished(event.summary)

    def started(self, campaign_id: str, campaign: Any, done: int) -> None:
        """The loop starts (`done` trials of the campaign already finished)."""

    def trial_finished(self, trial: Any, evaluation: Any, descriptors: list) -> None:
        """A trial completed or failed (`trial` is its TrialRow; `evaluation` None when it failed
        before it was evaluated)."""

    def message(self, level: str, text: str) -> None:
        """Something the people watching should know (level info | warning | error)."""

    def finished(self, summary: Any) -> None:
        """The loop ended; `summary` is its sdl.runner.Summary."""


class ConsoleReporter(Reporter):
    """A progress bar over the experiment budget, three lines per finished trial (parameters; the
    descriptors the evaluation used; the score and what it met or missed), and the outcome at the end."""

    def __init__(self, quiet: bool = False, store_url: str | None = None):
        self.quiet = quiet
        self.store_url = store_url
        self.bar = None

    def started(self, campaign_id: str, campaign, done: int) -> None:
        from tqdm import tqdm

        self.campaign = campaign
        print(f"campaign {campaign_id}: {campaign.description.strip() or campaign.name}")
        if not self.quiet:
            print(f"  {score_legend(campaign)}")
        self.bar = tqdm(total=campaign.budget.max_experiments, initial=done, unit="exp", dynamic_ncols=True,
                        desc=campaign.name, file=sys.stderr)

    def trial_finished(self, trial, evaluation, descriptors) -> None:
        if self.bar is not None:
            self.bar.update(1)
        if self.quiet:
            return
        order = [p.name for p in self.campaign.parameters]
        given = trial.parameters
        params = " ".join(f"{k}={fmt_number(given[k])}" for k in [*(n for n in order if n in given),
                                                                   *(n for n in given if n not in order)])
        measured = chosen(descriptors)
        desc = " ".join(measured[n].short() for n in needed(self.campaign) if n in measured)
        pad = " " * 10
        if trial.status == "failed":
            line = f"trial {trial.index:3d} FAILED  {params}\n{pad}{trial.failure}" + (f"\n{pad}{desc}" if desc else "")
        else:
            verdict = trial_verdict(self.campaign, measured, status=trial.status, score=trial.score,
                                    target_met=trial.target_met, failure=trial.failure)
            if evaluation is not None and evaluation.missing:
                verdict += f" (not produced: {', '.join(evaluation.missing)})"
            line = f"trial {trial.index:3d} {params}\n{pad}{desc}\n{pad}-> {verdict}"
        self._write(line)

    def message(self, level: str, text: str) -> None:
        self._write(f"{level}: {text}")

    def finished(self, summary) -> None:
        if self.bar is not None:
            self.bar.close()
        t = summary.timings_s
        print(f"\n{summary.status}: {summary.stop_reason}")
        print(f"  trials {summary.n_trials} (completed {summary.n_completed}, failed {summary.n_failed})")
        if summary.outcome is not None:
            for line in summary.outcome.lines():
                print(f"  {line}")
        print("  time: strategy {:.1f} s, analysis {:.1f} s, instruments {:.1f} s".format(
            t.get("strategy_s", 0), t.get("analysis_s", 0), t.get("instrument_wall_s", 0)))
        if summary.makespan_s:
            clock = "simulated" if summary.clock == "instrument" else "wall-clock"
            busy = ", ".join(f"{k} {u:.0%}" for k, u in sorted(summary.utilisation.items()))
            span = f"{summary.makespan_s / 3600:.2f} h" if summary.makespan_s >= 3600 else f"{summary.makespan_s:.3g} s"
            print(f"  makespan {span} ({clock}); instrument utilisation: {busy}")
        opt = store_option(summary.store_url or self.store_url or DEFAULT_STORE)
        print(f"  see `sdl status {summary.campaign_id}{opt}`, `sdl report {summary.campaign_id}{opt}`")

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line)


class ProgressBar(Reporter):
    """`sdl.run(..., progress=True)`: a tqdm bar over the experiment budget (a widget in Jupyter),
    with the lowest score so far; the loop's warnings and messages are printed above it."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.best: float | None = None

    def started(self, campaign_id: str, campaign: Any, done: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=campaign.budget.max_experiments, initial=done, unit="exp", desc=campaign.name)

    def trial_finished(self, trial: Any, evaluation: Any, descriptors: Any) -> None:
        if trial.score is not None and (self.best is None or trial.score < self.best):
            self.best = trial.score
        if self.bar is not None:
            if self.best is not None:
                self.bar.set_postfix(lowest_score=f"{self.best:.3g}", refresh=False)
            self.bar.update(1)

    def message(self, level: str, text: str) -> None:
        if self.bar is not None:
            self.bar.write(f"{level}: {text}")

    def finished(self, summary: Any) -> None:
        if self.bar is not None:
            self.bar.close()
