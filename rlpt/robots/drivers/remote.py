"""`remote` driver: a robot-side server wrapping any driver, and the policy-side client (`RemoteDriver`).

Run the server next to the robot (it binds 127.0.0.1 unless given ``--host``)::

    RLPT_ROBOT_TOKEN=... python -m rlpt.robots.drivers.remote robot_configs/widowx250_bridge.yaml --port 50100

and point the policy side at it with a config whose ``driver`` is
``{name: remote, host: ..., port: 50100, token_env: RLPT_ROBOT_TOKEN}`` (same control mode and command
size as the server's config). The server enforces its own config's limits on every command (with a fresh
observation), stops the robot when a command is malformed, when the client disconnects and when no
command arrives within its ``safety.watchdog_timeout_s`` (so a dead client cannot leave the arm moving).
One client controls the robot at a time.

Limits (see docs/security.md): before authentication a frame may be at most `MAX_AUTH_FRAME` bytes and the whole
handshake must finish within ``handshake_timeout_s`` (a total deadline, not per read); at most
``max_connections`` connections are open at once (more are refused with one line); a frame whose header is
malformed (bad JSON, nesting deeper than `MAX_DEPTH`, negative or oversized shapes) is answered with one
``{"ok": false, "error": "protocol error: ..."}`` line and the connection is closed.

Wire protocol (TCP, version 1). Every message is one frame::

    frame   = u32 N (big-endian) | payload (N bytes, N <= 64 MiB; N <= 4 KiB before authentication)
    payload = u32 H (big-endian) | header (H bytes of UTF-8 JSON) | blob_0 | blob_1 | ...
    header  = {"msg": <message>, "blobs": [len(blob_0), len(blob_1), ...]}

Inside a message a numpy array is ``{"__nd__": i, "dtype": "<f8", "shape": [...]}`` and its bytes are
blob i (C order, little-endian; only bool/int/uint/float dtypes, never pickles). Session:

1. server -> ``{"op": "challenge", "nonce": <64 hex chars>, "version": 1}``
2. client -> ``{"op": "auth", "mac": hex(HMAC-SHA256(token, "rlpt-robot-v1" + nonce bytes))}``; the server
   compares it in constant time (`hmac.compare_digest`) and answers ``{"ok": true, "robot": {...}}`` (type,
   id, control_mode, command_dim, joints, control_rate_hz) or ``{"ok": false, "error": ...}`` and closes
   (rejected connections are logged with the peer address). The token itself never crosses the wire, but
   the session is not encrypted: keep it on a trusted network or an SSH tunnel.
3. client requests, each answered in order with the same ``id``: ``{"op": "read"}`` ->
   ``{"ok": true, "obs": {"age": s, "joint_pos": arr, ..., "images": {...}, "extra": {...}}}``;
   ``{"op": "send", "mode": str, "command": arr}`` -> ``{"ok": true, "sent": arr, "clipped": [...]}`` or
   ``{"ok": false, "fault": reason, "error": str}`` (the robot was stopped); ``{"op": "stop"}``,
   ``{"op": "reset", "seed": int|null}``, ``{"op": "ping"}``, ``{"op": "bye"}`` -> ``{"ok": true}``.

`age` is how old the observation was when the server answered; the client dates it conservatively
(request send time minus age). A client request without an answer within ``timeout_s`` closes the
connection (the server then stops the robot) and raises `RobotConnectionError`.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import math
import os
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from rlpt.errors import (
    InputLimitError,
    RobotConfigError,
    RobotConnectionError,
    RobotDriverError,
    RobotError,
    RobotSafetyError,
)
from rlpt.robots.drivers.base import BaseDriver, Command, RobotDriver, RobotObservation, make_driver
from rlpt.utils import read_bounded

log = logging.getLogger("rlpt.robots.remote")

PROTOCOL_VERSION = 1
DEFAULT_PORT = 50100
DEFAULT_TOKEN_ENV = "RLPT_ROBOT_TOKEN"
MAX_FRAME = 64 * 2**20
MAX_AUTH_FRAME = 4096  # a challenge or an auth message is a few hundred bytes
MAX_DEPTH = 32  # nesting of lists/objects in a message
MAX_NDIM = 32  # numpy's own limit on array dimensions
MAX_CONNECTIONS = 8
_MAC_PREFIX = b"rlpt-robot-v1"


class ProtocolError(RobotConnectionError):
    """A malformed frame or message."""


# ------------------------------------------------------------------------------------------ framing
def encode_message(msg: Any) -> bytes:
    """One frame (length prefix included) for a JSON-able message that may hold numpy arrays."""
    blobs: list[bytes] = []

    def enc(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            if o.dtype.kind not in "biuf":
                raise ProtocolError(f"cannot send arrays of dtype {o.dtype} (only bool/int/uint/float)")
            a = np.asarray(o, dtype=o.dtype.newbyteorder("<"), order="C")  # keeps 0-d arrays 0-d
            blobs.append(a.tobytes())
            return {"__nd__": len(blobs) - 1, "dtype": a.dtype.str, "shape": list(a.shape)}
        if isinstance(o, dict):
            return {str(k): enc(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [enc(v) for v in o]
        if isinstance(o, np.generic):
            return o.item()
        return o

    header = json.dumps({"msg": enc(msg), "blobs": [len(b) for b in blobs]}).encode()
    payload_len = 4 + len(header) + sum(len(b) for b in blobs)
    if payload_len > MAX_FRAME:
        raise ProtocolError(f"message of {payload_len} bytes exceeds the {MAX_FRAME}-byte frame limit")
    return b"".join([struct.pack(">II", payload_len, len(header)), header, *blobs])


def decode_message(payload: bytes) -> Any:
    """Inverse of `encode_message` for one payload (without the outer length prefix)."""
    if len(payload) < 4:
        raise ProtocolError("frame shorter than its header length field")
    (hlen,) = struct.unpack(">I", payload[:4])
    if 4 + hlen > len(payload):
        raise ProtocolError(f"frame header length {hlen} exceeds the frame ({len(payload)} bytes)")
    try:
        header = json.loads(payload[4:4 + hlen].decode())
        if not isinstance(header, dict) or not isinstance(header.get("blobs"), list):
            raise TypeError("the header must be an object with a 'blobs' list")
        sizes = [s for s in header["blobs"] if isinstance(s, int) and not isinstance(s, bool) and s >= 0]
        if len(sizes) != len(header["blobs"]):
            raise ValueError(f"blob sizes must be integers >= 0; got {header['blobs']!r:.100}")
    except RecursionError:
        raise ProtocolError("malformed frame header: nested too deeply") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ProtocolError(f"malformed frame header: {e}") from None
    if 4 + hlen + sum(sizes) != len(payload):
        raise ProtocolError("frame blob sizes do not match its length")
    offsets = np.cumsum([4 + hlen] + sizes).tolist()

    def array(o: dict) -> np.ndarray:
        i, shape, dt = o.get("__nd__"), o.get("shape"), o.get("dtype")
        try:
            dt = np.dtype(dt) if isinstance(dt, str) else None
        except TypeError:
            dt = None
        ok_shape = isinstance(shape, list) and len(shape) <= MAX_NDIM and all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        if (dt is None or dt.kind not in "biuf" or not isinstance(i, int) or isinstance(i, bool)
                or not 0 <= i < len(sizes) or not ok_shape or math.prod(shape) * dt.itemsize != sizes[i]):
            raise ProtocolError(f"bad array reference {json.dumps(o)[:200]} (expected __nd__: a blob index, "
                                f"dtype: bool/int/uint/float, shape: <= {MAX_NDIM} sizes >= 0 matching the blob)")
        count = math.prod(shape)
        return np.frombuffer(payload, dt, count=count, offset=offsets[i]).reshape(shape).copy()

    def dec(o: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ProtocolError(f"message nested deeper than {MAX_DEPTH} levels")
        if isinstance(o, dict):
            if "__nd__" in o:
                return array(o)
            return {k: dec(v, depth + 1) for k, v in o.items()}
        if isinstance(o, list):
            return [dec(v, depth + 1) for v in o]
        return o

    return dec(header.get("msg"), 0)


def _recv_exact(sock: socket.socket, n: int, deadline: float | None = None) -> bytes:
    return read_bounded(sock.recv, n, limit=MAX_FRAME, deadline=deadline, set_timeout=sock.settimeout,
                        what="frame", chunk=1 << 20)


def _keepalive(sock: socket.socket) -> None:
    """TCP_NODELAY, and TCP keepalive so a peer that vanished without closing is noticed within ~11 s."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def send_message(sock: socket.socket, msg: Any) -> None:
    sock.sendall(encode_message(msg))


