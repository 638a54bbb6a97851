"""The lab a run talks to: the embedded broker and a simulated lab's drivers, started and stopped together.

One lifecycle for `sdl run` (run_campaign) and `sdl drivers start` (serve). Simulated labs are
found only through the entry-point group `sdl.labs` (name -> factory(lab_id, broker_url, *,
seed, time_scale) returning the lab's drivers, each with start() and stop()); sdl never imports
the drivers' package itself.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Iterator

from sdl.config import Campaign
from sdl.errors import ConfigError
from sdl.transport import EmbeddedBroker

log = logging.getLogger("sdl.drivers")


def simulated_labs() -> dict[str, EntryPoint]:
    """The simulated labs installed (entry-point group `sdl.labs`), by name."""
    return {ep.name: ep for ep in entry_points(group="sdl.labs")}


@dataclass
class Lab:
    broker_url: str
    drivers: list[Any] = field(default_factory=list)  # started, in start order


@contextmanager
def running_lab(world: str | None, lab_id: str, broker_url: str | None = None, *, seed: int = 0,
                time_scale: float = 0.0) -> Iterator[Lab]:
    """Start the embedded broker when no `broker_url` is given, then the drivers of the simulated
    lab `world` (none when `world` is None) as lab `lab_id`; on exit stop the drivers (each
    publishes its retained "offline" status and disconnects) and the broker. ConfigError for a
    world no entry point names."""
    broker = None
    lab = Lab(broker_url or "")
    try:
        if broker_url is None:
            broker = EmbeddedBroker()
            lab.broker_url = broker.start()
        if world is not None:
            labs = simulated_labs()
            if world not in labs:
                raise ConfigError(f"lab.world {world!r} is not a known simulated lab; known: {sorted(labs)}")
            for d in labs[world].load()(lab_id, lab.broker_url, seed=seed, time_scale=time_scale):
                d.start()
                lab.drivers.append(d)
        yield lab
    finally:
        for d in reversed(lab.drivers):
            d.stop()
        if broker is not None:
            broker.stop()


def campaign_lab(campaign: Campaign) -> Any:
    """running_lab for a campaign: its `broker` (embedded if none) and its `lab.world` with the
    lab's seed (the strategy's when `lab.seed` is not set) and time scale."""
    seed = campaign.lab.seed if campaign.lab.seed is not None else campaign.strategy.seed
    return running_lab(campaign.lab.world, campaign.lab.id, campaign.broker, seed=seed,
                       time_scale=campaign.lab.time_scale)


def serve(world: str, lab_id: str, broker_url: str, *, seed: int = 0, time_scale: float = 0.0,
          stop: threading.Event | None = None) -> None:
    """`sdl drivers start`: run a simulated lab's drivers until SIGINT/SIGTERM (or `stop` is
    set), then stop them cleanly."""
    stop = stop or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        with running_lab(world, lab_id, broker_url, seed=seed, time_scale=time_scale) as lab:
            log.info("lab %r serving %s on %s", lab_id, [d.instrument for d in lab.drivers], broker_url)
            while not stop.wait(0.5):  # a timed wait lets the signal handler run promptly
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def start_drivers_hint(campaign: Campaign, world_hint: str | None, online: list[str], broker_url: str) -> str:
    """What to do about instruments without a driver, in commands the user can paste. `online`:
    the instruments whose driver is online; `world_hint`: the simulated lab the drivers would
    come from when the campaign's `lab.world` was cleared to run against external drivers."""
    if campaign.lab.world:  # sdl started that simulated lab here: it lacks the instrument
        return (f"the simulated lab {campaign.lab.world!r} started in this process runs {online or 'none'}; "
                "check the workflow's instrument names")
    world = world_hint
    if world is None:
        labs = sorted(simulated_labs())
        world = "<" + "|".join(labs) + ">" if labs else "<lab>"
        what = "start the lab's drivers on that broker; for a simulated lab"
    else:
        what = "start them"
    return f"{what}: `sdl drivers start --lab {world} --id {campaign.lab.id} --broker {broker_url}`"
