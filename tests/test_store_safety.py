"""Trusting the store: one orchestrator per campaign, a store deleted or replaced while a campaign
runs, damaged and read-only stores, and every store failure as one line saying what to do.

The lease is checked on SQLite (an OS file lock) and on the real PostgreSQL (an advisory lock),
with a second process where one is needed (a holder killed with -9 releases it). Two end-to-end
runs (`sdl run` as a subprocess): a second orchestrator refused while the first runs, then the
killed campaign shown as stopped and resumed; and a store deleted mid-run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from sdl.cli import main
from sdl.config import load_campaign
from sdl.errors import CampaignBusy, StoreError
from sdl.store import Store

ROOT = Path(__file__).parents[1]
DEMO = ROOT / "campaigns" / "nanoparticle_size.yaml"


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text, text
    return text


def _stored(url: str, cid: str = "np-1", status: str = "running") -> Store:
    """A store with a campaign of the demo's configuration (stored as `status`) and one trial."""
    store = Store(url)
    c = load_campaign(DEMO, store=url)
    store.create_campaign(cid, c.name, c.model_dump_json())
    store.add_trial(cid, 0, {"temperature_C": 80.0}, f"{cid}-0", strategy_state=None)
    store.update_campaign(cid, status=status)
    return store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def url(request, tmp_path):
    return f"sqlite:///{tmp_path}/s.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


# ----- the lease: one orchestrator per campaign ------------------------------------------------------


def test_second_lease_refused_naming_the_holder_then_free_after_release(url):
    first, second = _stored(url), Store(url)  # two connections, as two processes would have
    lease = first.lease("np-1")
    holder = second.orchestrator("np-1")
    assert holder and holder.pid == os.getpid() and holder.host == socket.gethostname() and holder.since
    with pytest.raises(CampaignBusy) as exc:
        second.lease("np-1")
    text = _one_line(exc.value)
    assert text.startswith("campaign np-1 is already running (pid ") and f"on {socket.gethostname()}, since" in text
    assert "sdl resume np-1" in text
    with pytest.raises(CampaignBusy):
        first.lease("np-1")  # the same Store does not take it twice either
    assert second.orchestrator("other") is None  # per campaign
    lease.release()
    lease.release()  # idempotent
    assert second.orchestrator("np-1") is None and first.orchestrator("np-1") is None
    with second.lease("np-1"):
        assert first.orchestrator("np-1").pid == os.getpid()
    assert first.orchestrator("np-1") is None
    if url.startswith("sqlite"):  # no lock file left behind
        assert not list(Path(first.path).parent.glob("*.lock"))
    first.close()
    second.close()


HOLD = textwrap.dedent("""
    import sys, time
    from sdl.store import Store
    store = Store(sys.argv[1])
    store.lease(sys.argv[2])
    print("held", flush=True)
    time.sleep(120)
""")


def test_a_killed_holder_releases_the_lease(url):
    store = _stored(url)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, url, "np-1"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        holder = store.orchestrator("np-1")
        assert holder.pid == proc.pid
        with pytest.raises(CampaignBusy, match=f"pid {proc.pid} on"):
            store.lease("np-1")
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 10  # PostgreSQL ends the session once it sees the connection closed
    while store.orchestrator("np-1") is not None and time.time() < deadline:
        time.sleep(0.05)
    assert store.orchestrator("np-1") is None  # the lock died with the process; its record stays, unheeded
    store.lease("np-1").release()
    store.close()


