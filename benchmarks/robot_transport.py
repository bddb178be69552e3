"""Robot remote transport: rlpt's hand-written TCP framing vs ZeroMQ REQ/REP, same messages, same HMAC auth.

Usage: python benchmarks/robot_transport.py [--steps 500] [--rate 50] [--out PATH]
(default PATH: benchmarks/results/robot_transport.json; needs `pip install pyzmq` for the ZeroMQ arm)

Latency: a policy step is what `RobotEnv.step` does over the remote driver: one `read` (the observation comes back)
and one `send` (a 7-d command; the clipped command comes back). Both arms encode every message with
`rlpt.robots.drivers.remote.encode_message` (JSON header + raw numpy blobs) and authenticate with the same
HMAC-SHA256 challenge/response (`_mac`) before the first request; the server answers from canned observations, so
the numbers are the transport's (framing, syscalls, threads), not a driver's.
  - rlpt-tcp: `send_message`/`recv_message` on a TCP socket (TCP_NODELAY, the server's `read_bounded` reads),
    one server thread per connection, as `RobotServer` does.
  - zmq-reqrep: a pyzmq REP socket bound on 127.0.0.1 and a REQ client (libzmq's own I/O thread on each side),
    the encoded payload as one ZeroMQ message.
Cells: the observation with joint state only, with one 128x128 RGB camera, and with two 224x224 RGB cameras.
Steps are paced at --rate Hz (a control loop), interleaving the arms cell by cell; the table shows the median,
p99 and max of a step's two round trips, in microseconds, and the zmq/tcp ratio of medians.

Safety probes (docs/security.md lists the current server's): for each arm, what the server process has taken in
when an unauthenticated peer announces or sends a 1 MiB message, and what happens to the 9th..20th concurrent
connection.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np

from rlpt.robots.drivers.remote import (
    MAX_AUTH_FRAME,
    MAX_CONNECTIONS,
    MAX_FRAME,
    ProtocolError,
    RobotServer,
    _keepalive,
    _mac,
    decode_message,
    encode_message,
    recv_message,
    send_message,
)
from rlpt.utils import write_json

ROOT = Path(__file__).resolve().parent.parent
TOKEN = b"benchmark-token"


def observation(cell: str) -> dict:
    rng = np.random.default_rng(0)
    obs = {"age": 0.001, "joint_pos": rng.normal(size=7), "joint_vel": rng.normal(size=7), "ee_pos": rng.normal(size=3),
           "ee_rot": rng.normal(size=3), "gripper": 0.5, "images": {}, "extra": {}}
    if cell == "camera128":
        obs["images"]["front"] = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    if cell == "2xcamera224":
        for name in ("front", "wrist"):
            obs["images"][name] = rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
    return obs


def handle(msg: dict, obs: dict) -> dict:
    """The server's answer: canned observation for read, the command back for send."""
    op = msg.get("op")
    if op == "read":
        return {"ok": True, "obs": obs, "id": msg.get("id")}
    if op == "send":
        return {"ok": True, "sent": msg["command"], "clipped": [], "id": msg.get("id")}
    return {"ok": True, "id": msg.get("id")}


# ------------------------------------------------------------------------------------------ rlpt TCP arm
class TcpServer:
    def __init__(self, obs: dict) -> None:
        self.obs, self.sock = obs, socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        try:
            _keepalive(conn)
            nonce = os.urandom(32)
            send_message(conn, {"op": "challenge", "nonce": nonce.hex(), "version": 1})
            msg = recv_message(conn, MAX_AUTH_FRAME, time.monotonic() + 5.0)
            ok = _mac(TOKEN, nonce).decode() == msg.get("mac")
            send_message(conn, {"ok": ok})
            while ok:
                msg = recv_message(conn)
                send_message(conn, handle(msg, self.obs))
                if msg.get("op") == "bye":
                    return
        except (OSError, ConnectionError, ProtocolError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


class TcpClient:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=2.0)
        _keepalive(self.sock)
        hello = recv_message(self.sock)
        send_message(self.sock, {"op": "auth", "mac": _mac(TOKEN, bytes.fromhex(hello["nonce"])).decode()})
        assert recv_message(self.sock)["ok"]

    def call(self, msg: dict) -> dict:
        send_message(self.sock, msg)
        return recv_message(self.sock)

    def close(self) -> None:
        self.call({"op": "bye"})
        self.sock.close()


