"""Persistence (SQLModel): campaigns, trials, commands, events, measurements, descriptors, analyses.

Every step of a campaign is written before the next one starts, so a crash at any point loses
nothing. SQLite by default (WAL journal, safe against a killed process), PostgreSQL by URL, with
the same code. Arrays are stored losslessly as .npz bytes.

Safety: every failure of the store is a one-line StoreError naming the store and what to do. One
orchestrator per campaign: `Store.lease` holds a lock for the run (a PostgreSQL advisory lock on
a connection of its own, an OS file lock next to an SQLite file), which dies with the process, and
records who holds it (`orchestrator` table) for `sdl status`. An SQLite file deleted or replaced
while in use is noticed before the next transaction: what the store held is copied out of the
still-open file into a rescue copy and the run stops. A store that is not writable is opened
read-only (`sdl status` works on it; a write says it is read-only).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event
from sqlmodel import Field, Session, SQLModel, col, create_engine, select

from sdl.broker import MASK, redact_url
from sdl.errors import CampaignBusy, StoreError

try:
    import fcntl
except ImportError:  # not POSIX: an SQLite store's lease then holds only within this process
    fcntl = None


def _now() -> datetime:
    return datetime.now(timezone.utc)


# ----- tables ---------------------------------------------------------------------------------------


class CampaignRow(SQLModel, table=True):
    __tablename__ = "campaign"
    id: str = Field(primary_key=True)  # "<name>-<YYYYmmdd-HHMMSS>"
    name: str = Field(index=True)
    config_json: str
    status: str = "running"  # running | finished | stopped | failed
    stop_reason: str | None = None
    strategy_state: str | None = Field(default=None, sa_type=sa.Text)  # Ax JSON snapshot
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class TrialRow(SQLModel, table=True):
    __tablename__ = "trial"
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: str = Field(foreign_key="campaign.id", index=True)
    index: int  # the strategy's trial index, 0-based
    parameters_json: str
    sample_id: str
    # proposed (waits for `sdl approve`) | approved | rejected | running | measured | completed | failed
    status: str = "running"
    failure: str | None = None
    objectives_json: str | None = None  # metric name -> [mean, sem]
    target_met: bool | None = None
    score: float | None = None  # lower is better (see sdl.strategy.objectives.evaluate)
    created_at: datetime = Field(default_factory=_now)
    completed_at: datetime | None = None
    manual: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})  # added by `sdl add`

    __table_args__ = (sa.UniqueConstraint("campaign_id", "index"),)

    @property
    def parameters(self) -> dict[str, Any]:
        return json.loads(self.parameters_json)

    @property
    def objectives(self) -> dict[str, list[float]]:
        return json.loads(self.objectives_json) if self.objectives_json else {}


class CommandRow(SQLModel, table=True):
    __tablename__ = "command"
    id: str = Field(primary_key=True)  # the correlation id on the wire
    campaign_id: str = Field(foreign_key="campaign.id", index=True)
    trial_index: int
    step: str
    instrument: str
    action: str
    params_json: str
    status: str = "sent"  # sent | acked | done | error | timeout
    attempts: int = 1
    reply_json: str | None = None  # result/error body (arrays excluded)
    duration_s: float | None = None  # simulated/instrument time the driver reported
    sent_at: datetime = Field(default_factory=_now)
    finished_at: datetime | None = None


class EventRow(SQLModel, table=True):
    __tablename__ = "event"
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: str = Field(foreign_key="campaign.id", index=True)
    trial_index: int | None = None
    level: str = "info"  # info | warning | error
    kind: str
    message: str
    at: datetime = Field(default_factory=_now)


class MeasurementRow(SQLModel, table=True):
    __tablename__ = "measurement"
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: str = Field(foreign_key="campaign.id", index=True)
    trial_index: int
    step: str
    technique: str
    command_id: str
    metadata_json: str
    arrays: bytes = Field(sa_type=sa.LargeBinary)
    created_at: datetime = Field(default_factory=_now)

    __table_args__ = (sa.UniqueConstraint("campaign_id", "trial_index", "step"),)


class DescriptorRow(SQLModel, table=True):
    __tablename__ = "descriptor"
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: str = Field(foreign_key="campaign.id", index=True)
    trial_index: int
    name: str
    value_num: float | None = None
    value_str: str | None = None
    uncertainty: float | None = None
    unit: str | None = None
    flags_json: str = "[]"
    probabilities_json: str | None = None
    analyser: str | None = None

    @property
    def value(self) -> float | str | None:
        return self.value_str if self.value_str is not None else self.value_num

    def fields(self) -> dict[str, Any]:
        """The stored descriptor as sdl.analysis.base.Descriptor's fields (Descriptor(**row.fields()))."""
        return {"name": self.name, "value": self.value, "uncertainty": self.uncertainty, "unit": self.unit,
                "flags": json.loads(self.flags_json), "analyser": self.analyser,
                "probabilities": json.loads(self.probabilities_json) if self.probabilities_json else None}


