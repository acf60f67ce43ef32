"""POST JSON to one endpoint with retries: an httpx client (pooled keep-alive connections, timeouts) shared by
the engine's worker threads.

Retried: connection errors and timeouts, HTTP 408/409/429 and 5xx (not 501), and a 200 whose body is not the
JSON the caller can parse. The wait before retry k (k = 0, 1, ...) is the server's Retry-After / retry-after-ms
when it sends one (seconds or an HTTP date, capped at max_backoff), else full-jitter exponential backoff,
uniform(0, min(max_backoff, backoff * 2**k)) (the AWS architecture blog's "full jitter": concurrent clients
that failed together do not retry together). Anything else fails at once with the server's own message.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

NO_RETRY_5XX = {501, 505}  # not implemented / HTTP version: asking again cannot help


class OpenAIError(RuntimeError):
    """A request that failed for good: one line with the URL, the status and the server's message.
    `status` is the HTTP status of a refused request (not retried), else None."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def import_httpx():
    """httpx, or a one-line error naming the extra that installs it."""
    try:
        import httpx
    except ImportError:
        from ...config import ConfigError

        raise ConfigError(
            "", "the OpenAI-compatible client needs httpx: pip install 'aha-rl[teacher]'"
        ) from None
    return httpx


class Transport:
    """`post(payload, parse, stop)` -> parse(response JSON), retrying as the module docstring says."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None,
        timeout: float,
        max_retries: int,
        backoff: float,
        max_backoff: float,
        connections: int,
    ):
        httpx = import_httpx()
        self.httpx, self.url = httpx, url
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
        )
        self.stats: Counter = Counter()  # requests (answered), retries
        self._lock = threading.Lock()
        self._rng = random.Random(0)

    def close(self) -> None:
        self.client.close()

    def post(self, payload: dict, parse: Callable[[dict], list], stop: threading.Event) -> list:
        """One request with retries. `stop` set (another request failed for good) ends the waiting early."""
        last = ""
        for attempt in range(self.max_retries + 1):
            wait_s = None
            try:
                resp = self.client.post(self.url, json=payload)
                if resp.status_code == 200:
                    out = parse(resp.json())
                    with self._lock:
                        self.stats["requests"] += 1
                    return out
                msg = _error_message(resp)
                if not _retryable(resp.status_code):
                    raise OpenAIError(
                        f"{self.url}: HTTP {resp.status_code}: {msg}", resp.status_code
                    )
                last = f"HTTP {resp.status_code}: {msg}"
                wait_s = retry_after(resp.headers, self.max_backoff)
            except self.httpx.UnsupportedProtocol as e:
                raise OpenAIError(f"{self.url}: {e}") from None
            except self.httpx.TransportError as e:  # connect/read/write errors and timeouts
                last = f"{type(e).__name__}: {e}"
            except (ValueError, KeyError, TypeError, IndexError) as e:  # JSON or shape: retried
                last = f"malformed response ({type(e).__name__}: {e})"
            if attempt == self.max_retries:
                break
            with self._lock:
                self.stats["retries"] += 1
                if wait_s is None:
                    wait_s = min(self.max_backoff, self.backoff * 2**attempt) * self._rng.random()
            if stop.wait(wait_s):
                raise OpenAIError(f"{self.url}: cancelled after another request failed; {last}")
        raise OpenAIError(
            f"{self.url}: gave up after {self.max_retries + 1} attempts; last error: {last}"
        )


def _retryable(code: int) -> bool:
    return code in (408, 409, 429) or (code >= 500 and code not in NO_RETRY_5XX)


def retry_after(headers, cap: float) -> float | None:
    """Seconds the server asks us to wait (retry-after-ms, or Retry-After as seconds or an HTTP date), or None."""
    ms = headers.get("retry-after-ms")
    try:
        if ms is not None:
            return min(cap, max(0.0, float(ms) / 1000))
    except ValueError:
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(cap, max(0.0, float(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(cap, max(0.0, when.timestamp() - time.time()))


def _error_message(resp) -> str:
    """The server's error message (OpenAI/vLLM: {"error": {"message": ...}}), on one line."""
    try:
        body = resp.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message", err) if isinstance(err, dict) else err
    except ValueError:
        msg = resp.text or resp.reason_phrase
    return " ".join(str(msg).split())[:300]
