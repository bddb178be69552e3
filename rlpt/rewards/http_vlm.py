"""A VLM reward served over HTTP: `OpenAIChatClient` speaks the OpenAI chat-completions API (vLLM, Ollama,
llama.cpp server, OpenAI itself) with images as base64 PNG `image_url` parts; `VLMSuccessReward` asks it,
per image, whether the robot completed the task and turns the yes/no answer into a 1/0 reward.

HTTP goes through `httpx` (connection pooling, TLS, HTTP/1.1 parsing) on a transport whose network streams clamp
every connect, read and write to the attempt's deadline. The API key is read from an environment variable at request
time and sent as `Authorization: Bearer ...`; it never appears in logs, errors, reprs, `describe()` or the
on-disk cache (whose key is a hash of the request body, which does not hold the key).

Each HTTP attempt has one total deadline (`timeout`: connect, headers and body together -- a server that
trickles bytes cannot stretch it; httpx's own timeouts are per read) and a response size cap
(`max_response_bytes`: a larger declared Content-Length fails before the body is read, a longer body as soon as it
passes the cap). Retries (5xx, timeouts, connection errors, 429 with Retry-After) are this module's loop. Only
answers that the caller's `accept` check passes are cached, so a refusal is asked again, not replayed. HTTP 401/403
raise `RewardAuthError`, which stops the run (reward wrappers fall back only on `RewardModelError`);
`check_auth()` asks `GET {base_url}/models` once at start-up to fail early.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpcore
import httpx
import numpy as np

from rlpt.errors import ConfigError, RewardAuthError, RewardModelError
from rlpt.rewards.base import RewardModel, RewardOutput, RewardQuery
from rlpt.utils import write_text_atomic

log = logging.getLogger(__name__)

_TRANSPORT_REASONS = ("timeout", "server_error", "rate_limited", "too_large")
MAX_RESPONSE_BYTES = 8 * 2**20  # a chat completion is a few KiB


class _Deadline(threading.local):
    """The running attempt's deadline (a `time.monotonic()` instant), one per thread (requests run in worker
    threads with `VLMSuccessReward(workers=k)`)."""

    at: float | None = None

    def clamp(self, timeout: float | None, error: type[Exception]) -> float | None:
        """`timeout` cut to the time left; raises `error` (an httpcore timeout) once the deadline has passed."""
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise error("the attempt's total deadline passed")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read and write waits at most until the attempt's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self.inner, self.deadline = inner, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, self.deadline.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, self.deadline.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        timeout = self.deadline.clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self.inner.start_tls(ssl_context, server_hostname, timeout), self.deadline)

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's socket backend with connects (and the streams they open) bound by the attempt's deadline."""

    def __init__(self, deadline: _Deadline) -> None:
        self.inner, self.deadline = httpcore.SyncBackend(), deadline

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options=None) -> httpcore.NetworkStream:
        stream = self.inner.connect_tcp(host, port, self.deadline.clamp(timeout, httpcore.ConnectTimeout),
                                        local_address, socket_options)
        return _DeadlineStream(stream, self.deadline)

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class _DeadlineTransport(httpx.BaseTransport):
    """An httpx transport over an httpcore connection pool on `_DeadlineBackend` (httpx's own `HTTPTransport`
    does not take a network backend). No proxies, no transport-level retries: the client retries itself."""

    def __init__(self, deadline: _Deadline, max_connections: int = 32) -> None:
        self.pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(), max_connections=max_connections,
                                            keepalive_expiry=5.0, network_backend=_DeadlineBackend(deadline))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        req = httpcore.Request(method=request.method, url=httpcore.URL(
            scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port,
            target=request.url.raw_path), headers=request.headers.raw, content=request.stream,
            extensions=request.extensions)
        resp = self.pool.handle_request(req)
        return httpx.Response(resp.status, headers=resp.headers, stream=_ResponseStream(resp),
                              extensions=resp.extensions)

    def close(self) -> None:
        self.pool.close()


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, resp: httpcore.Response) -> None:
        self.resp = resp

    def __iter__(self):
        yield from self.resp.iter_stream()

    def close(self) -> None:
        self.resp.close()


_TIMEOUTS = (httpx.TimeoutException, httpcore.TimeoutException)
_TRANSPORT_ERRORS = (httpx.TransportError, httpx.DecodingError, httpcore.NetworkError, httpcore.ProtocolError,
                     httpcore.UnsupportedProtocol, OSError)