# ------------------------------------------------------------------------------------------ ZeroMQ arm
class ZmqServer:
    """REP socket: hello -> challenge, auth -> ok, then requests; the same encoded payloads (no length prefix)."""

    def __init__(self, obs: dict, maxmsgsize: int = MAX_FRAME) -> None:
        import zmq

        self.obs, self.ctx = obs, zmq.Context()
        self.sock = self.ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.MAXMSGSIZE, maxmsgsize)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.received: list[int] = []  # sizes of the messages the application was handed
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        import zmq

        nonce, authed = b"", False
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self.stop.is_set():
            if not poller.poll(50):
                continue
            raw = self.sock.recv(copy=True)
            self.received.append(len(raw))
            try:
                msg = decode_message(raw[4:])
            except ProtocolError as e:
                self.sock.send(encode_message({"ok": False, "error": f"protocol error: {e}"}))
                continue
            if not authed:
                if msg.get("op") == "hello":
                    nonce = os.urandom(32)
                    reply = {"op": "challenge", "nonce": nonce.hex(), "version": 1}
                else:
                    authed = bool(nonce) and _mac(TOKEN, nonce).decode() == msg.get("mac")
                    reply = {"ok": authed}
                self.sock.send(encode_message(reply))
                continue
            self.sock.send(encode_message(handle(msg, self.obs)))
            if msg.get("op") == "bye":
                authed, nonce = False, b""

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2.0)
        self.sock.close()
        self.ctx.term()


class ZmqClient:
    def __init__(self, port: int) -> None:
        import zmq

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 2000)
        self.sock.connect(f"tcp://127.0.0.1:{port}")
        hello = self.call({"op": "hello"})
        assert self.call({"op": "auth", "mac": _mac(TOKEN, bytes.fromhex(hello["nonce"])).decode()})["ok"]

    def call(self, msg: dict) -> dict:
        self.sock.send(encode_message(msg))
        return decode_message(self.sock.recv()[4:])

    def close(self) -> None:
        self.call({"op": "bye"})
        self.sock.close()
        self.ctx.term()


# ------------------------------------------------------------------------------------------ measurement
def steps(client, n: int, rate: float) -> np.ndarray:
    """Round-trip seconds of n (read, send) pairs, paced at `rate` Hz; shape (n, 2)."""
    period, out = 1.0 / rate, np.empty((n, 2))
    command = np.zeros(7)
    next_t = time.perf_counter()
    for i in range(-20, n):  # 20 warm-up steps
        t0 = time.perf_counter()
        reply = client.call({"op": "read", "id": i})
        t1 = time.perf_counter()
        sent = client.call({"op": "send", "id": i, "mode": "joint_pos", "command": command})
        t2 = time.perf_counter()
        assert reply["ok"] and sent["ok"]
        if i >= 0:
            out[i] = (t1 - t0, t2 - t1)
        next_t += period
        time.sleep(max(0.0, next_t - time.perf_counter()))
    return out


def summary(rt: np.ndarray) -> dict:
    us = rt * 1e6
    return {"read_median_us": float(np.median(us[:, 0])), "send_median_us": float(np.median(us[:, 1])),
            "step_median_us": float(np.median(us.sum(1))), "step_p99_us": float(np.percentile(us.sum(1), 99)),
            "step_max_us": float(us.sum(1).max()), "steps": len(us)}


def probe_rlpt(obs: dict) -> dict:
    """The real `RobotServer`'s guards (docs/security.md), measured here with raw sockets."""
    from rlpt.robots import load_robot_config

    cfg = load_robot_config(ROOT / "robot_configs" / "sim_widowx_tabletop_push.yaml")

    class Idle:  # a driver that is never asked to move in these probes; it counts stops
        is_connected = True
        stopped_at: list[float] = []

        def stop(self) -> None:
            self.stopped_at.append(time.monotonic())

        def disconnect(self) -> None:
            pass

    server = RobotServer(cfg, driver=Idle(), token=TOKEN.decode(), handshake_timeout_s=1.0).start()
    try:
        s = socket.create_connection((server.host, server.port), timeout=2.0)
        recv_message(s)  # challenge
        s.sendall(struct.pack(">I", 1 << 20))  # announce 1 MiB; send nothing more
        reply = recv_message(s)
        s.close()
        preauth = {"announced_bytes": 1 << 20, "payload_bytes_sent": 0, "reply": reply.get("error"),
                   "refused_on_the_length_prefix": "exceeds" in str(reply.get("error"))}
        held = [socket.create_connection((server.host, server.port), timeout=2.0) for _ in range(MAX_CONNECTIONS)]
        for h in held:
            recv_message(h)
        extra_replies = []
        for _ in range(20 - MAX_CONNECTIONS):
            e = socket.create_connection((server.host, server.port), timeout=2.0)
            extra_replies.append(recv_message(e).get("error"))
            e.close()
        t0 = time.monotonic()
        held[0].settimeout(3.0)
        closed = held[0].recv(1) == b""  # a silent unauthenticated peer is dropped at the handshake deadline
        silent_dropped_after_s = round(time.monotonic() - t0, 2) if closed else None
        for h in held:
            h.close()
        time.sleep(0.3)
        client = TcpClient(server.port)  # authenticates: it controls the robot
        n = len(Idle.stopped_at)
        t0 = time.monotonic()
        client.sock.close()  # the policy process dies without a goodbye
        while len(Idle.stopped_at) == n and time.monotonic() - t0 < 3.0:
            time.sleep(0.001)
        stop_after = round(Idle.stopped_at[-1] - t0, 4) if len(Idle.stopped_at) > n else None
        return {"preauth_1MiB": preauth,
                "robot_stopped_after_client_vanished_s": stop_after,
                "connections": {"limit": MAX_CONNECTIONS, "refused_beyond_limit": len(extra_replies),
                                "reply": extra_replies[0]},
                "silent_unauthenticated_peer_dropped_after_s": silent_dropped_after_s,
                "handshake_timeout_s": server.handshake_timeout_s}
    finally:
        server.close()


