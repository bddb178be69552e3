"""OpenAIChatClient and VLMSuccessReward against a real HTTP server on 127.0.0.1 whose answers each test
scripts: success, retries, rate limits, timeouts, malformed/empty/refusal answers, the disk cache, and the
fallback path through RewardWrapper."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

from rlpt.errors import ConfigError, RewardModelError
from rlpt.rewards import RewardQuery, RewardWrapper
from rlpt.rewards.http_vlm import OpenAIChatClient, VLMSuccessReward, parse_yes_no

pytestmark = pytest.mark.timeout(20)

KEY = "sk-test-SECRET-0123456789"


def completion(content: Any) -> dict:
    return {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


class Reply:
    """One scripted answer: status, body (JSON-able or bytes), headers, and a delay before answering."""

    def __init__(self, body: Any = None, status: int = 200, headers: dict[str, str] | None = None,
                 delay: float = 0.0) -> None:
        self.body, self.status, self.headers, self.delay = body, status, dict(headers or {}), delay


def ok(content: Any) -> Reply:
    return Reply(completion(content))


class ScriptedServer:
    """A ThreadingHTTPServer answering POSTs from `script` in order (the last reply repeats); it records
    every request's path, headers and JSON body."""

    def __init__(self) -> None:
        self.script: list[Reply] = [ok("yes")]
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with owner.lock:
                    owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(raw)})
                    reply = owner.script.pop(0) if len(owner.script) > 1 else owner.script[0]
                time.sleep(reply.delay)
                body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    for k, v in {"Content-Type": "application/json", **reply.headers}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def reply(self, *replies: Reply) -> None:
        self.script = list(replies)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    srv = ScriptedServer()
    yield srv
    srv.close()


def client(server: ScriptedServer, **kw: Any) -> OpenAIChatClient:
    kw = {"timeout": 2.0, "max_retries": 0, "backoff": 0.01, **kw}
    return OpenAIChatClient(server.url, "test-vlm", **kw)


def frames(n: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 6, 5, 3), dtype=np.uint8)


def query(n: int = 1, instruction: str = "put the red block in the bowl") -> RewardQuery:
    return RewardQuery(images=frames(n), instruction=instruction)


# ---------------------------------------------------------------------- the client
def test_request_carries_prompt_png_and_key(server, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    img = frames()[0]
    server.reply(ok("Yes."))
    c = client(server)
    assert c.chat("is it done?", [img], system="be brief", max_tokens=8) == "Yes."
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    body = req["body"]
    assert body["model"] == "test-vlm" and body["max_tokens"] == 8 and body["temperature"] == 0.0
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    text, part = body["messages"][1]["content"]
    assert text == {"type": "text", "text": "is it done?"}
    prefix = "data:image/png;base64,"
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith(prefix)
    png = base64.b64decode(part["image_url"]["url"][len(prefix):])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), img)
    # the key is nowhere but in the header
    for s in (repr(c), json.dumps(c.describe()), caplog.text):
        assert KEY not in s


def test_no_key_no_authorization_header(server):
    client(server).chat("hi")
    assert "Authorization" not in server.requests[0]["headers"]


def test_500_then_success_is_retried(server):
    server.reply(Reply({"error": "overloaded"}, status=500), Reply(b"bad gateway", status=502), ok("no"))
    c = client(server, max_retries=3)
    assert c.chat("q") == "no"
    assert len(server.requests) == 3
    assert c.stats() == {"calls": 1, "requests": 3, "retries": 2, "cache_hits": 0, "failures": 0}


