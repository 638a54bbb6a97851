"""Broker credentials and TLS against a real Mosquitto this module starts itself: a password file, an
ACL file, a self-signed CA with a server certificate (for `localhost` only) and a client certificate.

Credentials come from the environment or a credentials file and work; wrong ones, a missing CA, a
host name the certificate does not list and a missing client certificate each fail with one line
that names the broker (password hidden) and says what to do; a password written in the broker URL
still works but is found nowhere afterwards: not in the SQLite file's bytes, the export, `sdl status`,
the captured output, or a driver process's command line.

Needs the `mosquitto`, `mosquitto_passwd` and `openssl` programs; without them the tests skip, and
with CI=true they fail.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sdl import broker
from sdl.cli import main
from sdl.config import load_campaign
from sdl.errors import TransportError
from sdl.transport import MqttClient

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")  # as conftest.py

ROOT = Path(__file__).parents[1]
DEMO = ROOT / "campaigns" / "nanoparticle_size.yaml"
PASSWORD = "Sup3r-S3cret_pw"  # alice's: the string searched for everywhere
BOB_PASSWORD = "b0b-only-reads"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*cmd: str, cwd: Path) -> None:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{' '.join(cmd)}: {out.stderr}"


def _certificates(d: Path) -> None:
    """ca.pem (self-signed), server.pem/key for DNS:localhost, client.pem/key, all signed by the CA;
    other-ca.pem: a CA that signed nothing here."""
    for name in ("ca", "other-ca"):
        _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=sdl test {name}",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    for name, cn, ext in (("server", "localhost", ["-extfile", "san.ext"]), ("client", "alice", [])):
        _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        _run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-out", f"{name}.pem", *ext, cwd=d)


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    """Mosquitto with users alice (sdl/#) and bob (reads sdl/elsewhere/# only), no anonymous access:
    `plain` (mqtt://127.0.0.1), `tls` (mqtts://localhost, self-signed CA), `mtls` (a client
    certificate required)."""
    missing = [p for p in ("mosquitto", "mosquitto_passwd", "openssl") if not shutil.which(p)]
    if missing:
        why = f"{', '.join(missing)} not installed: cannot start a broker with a password file and TLS"
        if IN_CI:
            pytest.fail(why + " (CI=true: install them)")
        pytest.skip(why)
    d = tmp_path_factory.mktemp("mosquitto")
    _certificates(d)
    (d / "passwd").touch(mode=0o600)
    _run("mosquitto_passwd", "-b", str(d / "passwd"), "alice", PASSWORD, cwd=d)
    _run("mosquitto_passwd", "-b", str(d / "passwd"), "bob", BOB_PASSWORD, cwd=d)
    (d / "acl").write_text("user alice\ntopic readwrite sdl/#\n\nuser bob\ntopic read sdl/elsewhere/#\n")
    ports = {"plain": _free_port(), "tls": _free_port(), "mtls": _free_port()}
    tls = f"cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n"
    (d / "mosquitto.conf").write_text(
        ""  # as root, mosquitto drops to user `mosquitto`, who cannot read this test's (private) folder
        + ("user root\n" if os.geteuid() == 0 else "")
        + "per_listener_settings false\nallow_anonymous false\npersistence false\nset_tcp_nodelay true\n"
        f"password_file {d}/passwd\nacl_file {d}/acl\nlog_dest stderr\nlog_type error\nlog_type warning\n"
        f"listener {ports['plain']} 127.0.0.1\n"
        f"listener {ports['tls']} 127.0.0.1\n{tls}"
        f"listener {ports['mtls']} 127.0.0.1\n{tls}require_certificate true\n")
    log = open(d / "mosquitto.log", "wb")
    proc = subprocess.Popen(["mosquitto", "-c", str(d / "mosquitto.conf")], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            for port in ports.values():
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert proc.poll() is None, (d / "mosquitto.log").read_text()
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"mosquitto did not listen within 15 s: {(d / 'mosquitto.log').read_text()}")
    yield {"dir": d, **ports}
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (broker.ENV_USERNAME, broker.ENV_PASSWORD, broker.ENV_CREDENTIALS):
        monkeypatch.delenv(name, raising=False)
    broker.forget_passwords()
    yield
    broker.forget_passwords()


def _credentials_file(path: Path, user: str, password: str, mode: int = 0o600) -> Path:
    path.write_text(f"# sdl broker login\nusername: {user}\npassword: {password}\n")
    path.chmod(mode)
    return path


def _roundtrip(url: str, **kw) -> None:
    """Connect, subscribe to sdl/<x>/#, publish there and receive it."""
    got = []
    with MqttClient(url, **kw) as c:
        t = f"sdl/secrets-{os.getpid()}/x"
        c.subscribe(t, lambda topic, payload: got.append(payload))
        c.publish(t, b"hello", wait=True)
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
    assert got == [b"hello"]


# ----- credentials ------------------------------------------------------------------------------------


def test_credentials_from_the_environment_or_a_file(secure_broker, monkeypatch, tmp_path, caplog):
    url = f"mqtt://127.0.0.1:{secure_broker['plain']}"
    monkeypatch.setenv(broker.ENV_USERNAME, "alice")
    monkeypatch.setenv(broker.ENV_PASSWORD, PASSWORD)
    _roundtrip(url)
    monkeypatch.delenv(broker.ENV_USERNAME)
    monkeypatch.delenv(broker.ENV_PASSWORD)

    cred = _credentials_file(tmp_path / "alice.cred", "alice", PASSWORD)
    _roundtrip(broker.with_options(url, credentials=str(cred)))  # credentials=PATH in the URL
    _roundtrip(url, credentials=str(cred))
    monkeypatch.setenv(broker.ENV_CREDENTIALS, str(cred))
    _roundtrip(url)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    # a file other users may read: used, with a warning like ssh's
    loose = _credentials_file(tmp_path / "loose.cred", "alice", PASSWORD, mode=0o644)
    _roundtrip(url, credentials=str(loose))
    assert f"broker credentials file {loose} may be read by other users (mode 0644); `chmod 600 {loose}`" in caplog.text
    assert PASSWORD not in caplog.text


def test_wrong_or_missing_credentials_say_what_to_do(secure_broker, monkeypatch, tmp_path):
    port = secure_broker["plain"]
    with pytest.raises(TransportError) as e:
        MqttClient(f"mqtt://127.0.0.1:{port}").connect(timeout_s=5)
    msg = str(e.value)
    assert msg.startswith(f"MQTT broker at mqtt://127.0.0.1:{port} refused the connection: not authorized; it needs a "
                          "user name and password: set SDL_BROKER_USERNAME and SDL_BROKER_PASSWORD, or give a "
                          "credentials file"), msg
    assert "\n" not in msg

    monkeypatch.setenv(broker.ENV_USERNAME, "alice")
    monkeypatch.setenv(broker.ENV_PASSWORD, "wrong-" + PASSWORD)
    with pytest.raises(TransportError) as e:
        MqttClient(f"mqtt://127.0.0.1:{port}").connect(timeout_s=5)
    msg = str(e.value)
    assert (f"MQTT broker at mqtt://127.0.0.1:{port} refused the connection: not authorized (user 'alice' with the "
            "password from SDL_BROKER_PASSWORD); check them") in msg, msg
    assert PASSWORD not in msg and "\n" not in msg

    # a wrong password written in the URL: the message shows the URL with ***
    with pytest.raises(TransportError) as e:
        MqttClient(f"mqtt://alice:wrong-{PASSWORD}@127.0.0.1:{port}").connect(timeout_s=5)
    assert f"MQTT broker at mqtt://alice:***@127.0.0.1:{port} refused the connection" in str(e.value)
    assert PASSWORD not in str(e.value)

    with pytest.raises(TransportError, match=r"broker credentials file .*nope.cred: No such file or directory"):
        MqttClient(f"mqtt://127.0.0.1:{port}", credentials=str(tmp_path / "nope.cred"))
    bad = tmp_path / "bad.cred"
    bad.write_text(PASSWORD + "\n")
    bad.chmod(0o600)
    with pytest.raises(TransportError) as e:
        MqttClient(f"mqtt://127.0.0.1:{port}", credentials=str(bad))
    assert "line 1: expected `username: NAME`" in str(e.value) and PASSWORD not in str(e.value)


def test_a_refused_subscription_is_a_clear_error(secure_broker):
    """Mosquitto 2.0 grants every subscription and filters by its ACL when it delivers (nothing to
    see then); brokers that refuse one in the SUBACK (0x80) get this error, here made to by
    rewriting the SUBACK the real broker sent."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    url = f"mqtt://bob:{BOB_PASSWORD}@127.0.0.1:{secure_broker['plain']}"
    with MqttClient(url) as c:
        c.subscribe("sdl/elsewhere/#", lambda *_: None)
        c._client.on_subscribe = lambda cl, u, mid, rcs, p: c._on_subscribe(
            cl, u, mid, [ReasonCode(PacketTypes.SUBACK, identifier=0x80)], p)
        with pytest.raises(TransportError) as e:
            c.subscribe("sdl/lab/+/reply", lambda *_: None)
    assert str(e.value) == (f"MQTT broker at mqtt://bob:***@127.0.0.1:{secure_broker['plain']} refused the "
                            "subscription to 'sdl/lab/+/reply' (unspecified error); its ACL must let user 'bob' "
                            "read it")


# ----- TLS --------------------------------------------------------------------------------------------


def test_tls_with_the_ca_file_and_clear_errors_without(secure_broker, monkeypatch, caplog):
    d, port = secure_broker["dir"], secure_broker["tls"]
    monkeypatch.setenv(broker.ENV_USERNAME, "alice")
    monkeypatch.setenv(broker.ENV_PASSWORD, PASSWORD)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    url = f"mqtts://localhost:{port}"
    _roundtrip(url, tls_ca_file=str(d / "ca.pem"))
    _roundtrip(broker.with_options(url, tls_ca_file=str(d / "ca.pem")))

    with pytest.raises(TransportError) as e:  # no CA file: the system's CAs do not know ours
        MqttClient(url).connect(timeout_s=5)
    assert str(e.value).startswith(f"TLS: the MQTT broker at {url} presented a certificate that failed the check: "
                                   "self-signed certificate in certificate chain; it is not signed by a CA this "
                                   "machine trusts; give the CA certificate that signed it (broker_tls: {ca_file: "
                                   "PATH} in the campaign, --tls-ca-file PATH)"), str(e.value)
    with pytest.raises(TransportError, match=r"the CA file .*other-ca.pem did not sign it"):
        MqttClient(url, tls_ca_file=str(d / "other-ca.pem")).connect(timeout_s=5)

    # the certificate names localhost only: 127.0.0.1 fails, unless tls_insecure (warned)
    ip = f"mqtts://127.0.0.1:{port}"
    with pytest.raises(TransportError, match=r"certificate that failed the check: IP address mismatch.*connect by a "
                                             r"name the certificate lists"):
        MqttClient(ip, tls_ca_file=str(d / "ca.pem")).connect(timeout_s=5)
    _roundtrip(ip, tls_ca_file=str(d / "ca.pem"), tls_insecure=True)
    assert "tls_insecure: the broker's certificate is not checked against its host name" in caplog.text

    # the wrong kind of port, either way round
    with pytest.raises(TransportError, match=r"TLS handshake with the MQTT broker at mqtts://localhost:\d+ failed: .*; "
                                             r"is it a TLS port\? \(plain MQTT is mqtt://, usually port 1883\)"):
        MqttClient(f"mqtts://localhost:{secure_broker['plain']}", tls_ca_file=str(d / "ca.pem")).connect(timeout_s=5)
    with pytest.raises(TransportError, match=r"did not accept the connection within 1 s.*; if it listens with TLS, "
                                             r"use mqtts://"):
        MqttClient(f"mqtt://localhost:{port}").connect(timeout_s=1)

    with pytest.raises(TransportError, match=r"tls_ca_file .*missing.pem: No such file or directory"):
        MqttClient(url, tls_ca_file=str(d / "missing.pem"))
    with pytest.raises(TransportError, match=r"tls_ca_file given, but mqtt:// is not TLS; use mqtts://localhost:"):
        MqttClient(f"mqtt://localhost:{port}", tls_ca_file=str(d / "ca.pem"))


def test_client_certificate(secure_broker, monkeypatch):
    d, port = secure_broker["dir"], secure_broker["mtls"]
    monkeypatch.setenv(broker.ENV_USERNAME, "alice")
    monkeypatch.setenv(broker.ENV_PASSWORD, PASSWORD)
    url = broker.with_options(f"mqtts://localhost:{port}", tls_ca_file=str(d / "ca.pem"))
    _roundtrip(url, tls_cert_file=str(d / "client.pem"), tls_key_file=str(d / "client.key"))
    with pytest.raises(TransportError) as e:
        MqttClient(url).connect(timeout_s=5)
    assert "the broker may require a client certificate" in str(e.value), str(e.value)
    with pytest.raises(TransportError, match="tls_key_file needs tls_cert_file"):
        MqttClient(url, tls_key_file=str(d / "client.key"))


# ----- nothing secret stored, exported, printed or on a command line -------------------------------


def test_a_password_in_the_url_is_found_nowhere(secure_broker, tmp_path, capsys, caplog, lab_id):
    d, port = secure_broker["dir"], secure_broker["tls"]
    c = yaml.safe_load(DEMO.read_text())
    c["broker"] = f"mqtts://alice:{PASSWORD}@localhost:{port}"
    c["broker_tls"] = {"ca_file": str(d / "ca.pem")}
    c["store"] = f"sqlite:///{tmp_path}/sdl.db"
    c["lab"]["id"] = lab_id
    c["strategy"].update(kind="sobol", initial_trials=2)
    c["budget"].update(max_experiments=2, stop_on_target=False)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(c))

    # the run: its drivers (in this process) connect with the redacted URL: the password is in memory
    assert main(["run", str(tmp_path / "c.yaml"), "--quiet"]) == 0
    store = f"sqlite:///{tmp_path}/sdl.db"
    assert main(["status", "--store", store]) == 0
    assert main(["status", "--json", "--store", store]) == 0
    assert main(["export", "--store", store, "--out", str(tmp_path / "export")]) == 0
    config = json.loads((tmp_path / "export" / "campaign.json").read_text())["config"]
    assert config["broker"] == f"mqtts://alice:***@localhost:{port}?tls_ca_file={d}/ca.pem"

    # a resume in a fresh process knows no password: it says where to put one, then works with it
    broker.forget_passwords()
    cred = _credentials_file(tmp_path / "alice.cred", "alice", PASSWORD)
    assert main(["resume", "--store", store, "--budget", "3", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "refused the connection: not authorized (user 'alice' without a password); check them, or set " \
           "SDL_BROKER_USERNAME and SDL_BROKER_PASSWORD" in err, err
    assert main(["resume", "--store", store, "--budget", "3", "--quiet", "--broker-credentials", str(cred)]) == 0

    out = capsys.readouterr()
    assert "carries a password: it is stored and shown as ***" in caplog.text
    secret = PASSWORD.encode()
    for path in [*tmp_path.rglob("*")]:
        if path.is_file() and path not in (cred, tmp_path / "c.yaml"):  # the file given, the password's home
            assert secret not in path.read_bytes(), f"the password is in {path}"
    assert PASSWORD not in out.out + out.err + caplog.text


def test_drivers_in_their_own_process_need_no_password_on_the_command_line(secure_broker, tmp_path, lab_id):
    d, port = secure_broker["dir"], secure_broker["tls"]
    env = {**os.environ, broker.ENV_USERNAME: "alice", broker.ENV_PASSWORD: PASSWORD}
    cmd = [sys.executable, "-m", "sdl.cli", "drivers", "start", "--lab", "nanoparticles", "--id", lab_id,
           "--broker", f"mqtts://localhost:{port}", "--tls-ca-file", str(d / "ca.pem")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        online = []
        url = broker.with_options(f"mqtts://alice:{PASSWORD}@localhost:{port}", tls_ca_file=str(d / "ca.pem"))
        with MqttClient(url) as c:
            c.subscribe(f"sdl/{lab_id}/+/status", lambda topic, payload: online.append(json.loads(payload)))
            deadline = time.monotonic() + 60
            while len({m["body"]["instrument"] for m in online if m["body"]["state"] == "online"}) < 2:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "the drivers did not come online within 60 s"
                time.sleep(0.1)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes() if Path(f"/proc/{proc.pid}/cmdline").exists() \
            else " ".join(cmd).encode()
        assert PASSWORD.encode() not in cmdline
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
    assert f"on mqtts://localhost:{port}?tls_ca_file={d}/ca.pem" in out, out
    assert PASSWORD not in out


# ----- redaction, without a broker --------------------------------------------------------------------


def test_redaction_and_the_campaign_model():
    assert broker.redact_url("at mqtt://u:p@ss@host:1/x, postgresql://bob:pw@db/x and mqtt://h:1") == \
        "at mqtt://u:***@host:1/x, postgresql://bob:***@db/x and mqtt://h:1"
    assert broker.parse("mqtt://u:***@h").password is None  # the mask is a placeholder, not a password
    d = yaml.safe_load(DEMO.read_text())
    c = load_campaign(d, broker=f"mqtt://alice:{PASSWORD}@h:1884")
    assert c.broker == "mqtt://alice:***@h:1884" and PASSWORD not in c.model_dump_json()
    assert broker.credentials(broker.parse(c.broker)).password == PASSWORD  # kept in memory
    c = load_campaign(d, broker="mqtts://h", broker_credentials="/etc/sdl/cred", **{"broker_tls.ca_file": "/ca.pem"})
    assert c.broker == "mqtts://h?credentials=/etc/sdl/cred&tls_ca_file=/ca.pem"
    assert load_campaign(json.loads(c.model_dump_json())).broker == c.broker  # stored and read back
    # a new URL on resume keeps the stored options; the fields win over the URL's own
    again = load_campaign(json.loads(c.model_dump_json()), broker="mqtts://h2:8884")
    assert again.broker == "mqtts://h2:8884?credentials=/etc/sdl/cred&tls_ca_file=/ca.pem"
    again = load_campaign(json.loads(c.model_dump_json()), broker="mqtts://h2?tls_ca_file=/new.pem")
    assert again.broker == "mqtts://h2?credentials=/etc/sdl/cred&tls_ca_file=/new.pem"
    from sdl.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_campaign(d, labels={"broker": "--broker"}, broker=f"http://alice:{PASSWORD}@h")
    assert "--broker 'http://alice:***@h': broker URL 'http://alice:***@h' not understood" in str(e.value)
    assert PASSWORD not in str(e.value)
    with pytest.raises(ConfigError, match="broker_credentials and broker_tls apply to a broker named by `broker:`"):
        load_campaign(d, broker_credentials="/c")
    with pytest.raises(ConfigError, match=r"tls_ca_file given, but mqtt:// is not TLS; use mqtts://h:8883"):
        load_campaign(d, broker="mqtt://h", **{"broker_tls.ca_file": "/ca.pem"})


def test_an_older_store_with_a_password_in_plain_text_exports_without_it(tmp_path, capsys):
    from sdl.report import export
    from sdl.store import Store

    d = yaml.safe_load(DEMO.read_text())
    d["broker"] = f"mqtt://alice:{PASSWORD}@h:1883"
    store = Store(f"sqlite:///{tmp_path}/old.db")
    store.create_campaign("old-1", d["name"], json.dumps(d))  # as an sdl before this one stored it
    store.log("old-1", "campaign_failed", f"cannot reach MQTT broker at mqtt://alice:{PASSWORD}@h:1883", level="error")
    export(store, "old-1", tmp_path / "export")
    assert main(["status", "old-1", "--json", "--store", store.url]) == 0
    store.close()
    for path in (tmp_path / "export").rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert json.loads((tmp_path / "export" / "campaign.json").read_text())["config"]["broker"] == \
        "mqtt://alice:***@h:1883"
    assert PASSWORD not in capsys.readouterr().out