def probe_zmq(obs: dict) -> dict:
    """The same probes on the ZeroMQ server: what reaches the application, and what can be refused."""
    import zmq

    server = ZmqServer(obs)
    try:
        ctx = zmq.Context()
        peer = ctx.socket(zmq.REQ)
        peer.setsockopt(zmq.LINGER, 0)
        peer.setsockopt(zmq.RCVTIMEO, 2000)
        peer.connect(f"tcp://127.0.0.1:{server.port}")
        blob = encode_message({"op": "auth", "pad": np.zeros(1 << 20, np.uint8)})
        peer.send(blob)
        reply = decode_message(peer.recv()[4:])
        preauth = {"sent_bytes": len(blob), "application_received_bytes": max(server.received),
                   "reply": reply, "note": "MAXMSGSIZE is one per socket: 4 KiB would also cut post-auth camera "
                                           "frames, so the whole message is read and buffered before the "
                                           "application can look at who sent it"}
        peer.close()
        raw = [socket.create_connection(("127.0.0.1", server.port), timeout=2.0) for _ in range(20)]
        time.sleep(0.3)
        alive = 0
        for r in raw:  # ZMTP greeting: libzmq accepted and answered every connection
            r.settimeout(0.5)
            try:
                alive += len(r.recv(64)) > 0
            except OSError:
                pass
        for r in raw:
            r.close()
        ctx.term()
        return {"preauth_1MiB": preauth,
                "connections": {"accepted_of_20": alive, "limit_option": None,
                                "note": "libzmq accepts every TCP connection and greets it; no socket option caps "
                                        "the peers of a bound socket, and a REP socket cannot refuse one with a reply"},
                "silent_unauthenticated_peer_dropped_after_s": "not measured: a REP socket exposes no connections to "
                                                               "time out",
                "robot_stopped_after_client_vanished_s": "not measured: a REP socket delivers no disconnect event; "
                                                         "only the watchdog (safety.watchdog_timeout_s) would stop "
                                                         "the robot"}
    finally:
        server.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--rate", type=float, default=50.0, help="control rate in Hz (steps are paced at it)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "robot_transport.json"))
    args = ap.parse_args()
    import zmq

    cells: dict[str, dict] = {}
    for cell in ("state", "camera128", "2xcamera224"):
        obs = observation(cell)
        tcp_srv, zmq_srv = TcpServer(obs), ZmqServer(obs)
        tcp, zq = TcpClient(tcp_srv.port), ZmqClient(zmq_srv.port)
        rt = {"rlpt-tcp": [], "zmq-reqrep": []}
        for _ in range(4):  # alternate the arms in blocks so drift on a shared CPU hits both
            rt["rlpt-tcp"].append(steps(tcp, args.steps // 4, args.rate))
            rt["zmq-reqrep"].append(steps(zq, args.steps // 4, args.rate))
        tcp.close(), zq.close(), tcp_srv.close(), zmq_srv.close()
        read_bytes = len(encode_message({"ok": True, "obs": obs, "id": 1}))
        cells[cell] = {"read_reply_bytes": read_bytes, **{arm: summary(np.concatenate(v)) for arm, v in rt.items()}}
        cells[cell]["zmq_over_tcp_step_median"] = (cells[cell]["zmq-reqrep"]["step_median_us"]
                                                   / cells[cell]["rlpt-tcp"]["step_median_us"])
    print(f"{'cell':<12} {'reply KB':>8} | {'tcp med':>8} {'p99':>8} {'max':>8} | {'zmq med':>8} {'p99':>8} "
          f"{'max':>8} | zmq/tcp   (us per step: read + send)")
    for cell, c in cells.items():
        t, z = c["rlpt-tcp"], c["zmq-reqrep"]
        print(f"{cell:<12} {c['read_reply_bytes'] / 1024:>8.1f} | {t['step_median_us']:>8.0f} {t['step_p99_us']:>8.0f} "
              f"{t['step_max_us']:>8.0f} | {z['step_median_us']:>8.0f} {z['step_p99_us']:>8.0f} "
              f"{z['step_max_us']:>8.0f} | {c['zmq_over_tcp_step_median']:.2f}")
    safety = {"rlpt-tcp (RobotServer)": probe_rlpt(observation("state")),
              "zmq-reqrep": probe_zmq(observation("state"))}
    for arm, s in safety.items():
        print(f"{arm}: {s}")
    result = {
        "benchmark": "robot_transport",
        "command": "python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "note": "shared CPU with other jobs running: compare the ratios"},
        "versions": {"numpy": np.__version__, "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version()},
        "rate_hz": args.rate, "steps_per_arm": args.steps, "latency": cells, "safety": safety,
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