def test_500_exhausts_retries(server, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    server.reply(Reply({"error": f"bad key {KEY}"}, status=503))  # a server that echoes the key
    c = client(server, max_retries=2)
    with pytest.raises(RewardModelError) as exc:
        c.chat("q")
    assert exc.value.reason == "server_error"
    assert "503" in str(exc.value) and "3 attempts" in str(exc.value)
    assert KEY not in str(exc.value) and KEY not in caplog.text
    assert c.stats()["failures_server_error"] == 1 and c.stats()["retries"] == 2


def test_4xx_is_not_retried(server):
    server.reply(Reply({"error": "unknown model"}, status=404))
    c = client(server, max_retries=3)
    with pytest.raises(RewardModelError, match="404.*unknown model") as exc:
        c.chat("q")
    assert exc.value.reason == "server_error" and len(server.requests) == 1


def test_429_honours_retry_after(server):
    server.reply(Reply({"error": "slow down"}, status=429, headers={"Retry-After": "0.3"}), ok("yes"))
    c = client(server, max_retries=1, backoff=0.0)
    t0 = time.monotonic()
    assert c.chat("q") == "yes"
    assert time.monotonic() - t0 >= 0.3
    assert c.stats()["retries"] == 1


def test_429_retry_after_is_capped_and_exhausts_to_rate_limited(server):
    server.reply(Reply({"error": "slow down"}, status=429, headers={"Retry-After": "3600"}))
    c = client(server, max_retries=2, max_retry_after=0.05)
    t0 = time.monotonic()
    with pytest.raises(RewardModelError) as exc:
        c.chat("q")
    assert time.monotonic() - t0 < 1.5
    assert exc.value.reason == "rate_limited" and len(server.requests) == 3


def test_timeout(server):
    server.reply(Reply(completion("yes"), delay=1.5))
    c = client(server, timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(RewardModelError, match="no answer within 0.2 s") as exc:
        c.chat("q")
    assert exc.value.reason == "timeout" and time.monotonic() - t0 < 1.2
    assert c.stats()["failures_timeout"] == 1


def test_connection_refused():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    c = OpenAIChatClient(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff=0.01, timeout=1.0)
    with pytest.raises(RewardModelError, match="connection failed") as exc:
        c.chat("q")
    assert exc.value.reason == "server_error" and c.stats()["requests"] == 2


@pytest.mark.parametrize(("reply", "reason"), [
    (Reply(b"<html>not json</html>"), "malformed"),
    (Reply({"object": "chat.completion"}), "malformed"),
    (Reply({"choices": [{"message": {"role": "assistant"}}]}), "malformed"),
    (ok(""), "empty"),
    (ok(None), "empty"),
    (ok("  \n"), "empty"),
])
def test_bad_responses(server, reply, reason):
    server.reply(reply)
    with pytest.raises(RewardModelError) as exc:
        client(server, max_retries=2).chat("q")
    assert exc.value.reason == reason and len(server.requests) == 1  # not retried


def test_disk_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    img = frames()[0]
    c = client(server, cache_dir=tmp_path / "cache")
    server.reply(ok("yes"))
    assert c.chat("q", [img]) == "yes"
    server.reply(Reply(status=500))  # would fail if asked again
    assert c.chat("q", [img]) == "yes"
    assert len(server.requests) == 1 and c.stats()["cache_hits"] == 1
    # a new client (e.g. a later run) with another key reads the same entry
    monkeypatch.setenv("OPENAI_API_KEY", "another-key")
    assert client(server, cache_dir=tmp_path / "cache").chat("q", [img]) == "yes"
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].suffix == ".json"
    assert KEY not in files[0].read_text() and "another-key" not in files[0].read_text()
    # a different request misses
    with pytest.raises(RewardModelError):
        c.chat("another question", [img])
    assert len(server.requests) == 2


# ---------------------------------------------------------------------- parsing
@pytest.mark.parametrize(("text", "expected"), [
    ("Yes.", (True, "")), ("no", (False, "")), ("NO, the block is outside the bowl.", (False, "")),
    ("**Yes**", (True, "")), ("Answer: no", (False, "")), ("The answer is yes.", (True, "")),
    ('{"success": true}', (True, "")), ('{"answer": "no"}', (False, "")), ('{"Success": false}', (False, "")),
    ('```json\n{"success": true}\n```', (True, "")), ("```\nyes\n```", (True, "")),
    ("<think>the block is in the bowl</think>\nYes", (True, "")),
    ("", (None, "empty")), ("```\n```", (None, "empty")),
    ("I'm sorry, I can't help with that.", (None, "refusal")), ("As an AI, I cannot judge images.", (None, "refusal")),
    ("The robot arm is grey.", (None, "malformed")), ('{"colour": "red"}', (None, "malformed")),
    ("42", (None, "malformed")),
])
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) == expected


# ---------------------------------------------------------------------- the reward model
def test_vlm_reward_yes_no(server):
    server.reply(ok("Yes."), ok("no"))
    model = VLMSuccessReward(client(server))
    out = model(query(2))
    np.testing.assert_array_equal(out.reward, [1.0, 0.0])
    np.testing.assert_array_equal(out.valid, [True, True])
    np.testing.assert_array_equal(out.success, [True, False])
    np.testing.assert_array_equal(out.prob, [1.0, 0.0])
    assert out.reasons == ["", ""]
    prompt = server.requests[0]["body"]["messages"][0]["content"][0]["text"]
    assert prompt == ('Here is an image of a robot. Has the robot completed the task "put the red block in the '
                      'bowl"? Answer with "yes" or "no" only.')


@pytest.mark.parametrize(("reply", "reason"), [
    (ok("I'm sorry, but I cannot assess this image."), "refusal"), (ok("The image shows a table."), "malformed"),
    (ok(""), "empty"), (Reply(b"not json"), "malformed"), (Reply(status=500), "server_error"),
])
def test_vlm_reward_failures_are_invalid_items(server, reply, reason):
    server.reply(reply)
    out = VLMSuccessReward(client(server)).score(query(1))
    assert not out.valid[0] and out.reasons == [reason]


