"""Running the app: uvicorn on a socket we bind ourselves, in the foreground (`aha serve`) or a thread (tests).

Binding first turns a port in use into one line (exit 2) instead of uvicorn's log and exit 1, and makes
port=0 (any free port) printable before serving. uvicorn's h11 protocol has no deadline for a request head
(a client that connects and sends nothing, or trickles a header, holds its connection forever), so
`HeadTimeout` closes a connection whose request head has not arrived `timeout_s` after it opened or after the
previous response; the app puts the same deadline on the body. The listen backlog is 2048 (uvicorn's), so a
burst of connections queues instead of being reset.
"""

from __future__ import annotations

import threading
import time

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import Api
from .cli import bind, url_of

BACKLOG = 2048


class HeadTimeout(H11Protocol):
    timeout_s = 30.0  # set per server by `protocol()`

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not self._armed_for and self._timer is not None:  # a new request head
            self._timer.cancel()
            self._timer = None

    def connection_lost(self, exc) -> None:
        if getattr(self, "_timer", None) is not None:
            self._timer.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if getattr(self, "_timer", None) is not None:
            self._timer.cancel()
        self._armed_for = self.cycle
        self._timer = self.loop.call_later(self.timeout_s, self._expire)

    def _expire(self) -> None:
        self._timer = None
        idle = self.cycle is None or self.cycle.response_complete  # not inside a request
        if idle and self.cycle is self._armed_for and not self.transport.is_closing():
            self.transport.close()


def protocol(timeout_s: float) -> type:
    return type("HeadTimeout", (HeadTimeout,), {"timeout_s": timeout_s})


class Server(uvicorn.Server):
    """uvicorn's server whose stop (Ctrl-C, SIGTERM; AhaServer.stop does the same) first shuts the engine's
    scheduler down, so requests in flight end with a 503 JSON error (an SSE error event on a stream) at once,
    instead of being cancelled after uvicorn's graceful-shutdown wait with a plain-text 500."""

    def __init__(self, config: uvicorn.Config, api: Api):
        super().__init__(config)
        self.api = api

    def handle_exit(self, sig, frame) -> None:
        self.api.scheduler.shutdown()
        super().handle_exit(sig, frame)


def make_server(api: Api, timeout_s: float, log_level: str = "warning") -> Server:
    config = uvicorn.Config(
        api.app(),
        http=protocol(timeout_s),
        ws="none",
        lifespan="on",
        log_level=log_level,
        access_log=log_level in ("info", "debug", "trace"),
        backlog=BACKLOG,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=3,
    )
    return Server(config, api)


class AhaServer:
    """`with AhaServer(engine, tokenizer, name, port=0) as s: ... s.url` serves in a background thread
    (tests, notebooks); keyword arguments go to `Api` (model, api_key, chat_template, max_model_len, ...)."""

    def __init__(self, engine, tokenizer, name: str, *, host: str = "127.0.0.1", port: int = 0,
                 timeout_s: float = 30.0, **api_kw):  # fmt: skip
        self.sock = bind(host, port)
        try:
            self.api = Api(engine, tokenizer, name, timeout_s=timeout_s, **api_kw)
        except BaseException:
            self.sock.close()
            raise
        self.url = url_of(self.sock)
        self.host, self.port = self.sock.getsockname()[:2]
        self.server = make_server(self.api, timeout_s)
        self.thread: threading.Thread | None = None

    def start(self) -> AhaServer:
        self.sock.listen(BACKLOG)
        self.thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self.sock]},
            daemon=True,
            name="aha-serve-http",
        )
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("aha serve did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.api.scheduler.shutdown()
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=30)
        self.sock.close()

    def __enter__(self) -> AhaServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