def test_status_says_running_with_the_holder_or_stopped_without_one(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/s.db"
    store = _stored(url)
    assert main(["status", "np-1", "--store", url]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"campaign np-1 (stopped: no orchestrator; `sdl resume np-1 --store {url}` continues it)"
    lease = Store(url).lease("np-1")
    assert main(["status", "np-1", "--store", url]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"campaign np-1 (running: pid {os.getpid()} on {socket.gethostname()}, since ")
    assert main(["status", "np-1", "--json", "--store", url]) == 0
    orch = json.loads(capsys.readouterr().out)["campaign"]["orchestrator"]
    assert orch["pid"] == os.getpid() and orch["host"] == socket.gethostname()
    lease.release()
    store.update_campaign("np-1", status="stopped", stop_reason="interrupted")
    assert main(["status", "np-1", "--store", url]) == 0
    assert capsys.readouterr().out.startswith("campaign np-1 (stopped: interrupted)")


def test_resume_refused_while_another_runs_it_and_nothing_is_touched(url, capsys):
    import sdl

    store = _stored(url)
    other = Store(url)
    lease = other.lease("np-1")
    before = [(t.index, t.status) for t in store.trials("np-1")]
    n_events = len(store.events("np-1"))
    assert main(["resume", "np-1", "--store", url, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: campaign np-1 is already running (pid ")
    assert "Traceback" not in err
    with pytest.raises(CampaignBusy):
        sdl.resume("np-1", store=url)
    assert [(t.index, t.status) for t in store.trials("np-1")] == before
    assert len(store.events("np-1")) == n_events
    assert store.find_campaign("np-1").status == "running"  # not marked failed by the refused one
    lease.release()
    store.close()
    other.close()


# ----- end to end: a live run and a second orchestrator, then kill -9 and resume ------------------------


def _campaign_file(tmp_path: Path, budget: int, time_scale: float) -> tuple[Path, str]:
    d = yaml.safe_load(DEMO.read_text())
    d["store"] = f"sqlite:///{tmp_path}/sdl.db"
    d["lab"]["time_scale"] = time_scale
    d["strategy"].update(kind="sobol", initial_trials=2)
    d["budget"].update(max_experiments=budget, stop_on_target=False)
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(d))
    return f, d["store"]


def _wait_for(store: Store, what, proc: subprocess.Popen, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            cid = store.find_campaign("nanoparticle_size").id
            if what(store.trials(cid)):
                return cid
        except StoreError:
            pass
        time.sleep(0.1)
    raise AssertionError("the run did not get there in time")


@pytest.mark.slow
def test_second_orchestrator_refused_while_the_first_runs_then_killed_one_resumes(tmp_path, capsys):
    import sdl.runner  # noqa: F401  (imported before the run starts: `sdl resume` below answers at once)

    f, url = _campaign_file(tmp_path, budget=3, time_scale=5e-3)  # a synthesis: ~2-70 s
    proc = subprocess.Popen([sys.executable, "-m", "sdl.cli", "run", str(f), "--quiet"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = Store(url)
    try:
        cid = _wait_for(store, lambda trials: len(trials) >= 1, proc)
        assert main(["resume", cid, "--store", url]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: campaign {cid} is already running (pid {proc.pid} on ") and err.count("\n") == 1
        assert main(["status", cid, "--store", url]) == 0
        assert f"campaign {cid} (running: pid {proc.pid} on " in capsys.readouterr().out
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert store.find_campaign(cid).status == "running"
    assert main(["status", cid, "--store", url]) == 0
    assert f"campaign {cid} (stopped: no orchestrator; " in capsys.readouterr().out
    before = {t.index for t in store.trials(cid)}
    config = json.loads(store.find_campaign(cid).config_json)
    config["lab"]["time_scale"] = 0.0  # the rest at full speed
    store.update_campaign(cid, config_json=json.dumps(config))
    assert main(["resume", cid, "--store", url, "--quiet"]) == 0
    trials = store.trials(cid)
    assert [t.index for t in trials] == [0, 1, 2] and before <= {t.index for t in trials}
    assert all(t.status in ("completed", "failed") for t in trials)
    assert store.orchestrator(cid) is None
    store.close()


@pytest.mark.slow
def test_a_store_deleted_mid_run_stops_the_run_and_is_rescued(tmp_path):
    f, url = _campaign_file(tmp_path, budget=4, time_scale=5e-4)
    proc = subprocess.Popen([sys.executable, "-m", "sdl.cli", "run", str(f), "--quiet"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = Store(url)
    cid = _wait_for(watcher, lambda trials: any(t.status == "completed" for t in trials), proc)
    done = {t.index for t in watcher.trials(cid) if t.status == "completed"}
    watcher.close()
    for p in tmp_path.glob("sdl.db*"):
        if not p.name.endswith(".lock"):
            p.unlink()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: store {url}: the file {tmp_path}/sdl.db was deleted or moved away while in use; "
                           f"what it held is saved in {tmp_path}/sdl-rescued-") and "Traceback" not in err, err
    rescued = next(tmp_path.glob("sdl-rescued-*.db"))
    assert f"`mv {rescued} {tmp_path}/sdl.db`, then `sdl resume {cid} --store {url}` continues" in last
    saved = Store(f"sqlite:///{rescued}")
    assert done <= {t.index for t in saved.trials(cid) if t.status == "completed"}  # nothing stored is lost
    assert saved.find_campaign(cid).status == "running"  # the run could not record its end: resumable
    saved.close()
    assert not (tmp_path / "sdl.db").exists()  # nothing recreated in its place


# ----- deleted, replaced, truncated: found before the next write ------------------------------------


def test_deleted_store_is_found_and_rescued_in_process(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    store = _stored(url)
    lease = store.lease("np-1")
    os.unlink(tmp_path / "s.db")
    with pytest.raises(StoreError) as exc:
        store.add_trial("np-1", 1, {"temperature_C": 90.0}, "np-1-1", strategy_state=None)
    text = _one_line(exc.value)
    assert "was deleted or moved away while in use" in text and "sdl resume np-1 --store" in text
    with pytest.raises(StoreError, match="deleted"):
        store.trials("np-1")  # every later transaction, too, and no new empty store at the path
    assert not (tmp_path / "s.db").exists()
    lease.release()
    store.close()
    [rescued] = tmp_path.glob("s-rescued-*.db")
    assert not list(tmp_path.glob("s.db-*"))  # the old file's -wal/-shm would spoil a file moved back
    os.rename(rescued, tmp_path / "s.db")
    back = Store(url)
    assert [t.index for t in back.trials("np-1")] == [0]
    back.lease("np-1").release()  # and it can be resumed
    back.close()


def test_replaced_store_is_found_and_the_replacement_left_alone(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    store = _stored(url)
    other = _stored(f"sqlite:///{tmp_path}/other.db", cid="other-1")
    other.close()
    os.replace(tmp_path / "other.db", tmp_path / "s.db")
    with pytest.raises(StoreError) as exc:
        store.log("np-1", "note", "x")
    assert "was replaced by another file while in use" in _one_line(exc.value)
    store.close()
    assert [c.id for c in Store(url).campaigns()] == ["other-1"]
    [rescued] = tmp_path.glob("s-rescued-*.db")
    assert [c.id for c in Store(f"sqlite:///{rescued}").campaigns()] == ["np-1"]


def test_truncated_wal_index_is_an_error_not_a_bus_error(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    store = _stored(url)
    os.truncate(tmp_path / "s.db-shm", 0)  # SQLite's next touch of its memory map would be SIGBUS
    with pytest.raises(StoreError) as exc:
        store.log("np-1", "note", "x")
    assert "was truncated by another program" in _one_line(exc.value) and "nothing stored is lost" in str(exc.value)
    store.close()
    assert [t.index for t in Store(url).trials("np-1")] == [0]


# ----- damaged and read-only stores -------------------------------------------------------------------


def test_damaged_store_is_one_line_naming_the_file_and_what_to_do(tmp_path, capsys):
    bad = tmp_path / "bad.db"
    bad.write_bytes(os.urandom(50_000))
    with pytest.raises(StoreError) as exc:
        Store(f"sqlite:///{bad}")
    text = _one_line(exc.value)
    assert text.startswith(f"cannot open store sqlite:///{bad}: {bad} is not an SQLite database or is damaged")
    assert "restore it from a backup" in text and ".recover" in text
    assert main(["status", "--store", f"sqlite:///{bad}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    # damaged past its first pages: found by the first read, in one line too
    good = tmp_path / "good.db"
    _stored(f"sqlite:///{good}").close()
    data = bytearray(good.read_bytes())
    data[4096 * 2:] = os.urandom(len(data) - 4096 * 2)
    good.write_bytes(bytes(data))
    with pytest.raises(StoreError) as exc:
        Store(f"sqlite:///{good}").trials("np-1")
    assert "is not an SQLite database or is damaged" in _one_line(exc.value)


def test_store_opened_read_only_reads_and_refuses_writes_in_one_line(url, tmp_path):
    _stored(url).close()
    ro = Store(url, read_only=True)
    assert ro.read_only and [t.index for t in ro.trials("np-1")] == [0]
    assert ro.orchestrator("np-1") is None
    with pytest.raises(StoreError) as exc:
        ro.log("np-1", "note", "x")
    assert _one_line(exc.value).startswith(f"store {url} is read-only (")
    assert "`sdl status` can read it" in str(exc.value)
    with pytest.raises(StoreError, match="is read-only"):
        ro.lease("np-1")
    ro.close()
    if not url.startswith("sqlite"):
        return
    with pytest.raises(StoreError, match="no store at"):
        Store(f"sqlite:///{tmp_path}/none.db", read_only=True)


def _read_only_folder(folder: Path) -> list[str]:
    """The command prefix that runs a command with `folder` read-only: chmod for a user, and for
    root (who may write any file) a read-only bind mount in a mount namespace of its own."""
    if os.geteuid() != 0:
        for p in folder.iterdir():
            p.chmod(0o444)
        folder.chmod(0o555)
        return []
    prefix = ["unshare", "--mount", "sh", "-c",
              f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && exec "$@"', "sh"]
    if shutil.which("unshare") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("running as root without a way to make a folder read-only (unshare --mount)")
    return prefix


@pytest.mark.parametrize("wal", [False, True], ids=["closed", "with-wal"])
def test_read_only_store_status_works_and_resume_says_read_only(tmp_path, wal):
    url = f"sqlite:///{tmp_path}/s.db"
    store = _stored(url)
    if not wal:
        store.close()  # a clean close: everything in s.db, no -wal left
    else:
        assert (tmp_path / "s.db-wal").stat().st_size > 0  # the latest writes only there (as after kill -9)
    try:
        prefix = _read_only_folder(tmp_path)
        cli = [*prefix, sys.executable, "-m", "sdl.cli"]
        run = dict(cwd=ROOT, capture_output=True, text=True, timeout=120)
        out = subprocess.run([*cli, "status", "np-1", "--store", url], **run)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("campaign np-1 (stopped: no orchestrator;")
        out = subprocess.run([*cli, "resume", "np-1", "--store", url, "--quiet"], **run)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        [line] = out.stderr.splitlines()
        assert line.startswith(f"error: store {url} is read-only: {tmp_path}/s.db or its folder is not "), line
    finally:
        tmp_path.chmod(0o755)
        store.close()


# ----- other store failures: one line too -----------------------------------------------------------


@pytest.mark.integration
def test_postgres_failure_mid_run_is_one_line(postgres_url):
    import sqlalchemy as sa

    store = _stored(postgres_url)
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text("DROP TABLE event"))
    admin.dispose()
    with pytest.raises(StoreError) as exc:
        store.log("np-1", "note", "x")
    assert _one_line(exc.value).startswith(f"store {postgres_url} has no sdl tables (")
    store.close()


def test_duplicate_write_is_a_store_error_saying_why(tmp_path):
    store = _stored(f"sqlite:///{tmp_path}/s.db")
    with pytest.raises(StoreError) as exc:
        store.add_trial("np-1", 0, {"temperature_C": 1.0}, "dup", strategy_state=None)
    assert "UNIQUE constraint failed" in _one_line(exc.value) and "two orchestrators" in str(exc.value)
    store.close()


def test_a_store_older_than_the_lease_table_still_opens(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    _stored(url).close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute("DROP TABLE orchestrator")
    store = Store(url)
    with store.lease("np-1"):
        assert store.orchestrator("np-1").pid == os.getpid()
    store.close()