def recv_message(sock: socket.socket, max_bytes: int = MAX_FRAME, deadline: float | None = None) -> Any:
    """One message; its frame may be at most `max_bytes` long and must arrive before `deadline` (a
    `time.monotonic()` instant; TimeoutError after it, however slowly the bytes trickle in)."""
    (n,) = struct.unpack(">I", _recv_exact(sock, 4, deadline))
    if n > max_bytes:
        raise ProtocolError(f"incoming frame of {n} bytes exceeds the {max_bytes}-byte limit")
    try:
        payload = read_bounded(sock.recv, n, limit=max_bytes, deadline=deadline, set_timeout=sock.settimeout,
                               what="frame", chunk=1 << 20)
    except InputLimitError as e:
        raise ProtocolError(str(e)) from None
    return decode_message(payload)


# ------------------------------------------------------------------------------------------ auth
def load_token(token: str | None = None, token_env: str | None = DEFAULT_TOKEN_ENV, token_file: str | None = None,
               where: str = "remote robot") -> bytes:
    """The shared secret: `token`, else the first line of `token_file`, else the env var `token_env`."""
    if token:
        return token.encode()
    if token_file:
        p = Path(os.path.expanduser(token_file))
        if not p.is_file():
            raise RobotConfigError(f"{where}: token_file {str(p)!r} does not exist")
        value = p.read_text().strip()
        if not value:
            raise RobotConfigError(f"{where}: token_file {str(p)!r} is empty")
        return value.encode()
    value = os.environ.get(token_env or "", "")
    if not value:
        raise RobotConfigError(f"{where}: no token: set the environment variable ${token_env or DEFAULT_TOKEN_ENV} "
                               "or give token_file")
    return value.encode()


