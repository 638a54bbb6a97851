"""MQTT request/reply round trip with QoS 1 on loopback: p50, p99, mean.

Cases: a Mosquitto of our own with `set_tcp_nodelay true` (both ends without Nagle), the system
Mosquitto (127.0.0.1:1883, default config) with TCP_NODELAY on the client sockets only and with
paho's default sockets (Nagle on both ends: the ~88 ms effect), the embedded broker, and the
Driver SDK's full command -> ack -> result exchange with an echo driver.

    python benchmarks/mqtt_roundtrip.py [--n 500] [--n-nagle 50] [--budget-s 6] [--mosquitto mqtt://127.0.0.1:1883]

Each case runs n round trips after 10 warm-up ones, or fewer when it reaches its time budget (the
slow cases), and prints how many it measured.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt  # noqa: E402

from drivers.base import Driver  # noqa: E402
from sdl.protocol import Envelope, command, topic  # noqa: E402
from sdl.transport import EmbeddedBroker, MqttClient, parse_broker_url  # noqa: E402


def _stats(samples_s: list[float]) -> str:
    ms = sorted(1000 * s for s in samples_s)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    return f"{statistics.median(ms):9.3f} {p99:9.3f} {statistics.fmean(ms):9.3f} {len(ms):6d}"


BUDGET_S = 6.0


def echo_roundtrips(url: str, n: int, nodelay: bool) -> list[float]:
    """A requester and a responder; each request waits for its reply (both QoS 1)."""
    prefix = f"bench/{uuid.uuid4().hex[:8]}"
    if nodelay:
        req, rsp = MqttClient(url).connect(), MqttClient(url).connect()
        rsp.subscribe(f"{prefix}/req", lambda t, p: rsp.publish(f"{prefix}/rep", p, qos=1))
        got: queue.Queue = queue.Queue()
        req.subscribe(f"{prefix}/rep", lambda t, p: got.put(p))
        send = lambda p: req.publish(f"{prefix}/req", p, qos=1)  # noqa: E731
        close = [req.close, rsp.close]
    else:  # plain paho, default sockets
        host, port, *_ = parse_broker_url(url)
        got = queue.Queue()
        clients = []
        for role in ("req", "rsp"):
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            c.connect(host, port)
            c.loop_start()
            clients.append(c)
        req_c, rsp_c = clients
        rsp_c.on_message = lambda c, u, m: rsp_c.publish(f"{prefix}/rep", m.payload, qos=1)
        req_c.on_message = lambda c, u, m: got.put(m.payload)
        rsp_c.subscribe(f"{prefix}/req", qos=1)
        req_c.subscribe(f"{prefix}/rep", qos=1)
        send = lambda p: req_c.publish(f"{prefix}/req", p, qos=1)  # noqa: E731
        close = [c.loop_stop for c in clients] + [c.disconnect for c in clients]
    time.sleep(0.3)
    out = []
    t_end = time.perf_counter() + BUDGET_S
    for i in range(n + 10):
        if i > 20 and time.perf_counter() > t_end:
            break
        payload = str(i).encode()
        t = time.perf_counter()
        send(payload)
        while got.get(timeout=5) != payload:
            pass
        if i >= 10:  # warm-up
            out.append(time.perf_counter() - t)
    for f in close:
        f()
    return out


class Echo(Driver):
    def actions(self):
        return {"echo": lambda cmd: {"echo": cmd.params}}


def driver_roundtrips(url: str, n: int) -> list[float]:
    lab = f"bench{uuid.uuid4().hex[:6]}"
    drv = Echo("echo", lab, url).start()
    client = MqttClient(url).connect()
    got: queue.Queue = queue.Queue()
    client.subscribe(topic(lab, "echo", "reply"), lambda t, p: got.put(Envelope.from_bytes(p)))
    time.sleep(0.3)
    out = []
    t_end = time.perf_counter() + BUDGET_S
    for i in range(n + 10):
        if i > 20 and time.perf_counter() > t_end:
            break
        cid = uuid.uuid4().hex
        t = time.perf_counter()
        client.publish(topic(lab, "echo", "cmd"), command("echo", correlation_id=cid, params={"i": i}).to_bytes(), qos=1)
        while True:
            env = got.get(timeout=5)
            if env.correlation_id == cid and env.kind == "result":
                break
        if i >= 10:
            out.append(time.perf_counter() - t)
    client.close()
    drv.stop()
    return out


class PrivateMosquitto:
    """A Mosquitto of our own on a free loopback port, with `set_tcp_nodelay true`."""

    def __enter__(self) -> str | None:
        import shutil
        import socket
        import subprocess
        import tempfile

        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = None
        if not Path(exe).exists():
            return None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.dir = tempfile.TemporaryDirectory()
        conf = Path(self.dir.name) / "m.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        return f"mqtt://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        self.proc.wait(5)
        self.dir.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--n-nagle", type=int, default=50, help="round trips for the slow Nagle case")
    ap.add_argument("--budget-s", type=float, default=BUDGET_S, help="time limit per case, seconds")
    ap.add_argument("--mosquitto", default="mqtt://127.0.0.1:1883")
    args = ap.parse_args()
    globals()["BUDGET_S"] = args.budget_s
    print(f"{'case':<52} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'n':>6}")
    with EmbeddedBroker() as embedded, PrivateMosquitto() as fast:
        cases = [
            ("own Mosquitto, set_tcp_nodelay + client TCP_NODELAY", lambda: echo_roundtrips(fast, args.n, True)),
            ("Driver SDK command->ack->result, own Mosquitto", lambda: driver_roundtrips(fast, args.n)),
            ("system Mosquitto, client TCP_NODELAY only", lambda: echo_roundtrips(args.mosquitto, args.n, True)),
            ("system Mosquitto, paho default sockets (Nagle on)", lambda: echo_roundtrips(args.mosquitto, args.n_nagle, False)),
            ("embedded amqtt, TCP_NODELAY", lambda: echo_roundtrips(embedded.url, args.n, True)),
            ("Driver SDK command->ack->result, system Mosquitto", lambda: driver_roundtrips(args.mosquitto, args.n)),
            ("Driver SDK command->ack->result, embedded", lambda: driver_roundtrips(embedded.url, args.n)),
        ]
        for name, fn in cases:
            if fast is None and "own Mosquitto" in name:
                print(f"{name:<52} unavailable: no mosquitto executable", flush=True)
                continue
            try:
                print(f"{name:<52} {_stats(fn())}", flush=True)
            except Exception as exc:  # e.g. Mosquitto not running
                print(f"{name:<52} unavailable: {exc}", flush=True)


if __name__ == "__main__":
    main()