class AnalysisRow(SQLModel, table=True):
    __tablename__ = "analysis"
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: str = Field(foreign_key="campaign.id", index=True)
    trial_index: int
    step: str
    analyser: str
    info_json: str
    curves: bytes = Field(sa_type=sa.LargeBinary)


class ManualRow(SQLModel, table=True):
    """A manual experiment (`sdl add`) waiting to be attached to the strategy, then its record."""

    __tablename__ = "manual_request"
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: str = Field(foreign_key="campaign.id", index=True)
    parameters_json: str
    objectives_json: str  # metric name -> [mean, sem]
    score: float | None = None
    target_met: bool | None = None
    descriptors_json: str = "[]"  # Descriptor dumps
    analyses_json: str = "[]"  # [[step, analyser, info, {curve: list}]]
    measurement_json: str | None = None  # {"step", "technique", "metadata"}; arrays in `arrays`
    arrays: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    note: str | None = None
    status: str = "pending"  # pending | added
    trial_index: int | None = None
    created_at: datetime = Field(default_factory=_now)


class OrchestratorRow(SQLModel, table=True):
    """Who holds a campaign's lease (Store.lease): written when it is taken, deleted when it is
    released. A row whose lock nobody holds is what a killed orchestrator left."""

    __tablename__ = "orchestrator"
    campaign_id: str = Field(primary_key=True)
    pid: int
    host: str
    started_at: datetime = Field(default_factory=_now)


# columns added after a table was first released: (table, column, SQL type and default)
_ADDED_COLUMNS = [("trial", "manual", "BOOLEAN NOT NULL DEFAULT FALSE")]


def _migrate(engine: sa.Engine) -> None:
    """Add the columns newer versions define to tables an older version created."""
    inspector = sa.inspect(engine)
    with engine.begin() as conn:
        for table, column, ddl in _ADDED_COLUMNS:
            if column not in {c["name"] for c in inspector.get_columns(table)}:
                conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))


# ----- arrays ---------------------------------------------------------------------------------------