def _mac(token: bytes, nonce: bytes) -> bytes:
    return hmac.new(token, _MAC_PREFIX + nonce, hashlib.sha256).hexdigest().encode()


# ------------------------------------------------------------------------------------------ obs on the wire
_FIELDS = ("joint_pos", "joint_vel", "ee_pos", "ee_rot")


def obs_to_wire(obs: RobotObservation) -> dict[str, Any]:
    d: dict[str, Any] = {"age": obs.age()}
    for k in _FIELDS:
        v = getattr(obs, k)
        d[k] = None if v is None else np.asarray(v, float)
    d["gripper"] = None if obs.gripper is None else float(obs.gripper)
    d["images"] = {k: np.asarray(v) for k, v in obs.images.items()}
    d["extra"] = {k: np.asarray(v) for k, v in obs.extra.items()}
    return d


def obs_from_wire(d: dict[str, Any], t_request: float) -> RobotObservation:
    try:
        age = max(0.0, float(d["age"]))
        return RobotObservation(timestamp=t_request - age, **{k: d.get(k) for k in _FIELDS},
                                gripper=None if d.get("gripper") is None else float(d["gripper"]),
                                images=dict(d.get("images") or {}), extra=dict(d.get("extra") or {}))
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(f"malformed observation message: {e}") from e


