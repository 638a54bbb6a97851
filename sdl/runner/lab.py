"""The lab a run talks to: the embedded broker and a simulated lab's drivers, started and stopped together.

One lifecycle for `sdl run` (run_campaign) and `sdl drivers start` (serve). Simulated labs are
found only through the entry-point group `sdl.labs` (name -> factory(lab_id, broker_url, *,
seed, time_scale) returning the lab's drivers, each with start() and stop(), and `use_secret(secret)`
when they authenticate messages); sdl never imports the drivers' package itself.

Isolation (docs/security.md): a simulated lab that `sdl run` starts for a campaign whose `lab.id`
is the default runs under a lab id of its own (`lab-<8 hex>`) and with a random secret shared by
its drivers and the orchestrator of this process, so campaigns sharing a broker never answer each
other's commands. A lab started under a lab id already served on the broker is refused by its
drivers (drivers.base.InstrumentInUse). `mosquitto_acl` writes the broker ACLs of a lab.
"""

from __future__ import annotations

import logging
import secrets
import shlex
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Iterable, Iterator

from sdl.config import Campaign
from sdl.config import Lab as LabConfig
from sdl.errors import ConfigError
from sdl.protocol import lab_secret, new_secret, topic
from sdl.transport import EmbeddedBroker

log = logging.getLogger("sdl.drivers")


def simulated_labs() -> dict[str, EntryPoint]:
    """The simulated labs installed (entry-point group `sdl.labs`), by name."""
    return {ep.name: ep for ep in entry_points(group="sdl.labs")}


DEFAULT_LAB_ID = LabConfig.model_fields["id"].default  # `lab.id` when a campaign does not set it


@dataclass
class Lab:
    broker_url: str
    drivers: list[Any] = field(default_factory=list)  # started, in start order
    id: str = ""  # the lab id its drivers run under (the topic segment sdl/<id>/...)
    secret: bytes | str | None = None  # the lab secret its drivers sign with (None: unsigned)


@contextmanager
def running_lab(world: str | None, lab_id: str, broker_url: str | None = None, *, seed: int = 0,
                time_scale: float = 0.0, secret: bytes | str | None = None) -> Iterator[Lab]:
    """Start the embedded broker when no `broker_url` is given, then the drivers of the simulated
    lab `world` (none when `world` is None) as lab `lab_id`; on exit stop the drivers (each
    publishes its retained "offline" status and disconnects) and the broker. `secret`: the lab
    secret the drivers sign and check messages with (None: SDL_LAB_SECRET / SDL_LAB_SECRET_FILE,
    else unsigned). ConfigError for a world no entry point names; drivers.base.InstrumentInUse
    (a DriverError) when drivers of `lab_id` already serve one of the lab's instruments."""
    broker = None
    lab = Lab(broker_url or "", id=lab_id, secret=secret if secret is not None else lab_secret())
    try:
        if broker_url is None:
            broker = EmbeddedBroker()
            lab.broker_url = broker.start()
        if world is not None:
            labs = simulated_labs()
            if world not in labs:
                raise ConfigError(f"lab.world {world!r} is not a known simulated lab; known: {sorted(labs)}")
            for d in labs[world].load()(lab_id, lab.broker_url, seed=seed, time_scale=time_scale):
                if lab.secret is not None and callable(getattr(d, "use_secret", None)):
                    d.use_secret(lab.secret)
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
    lab's seed (the strategy's when `lab.seed` is not set) and time scale. A simulated lab runs
    under a lab id of its own when `lab.id` is the default (`lab-<8 hex>`: campaigns sharing a
    broker never meet), and signs its messages with the lab secret of the environment or, when
    none is set, a random one (the Lab it yields has both, for the Orchestrator)."""
    seed = campaign.lab.seed if campaign.lab.seed is not None else campaign.strategy.seed
    lab_id, secret = campaign.lab.id, lab_secret()
    if campaign.lab.world is not None:
        if lab_id == DEFAULT_LAB_ID:
            lab_id = f"{lab_id}-{secrets.token_hex(4)}"
        if secret is None:
            secret = new_secret()  # the drivers are in this process: no one else needs it
    return running_lab(campaign.lab.world, lab_id, campaign.broker, seed=seed, time_scale=campaign.lab.time_scale,
                       secret=secret)


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
    return f"{what}: `sdl drivers start --lab {world} --id {campaign.lab.id} --broker {shlex.quote(broker_url)}`"


def mosquitto_acl(lab_id: str, instruments: Iterable[str], *, orchestrator_user: str | None = None,
                  driver_user: str = "sdl-{lab}-{instrument}") -> str:
    """A Mosquitto `acl_file` for one lab (docs/security.md): the orchestrator's user may write
    every instrument's commands and read their replies and statuses (`sdl/<lab>/+/...`, what it
    subscribes to; `sdl validate` reads the statuses too); each instrument's driver user
    may read its own commands, write its own replies and read/write its own status (the last will
    included) and nothing else. Users: `orchestrator_user` (default `sdl-<lab>-orchestrator`) and
    `driver_user` formatted with lab and instrument. Anonymous clients get nothing (with
    `allow_anonymous false`)."""
    names = sorted(set(instruments))
    if not names:
        raise ConfigError("mosquitto_acl: name at least one instrument")
    for name in names:
        topic(lab_id, name, "cmd")  # ProtocolError for a name that is not a topic segment
    orch = orchestrator_user or f"sdl-{lab_id}-orchestrator"
    lines = [f"# Mosquitto acl_file for sdl lab {lab_id!r} (instruments: {', '.join(names)})",
             "# mosquitto.conf: allow_anonymous false / password_file <file> / acl_file <this file>",
             "", f"user {orch}", f"topic write {topic(lab_id, '+', 'cmd')}", f"topic read {topic(lab_id, '+', 'reply')}",
             f"topic read {topic(lab_id, '+', 'status')}"]
    for name in names:
        lines += ["", f"user {driver_user.format(lab=lab_id, instrument=name)}",
                  f"topic read {topic(lab_id, name, 'cmd')}", f"topic write {topic(lab_id, name, 'reply')}",
                  f"topic readwrite {topic(lab_id, name, 'status')}"]
    return "\n".join(lines) + "\n"