def pack_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def unpack_arrays(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ----- repository -----------------------------------------------------------------------------------

DEFAULT_STORE = "sqlite:///sdl.db"  # what `sdl` commands open without --store


_passwords: dict[tuple[str | None, int | None, str | None, str | None], str] = {}  # written in URLs: this process only


def database_url(url: str) -> sa.URL:
    """The URL a database (not SQLite) is opened with: psycopg's driver for postgresql://; a password
    written in the URL is used, kept in this process's memory for the same URL as shown (``***``:
    Store.url, a stored campaign's store) and warned about once; a ``***`` password not known here is
    left out, for libpq to take from PGPASSWORD or ~/.pgpass."""
    u = sa.engine.make_url(url)
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    key = (u.host, u.port, u.username, u.database)
    if u.password == MASK:
        known = _passwords.get(key)
        return u.set(password=known) if known else u._replace(password=None)  # URL is a NamedTuple
    if u.password is not None and key not in _passwords:
        _passwords[key] = u.password
        logging.getLogger("sdl.store").warning(
            "the store URL %s carries a password: it is stored and shown as %s (a command line also shows it to "
            "every user of this machine); instead set PGPASSWORD or use ~/.pgpass", redact_url(url), MASK)
    return u


def store_option(url: str) -> str:
    """The ` --store URL` a printed `sdl ...` command needs to reach the store at `url` (quoted
    for a POSIX shell); "" for the default store."""
    import shlex

    return "" if url == DEFAULT_STORE else f" --store {shlex.quote(url)}"



class Store:
    """The repository around the tables. One instance per process; methods are transactions.

    `read_only`: None (the default) opens an SQLite file that this process cannot write read-only
    (reading works, a write raises StoreError saying so) and anything else read-write; True opens
    read-only whatever the permissions; False always read-write. Every error of the store, at
    open or in a transaction, is a one-line StoreError naming the store and what to do."""

    def __init__(self, url: str = DEFAULT_STORE, *, read_only: bool | None = None):
        self.url = redact_url(url)  # what is shown: a password written in the URL as *** (database_url)
        self.read_only = bool(read_only)
        self.path: str | None = None  # the SQLite file, absolute (None: PostgreSQL or in memory)
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the file when opened
        self._shm: tuple[tuple[int, int], int] | None = None  # the WAL index file: identity, size seen
        self._wal: tuple[int, int] | None = None  # the -wal file's identity
        self._anchor: sqlite3.Connection | None = None  # kept open: reads a deleted file for the rescue copy
        self._broken: str | None = None  # set once the file was found deleted or replaced
        self._leases: dict[str, Lease] = {}
        try:
            if url.startswith("sqlite"):
                path = sa.engine.make_url(url).database
                if path and path != ":memory:" and not path.startswith("file:"):
                    self.path = os.path.abspath(path)
                    if read_only is None:
                        self.read_only = os.path.exists(self.path) and not _writable(self.path)
                if self.read_only and self.path:
                    self.engine = self._open_sqlite_read_only()
                else:
                    if self.path:
                        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                    self.engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
                    event.listen(self.engine, "connect", _sqlite_pragmas)
            else:
                self.engine = create_engine(database_url(url), pool_pre_ping=True)
                if self.read_only:
                    event.listen(self.engine, "connect", _postgres_read_only)
            if not self.read_only:
                SQLModel.metadata.create_all(self.engine)
                _migrate(self.engine)
                if self.path:
                    self._remember_file()
        except sa.exc.ArgumentError as exc:
            raise StoreError(f"store URL {self.url!r} not understood ({exc}); use sqlite:///PATH or "
                             "postgresql://USER@HOST/DB") from None
        except (sa.exc.SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise StoreError("cannot open " + self._explain(exc)) from None

    def _open_sqlite_read_only(self) -> sa.Engine:
        """An engine reading the SQLite file without writing anything next to it: `mode=ro`, or,
        where SQLite cannot read that way (a WAL database in a folder it may not write), the file
        as it is (`immutable`), unless writes are still in its -wal file that only a writer can read."""
        if not os.path.exists(self.path):
            raise StoreError(f"no store at {self.path} ({self.url}); give the --store a campaign ran with")
        uri = f"file:{quote(self.path)}"
        mode = "mode=ro"
        try:
            probe = sqlite3.connect(f"{uri}?{mode}", uri=True)
            try:
                probe.execute("SELECT count(*) FROM sqlite_master").fetchall()
            finally:
                probe.close()
        except sqlite3.DatabaseError:
            wal = self.path + "-wal"
            if os.path.exists(wal) and os.path.getsize(wal) > 0:
                raise StoreError(
                    f"store {self.url} is read-only and its latest writes are still in {wal}, which SQLite "
                    f"reads only with write access to {os.path.dirname(self.path)}; copy the folder somewhere "
                    "writable and give --store sqlite:///COPY") from None
            mode = "immutable=1"

        def connect() -> sqlite3.Connection:
            return sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=30, check_same_thread=False)

        return create_engine(f"sqlite:///{self.path}", creator=connect)

    def _remember_file(self) -> None:
        """Note the SQLite file's identity and keep a connection to it open (see _check_file)."""
        st = os.stat(self.path)
        self._ident = (st.st_dev, st.st_ino)
        self._anchor = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._anchor.execute("SELECT count(*) FROM sqlite_master").fetchall()  # opens the -wal file, too
        self._check_file()

    def _check_file(self) -> None:
        """Before each transaction on an SQLite file: is it still the file opened? A deleted one
        would take every later write with it, a replaced one mix two stores. Then a StoreError,
        after copying what the store held (still readable through the open file) to a rescue copy.
        A WAL index (-shm) truncated under SQLite's memory map would crash the process with a bus
        error at the next access: its size is restored (SQLite rebuilds it from the WAL) and the
        run stops."""
        if self._broken:
            raise StoreError(self._broken)
        if self._ident is None:
            return
        try:
            st = os.stat(self.path)
            what = None if (st.st_dev, st.st_ino) == self._ident else "replaced by another file"
        except FileNotFoundError:
            what = "deleted or moved away"
        if what:
            self._broken = self._rescue(what)
            raise StoreError(self._broken)
        try:
            st = os.stat(self.path + "-wal")
            self._wal = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            pass
        shm = self.path + "-shm"
        try:
            st = os.stat(shm)
        except FileNotFoundError:
            return
        ident = (st.st_dev, st.st_ino)
        if self._shm and self._shm[0] == ident and st.st_size < self._shm[1]:
            try:
                os.truncate(shm, self._shm[1])
            except OSError:
                pass
            self._broken = (f"store {self.url}: its WAL index {shm} was truncated by another program while in use; "
                            f"nothing stored is lost, and {self._resume_hint()} continues the campaign; "
                            "leave a store's -shm and -wal files alone while it is open")
            raise StoreError(self._broken)
        if st.st_size >= 32768:  # SQLite's first WAL-index chunk; it only grows while the store is open
            self._shm = (ident, st.st_size)

    def _rescue(self, what: str) -> str:
        """Copy what the store held, read through the connection still open on the old file, to a
        new file next to it (or in the current folder); the message for the StoreError."""
        p = Path(self.path)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        saved = None
        for folder in (p.parent, Path.cwd()):
            target = folder / f"{p.stem}-rescued-{stamp}{p.suffix or '.db'}"
            try:
                dst = sqlite3.connect(target)
                try:
                    self._anchor.backup(dst)
                finally:
                    dst.close()
                saved = target
                break
            except (sqlite3.Error, OSError):
                continue
        if saved is not None:  # the old file's -wal and -shm left at the path would spoil a file put there
            for suffix, ident in (("-wal", self._wal), ("-shm", self._shm[0] if self._shm else None)):
                try:
                    st = os.stat(self.path + suffix)
                    if (st.st_dev, st.st_ino) == ident:
                        os.unlink(self.path + suffix)
                except OSError:
                    pass
        if saved is None:
            keep = "what it held could not be copied out; restore it from a backup"
        elif what.startswith("deleted"):
            keep = (f"what it held is saved in {saved}: `mv {saved} {self.path}`, then {self._resume_hint()} "
                    "continues the campaign")
        else:
            keep = (f"what it held is saved in {saved} (the file now at {self.path} is another one): move it back "
                    f"or give --store sqlite:///{saved}, then {self._resume_hint(f'sqlite:///{saved}')} continues "
                    "the campaign")
        return f"store {self.url}: the file {self.path} was {what} while in use; {keep}"

    def _resume_hint(self, url: str | None = None) -> str:
        campaign = next(iter(self._leases), None)
        return f"`sdl resume{' ' + campaign if campaign else ''}{store_option(url or self.url)}`"

    def _explain(self, exc: BaseException) -> str:
        """One line: the store, what went wrong, what to do."""
        orig = getattr(exc, "orig", None) or exc
        text = (str(orig).strip().splitlines() or [orig.__class__.__name__])[0]
        low = text.lower()
        where = f"store {self.url}"
        if isinstance(exc, OSError) and not isinstance(exc, sqlite3.Error):
            return f"{where}: {text}; check the path and its folder's permissions"
        if "readonly" in low or "read-only" in low:
            return self._read_only_text(text)
        if self.path:
            if "not a database" in low or "malformed" in low or "encrypted" in low:
                return (f"{where}: {self.path} is not an SQLite database or is damaged ({text}); restore it from "
                        f"a backup, or save what is readable with `sqlite3 {self.path} .recover | sqlite3 NEW.db`, "
                        "and give --store another file")
            if "unable to open" in low:
                return f"{where}: cannot open {self.path} ({text}); check that its folder exists and is writable"
            if "disk is full" in low or "disk i/o" in low:
                return f"{where}: {text}; check the disk of {self.path} (free space, still mounted), then `sdl resume`"
            if "locked" in low:
                return (f"{where}: {text} (another process kept it locked for 30 s); close what holds {self.path} "
                        "open, then `sdl resume`")
        if "no such table" in low or ("relation" in low and "does not exist" in low):
            return f"{where} has no sdl tables ({text}); give the --store a campaign ran with"
        if isinstance(exc, sa.exc.IntegrityError):
            return (f"{where} refused a write ({text}): it already holds that row; if two orchestrators ran the same "
                    "campaign, stop one and `sdl resume` the campaign")
        if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)) and not self.path:
            return f"{where}: {text}; check that the database server runs and the URL, then `sdl resume`"
        return f"{where}: {orig.__class__.__name__}: {text}"

    def _read_only_text(self, why: str | None = None) -> str:
        return (f"store {self.url} is read-only{f' ({why})' if why else ''}: {self.path or 'the database'} or its "
                "folder is not writable "
                "by this process; `sdl status` can read it; to run or resume a campaign in it, make both writable "
                "or give --store a writable copy")

    @contextmanager
    def session(self) -> Iterator[Session]:
        self._check_file()
        try:
            with Session(self.engine, expire_on_commit=False) as s:
                try:
                    yield s
                    s.commit()
                except Exception:
                    s.rollback()
                    raise
        except (sa.exc.SQLAlchemyError, sqlite3.Error) as exc:
            raise StoreError(self._explain(exc)) from exc

    def close(self) -> None:
        for lease in list(self._leases.values()):
            lease.release()
        self.engine.dispose()
        if self._anchor is not None:
            self._anchor.close()
            self._anchor = None

    # the orchestrator's lease
    def lease(self, campaign_id: str) -> "Lease":
        """Take the lease of a campaign for this process (one orchestrator per campaign) and record
        the holder (pid, host, since). It is held until `release()`, `close()` or the end of the
        process, however it ends. Raises CampaignBusy naming the holder when another has it."""
        if self.read_only:
            raise StoreError(self._read_only_text())
        if campaign_id in self._leases:
            raise CampaignBusy(self._busy(campaign_id, self.orchestrator(campaign_id)))
        for attempt in range(10):  # a status probe may hold the lock for a moment
            unlock = self._lock(campaign_id)
            if unlock is not None:
                break
            time.sleep(0.05)
        else:
            raise CampaignBusy(self._busy(campaign_id, self.orchestrator(campaign_id)))
        lease = Lease(self, campaign_id, unlock)
        try:
            with self.session() as s:
                s.merge(OrchestratorRow(campaign_id=campaign_id, pid=os.getpid(), host=socket.gethostname()))
        except BaseException:
            unlock()
            raise
        self._leases[campaign_id] = lease
        return lease

    def orchestrator(self, campaign_id: str) -> "Holder | None":
        """Who runs the campaign now: the holder of its lease, or None when no process holds it
        (a campaign left `running` without one was killed: `sdl resume` continues it)."""
        if not self._locked(campaign_id):
            return None
        try:
            with self.session() as s:
                row = s.get(OrchestratorRow, campaign_id)
        except StoreError:  # a store older than the table, opened read-only
            row = None
        if row is None:
            return Holder(None, None, None)
        return Holder(row.pid, row.host, row.started_at)

    def _busy(self, campaign_id: str, holder: "Holder | None") -> str:
        who = holder.text() if holder else "another process"
        kill = f", or `kill {holder.pid}` on {holder.host}" if holder and holder.pid else ""
        return (f"campaign {campaign_id} is already running ({who}; store {self.url}); a second orchestrator would "
                f"repeat its trials: wait for it to end, or stop it (Ctrl-C{kill}) and then "
                f"`sdl resume {campaign_id}{store_option(self.url)}`")

    def _lock_key(self, conn: sa.Connection, campaign_id: str) -> int:
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
        digest = hashlib.blake2b(f"sdl:{schema}:{campaign_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    def _lock_path(self, campaign_id: str) -> str:
        safe = campaign_id if re.fullmatch(r"[\w.-]{1,120}", campaign_id) else \
            hashlib.sha1(campaign_id.encode()).hexdigest()[:16]
        return f"{self.path}.{safe}.lock"

    def _lock(self, campaign_id: str) -> Callable[[], None] | None:
        """Take the campaign's lock without waiting: the function that releases it, or None when
        another process (or another Store of this one) holds it."""
        if self.engine.dialect.name == "postgresql":
            try:
                conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                key = self._lock_key(conn, campaign_id)
                got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            except sa.exc.SQLAlchemyError as exc:
                raise StoreError(self._explain(exc)) from exc
            if not got:
                conn.close()
                return None

            def unlock_pg() -> None:
                try:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.close()
                except sa.exc.SQLAlchemyError:
                    conn.invalidate()  # a closed session releases its advisory locks

            return unlock_pg
        if not self.path or fcntl is None:  # in memory: this Store is the only one that can see the campaign
            return (lambda: None) if campaign_id not in self._leases else None
        path = self._lock_path(campaign_id)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StoreError(f"store {self.url}: cannot create its lock file {path} ({exc.strerror}); "
                                 "the store's folder must be writable to run a campaign") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return None
            try:  # the file may have been unlinked by the holder releasing it meanwhile
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)

        def unlock_file() -> None:
            try:
                os.unlink(path)  # while still locked: whoever opened it meanwhile notices and retries
            except OSError:
                pass
            os.close(fd)

        return unlock_file

    def _locked(self, campaign_id: str) -> bool:
        """Whether some process holds the campaign's lock (this one included); takes nothing."""
        if campaign_id in self._leases:
            return True
        if self.engine.dialect.name == "postgresql":
            with self.session() as s:
                key = self._lock_key(s.connection(), campaign_id)
                n = s.connection().execute(sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "AND classid::int8 = :hi AND objid::int8 = :lo"),
                    {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}).scalar()
            return bool(n)
        if not self.path or fcntl is None:
            return False
        try:
            fd = os.open(self._lock_path(campaign_id), os.O_RDONLY)
        except OSError:
            return False  # no lock file: nobody took the lock, or its holder released it
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)  # releases the shared lock taken, if any

    # campaigns
    def create_campaign(self, campaign_id: str, name: str, config_json: str) -> CampaignRow:
        """A new campaign row; a password in any URL of `config_json` (a store's) is stored as ***."""
        row = CampaignRow(id=campaign_id, name=name, config_json=redact_url(config_json))
        with self.session() as s:
            s.add(row)
            s.add(EventRow(campaign_id=campaign_id, kind="campaign_created", message=f"campaign {campaign_id} created"))
        return row

    def find_campaign(self, ref: str | None = None) -> CampaignRow:
        """By id; or by name, the latest of that name; or, when ref is None, the latest of all.
        By name or None, a campaign that has trials is preferred to a newer one without (a run
        that failed before its first trial), which is found only when no campaign has any."""
        with self.session() as s:
            if ref:
                row = s.get(CampaignRow, ref)
                if row:
                    return row
                q = select(CampaignRow).where(CampaignRow.name == ref)
            else:
                q = select(CampaignRow)
            has_trials = sa.exists().where(TrialRow.campaign_id == CampaignRow.id)
            latest = col(CampaignRow.created_at).desc()
            row = s.exec(q.where(has_trials).order_by(latest)).first() or s.exec(q.order_by(latest)).first()
        if row is None:
            known = [c.id for c in self.campaigns()[:10]]
            raise StoreError(
                f"no campaign {ref!r} in {self.url}" if ref else f"no campaign in {self.url}"
            ) if not known else StoreError(f"no campaign {ref!r} in {self.url}; known: {', '.join(known)}")
        return row

    def campaigns(self) -> list[CampaignRow]:
        """All campaigns, the latest first."""
        with self.session() as s:
            return list(s.exec(select(CampaignRow).order_by(col(CampaignRow.created_at).desc())))

    def newer_without_trials(self, campaign_id: str) -> list[CampaignRow]:
        """Campaigns created after `campaign_id` that have no trial (what find_campaign(None)
        passed over), the latest first."""
        with self.session() as s:
            ref = s.get(CampaignRow, campaign_id)
            if ref is None:
                return []
            has_trials = sa.exists().where(TrialRow.campaign_id == CampaignRow.id)
            q = select(CampaignRow).where(CampaignRow.created_at > ref.created_at, ~has_trials)
            return list(s.exec(q.order_by(col(CampaignRow.created_at).desc())))

    def update_campaign(self, campaign_id: str, **fields: Any) -> None:
        with self.session() as s:
            row = s.get(CampaignRow, campaign_id)
            for k, v in fields.items():
                setattr(row, k, redact_url(v) if k in ("config_json", "stop_reason") else v)
            row.updated_at = _now()

    # trials
    def add_trial(self, campaign_id: str, index: int, parameters: dict[str, Any], sample_id: str,
                  strategy_state: str | None, status: str = "running") -> TrialRow:
        """Record a proposed trial together with the strategy state that proposed it (one transaction).
        `status="proposed"`: it waits for `sdl approve` before anything is dispatched."""
        row = TrialRow(campaign_id=campaign_id, index=index, parameters_json=json.dumps(parameters),
                       sample_id=sample_id, status=status)
        with self.session() as s:
            s.add(row)
            self._set_state(s, campaign_id, strategy_state)
            wait = " (waits for approval)" if status == "proposed" else ""
            s.add(EventRow(campaign_id=campaign_id, trial_index=index, kind="trial_proposed",
                           message=f"trial {index} proposed{wait}: {parameters}"))
        return row

    def review_trials(self, campaign_id: str, indices: list[int] | None, *, approve: bool,
                      reason: str | None = None) -> list[int]:
        """Approve (or reject, with `reason`) proposed trials; all proposed ones when `indices` is None.
        Returns the indices changed. The orchestrator picks the change up from the store."""
        if not approve and not reason:
            raise StoreError("a rejection needs a reason (--reason TEXT); it is recorded with the trial")
        with self.session() as s:
            q = select(TrialRow).where(TrialRow.campaign_id == campaign_id)
            rows = {r.index: r for r in s.exec(q)}
            if indices is None:
                indices = sorted(i for i, r in rows.items() if r.status == "proposed")
            for i in indices:
                if i not in rows:
                    raise StoreError(f"campaign {campaign_id} has no trial {i}")
                if rows[i].status != "proposed":
                    raise StoreError(f"trial {i} is {rows[i].status}, not waiting for approval")
            for i in indices:
                row = rows[i]
                row.status = "approved" if approve else "rejected"
                if not approve:
                    row.failure = f"rejected by the operator: {reason}"
                s.add(EventRow(campaign_id=campaign_id, trial_index=i, kind=f"trial_{row.status}",
                               level="info" if approve else "warning",
                               message=f"trial {i} {row.status}" + (f": {reason}" if reason else "")))
        return list(indices)

    def add_manual_request(self, row: "ManualRow") -> ManualRow:
        with self.session() as s:
            s.add(row)
            s.add(EventRow(campaign_id=row.campaign_id, kind="manual_submitted",
                           message=f"manual experiment submitted: {row.parameters_json}"))
            s.flush()
            s.refresh(row)
        return row

    def manual_requests(self, campaign_id: str, status: str | None = "pending") -> list[ManualRow]:
        with self.session() as s:
            q = select(ManualRow).where(ManualRow.campaign_id == campaign_id)
            if status is not None:
                q = q.where(ManualRow.status == status)
            return list(s.exec(q.order_by(ManualRow.id)))

    def add_manual_trial(self, request: ManualRow, index: int, strategy_state: str | None, descriptors: list) -> None:
        """Store an attached manual experiment as a completed trial (flagged manual) with its
        descriptors, analyses and measurement, and mark the request added: one transaction."""
        cid = request.campaign_id
        with self.session() as s:
            s.add(TrialRow(campaign_id=cid, index=index, parameters_json=request.parameters_json,
                           sample_id=f"manual-{request.id}", status="completed", manual=True,
                           objectives_json=request.objectives_json, score=request.score,
                           target_met=request.target_met, completed_at=_now()))
            analyses = [(st, an, info, {k: np.asarray(v) for k, v in curves.items()})
                        for st, an, info, curves in json.loads(request.analyses_json)]
            self._add_results(s, cid, index, descriptors, analyses)
            if request.measurement_json and request.arrays is not None:
                m = json.loads(request.measurement_json)
                s.add(MeasurementRow(campaign_id=cid, trial_index=index, step=m["step"], technique=m["technique"],
                                     command_id=f"manual:{request.id}", metadata_json=json.dumps(m["metadata"]),
                                     arrays=request.arrays))
            req = s.get(ManualRow, request.id)
            req.status, req.trial_index = "added", index
            self._set_state(s, cid, strategy_state)
            s.add(EventRow(campaign_id=cid, trial_index=index, kind="trial_manual",
                           message=f"manual experiment {request.id} added as trial {index}"
                                   + (f" ({request.note})" if request.note else "")))

    def finish_trial(self, campaign_id: str, index: int, *, status: str, strategy_state: str | None,
                     failure: str | None = None, objectives: dict[str, Any] | None = None,
                     target_met: bool | None = None, score: float | None = None, descriptors: list | None = None,
                     analyses: list[tuple[str, str, dict, dict]] | None = None) -> None:
        """Complete or fail a trial: descriptors, analyses, trial status and strategy state in one transaction."""
        with self.session() as s:
            row = self._trial(s, campaign_id, index)
            row.status, row.failure = status, failure
            row.objectives_json = json.dumps(objectives) if objectives is not None else None
            row.target_met, row.score = target_met, score
            row.completed_at = _now()
            self._add_results(s, campaign_id, index, descriptors or [], analyses or [])
            self._set_state(s, campaign_id, strategy_state)
            level = "error" if status == "failed" else "info"
            msg = f"trial {index} {status}" + (f": {failure}" if failure else "")
            s.add(EventRow(campaign_id=campaign_id, trial_index=index, level=level, kind=f"trial_{status}", message=msg))

    def set_trial_status(self, campaign_id: str, index: int, status: str) -> None:
        with self.session() as s:
            self._trial(s, campaign_id, index).status = status

    def trials(self, campaign_id: str) -> list[TrialRow]:
        with self.session() as s:
            q = select(TrialRow).where(TrialRow.campaign_id == campaign_id).order_by(TrialRow.index)
            return list(s.exec(q))

    # commands
    def add_command(self, row: CommandRow) -> None:
        with self.session() as s:
            s.add(row)

    def update_command(self, command_id: str, **fields: Any) -> None:
        with self.session() as s:
            row = s.get(CommandRow, command_id)
            if row is None:
                raise StoreError(f"no command {command_id} in store")
            for k, v in fields.items():
                setattr(row, k, v)

    def commands(self, campaign_id: str, trial_index: int | None = None) -> list[CommandRow]:
        with self.session() as s:
            q = select(CommandRow).where(CommandRow.campaign_id == campaign_id)
            if trial_index is not None:
                q = q.where(CommandRow.trial_index == trial_index)
            return list(s.exec(q.order_by(CommandRow.sent_at)))

    # measurements
    def add_measurement(self, campaign_id: str, trial_index: int, step: str, command_id: str, measurement,
                        command_status: dict[str, Any]) -> None:
        """Store a measurement and mark its command done, in one transaction."""
        with self.session() as s:
            s.add(MeasurementRow(campaign_id=campaign_id, trial_index=trial_index, step=step,
                                 technique=measurement.technique, command_id=command_id,
                                 metadata_json=json.dumps(measurement.metadata, default=str),
                                 arrays=pack_arrays(measurement.arrays)))
            cmd = s.get(CommandRow, command_id)
            for k, v in command_status.items():
                setattr(cmd, k, v)

    def measurements(self, campaign_id: str, trial_index: int | None = None) -> list[MeasurementRow]:
        with self.session() as s:
            q = select(MeasurementRow).where(MeasurementRow.campaign_id == campaign_id)
            if trial_index is not None:
                q = q.where(MeasurementRow.trial_index == trial_index)
            return list(s.exec(q.order_by(MeasurementRow.trial_index, MeasurementRow.id)))

    def descriptors(self, campaign_id: str, trial_index: int | None = None) -> list[DescriptorRow]:
        with self.session() as s:
            q = select(DescriptorRow).where(DescriptorRow.campaign_id == campaign_id)
            if trial_index is not None:
                q = q.where(DescriptorRow.trial_index == trial_index)
            return list(s.exec(q.order_by(DescriptorRow.trial_index, DescriptorRow.id)))

    def analyses(self, campaign_id: str, trial_index: int) -> list[AnalysisRow]:
        with self.session() as s:
            q = select(AnalysisRow).where(AnalysisRow.campaign_id == campaign_id, AnalysisRow.trial_index == trial_index)
            return list(s.exec(q))

    # events
    def log(self, campaign_id: str, kind: str, message: str, *, level: str = "info", trial_index: int | None = None) -> None:
        with self.session() as s:
            s.add(EventRow(campaign_id=campaign_id, trial_index=trial_index, level=level, kind=kind,
                           message=redact_url(message)))

    def events(self, campaign_id: str) -> list[EventRow]:
        with self.session() as s:
            q = select(EventRow).where(EventRow.campaign_id == campaign_id).order_by(EventRow.id)
            return list(s.exec(q))

    # helpers
    @staticmethod
    def _trial(s: Session, campaign_id: str, index: int) -> TrialRow:
        row = s.exec(select(TrialRow).where(TrialRow.campaign_id == campaign_id, TrialRow.index == index)).first()
        if row is None:
            raise StoreError(f"campaign {campaign_id} has no trial {index}")
        return row

    @staticmethod
    def _add_results(s: Session, campaign_id: str, index: int, descriptors: list,
                     analyses: list[tuple[str, str, dict, dict]]) -> None:
        for d in descriptors:
            s.add(DescriptorRow(
                campaign_id=campaign_id, trial_index=index, name=d.name,
                value_num=float(d.value) if not isinstance(d.value, str) else None,
                value_str=d.value if isinstance(d.value, str) else None,
                uncertainty=d.uncertainty, unit=d.unit, flags_json=json.dumps(d.flags),
                probabilities_json=json.dumps(d.probabilities) if d.probabilities is not None else None,
                analyser=d.analyser))
        for step, analyser, info, curves in analyses:
            s.add(AnalysisRow(campaign_id=campaign_id, trial_index=index, step=step, analyser=analyser,
                              info_json=json.dumps(info, default=str), curves=pack_arrays(curves)))

    @staticmethod
    def _set_state(s: Session, campaign_id: str, state: str | None) -> None:
        if state is None:
            return
        row = s.get(CampaignRow, campaign_id)
        row.strategy_state = state
        row.updated_at = _now()