# ------------------------------------------------------------------------------------------ server
class RobotServer:
    """Serves one robot (a driver and its config) to one authenticated client at a time.

    Enforces the config's limits (`clip_command` against a fresh observation) and staleness check on
    every command, and stops the robot on a malformed/NaN command, a driver error, client disconnect and
    the watchdog (no command for ``safety.watchdog_timeout_s`` after the last one).
    Before authentication a client gets `MAX_AUTH_FRAME` bytes and ``handshake_timeout_s`` in total; at most
    ``max_connections`` connections are open at once; malformed frames end the connection with one error line.
    Counters: ``commands``, ``stops``, ``watchdog_stops``, ``rejected`` (authentication failed, busy, too many
    connections, protocol errors).
    """

    def __init__(self, config, driver: RobotDriver | None = None, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, token_env: str | None = DEFAULT_TOKEN_ENV, token_file: str | None = None,
                 handshake_timeout_s: float = 5.0, max_connections: int = MAX_CONNECTIONS) -> None:
        self.config = config
        self.driver = driver if driver is not None else make_driver(config)
        self._token = load_token(token, token_env, token_file, where=f"robot server for {config.source}")
        self.host, self.port = host, int(port)
        self.handshake_timeout_s = handshake_timeout_s
        self.max_connections = int(max_connections)
        self._lock = threading.RLock()  # serialises driver calls
        self._client_lock = threading.Lock()  # one controlling client
        self._closed = threading.Event()
        self._shut = False
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._active = False  # a command was executed since the last stop
        self._last_command = 0.0
        self._last_gripper: float | None = None
        self.commands = self.stops = self.watchdog_stops = self.rejected = 0

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> RobotServer:
        """Connect the driver, listen and serve in background threads; returns self."""
        if not self.driver.is_connected:
            self.driver.connect()
        lst = socket.create_server((self.host, self.port), reuse_port=False)
        self.host, self.port = lst.getsockname()[:2]
        lst.settimeout(0.2)
        self._listener = lst
        if self.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("robot server listening on %s:%d (not loopback): token authentication does not encrypt "
                        "traffic; use a trusted network or an SSH tunnel", self.host, self.port)
        for target, name in ((self._accept_loop, "accept"), (self._watchdog_loop, "watchdog")):
            t = threading.Thread(target=target, name=f"rlpt-robot-server-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("robot server for %s (%s driver) listening on %s:%d", self.config.type, self.config.driver.name,
                 self.host, self.port)
        return self

    def serve_forever(self) -> None:
        self.start()
        try:
            while not self._closed.wait(0.5):
                pass
        finally:
            self.close()

    def close(self) -> None:
        """Stop serving, stop the robot and disconnect the driver."""
        if self._shut:
            return
        self._shut = True
        self._closed.set()
        if self._listener is not None:
            self._listener.close()
        for c in list(self._conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=2.0)
        with self._lock:
            self._stop_robot("server closing")
            try:
                self.driver.disconnect()
            except Exception as e:
                log.warning("robot server: driver.disconnect failed: %s", e)

    def __enter__(self) -> RobotServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ internals
    def _stop_robot(self, why: str) -> None:
        with self._lock:
            try:
                self.driver.stop()
                self.stops += 1
            except Exception as e:
                log.error("robot server: driver.stop() failed (%s): %s", why, e)
            self._active = False
        log.info("robot server: robot stopped (%s)", why)

    def _watchdog_loop(self) -> None:
        timeout = self.config.safety.watchdog_timeout_s
        while not self._closed.wait(min(0.02, timeout / 4)):
            if self._active and time.monotonic() - self._last_command > timeout:
                with self._lock:
                    if self._active and time.monotonic() - self._last_command > timeout:
                        log.warning("robot server watchdog: no command for more than %s s; stopping the robot",
                                    timeout)
                        self._stop_robot("watchdog")
                        self.watchdog_stops += 1  # counted once the robot is stopped

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                conn, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._threads = [t for t in self._threads if t.is_alive()]
            if len(self._conns) >= self.max_connections:
                self.rejected += 1
                log.warning("robot server: rejected connection from %s:%d: %d connections already open "
                            "(max_connections)", addr[0], addr[1], len(self._conns))
                self._refuse(conn, f"busy: {self.max_connections} connections already open")
                continue
            self._conns.add(conn)
            _keepalive(conn)
            t = threading.Thread(target=self._handle, args=(conn, addr), name="rlpt-robot-server-client", daemon=True)
            t.start()
            self._threads.append(t)

    @staticmethod
    def _refuse(conn: socket.socket, error: str) -> None:
        """Send one error line (best effort, never blocking long) and close."""
        try:
            conn.settimeout(0.2)
            send_message(conn, {"ok": False, "error": error})
        except (OSError, ProtocolError):
            pass
        finally:
            conn.close()

    def _handle(self, conn: socket.socket, addr) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        controlling = False
        try:
            deadline = time.monotonic() + self.handshake_timeout_s  # for the whole handshake, not per read
            conn.settimeout(self.handshake_timeout_s)
            nonce = os.urandom(32)
            send_message(conn, {"op": "challenge", "nonce": nonce.hex(), "version": PROTOCOL_VERSION})
            msg = recv_message(conn, MAX_AUTH_FRAME, deadline)
            mac = msg.get("mac") if isinstance(msg, dict) and msg.get("op") == "auth" else None
            if not isinstance(mac, str) or not hmac.compare_digest(_mac(self._token, nonce), mac.encode()):
                self.rejected += 1
                log.warning("robot server: rejected connection from %s: authentication failed", peer)
                send_message(conn, {"ok": False, "error": "authentication failed"})
                return
            if not self._client_lock.acquire(blocking=False):
                self.rejected += 1
                log.warning("robot server: rejected connection from %s: another client controls the robot", peer)
                send_message(conn, {"ok": False, "error": "busy: another client controls the robot"})
                return
            controlling = True
            c = self.config
            send_message(conn, {"ok": True, "robot": {
                "type": c.type, "id": c.id, "control_mode": c.control_mode, "command_dim": c.command_dim,
                "joints": list(c.joint_names), "control_rate_hz": c.control_rate_hz, "version": PROTOCOL_VERSION}})
            log.info("robot server: client %s connected", peer)
            conn.settimeout(None)
            self._serve(conn)
        except ProtocolError as e:
            self.rejected += 1
            log.warning("robot server: closed connection from %s: protocol error: %s", peer, e)
            self._refuse(conn, f"protocol error: {e}")
        except TimeoutError:
            self.rejected += 1
            log.warning("robot server: closed connection from %s: no authentication within %s s",
                        peer, self.handshake_timeout_s)
        except (OSError, ConnectionError) as e:
            log.info("robot server: connection from %s ended: %s", peer, e)
        except Exception as e:  # never a traceback from a server thread: one line, then the robot is stopped
            log.error("robot server: connection from %s failed: %s: %s", peer, type(e).__name__, e)
        finally:
            self._conns.discard(conn)
            if controlling:
                self._stop_robot(f"client {peer} disconnected")
                self._client_lock.release()
            conn.close()

    def _serve(self, conn: socket.socket) -> None:
        while not self._closed.is_set():
            msg = recv_message(conn)
            if not isinstance(msg, dict):
                raise ProtocolError(f"expected a message mapping; got {type(msg).__name__}")
            op, rid = msg.get("op"), msg.get("id")
            try:
                reply = self._dispatch(op, msg)
            except RobotSafetyError as e:
                self._stop_robot(f"{e.reason}: {e}")
                reply = {"ok": False, "fault": e.reason, "error": str(e)}
            except Exception as e:  # driver failures: stop and tell the client
                self._stop_robot(f"driver error: {e}")
                reply = {"ok": False, "fault": "driver_error", "error": f"{type(e).__name__}: {e}"}
            send_message(conn, {**reply, "id": rid})
            if op == "bye":
                return

    def _dispatch(self, op: Any, msg: dict) -> dict:
        from rlpt.robots.env import clip_command

        cfg = self.config
        with self._lock:
            if op == "read":
                return {"ok": True, "obs": obs_to_wire(self.driver.read())}
            if op == "send":
                if msg.get("mode") != cfg.control_mode:
                    raise RobotSafetyError(f"command mode {msg.get('mode')!r} does not match the server's "
                                           f"control_mode {cfg.control_mode!r}", "invalid_action")
                vec = msg.get("command")
                if not isinstance(vec, np.ndarray) or vec.dtype.kind not in "biuf":
                    raise RobotSafetyError(f"command must be a numeric array; got {type(vec).__name__}",
                                           "invalid_action")
                obs = self.driver.read()
                limit = cfg.safety.max_observation_age_s
                if obs.age() > limit:
                    raise RobotSafetyError(f"robot observation is {obs.age():.3f} s old (server limit {limit} s)",
                                           "stale_observation")
                sent, clipped = clip_command(cfg, vec, obs, self._last_gripper)
                self.driver.send(Command.from_vector(cfg, sent))
                self.commands += 1
                self._active, self._last_command = True, time.monotonic()
                if cfg.gripper.enabled:
                    self._last_gripper = float(sent[-1])
                return {"ok": True, "sent": sent, "clipped": clipped}
            if op == "stop":
                self._stop_robot("client asked")
                return {"ok": True}
            if op == "reset":
                seed = msg.get("seed")
                self.driver.reset(None if seed is None else int(seed))
                self._last_gripper = None
                return {"ok": True}
            if op in ("ping", "bye"):
                return {"ok": True, "time": time.time()}
        return {"ok": False, "error": f"unknown op {op!r}; expected read, send, stop, reset, ping or bye"}