def encode_png(image: np.ndarray) -> str:
    """A uint8 (H, W, 3) image as a `data:image/png;base64,...` URL."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"encode_png: expected a uint8 (H, W, 3) image; got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAIChatClient:
    """A client for `POST {base_url}/chat/completions` on httpx (one pooled `httpx.Client`; thread-safe).

    base_url: the API root, e.g. "http://127.0.0.1:8000/v1".
    model: the model name the server expects.
    api_key_env: environment variable holding the API key, read at each request; when unset or empty no
        Authorization header is sent (local servers).
    timeout: seconds per HTTP attempt, in total (connect, request, headers and body).
    max_retries: extra attempts after a timeout, a 5xx, a connection error or a 429.
    backoff, max_backoff: retry delays are min(max_backoff, backoff * 2**attempt) scaled by a random
        factor in [0.5, 1] (jitter).
    max_retry_after: cap, in seconds, on a 429's Retry-After delay.
    cache_dir: optional folder of cached answers, one JSON file per request (hash of URL and body).
    headers: extra HTTP headers (not logged, not cached).
    max_response_bytes: a larger response body fails the attempt (reason "too_large") without being read whole.

    HTTP(S) proxies from the environment are not used: point base_url at the server (or an SSH tunnel).
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0,
                 max_retries: int = 3, backoff: float = 0.5, max_backoff: float = 8.0, max_retry_after: float = 30.0,
                 cache_dir: str | os.PathLike | None = None, headers: Mapping[str, str] | None = None,
                 max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"OpenAIChatClient: base_url must start with http:// or https://; got {base_url!r}")
        if timeout <= 0 or max_retries < 0 or backoff < 0:
            raise ConfigError(f"OpenAIChatClient: need timeout > 0, max_retries >= 0, backoff >= 0; got "
                              f"timeout={timeout}, max_retries={max_retries}, backoff={backoff}")
        self.base_url, self.model, self.api_key_env = base_url.rstrip("/"), model, api_key_env
        self.url = self.base_url + "/chat/completions"
        self.timeout, self.max_retries = float(timeout), int(max_retries)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.max_retry_after = float(max_retry_after)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.headers = dict(headers or {})
        self.max_response_bytes = int(max_response_bytes)
        self._lock = threading.Lock()
        self._deadline = _Deadline()
        self._http = httpx.Client(transport=_DeadlineTransport(self._deadline), trust_env=False,
                                  follow_redirects=False)
        self._counts: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()

    def close(self) -> None:
        """Close the pooled connections (the client cannot send afterwards)."""
        self._http.close()

    def __repr__(self) -> str:
        return f"OpenAIChatClient(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (no key, no headers)."""
        return {"base_url": self.base_url, "model": self.model, "api_key_env": self.api_key_env,
                "timeout": self.timeout, "max_retries": self.max_retries,
                "cache_dir": None if self.cache_dir is None else str(self.cache_dir)}

    def stats(self) -> dict[str, int]:
        """Counters since construction: calls (to `chat`), requests (HTTP attempts), retries, cache_hits,
        failures (raised errors plus answers the caller rejected) and failures_<reason>, reason one of timeout,
        server_error, rate_limited, too_large, auth, malformed, empty, refusal (present once non-zero)."""
        with self._lock:
            out = {k: self._counts[k] for k in ("calls", "requests", "retries", "cache_hits")}
            out["failures"] = sum(self._failures.values())
            out.update({f"failures_{k}": v for k, v in sorted(self._failures.items())})
        return out

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def count_failure(self, reason: str) -> None:
        """Count a failure of kind `reason` (the client's own, or an answer its caller could not use)."""
        with self._lock:
            self._failures[reason] += 1

    def check_auth(self) -> None:
        """Ask `GET {base_url}/models` once (a start-up check). Raises `RewardAuthError` on HTTP 401/403; any
        other outcome (no such endpoint, server down) is left to the requests themselves."""
        try:
            status, _, body = self._attempt("GET", self.base_url + "/models", None, self._headers(), 10.0)
        except (RewardModelError, TimeoutError, *_TIMEOUTS, *_TRANSPORT_ERRORS) as err:
            log.info("OpenAIChatClient: start-up check of %s/models skipped: %s", self.base_url, err)
            return
        if status in (401, 403):
            self.count_failure("auth")
            raise self._auth_error(status, body)

    def _auth_error(self, status: int, body: bytes) -> RewardAuthError:
        key_state = "is set" if os.environ.get(self.api_key_env) else "is not set"
        detail = self._redact(body[:200].decode("utf-8", "replace"))
        return RewardAuthError(f"{self.base_url}: HTTP {status}: the server refused the credentials (the API key "
                               f"variable ${self.api_key_env} {key_state}): {detail}")

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json", **self.headers}
        if key := os.environ.get(self.api_key_env):
            headers["Authorization"] = f"Bearer {key}"
        return headers

    # ------------------------------------------------------------------ the request
    def chat(self, prompt: str, images: Sequence[np.ndarray] = (), *, temperature: float = 0.0,
             max_tokens: int = 256, system: str | None = None, seed: int | None = None,
             accept: Callable[[str], bool] | None = None) -> str:
        """Send one user message (the text, then each image as a PNG `image_url` part) and return the
        assistant's text. `seed` is passed to the server (and makes sampled requests distinct in the cache).
        `accept(text)`: whether the answer is usable; only usable answers are written to (and served from) the
        cache.

        Raises RewardModelError with reason "timeout", "server_error", "rate_limited", "too_large", "malformed"
        or "empty", and RewardAuthError on HTTP 401/403.
        """
        self._count("calls")
        content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
        content += [{"type": "image_url", "image_url": {"url": encode_png(im)}} for im in images]
        messages: list[dict[str, Any]] = [] if system is None else [{"role": "system", "content": system}]
        messages.append({"role": "user", "content": content})
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": temperature,
                                "max_tokens": max_tokens}
        if seed is not None:
            body["seed"] = seed
        data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        cache_path = self._cache_path(data)
        if cache_path is not None and (hit := self._read_cache(cache_path)) is not None and (
                accept is None or accept(hit)):
            self._count("cache_hits")
            return hit
        try:
            text = self._parse(self._post(data))
        except RewardModelError as err:
            self.count_failure(err.reason)
            raise
        if cache_path is not None and (accept is None or accept(text)):
            try:
                write_text_atomic(cache_path, json.dumps({"model": self.model, "content": text}) + "\n")
            except OSError as err:  # a full or read-only disk costs the cache, not the answer
                log.warning("OpenAIChatClient: cannot write the response cache %s: %s", cache_path, err)
        return text

    def _cache_path(self, data: bytes) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(self.url.encode() + b"\n" + data).hexdigest()
        return self.cache_dir / f"{digest}.json"

    @staticmethod
    def _read_cache(path: Path) -> str | None:
        try:
            text = json.loads(path.read_text())["content"]
        except (OSError, ValueError, KeyError, TypeError):  # absent or unreadable: ask the server
            return None
        return text if isinstance(text, str) else None

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env, "")
        return text.replace(key, "***") if key else text

    def _delay(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)

    def _attempt(self, method: str, url: str, data: bytes | None, headers: dict[str, str],
                 timeout: float) -> tuple[int, httpx.Headers, bytes]:
        """One HTTP request under one total deadline: the transport clamps every connect, read and write to the
        time left, so a peer that trickles headers or body cannot stretch it. A body larger than
        `max_response_bytes` (declared, or as read) fails without being read whole. Returns (status, headers,
        body); raises TimeoutError at the deadline."""
        self._deadline.at = time.monotonic() + timeout
        try:
            with self._http.stream(method, url, content=data, headers=headers, timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                if length is not None and length.strip().isdigit() and int(length) > self.max_response_bytes:
                    raise self._too_large(url, f"response of {int(length)} bytes")
                body = bytearray()
                for part in resp.iter_bytes():
                    body += part
                    if len(body) > self.max_response_bytes:
                        raise self._too_large(url, "response body")
                return resp.status_code, resp.headers, bytes(body)
        except _TIMEOUTS:
            raise TimeoutError(f"no answer within {timeout:g} s") from None
        finally:
            self._deadline.at = None

    def _too_large(self, url: str, what: str) -> RewardModelError:
        return RewardModelError(f"{url}: {what} exceeds max_response_bytes={self.max_response_bytes}",
                                reason="too_large")

    def _post(self, data: bytes) -> bytes:
        """POST with retries; the response body of the first 2xx answer."""
        last: RewardModelError | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._count("retries")
            self._count("requests")
            delay = None
            try:
                status, headers, body = self._attempt("POST", self.url, data, self._headers(), self.timeout)
            except RewardModelError as err:  # too large: the server is misbehaving; another try may differ
                last, status = err, 0
            except TimeoutError:
                last, status = RewardModelError(f"{self.url}: no answer within {self.timeout:g} s (in total)",
                                                reason="timeout"), 0
            except _TRANSPORT_ERRORS as err:  # refused/reset connections, bad status lines
                last, status = RewardModelError(f"{self.url}: connection failed: {self._redact(str(err))}",
                                                reason="server_error"), 0
            if 200 <= status < 300:
                return body
            if status:
                detail = self._redact(body[:200].decode("utf-8", "replace"))
                if status in (401, 403):
                    self.count_failure("auth")
                    raise self._auth_error(status, body)
                if status == 429:
                    last = RewardModelError(f"{self.url}: rate limited (HTTP 429): {detail}", reason="rate_limited")
                    delay = _retry_after(headers.get("Retry-After"), self.max_retry_after)
                elif status >= 500:
                    last = RewardModelError(f"{self.url}: HTTP {status}: {detail}", reason="server_error")
                else:  # 4xx other than 401/403/429: the request itself is wrong; retrying will not help
                    raise RewardModelError(f"{self.url}: HTTP {status} (not retried): {detail}",
                                           reason="server_error") from None
            if attempt < self.max_retries:
                assert last is not None
                wait = self._delay(attempt) if delay is None else delay
                log.info("%s (attempt %d of %d); retrying in %.2f s", last, attempt + 1, self.max_retries + 1, wait)
                time.sleep(wait)
        assert last is not None
        raise RewardModelError(f"{last} (after {self.max_retries + 1} attempts)", reason=last.reason)

    def _parse(self, raw: bytes) -> str:
        try:
            obj = json.loads(raw)
            content = obj["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            snippet = self._redact(raw[:200].decode("utf-8", "replace"))
            raise RewardModelError(f"{self.url}: the response is not a chat completion (no "
                                   f"choices[0].message.content): {snippet!r}", reason="malformed") from None
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if content is not None and not isinstance(content, str):
            raise RewardModelError(f"{self.url}: message content is a {type(content).__name__}, not text",
                                   reason="malformed")
        if not content or not content.strip():
            raise RewardModelError(f"{self.url}: the model answered with empty content", reason="empty")
        return content


def _retry_after(value: str | None, cap: float) -> float | None:
    """Retry-After in seconds (capped), or None when absent or not a number (HTTP dates are not parsed)."""
    try:
        return min(cap, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None


# ---------------------------------------------------------------------- parsing yes/no answers
DEFAULT_TEMPLATE = ('Here is an image of a robot. Has the robot completed the task "{instruction}"? '
                    'Answer with "yes" or "no" only.')

_REFUSALS = ("i'm sorry", "i am sorry", "i cannot", "i can't", "i can not", "i'm unable", "i am unable",
             "i'm not able", "i am not able", "as an ai", "i apologize", "i won't", "i will not")
_WORDS = {"yes": True, "true": True, "y": True, "no": False, "false": False, "n": False}
_JSON_KEYS = ("success", "answer", "completed", "complete", "done", "result", "success_detected")


def parse_yes_no(text: str) -> tuple[bool | None, str]:
    """(answer, "") for a yes/no answer, else (None, reason) with reason "empty", "refusal" or "malformed".

    Accepts "Yes."/"no", "**Yes**", "Answer: no", JSON such as {"success": true} or {"answer": "yes"},
    either inside a markdown code fence, and drops a leading <think>...</think> block.
    """
    t = re.sub(r"<think>.*?</think>", "", text, flags=re.S).strip()
    fence = re.fullmatch(r"```[\w-]*\s*(.*?)\s*```", t, flags=re.S)
    if fence:
        t = fence.group(1).strip()
    if not t:
        return None, "empty"
    try:
        obj = json.loads(t)
    except ValueError:
        obj = t
    if isinstance(obj, dict):
        low = {str(k).lower(): v for k, v in obj.items()}
        obj = next((low[k] for k in _JSON_KEYS if k in low), None)
    if isinstance(obj, bool):
        return obj, ""
    if isinstance(obj, str):
        s = obj.strip().lower()
        s = re.sub(r"^(?:final\s+)?answer\s*(?:is|:)\s*", "", s)
        first = re.match(r"[\W_]*([a-z]+)", s)
        if first and first.group(1) in _WORDS:
            return _WORDS[first.group(1)], ""
        m = re.search(r"\banswer\s*(?:is|:)\s*[\W_]*(yes|no)\b", s)
        if m:
            return m.group(1) == "yes", ""
        if any(r in s.replace("\u2019", "'") for r in _REFUSALS):
            return None, "refusal"
    return None, "malformed"


def _usable(text: str) -> bool:
    """Whether a yes/no answer parses (what `VLMSuccessReward` lets the client cache)."""
    return parse_yes_no(text)[0] is not None


class _Abort:
    """Shared by one `score` call: the reason of a transport failure that makes the rest of the batch moot."""

    reason: str = ""


class VLMSuccessReward(RewardModel):
    """Reward 1 when a VLM says the robot in the image completed the task, else 0.

    Each image is asked `question` (when given) or `template` with "{instruction}" replaced by the query's
    instruction. Answers are parsed by `parse_yes_no`; transport failures and unusable answers make the item
    invalid with a reason (never raised). success = the answer; prob = 1.0/0.0, or with `votes=k > 1` the
    fraction of "yes" among the k valid answers sampled at `vote_temperature` (success needs a strict
    majority; ties count as "no"). After a transport failure (timeout, server error, rate limit, already
    retried by the client) the rest of the batch is marked with the same reason without asking.
    `workers > 1` sends that many requests at once.
    """

    needs = ("images",)

    def __init__(self, client: OpenAIChatClient, *, template: str = DEFAULT_TEMPLATE, question: str | None = None,
                 system: str | None = None, max_tokens: int = 32, votes: int = 1, vote_temperature: float = 0.7,
                 workers: int = 1, batch_size: int = 16) -> None:
        if votes < 1 or workers < 1 or batch_size < 1:
            raise ConfigError(f"VLMSuccessReward: votes, workers and batch_size must be >= 1; got votes={votes}, "
                              f"workers={workers}, batch_size={batch_size}")
        self.client, self.template, self.question, self.system = client, template, question, system
        self.max_tokens, self.votes, self.vote_temperature = max_tokens, votes, vote_temperature
        self.workers, self.batch_size = workers, batch_size

    def prompt(self, instruction: str) -> str:
        """The question asked for one image."""
        if self.question is not None:
            return self.question
        if "{instruction}" in self.template and not instruction.strip():
            raise ConfigError("VLMSuccessReward: the question template needs the task instruction but the query "
                              "has none (set instruction= on RewardWrapper/relabel, or pass a fixed question=)")
        return self.template.replace("{instruction}", instruction)

    def _ask(self, prompt: str, image: np.ndarray, abort: _Abort) -> tuple[bool | None, float, str]:
        """(success, P(yes), reason) for one image."""
        yes = no = 0
        reasons: Counter[str] = Counter()
        for k in range(self.votes):
            if abort.reason:
                return None, 0.0, abort.reason
            try:
                text = self.client.chat(prompt, [image], max_tokens=self.max_tokens, system=self.system,
                                        temperature=0.0 if self.votes == 1 else self.vote_temperature,
                                        seed=None if self.votes == 1 else k, accept=_usable)
            except RewardModelError as err:
                if err.reason in _TRANSPORT_REASONS:
                    abort.reason = err.reason
                    log.warning("VLM reward: %s", err)
                    return None, 0.0, err.reason
                reasons[err.reason] += 1
                continue
            answer, reason = parse_yes_no(text)
            if answer is None:
                reasons[reason] += 1
                self.client.count_failure(reason)
                log.debug("VLM reward: unusable answer (%s): %.200r", reason, text)
            elif answer:
                yes += 1
            else:
                no += 1
        if yes + no == 0:
            return None, 0.0, reasons.most_common(1)[0][0]
        return yes > no, yes / (yes + no), ""

    def score(self, query: RewardQuery) -> RewardOutput:
        if query.images is None:
            raise RewardModelError("VLMSuccessReward needs images; the query has none")
        prompt = self.prompt(query.instruction)
        abort = _Abort()
        images = list(query.images)
        if self.workers > 1 and len(images) > 1:
            with ThreadPoolExecutor(min(self.workers, len(images))) as pool:
                results = list(pool.map(lambda im: self._ask(prompt, im, abort), images))
        else:
            results = [self._ask(prompt, im, abort) for im in images]
        success = np.array([bool(s) for s, _, _ in results])
        valid = np.array([s is not None for s, _, _ in results])
        prob = np.array([p for _, p, _ in results], np.float32)
        return RewardOutput(success.astype(np.float32), valid, success, prob, [r for _, _, r in results])

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__, **self.client.describe(),
                "question": self.question if self.question is not None else self.template,
                "system": self.system, "votes": self.votes, "max_tokens": self.max_tokens}

    def metrics(self) -> dict[str, float]:
        """The client's counters (requests, retries, cache hits, failures by reason)."""
        return {k: float(v) for k, v in self.client.stats().items()}
