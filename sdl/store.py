"""Persistence (SQLModel): campaigns, trials, commands, events, measurements, descriptors, analyses.

Every step of a campaign is written before the next one starts, so a crash at any point loses
nothing. SQLite by default (WAL journal, safe against a killed process), PostgreSQL by URL, with
the same code. Arrays are stored losslessly as .npz bytes.
"""

from __future__ import annotations

import io
import json
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event
from sqlmodel import Field, Session, SQLModel, col, create_engine, select

from sdl.errors import StoreError


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


def store_option(url: str) -> str:
    """The ` --store URL` a printed `sdl ...` command needs to reach the store at `url` (quoted
    for a POSIX shell); "" for the default store."""
    import shlex

    return "" if url == DEFAULT_STORE else f" --store {shlex.quote(url)}"



class Store:
    """The repository around the tables. One instance per process; methods are transactions."""

    def __init__(self, url: str = DEFAULT_STORE):
        self.url = url
        try:
            if url.startswith("sqlite"):
                path = sa.engine.make_url(url).database
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
                event.listen(self.engine, "connect", _sqlite_pragmas)
            else:
                if url.startswith("postgresql://"):
                    url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
                self.engine = create_engine(url, pool_pre_ping=True)
            SQLModel.metadata.create_all(self.engine)
            _migrate(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot open store {self.url}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}") from None
        except sa.exc.ArgumentError as exc:
            raise StoreError(f"store URL {self.url!r} not understood ({exc}); use sqlite:///PATH or postgresql://USER@HOST/DB") from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            try:
                yield s
                s.commit()
            except Exception:
                s.rollback()
                raise

    def close(self) -> None:
        self.engine.dispose()

    # campaigns
    def create_campaign(self, campaign_id: str, name: str, config_json: str) -> CampaignRow:
        row = CampaignRow(id=campaign_id, name=name, config_json=config_json)
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
                setattr(row, k, v)
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
            s.add(EventRow(campaign_id=campaign_id, trial_index=trial_index, level=level, kind=kind, message=message))

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


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