@dataclass(frozen=True)
class Holder:
    """The process that holds a campaign's lease (None fields: not recorded yet)."""

    pid: int | None
    host: str | None
    since: datetime | None  # UTC

    def text(self) -> str:
        """e.g. "pid 4242 on lab-pc, since 2026-05-04 10:02 CEST"."""
        if self.pid is None:
            return "by another process"
        since = self.since.replace(tzinfo=self.since.tzinfo or timezone.utc).astimezone() if self.since else None
        return f"pid {self.pid} on {self.host}" + (f", since {since:%Y-%m-%d %H:%M %Z}" if since else "")


class Lease:
    """A campaign's lease, held by this process (Store.lease) until `release()` (idempotent) or
    its end. A context manager: `with store.lease(cid): ...`."""

    def __init__(self, store: Store, campaign_id: str, unlock: Callable[[], None]):
        self.store, self.campaign_id, self._unlock = store, campaign_id, unlock

    @property
    def held(self) -> bool:
        return self._unlock is not None

    def release(self) -> None:
        """Delete the holder's record, then the lock. Never raises: it runs on the way out of a
        run that may have failed because of the store itself."""
        if self._unlock is None:
            return
        unlock, self._unlock = self._unlock, None
        self.store._leases.pop(self.campaign_id, None)
        try:
            with self.store.session() as s:
                row = s.get(OrchestratorRow, self.campaign_id)
                if row is not None and row.pid == os.getpid() and row.host == socket.gethostname():
                    s.delete(row)
        except Exception:
            pass
        try:
            unlock()
        except Exception:
            pass

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _writable(path: str) -> bool:
    """Whether this process may write an SQLite file and the folder its journal files go in."""
    return os.access(path, os.W_OK) and os.access(os.path.dirname(path) or ".", os.W_OK | os.X_OK)


def _postgres_read_only(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    cur.close()
    dbapi_conn.commit()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