# ------------------------------------------------------------------------------------------ client
class RemoteDriver(BaseDriver):
    """Policy-side client of a `RobotServer`. Options: ``host`` (default 127.0.0.1), ``port`` (50100),
    ``token_env`` (RLPT_ROBOT_TOKEN) or ``token_file``, ``timeout_s`` per request (1.0),
    ``connect_timeout_s`` (3.0)."""

    name = "remote"
    OPTIONS = {"host": "127.0.0.1", "port": DEFAULT_PORT, "token_env": DEFAULT_TOKEN_ENV, "token_file": None,
               "timeout_s": 1.0, "connect_timeout_s": 3.0}

    def __init__(self, config) -> None:
        super().__init__(config)
        self._sock: socket.socket | None = None
        self._id = 0
        self.server_info: dict[str, Any] = {}

    @property
    def _where(self) -> str:
        return f"remote robot {self.options['host']}:{self.options['port']}"

    @property
    def is_connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        o = self.options
        token = load_token(None, o["token_env"], o["token_file"], where=f"{self.config.source}: driver")
        try:
            sock = socket.create_connection((o["host"], int(o["port"])), timeout=float(o["connect_timeout_s"]))
        except OSError as e:
            raise RobotConnectionError(f"{self._where}: cannot connect: {e}") from e
        try:
            _keepalive(sock)
            deadline = time.monotonic() + float(o["connect_timeout_s"])
            hello = recv_message(sock, 64 * 2**10, deadline)
            if not isinstance(hello, dict) or hello.get("op") != "challenge" or \
                    hello.get("version") != PROTOCOL_VERSION:
                raise ProtocolError(f"unexpected greeting {hello!r} (protocol version {PROTOCOL_VERSION} expected)")
            send_message(sock, {"op": "auth", "mac": _mac(token, bytes.fromhex(hello["nonce"])).decode()})
            reply = recv_message(sock, 64 * 2**10, deadline)
        except (OSError, ConnectionError, ValueError) as e:
            sock.close()
            raise RobotConnectionError(f"{self._where}: handshake failed: {e}") from e
        if not reply.get("ok"):
            sock.close()
            raise RobotConnectionError(f"{self._where} refused the connection: {reply.get('error')}")
        info = reply.get("robot") or {}
        c = self.config
        if info.get("control_mode") != c.control_mode or info.get("command_dim") != c.command_dim:
            sock.close()
            raise RobotConfigError(
                f"{c.source}: the server at {o['host']}:{o['port']} runs control_mode {info.get('control_mode')!r} "
                f"with {info.get('command_dim')}-d commands; this config has {c.control_mode!r} with "
                f"{c.command_dim}-d commands")
        sock.settimeout(float(o["timeout_s"]))
        self._sock, self.server_info = sock, info

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _call(self, msg: dict) -> tuple[dict, float]:
        if self._sock is None:
            raise RobotConnectionError(f"{self._where}: not connected")
        self._id += 1
        msg = {**msg, "id": self._id}
        t0 = time.monotonic()
        try:
            send_message(self._sock, msg)
            reply = recv_message(self._sock)
        except TimeoutError as e:
            self._drop()
            raise RobotConnectionError(
                f"{self._where}: no reply to {msg['op']!r} within {self.options['timeout_s']} s; connection closed "
                "(the server stops the robot)") from e
        except (OSError, ConnectionError) as e:
            self._drop()
            raise RobotConnectionError(f"{self._where}: connection lost during {msg['op']!r}: {e}") from e
        if not isinstance(reply, dict) or reply.get("id") != self._id:
            self._drop()
            raise ProtocolError(f"{self._where}: reply {reply!r:.200} does not answer request {self._id}")
        if not reply.get("ok"):
            fault = reply.get("fault")
            text = f"{self._where}: {msg['op']!r} failed: {reply.get('error')}"
            if fault in ("nan_action", "invalid_action", "stale_observation"):
                raise RobotSafetyError(text, fault)
            raise RobotDriverError(text)
        return reply, t0

    def read(self) -> RobotObservation:
        reply, t0 = self._call({"op": "read"})
        return obs_from_wire(reply.get("obs") or {}, t0)

    def send(self, command: Command) -> Command:
        reply, _ = self._call({"op": "send", "mode": command.mode, "command": command.vector()})
        return Command.from_vector(self.config, np.asarray(reply["sent"], float))

    def stop(self) -> None:
        self._call({"op": "stop"})

    def reset(self, seed: int | None = None) -> None:
        self._call({"op": "reset", "seed": seed})

    def ping(self) -> float:
        """Round-trip time in seconds."""
        _, t0 = self._call({"op": "ping"})
        return time.monotonic() - t0

    def disconnect(self) -> None:
        if self._sock is None:
            return
        try:
            self._call({"op": "bye"})
        except RobotError:
            pass
        self._drop()


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    """``python -m rlpt.robots.drivers.remote CONFIG [--host H] [--port P] [--token-env V | --token-file F]``."""
    from rlpt.robots.config import load_robot_config

    p = argparse.ArgumentParser(prog="python -m rlpt.robots.drivers.remote",
                                description="Serve a robot (its config's driver) to one authenticated rlpt client.")
    p.add_argument("config", help="the robot-side config (its driver talks to the robot)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0: any free)")
    p.add_argument("--token-env", default=DEFAULT_TOKEN_ENV, help="environment variable holding the token")
    p.add_argument("--token-file", help="file holding the token (instead of the environment variable)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_robot_config(args.config)
        server = RobotServer(cfg, host=args.host, port=args.port, token_env=args.token_env,
                             token_file=args.token_file).start()
    except RobotError as e:
        print(f"rlpt robot server: error: {e}", file=sys.stderr)
        return 2
    print(f"LISTENING {server.host} {server.port}", flush=True)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: server._closed.set())
    try:
        while not server._closed.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