def test_vlm_reward_transport_failure_skips_rest_of_batch(server):
    server.reply(Reply(status=500))
    out = VLMSuccessReward(client(server, max_retries=1)).score(query(4))
    assert out.reasons == ["server_error"] * 4 and not out.valid.any()
    assert len(server.requests) == 2  # one item, retried once; the other three were not sent


def test_vlm_reward_fixed_question_template_and_describe(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    model = VLMSuccessReward(client(server), question="Is the drawer open?")
    model.score(query(1, instruction=""))
    assert server.requests[0]["body"]["messages"][0]["content"][0]["text"] == "Is the drawer open?"
    custom = VLMSuccessReward(client(server), template='Task: {instruction}. Reply {"success": true|false}.')
    assert custom.prompt("open it") == 'Task: open it. Reply {"success": true|false}.'
    with pytest.raises(ConfigError, match="instruction"):
        custom.score(query(1, instruction=""))
    d = custom.describe()
    assert d["type"] == "VLMSuccessReward" and d["base_url"] == server.url and d["model"] == "test-vlm"
    assert d["question"] == custom.template and KEY not in json.dumps(d)


def test_vlm_reward_votes_and_workers(server):
    server.reply(ok("yes"), ok("no"), ok("yes"), ok("yes"), ok("no"), ok("gibberish"))
    model = VLMSuccessReward(client(server), votes=3, vote_temperature=0.8)
    out = model.score(query(2))
    np.testing.assert_array_equal(out.success, [True, False])  # 2 of 3, then 1 of 2 valid (a tie is "no")
    np.testing.assert_allclose(out.prob, [2 / 3, 0.5])
    bodies = [r["body"] for r in server.requests]
    assert [b["seed"] for b in bodies] == [0, 1, 2, 0, 1, 2] and {b["temperature"] for b in bodies} == {0.8}
    server.reply(ok("yes"))
    out = VLMSuccessReward(client(server), workers=4).score(query(6))
    assert out.valid.all() and out.success.all() and len(server.requests) == 12


# ---------------------------------------------------------------------- through RewardWrapper
class TinyImageEnv(gym.Env):
    """Image observations; env reward 0.25 per step."""

    observation_space = gym.spaces.Box(0, 255, (6, 5, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return frames()[0], {}

    def step(self, action):
        return frames(seed=int(action))[0], 0.25, False, False, {}


def test_wrapper_falls_back_on_server_error(server):
    model = VLMSuccessReward(client(server))
    env = RewardWrapper(TinyImageEnv(), model, instruction="push the button", fallback="env")
    env.reset()
    server.reply(ok("yes"))
    _, r, *_, info = env.step(0)
    assert r == 1.0 and info["reward_model"]["success"] is True
    server.reply(Reply({"error": "down"}, status=500))
    _, r, *_, info = env.step(1)
    assert r == 0.25 and info["reward_model"] == {"valid": False, "reason": "server_error", "success": None,
                                                   "prob": None}
    m = env.reward_metrics()
    assert m["reward_model/calls"] == 2 and m["reward_model/fallbacks"] == 1
    assert m["reward_model/fallback_server_error"] == 1


def test_unwritable_cache_does_not_fail_the_call(server, tmp_path, caplog):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    assert client(server, cache_dir=blocker).chat("q") == "yes"
    assert "cannot write the response cache" in caplog.text


# ---------------------------------------------------------------------- adversarial servers
class RawServer:
    """A TCP server on 127.0.0.1 whose every connection is handed to `handle(conn)` in a daemon thread; it
    stops by itself when the test closes it (and each handler gives up within a few seconds)."""

    def __init__(self, handle) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.handle, self.stopped, self.connections = handle, threading.Event(), 0
        threading.Thread(target=self._loop, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _loop(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn) -> None:
        try:
            conn.settimeout(5.0)
            _read_request(conn)
            self.handle(conn, self.stopped)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def _read_request(conn) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    n = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
             0)
    while len(body) < n:
        body += conn.recv(65536)
    return head


@pytest.fixture
def raw():
    servers = []

    def make(handle):
        servers.append(RawServer(handle))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def _trickle_body(conn, stopped):
    body = json.dumps(completion("yes")).encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    for i in range(len(body)):  # one byte every 50 ms: every read is quick, the whole is ~8 s
        if stopped.is_set():
            return
        conn.sendall(body[i:i + 1])
        time.sleep(0.05)


def _trickle_headers(conn, stopped):
    for b in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 400:
        if stopped.is_set():
            return
        conn.sendall(bytes([b]))
        time.sleep(0.05)


@pytest.mark.parametrize("handler", [_trickle_body, _trickle_headers], ids=["body", "headers"])
def test_timeout_is_a_total_deadline_per_attempt(raw, handler):
    srv = raw(handler)
    c = OpenAIChatClient(srv.url, "m", timeout=0.5, max_retries=1, backoff=0.01)
    t0 = time.monotonic()
    with pytest.raises(RewardModelError, match="no answer within 0.5 s") as exc:
        c.chat("q")
    assert exc.value.reason == "timeout" and time.monotonic() - t0 < 2.0  # 2 attempts x 0.5 s, not minutes
    assert c.stats()["failures_timeout"] == 1 and c.stats()["requests"] == 2


def _huge(declare_length: bool):
    def handle(conn, stopped):
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        head += b"Content-Length: 200000000\r\n" if declare_length else b"Connection: close\r\n"
        conn.sendall(head + b"\r\n")
        chunk = b'{"pad": "' + b"x" * 65536
        for _ in range(3000):  # up to ~200 MB, unless the client hangs up first
            if stopped.is_set():
                return
            conn.sendall(chunk)
    return handle


@pytest.mark.parametrize("declare", [True, False], ids=["content-length", "streamed"])
def test_response_size_is_capped(raw, declare):
    srv = raw(_huge(declare))
    c = OpenAIChatClient(srv.url, "m", timeout=5.0, max_retries=0, max_response_bytes=1 << 20)
    t0 = time.monotonic()
    with pytest.raises(RewardModelError, match="max_response_bytes") as exc:
        c.chat("q")
    assert exc.value.reason == "too_large" and time.monotonic() - t0 < 2.0
    assert c.stats()["failures_too_large"] == 1


def test_refusals_and_malformed_answers_are_not_cached(server, tmp_path):
    c = client(server, cache_dir=tmp_path / "cache")
    model = VLMSuccessReward(c)
    server.reply(ok("I'm sorry, I cannot help with that."))
    out = model(query())
    assert not out.valid[0] and out.reasons == ["refusal"]
    server.reply(ok("the image shows a robot"))
    assert model(query()).reasons == ["malformed"]
    assert not list((tmp_path / "cache").glob("*.json"))  # nothing bad was cached
    server.reply(ok("yes"))
    out = model(query())
    assert out.valid[0] and out.success[0] and len(server.requests) == 3
    assert model(query()).success[0] and len(server.requests) == 3  # the good answer is cached
    s = c.stats()
    assert s["failures_refusal"] == 1 and s["failures_malformed"] == 1 and s["cache_hits"] == 1


def test_cached_bad_answer_from_an_older_version_is_asked_again(server, tmp_path):
    c = client(server, cache_dir=tmp_path / "cache")
    server.reply(ok("I cannot"))
    c.chat("q")  # no accept check: cached, as before
    server.reply(ok("no"))
    assert c.chat("q", accept=lambda t: parse_yes_no(t)[0] is not None) == "no" and len(server.requests) == 2


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_stop_the_run_instead_of_falling_back(server, monkeypatch, status):
    from rlpt.errors import RewardAuthError

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server.reply(Reply({"error": f"invalid key {KEY}"}, status=status))
    c = client(server, max_retries=3)
    with pytest.raises(RewardAuthError, match=f"HTTP {status}.*OPENAI_API_KEY is set") as exc:
        c.chat("q")
    assert KEY not in str(exc.value) and len(server.requests) == 1 and c.stats()["failures_auth"] == 1
    env = RewardWrapper(TinyImageEnv(), VLMSuccessReward(c), instruction="push the button", fallback="env")
    env.reset()
    with pytest.raises(RewardAuthError):  # not swallowed into a fallback reward
        env.step(0)


def test_wrong_key_fails_at_start_up(raw, monkeypatch, capsys):
    from rlpt.errors import RewardAuthError
    from rlpt.rewards.factory import build_reward_model

    def handle(conn, stopped):
        body = b'{"error": "invalid api key"}'
        conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    srv = raw(handle)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RewardAuthError, match="401.*OPENAI_API_KEY is not set"):
        build_reward_model({"type": "http_vlm", "base_url": srv.url, "model": "m"})
    assert srv.connections == 1  # one GET /models, no chat request


def test_start_up_check_tolerates_servers_without_a_models_endpoint(server):
    from rlpt.rewards.factory import build_reward_model

    model = build_reward_model({"type": "http_vlm", "base_url": server.url, "model": "m", "timeout": 2.0})
    assert isinstance(model, VLMSuccessReward) and not server.requests  # the 501 on GET is not an auth failure
