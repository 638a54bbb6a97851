"""Trusting the lab, the last pieces (issue 13): `sdl acl` prints a lab's Mosquitto ACL file,
`sdl.Result.status` tells a killed campaign from a running one as `sdl status` does, and a
PostgreSQL password in a store URL is never stored or shown."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import yaml

import sdl
from sdl.cli import main
from sdl.config import load_campaign
from sdl.store import Store

ROOT = Path(__file__).parents[1]
DEMO = ROOT / "campaigns" / "nanoparticle_size.yaml"


def _stored(url: str, cid: str = "np-1", status: str = "running") -> Store:
    store = Store(url)
    c = load_campaign(DEMO, store=url)
    store.create_campaign(cid, c.name, c.model_dump_json())
    store.add_trial(cid, 0, {"temperature_C": 80.0}, f"{cid}-0", strategy_state=None)
    store.update_campaign(cid, status=status)
    return store


# ----- sdl.Result.status ------------------------------------------------------------------------------


def test_result_status_is_running_only_while_an_orchestrator_holds_the_campaign(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    store = _stored(url)  # stored as running, no process holds it: killed
    r = sdl.Result.load("np-1", store=url)
    assert r.status == "stopped"
    assert r.stop_reason.startswith("no orchestrator (killed") and f"sdl resume np-1 --store {url}" in r.stop_reason
    assert r.record["campaign"]["orchestrator"] is None

    lease = Store(url).lease("np-1")  # another connection, as another process would hold it
    r = sdl.Result.load("np-1", store=url)
    assert r.status == "running" and r.stop_reason is None
    assert r.record["campaign"]["orchestrator"]["pid"] == os.getpid()
    assert r.record["campaign"]["orchestrator"]["host"] == socket.gethostname()
    lease.release()

    store.update_campaign("np-1", status="finished", stop_reason="budget of 1 experiments used")
    r = sdl.Result.load("np-1", store=url)
    assert (r.status, r.stop_reason) == ("finished", "budget of 1 experiments used")
    store.close()


# ----- sdl acl -------------------------------------------------------------------------------------------


def test_acl_prints_the_labs_acl_file_from_options_or_a_campaign(tmp_path, capsys):
    from sdl.runner.lab import mosquitto_acl

    assert main(["acl", "--lab-id", "np", "--instrument", "robot", "--instrument", "saxs"]) == 0
    out = capsys.readouterr().out
    assert out == mosquitto_acl("np", ["robot", "saxs"])
    assert "user sdl-np-robot\ntopic read sdl/np/robot/cmd\ntopic write sdl/np/robot/reply\n" in out

    d = yaml.safe_load(DEMO.read_text())
    d["lab"] = {"id": "bench", "world": None}
    d["workflow"][1]["instrument"] = ["saxs", "saxs_lab"]  # a pool: each of its instruments gets its part
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(d))
    assert main(["acl", str(f), "--orchestrator-user", "orch", "--driver-user", "{instrument}@{lab}"]) == 0
    got = capsys.readouterr()
    assert got.out == mosquitto_acl("bench", ["robot", "saxs", "saxs_lab"], orchestrator_user="orch",
                                    driver_user="{instrument}@{lab}")
    assert "user orch\n" in got.out and "user saxs_lab@bench\n" in got.out and got.err == ""
    assert main(["acl", str(DEMO)]) == 0  # a simulated lab: printed, with a note of what the file is for
    got = capsys.readouterr()
    assert "sdl/demo/+/cmd" in got.out and got.err.startswith("note: ") and got.err.count("\n") == 1


@pytest.mark.parametrize("argv, words", [
    (["acl"], "give a campaign file, or --lab-id ID and --instrument NAME"),
    (["acl", "--lab-id", "np"], "give a campaign file, or --lab-id ID and --instrument NAME"),
    (["acl", "--lab-id", "np", "--instrument", "robot", "--driver-user", "{user}"], "--driver-user '{user}'"),
    (["acl", "--lab-id", "n/p", "--instrument", "robot"], "'n/p' cannot be a topic segment"),
])
def test_acl_refuses_what_it_cannot_write_in_one_line(argv, words, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "Traceback" not in err


# ----- a database password in a store URL ------------------------------------------------------------


def test_a_password_in_a_store_url_is_kept_in_this_process_only():
    from sdl.store import database_url

    url = "postgresql://sdl:pw-in-url-1@db.example:5433/runs?options=-csearch_path%3Dx"
    assert database_url(url).password == "pw-in-url-1" and database_url(url).drivername == "postgresql+psycopg"
    shown = url.replace("pw-in-url-1", "***")
    assert database_url(shown).password == "pw-in-url-1"  # the URL as sdl shows it reaches the same database
    other = "postgresql://sdl:***@db.example:5433/other"  # not known here: no password, for PGPASSWORD/.pgpass
    assert database_url(other).password is None and ":***@" not in database_url(other).render_as_string(False)


@pytest.mark.integration
def test_a_postgres_password_is_never_stored_or_shown(postgres_url, tmp_path, capsys):
    secret = "pw-in-url-2"
    url = postgres_url.replace("postgres@", f"postgres:{secret}@", 1)
    assert secret in url
    store = _stored(url)  # the campaign's config holds the store URL, with the password
    assert store.url == url.replace(secret, "***")
    row = store.find_campaign("np-1")
    assert json.loads(row.config_json)["store"] == store.url
    store.update_campaign("np-1", status="stopped", stop_reason=f"could not reach {url}",
                          config_json=load_campaign(DEMO, store=url).model_dump_json())
    store.log("np-1", "note", f"store {url}")
    assert main(["status", "np-1", "--store", url]) == 0
    assert main(["status", "np-1", "--json", "--store", url]) == 0
    assert main(["export", "np-1", "--store", url, "--out", str(tmp_path / "out")]) == 0
    assert main(["resume", "np-1", "--store", url, "--budget", "0"]) == 1  # an error naming the store
    out, err = capsys.readouterr()
    assert secret not in out + err and "***@" in out
    for f in (tmp_path / "out").rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    with store.engine.connect() as conn:  # nowhere in the database either
        import sqlalchemy as sa

        for table in ("campaign", "event", "trial"):
            for r in conn.execute(sa.text(f"SELECT * FROM {table}")):
                assert secret not in repr(tuple(r)), (table, r)
    store.close()


# ----- sdl status: were the lab's messages authenticated? --------------------------------------------


@pytest.mark.parametrize("authenticated", [True, False])
def test_status_says_whether_the_lab_messages_were_authenticated(tmp_path, capsys, authenticated):
    from sdl.runner import events as ev
    from sdl.runner.recorder import StoreRecorder

    url = f"sqlite:///{tmp_path}/s.db"
    store = _stored(url)
    assert main(["status", "np-1", "--json", "--store", url]) == 0
    assert json.loads(capsys.readouterr().out)["campaign"]["lab_messages"] is None  # no run started yet
    StoreRecorder(store)(ev.CampaignStarted(campaign_id="np-1", campaign=load_campaign(DEMO), done=0,
                                            authenticated=authenticated))
    assert main(["status", "np-1", "--store", url]) == 0
    second = capsys.readouterr().out.splitlines()[1]
    want = "authenticated: commands signed" if authenticated else "not authenticated: no lab secret"
    assert second.startswith(f"  lab messages {want}"), second
    assert main(["status", "np-1", "--json", "--store", url]) == 0
    assert json.loads(capsys.readouterr().out)["campaign"]["lab_messages"].startswith(want)
    store.close()
