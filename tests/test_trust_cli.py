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
