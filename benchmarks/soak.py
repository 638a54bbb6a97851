"""Soak: does a long Bayesian campaign survive faults without losing, repeating or changing a trial?

Runs one campaign (campaigns/nanoparticle_size.yaml with the budget raised to --trials and the
target stop rule off, so every trial runs) twice against the same external lab: once fault-free,
once with faults injected at random points (seeded by --seed), then compares the two stores trial
by trial. The lab is what a shared deployment has: its own Mosquitto on a free port (started,
killed and restarted here; never the one on 1883), the simulated nanoparticle drivers as a
process of their own (`sdl drivers start`), the orchestrator as a process of its own (`sdl run`,
then `sdl resume` after every stop), messages authenticated with a lab secret (SDL_LAB_SECRET).

Faults, each placed on a random trial and a random phase of it (generation: the model is choosing
the trial; synthesis: its synthesis command is in flight; analysis: it is measured, not yet told):

  driver_kill        the drivers' process killed (-9) and started again at once
  broker_restart     Mosquitto killed (-9), back on the same port after a random 0.2-2 s outage
  orchestrator_kill  the orchestrator killed (-9); `sdl resume` continues
  junk               a burst on the lab's topics: garbage bytes, a NaN literal, a 1 MB payload,
                     forged results/errors for the command in flight (its real id, unsigned and
                     signed with a wrong secret), a replayed real reply, forged retained "offline"
                     statuses, a forged 900 degC synthesis command

Whenever the orchestrator ends before the campaign is finished (killed, or stopped because an
instrument went offline), the lab is brought back and `sdl resume` continues it. Printed per fault:
how many were injected and the trials lost, duplicated and diverging among the trials they hit,
then over the whole campaign (goal 0 / 0 / 0):

  lost        a trial of the fault-free run missing or unfinished in the faulted run
  duplicated  a step of a trial commanded or measured more than once in the store, or a trial
              beyond the budget
  diverging   a trial whose parameters, status, objectives, score or failure differ (exactly)

    python benchmarks/soak.py [--trials 100] [--seed 0] [--quick] [--kind bayesian|sobol]
        [--time-scale 1e-4] [--faults driver_kill=3,broker_restart=3,orchestrator_kill=3,junk=5]

--time-scale 1e-4 (not 0) gives each synthesis 0.05-1.5 s of real time, so that faults land while
a command is in flight, where they matter. Children run with one torch thread. The two runs go side
by side, so both see the same machine load; most of a run's time is the strategy's proposals (a GP
fit and acquisition optimisation per trial, growing with the observations), printed at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from printout import Printout  # noqa: E402

from sdl.protocol import Authenticator, Envelope, command, new_secret, topic  # noqa: E402
from sdl.store import Store  # noqa: E402
from sdl.transport import MqttClient  # noqa: E402

DEMO = ROOT / "campaigns" / "nanoparticle_size.yaml"
SDL = [sys.executable, "-m", "sdl.cli"]
INSTRUMENTS = ("robot", "saxs")
PHASES = ("generation", "synthesis", "analysis")
FAULTS = ("driver_kill", "broker_restart", "orchestrator_kill", "junk")
DEFAULT_FAULTS = {"driver_kill": 3, "broker_restart": 3, "orchestrator_kill": 3, "junk": 5}
QUICK_FAULTS = {"driver_kill": 1, "broker_restart": 1, "orchestrator_kill": 1, "junk": 1}
FINISHED = ("completed", "failed")
POLL_S = 0.02
MAX_RESUMES_IN_A_ROW = 5  # resumes that end without a new trial finished: the lab is broken, not faulty


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, timeout: float, why: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(poll)
    raise RuntimeError(f"soak: {why} (waited {timeout:g} s)")


# ----- the lab: broker, drivers, orchestrator as processes -----------------------------------------


class Mosquitto:
    """A Mosquitto of the soak's own on `port` (loopback), which it may kill and restart."""

    def __init__(self, port: int, log: Path):
        self.port, self.log, self.proc = port, log, None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                if self.proc.poll() is not None:  # the port still held by the killed one: try again
                    self.proc = self._spawn()
                return False

        self.proc = self._spawn()
        wait_for(up, 20, f"mosquitto did not listen on port {self.port} (log {self.log})")

    def _spawn(self) -> subprocess.Popen:
        with open(self.log, "a") as out:
            return subprocess.Popen(["mosquitto", "-p", str(self.port)], stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


class Watch:
    """The soak's own MQTT client: which driver session is online per instrument, the last real
    (signed) reply seen, and the publisher of junk."""

    def __init__(self, broker_url: str, lab: str):
        self.lab = lab
        self.online: dict[str, str | None] = {}  # instrument -> session online (None: offline)
        self.last_reply: tuple[str, bytes] | None = None
        self.client = MqttClient(broker_url, client_id=f"soak-watch-{lab}")
        self.client.connect()
        self.client.subscribe(topic(lab, "+", "status"), self._status)
        self.client.subscribe(topic(lab, "+", "reply"), self._reply)

    def _status(self, name: str, payload: bytes) -> None:
        try:
            env = Envelope.from_bytes(payload, name)
        except Exception:
            return  # junk (ours) or a cleared status
        if env.auth is None:
            return  # a forgery (ours): the drivers sign
        self.online[name.split("/")[-2]] = env.session if env.body.get("state") != "offline" else None

    def _reply(self, name: str, payload: bytes) -> None:
        if b'"auth":"hmac-sha256:' in payload:
            self.last_reply = (name, payload)

    def sessions(self) -> dict[str, str | None]:
        return {i: self.online.get(i) for i in INSTRUMENTS}

    def close(self) -> None:
        self.client.close()


class Drivers:
    """The simulated nanoparticle lab's drivers as a process (`sdl drivers start`)."""

    def __init__(self, broker_url: str, lab: str, seed: int, time_scale: float, env: dict, log: Path, watch: Watch):
        self.args = [*SDL, "drivers", "start", "--lab", "nanoparticles", "--id", lab, "--broker", broker_url,
                     "--seed", str(seed), "--time-scale", repr(time_scale)]
        self.env, self.log, self.watch, self.proc = env, log, watch, None

    def start(self) -> None:
        """Start them and wait until both instruments are online under new sessions (a start that
        finds the killed sessions' statuses not yet replaced by their last wills is refused by the
        drivers themselves: tried again)."""
        before = self.watch.sessions()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with open(self.log, "a") as out:
                self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
            while self.proc.poll() is None and time.monotonic() < deadline:
                now = self.watch.sessions()
                if all(now[i] and now[i] != before[i] for i in INSTRUMENTS):
                    return
                time.sleep(0.05)
            time.sleep(0.5)
        raise RuntimeError(f"soak: the drivers did not come online (log {self.log})")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def campaign_file(folder: Path, trials: int, seed: int, kind: str, lab: str, broker_url: str) -> tuple[Path, str]:
    """The demo campaign against the external lab: `trials` experiments, no target stop, own store."""
    d = yaml.safe_load(DEMO.read_text())
    d["lab"] = {"id": lab, "world": None}  # the drivers run as a process of their own
    d["broker"] = broker_url
    d["store"] = f"sqlite:///{folder}/sdl.db"
    d["strategy"].update(kind=kind, seed=seed)
    d["budget"] = {"max_experiments": trials, "stop_on_target": False}
    path = folder / "campaign.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path, d["store"]


# ----- where the campaign is: read from the store (read-only) --------------------------------------


class Progress:
    def __init__(self, db: Path):
        self.db = db
        self.conn: sqlite3.Connection | None = None

    def _q(self, sql: str, *args):
        if self.conn is None:
            if not self.db.exists():
                return []
            self.conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:  # tables not made yet, or busy
            return []

    def campaign(self) -> tuple[str, str, str | None] | None:
        rows = self._q("SELECT id, status, stop_reason FROM campaign")
        return rows[0] if rows else None

    def trials(self) -> dict[int, str]:
        return dict(self._q('SELECT "index", status FROM trial'))

    def commands(self, index: int) -> dict[str, tuple[str, str]]:
        return {step: (status, cid) for cid, step, status in
                self._q('SELECT id, step, status FROM command WHERE trial_index = ?', index)}

    def phase_of(self, index: int) -> str | None:
        """The phase trial `index` is in now, 'past' once it is beyond all of them, or None before."""
        trials = self.trials()
        if index in trials:
            if trials[index] in FINISHED:
                return "past"
            cmds = self.commands(index)
            if cmds.get("synthesis", ("", ""))[0] in ("sent", "acked"):
                return "synthesis"
            if cmds.get("saxs", ("", ""))[0] == "done":
                return "analysis"
            return "between"  # stored, between two commands
        if index - 1 in trials and trials[index - 1] in FINISHED:
            return "generation"
        if any(i > index for i in trials):
            return "past"
        return None

    def in_flight(self) -> list[tuple[str, str, int]]:
        """(step, command id, trial index) of the commands in flight now."""
        return [(s, c, i) for c, s, i in self._q("SELECT id, step, trial_index FROM command WHERE status IN "
                                                 "('sent', 'acked')")]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# ----- faults --------------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    trial: int
    phase: str
    hit: str = ""  # the phase it hit ('late': the trial was past that phase when the soak saw it)
    at_s: float = 0.0


def schedule(rng: random.Random, counts: dict[str, int], trials: int, first: int) -> list[Fault]:
    """Faults on distinct trials (from `first`: after the start design), each with a random phase."""
    kinds = [k for k, n in counts.items() for _ in range(n)]
    where = rng.sample(range(first, trials), min(len(kinds), trials - first))
    rng.shuffle(kinds)
    faults = [Fault(k, t, rng.choice(PHASES)) for k, t in zip(kinds, where)]
    return sorted(faults, key=lambda f: (f.trial, PHASES.index(f.phase)))


def junk(watch: Watch, progress: Progress, lab: str, rng: random.Random) -> int:
    """One burst of junk and forgeries on the lab's topics; the number of messages published."""
    pub = watch.client.publish
    wrong = Authenticator(new_secret())
    n = 0
    for inst in INSTRUMENTS:
        reply_t, status_t, cmd_t = topic(lab, inst, "reply"), topic(lab, inst, "status"), topic(lab, inst, "cmd")
        pub(reply_t, rng.randbytes(200))
        pub(reply_t, b'{"kind": "result", "correlation_id": "x", "body": {"v": NaN}}')
        pub(reply_t, b"[" * 1_000_000)
        forged = Envelope(kind="status", session="f" * 16, body={"state": "offline", "instrument": inst})
        pub(status_t, forged.to_bytes(), retain=True)  # a retained forged offline, unsigned
        bad = command("synthesize", correlation_id=f"forged-{rng.getrandbits(64):x}",
                      params={"temperature_C": 900.0, "precursor_mM": 5.0, "surfactant_ratio": 1.0,
                              "reducing_agent": "citrate", "time_min": 10.0})
        pub(cmd_t, bad.to_bytes())
        pub(cmd_t, wrong.seal(cmd_t, bad.to_bytes()))
        n += 6
    for step, cid, index in progress.in_flight():  # an insider who read the command's id on the wire
        inst = "robot" if step == "synthesis" else "saxs"
        reply_t = topic(lab, inst, "reply")
        for env in (Envelope(kind="result", correlation_id=cid, body={"sample": {"radius_nm": 8.0}}),
                    Envelope(kind="error", correlation_id=cid, body={"code": "synthesis_failed",
                                                                     "message": "forged"})):
            pub(reply_t, env.to_bytes())
            pub(reply_t, wrong.seal(reply_t, env.to_bytes()))
            n += 2
    if watch.last_reply is not None:  # a real signed reply, replayed
        pub(*watch.last_reply)
        n += 1
    return n


# ----- one run -------------------------------------------------------------------------------------


@dataclass
class Run:
    store: str
    cid: str = ""
    wall_s: float = 0.0
    resumes: list[str] = field(default_factory=list)  # why each resume was needed
    faults: list[Fault] = field(default_factory=list)
    junk_messages: int = 0


def run(folder: Path, args, faults: list[Fault], rng: random.Random, say) -> Run:
    """The campaign in `folder` against a lab of its own, with `faults` injected."""
    folder.mkdir(parents=True)
    lab = f"soak-{folder.name}-{os.getpid()}"
    broker = Mosquitto(free_port(), folder / "mosquitto.log")
    broker.start()
    env = {**os.environ, "SDL_LAB_SECRET": new_secret(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    watch = Watch(broker.url, lab)
    drivers = Drivers(broker.url, lab, args.seed, args.time_scale, env, folder / "drivers.log", watch)
    cfile, store = campaign_file(folder, args.trials, args.seed, args.kind, lab, broker.url)
    progress = Progress(folder / "sdl.db")
    out = Run(store=store, faults=faults)
    orch_log = open(folder / "orchestrator.log", "a")
    pending = list(faults)
    proc = None
    try:
        drivers.start()
        t0 = time.monotonic()
        proc = subprocess.Popen([*SDL, "run", str(cfile), "--quiet"], stdout=orch_log, stderr=subprocess.STDOUT,
                                env=env, cwd=folder)
        stalled, done_before = 0, -1
        while True:
            if proc.poll() is not None:
                row = progress.campaign()
                if row and row[1] == "finished":
                    break
                done = sum(s in FINISHED for s in progress.trials().values())
                stalled = stalled + 1 if done == done_before else 0
                done_before = done
                if row is None or stalled >= MAX_RESUMES_IN_A_ROW:
                    raise RuntimeError(f"soak: the orchestrator ended (rc {proc.returncode}) and resuming does not "
                                       f"help; see {folder}/orchestrator.log")
                out.cid = row[0]
                out.resumes.append(f"{row[1]}: {row[2]}" if row[1] != "running" else f"killed (rc {proc.returncode})")
                if drivers.proc.poll() is not None:
                    drivers.start()
                proc = subprocess.Popen([*SDL, "resume", row[0], "--store", store, "--quiet"], stdout=orch_log,
                                        stderr=subprocess.STDOUT, env=env, cwd=folder)
                continue
            if pending:
                f = pending[0]
                phase = progress.phase_of(f.trial)
                if phase == f.phase or phase == "past":
                    pending.pop(0)
                    f.hit, f.at_s = (f.phase if phase == f.phase else "late"), time.monotonic() - t0
                    if f.kind == "orchestrator_kill":
                        proc.send_signal(signal.SIGKILL)
                        proc.wait()
                    elif f.kind == "driver_kill":
                        drivers.kill()
                        drivers.start()
                    elif f.kind == "broker_restart":
                        broker.kill()
                        time.sleep(rng.uniform(0.2, 2.0))
                        broker.start()
                    else:
                        out.junk_messages += junk(watch, progress, lab, rng)
                    say(f"  {f.at_s:7.1f} s  trial {f.trial:3d}  {f.kind:<18} at {f.phase:<10} "
                        f"({'hit' if f.hit != 'late' else 'late: the trial was past it'})")
                    continue
            if time.monotonic() - t0 > args.timeout:
                raise RuntimeError(f"soak: the run took more than {args.timeout:g} s; see {folder}/orchestrator.log")
            time.sleep(POLL_S)
        out.wall_s = time.monotonic() - t0
        out.cid = progress.campaign()[0]
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        progress.close()
        drivers.stop()
        watch.close()
        broker.kill()
        orch_log.close()
    return out


# ----- comparing the two runs ------------------------------------------------------------------------


def trial_rows(url: str, cid: str) -> tuple[dict[int, dict], dict[int, int]]:
    """Per trial index what must match the fault-free run, and per trial the number of extra
    commands or measurements of a step (duplicates)."""
    store = Store(url, read_only=True)
    try:
        rows = {t.index: dict(status=t.status, sample=t.sample_id, parameters=t.parameters,
                              objectives=json.loads(t.objectives_json) if t.objectives_json else None,
                              score=t.score, target_met=t.target_met,
                              failure=re.sub(re.escape(cid) + r"\S*", "<command>", t.failure or ""))
                for t in store.trials(cid)}
        extra: dict[int, int] = {}
        for what in (store.commands(cid), store.measurements(cid)):
            seen: dict[tuple[int, str], int] = {}
            for r in what:
                seen[(r.trial_index, r.step)] = seen.get((r.trial_index, r.step), 0) + 1
            for (index, _), n in seen.items():
                if n > 1:
                    extra[index] = extra.get(index, 0) + n - 1
        return rows, extra
    finally:
        store.close()


def compare(ref: Run, got: Run, budget: int) -> dict[int, str]:
    """Trial index -> 'lost' | 'duplicated' | 'diverging' for every trial that is not as in the reference."""
    want, _ = trial_rows(ref.store, ref.cid)
    have, extra = trial_rows(got.store, got.cid)
    bad: dict[int, str] = {}
    for index, w in want.items():
        h = have.get(index)
        if h is None or h["status"] not in FINISHED:
            bad[index] = "lost"
        elif extra.get(index):
            bad[index] = "duplicated"
        elif h != w:
            bad[index] = "diverging"
    for index in have:
        if index >= budget or (index not in want and index not in bad):
            bad[index] = "duplicated"
    return bad


def where_the_time_goes(r: Run) -> list[str]:
    """Per trial of a run: the time from the previous trial's end to this one's proposal (the
    strategy: model fit and acquisition, plus the orchestrator's bookkeeping), and from proposal
    to told (commands, measurement, analysis); medians over the first and last ten model-based trials."""
    store = Store(r.store, read_only=True)
    try:
        trials = sorted(store.trials(r.cid), key=lambda t: t.index)
        first = yaml.safe_load(DEMO.read_text())["strategy"]["initial_trials"]
        gen = [(t.created_at - p.completed_at).total_seconds() for p, t in zip(trials, trials[1:])
               if t.index >= first and p.completed_at]
        work = [(t.completed_at - t.created_at).total_seconds() for t in trials if t.index >= first and t.completed_at]
    finally:
        store.close()
    if len(gen) < 2:
        return []
    n = min(10, len(gen) // 2)
    return [f"where the time goes (fault-free run, median s per model-based trial): proposal (GP fit + "
            f"acquisition) {statistics.median(gen[:n]):.1f} over the first {n}, {statistics.median(gen[-n:]):.1f} over "
            f"the last {n}; make + measure + analyse {statistics.median(work):.1f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, help="experiments per run (default 100; --quick: 12)")
    ap.add_argument("--seed", type=int, default=0, help="campaign, world and fault-placement seed")
    ap.add_argument("--kind", default="bayesian", choices=["bayesian", "sobol"], help="strategy.kind")
    ap.add_argument("--time-scale", type=float, default=1e-4, help="the drivers' real seconds per instrument second")
    ap.add_argument("--faults", help="per kind, e.g. driver_kill=3,broker_restart=3,orchestrator_kill=3,junk=5")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 12 trials, one fault of each kind")
    ap.add_argument("--timeout", type=float, default=7200, help="seconds one run may take before the soak gives up")
    ap.add_argument("--keep", help="keep the runs' stores and logs in this folder")
    ap.add_argument("--out", help="results file (default benchmarks/results/soak.txt; none with --quick)")
    args = ap.parse_args()
    args.trials = args.trials or (12 if args.quick else 100)
    counts = dict(QUICK_FAULTS if args.quick else DEFAULT_FAULTS)
    for item in filter(None, (args.faults or "").split(",")):
        name, _, n = item.partition("=")
        if name not in FAULTS or not n.isdigit():
            ap.error(f"--faults {item!r}: use KIND=N with KIND one of {', '.join(FAULTS)}")
        counts[name] = int(n)
    first = yaml.safe_load(DEMO.read_text())["strategy"]["initial_trials"]
    if args.trials <= first + 1:
        ap.error(f"--trials {args.trials}: use more than the {first} trials of the start design + 1")
    logging.getLogger("sdl.transport").setLevel(logging.ERROR)  # the soak's own client: lost/reconnected lines
    say = Printout()
    rng = random.Random(args.seed)
    faults = schedule(rng, counts, args.trials, first)
    say(f"campaign {DEMO.relative_to(ROOT)}: {args.trials} trials, strategy {args.kind}, seed {args.seed}, "
        f"drivers time scale {args.time_scale:g}, lab secret on, {os.cpu_count()} CPUs, children 1 torch thread")
    with tempfile.TemporaryDirectory(prefix="sdl-soak-") as tmp, ThreadPoolExecutor(2) as pool:
        folder = Path(args.keep or tmp)
        say(f"fault-free run and faulted run ({len(faults)} faults) side by side (the same machine load) ...")
        ref_f = pool.submit(run, folder / "reference", args, [], random.Random(), say)
        got_f = pool.submit(run, folder / "faulted", args, faults, rng, say)
        ref, got = ref_f.result(), got_f.result()
        say(f"fault-free: {ref.wall_s:.0f} s, {ref.wall_s / args.trials:.1f} s per trial, resumes: {len(ref.resumes)}")
        say(f"faulted:    {got.wall_s:.0f} s, {got.wall_s / args.trials:.1f} s per trial, resumes: {len(got.resumes)}, "
            f"junk messages published: {got.junk_messages}")
        for line in where_the_time_goes(ref):
            say(line)
        bad = compare(ref, got, args.trials)

    say()
    say(f"{'fault':<18} {'injected':>8} {'late':>5} {'lost':>5} {'duplicated':>10} {'diverging':>9}")
    for kind in FAULTS:
        mine = [f for f in faults if f.kind == kind]
        hit = {f.trial for f in mine}
        n = {what: sum(1 for i, w in bad.items() if w == what and i in hit) for what in ("lost", "duplicated", "diverging")}
        say(f"{kind:<18} {len(mine):>8} {sum(f.hit == 'late' for f in mine):>5} {n['lost']:>5} {n['duplicated']:>10} "
            f"{n['diverging']:>9}")
    total = {what: sum(1 for w in bad.values() if w == what) for what in ("lost", "duplicated", "diverging")}
    say(f"{'all ' + str(args.trials) + ' trials':<18} {len(faults):>8} {'':>5} {total['lost']:>5} "
        f"{total['duplicated']:>10} {total['diverging']:>9}   (goal 0 / 0 / 0)")
    if bad:
        say(f"trials not as in the fault-free run: {dict(sorted(bad.items()))}")
    say(f"resumes of the faulted run ({len(got.resumes)}):")
    for why in got.resumes:
        say(f"  {why[:150]}")
    say(f"wall time: fault-free {ref.wall_s:.0f} s, faulted {got.wall_s:.0f} s "
        f"(+{got.wall_s - ref.wall_s:.0f} s for {len(faults)} faults and {len(got.resumes)} resumes)")
    if not args.quick or args.out:
        say.write(args.out or ROOT / "benchmarks" / "results" / "soak.txt")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
